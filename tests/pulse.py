"""The private PulseAudio server of the real-time tests: see vatel_edge/sandbox.py (shared with the demo and bench)."""

from vatel_edge.sandbox import RATE, PulseServer, Recording

__all__ = ["RATE", "PulseServer", "Recording"]
