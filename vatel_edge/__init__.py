"""vatel-edge: always-on voice-agent daemon for small devices."""
__version__ = "0.1.0"
