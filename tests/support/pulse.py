"""The private PulseAudio server of the real-time tests (vatel_edge/devkit/sandbox.py, shared with demo, bench)."""

from vatel_edge.devkit.sandbox import RATE, PulseServer, Recording

__all__ = ["RATE", "PulseServer", "Recording"]
