"""The device's own controls: the mute switch ([privacy]) and the volume and talk/stop buttons ([buttons]).

Decisions are plain functions (`talk_action`, `volume_after`) and a plain debouncer (`SwitchPosition`);
device.py performs them on the daemon. The switch is an input line read every SWITCH_POLL_S; a position
counts once it read the same SWITCH_STABLE_READS times in a row (contact bounce never toggles the mute).
"""

from __future__ import annotations

from vatel_edge.state import State

SWITCH_POLL_S = 0.05
SWITCH_STABLE_READS = 2
VOLUME_MIN, VOLUME_MAX = 0, 100


def talk_action(state: State, agent_cuttable: bool) -> str | None:
    """What a talk/stop press does: "trigger" (listening), "cut" (the agent speaks: barge-in), "end" (a session
    runs otherwise), None (starting, ending, stopping: nothing)."""
    if state is State.LISTENING:
        return "trigger"
    if state is State.AGENT_SPEAKING and agent_cuttable:
        return "cut"
    if state in (State.CONNECTING, State.IN_SESSION, State.AGENT_SPEAKING):
        return "end"
    return None


def volume_after(level: int, step: int, up: bool) -> int:
    """The volume after one press, within 0..100."""
    return max(VOLUME_MIN, min(VOLUME_MAX, level + (step if up else -step)))


class SwitchPosition:
    """Debounces the mute switch's reads: `read(active)` returns the new position when it changed."""

    def __init__(self, position: bool, stable_reads: int = SWITCH_STABLE_READS) -> None:
        self.position = position
        self._stable = stable_reads
        self._candidate = position
        self._count = 0

    def read(self, active: bool) -> bool | None:
        """One read of the line (True: at mute); the new position once it is stable, else None."""
        if active == self.position:
            self._count = 0
            return None
        if active != self._candidate:
            self._candidate, self._count = active, 0
        self._count += 1
        if self._count < self._stable:
            return None
        self.position, self._count = active, 0
        return active
