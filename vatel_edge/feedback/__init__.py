"""Device feedback and privacy: what the device shows and the controls it has, beside the audio.

`visible.py` the visible state derived from the daemon's events (no I/O), `leds.py` state LEDs on GPIO,
`hooks.py` the state hook (the shell tools' sandboxed runner), `controls.py` the mute switch and button
decisions, `store.py` the volume kept across restarts, `device.py` the runtime component assembling them.
"""

from __future__ import annotations

from vatel_edge.feedback.device import DaemonView, DeviceFeedback
from vatel_edge.feedback.visible import FeedbackModel, Visible, visible_state

__all__ = ["DaemonView", "DeviceFeedback", "FeedbackModel", "Visible", "visible_state"]
