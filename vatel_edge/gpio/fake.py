"""The recording GPIO side, for tests and demos (`[gpio] backend = "fake"`).

It records every request, set and read with its time and lets tests drive input levels and button
presses; it resolves chips and line names like the real side and claims lines the same way, so
configuration errors look the same.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from vatel_edge.errors import GpioError
from vatel_edge.gpio.base import (
    BIASES,
    WAKE_BUTTON_OWNER,
    ButtonWatch,
    InputLine,
    LineClaims,
    LineId,
    OutputLine,
    PressQueue,
    where,
)


@dataclass(frozen=True)
class FakeChip:
    """One simulated chip: its device path, label and line names."""

    path: str
    label: str
    line_names: tuple[str, ...]


def _pi_chip() -> FakeChip:
    return FakeChip("/dev/gpiochip0", "pinctrl-bcm2711", tuple(f"GPIO{i}" for i in range(58)))


@dataclass(frozen=True)
class GpioRecord:
    """One thing the fake was asked to do: op is request_output, request_input, set, read, release, watch, press."""

    t: float
    op: str
    chip: str  # device path
    offset: int
    value: bool | None = None


@dataclass
class _FakeLine:
    direction: str  # "output" | "input" | "button"
    active_low: bool
    level: bool = False  # physical level (True = high)


@dataclass
class FakeGpio:
    """A recording GPIO backend: resolves chips and lines like gpiod, holds levels, simulates presses."""

    chips: tuple[FakeChip, ...] = field(default_factory=lambda: (_pi_chip(),))
    records: list[GpioRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lines: dict[LineId, _FakeLine] = {}
        self._levels: dict[LineId, bool] = {}
        self._watches: dict[LineId, list[_FakeButtonWatch]] = {}
        self._elsewhere: set[LineId] = set()
        self._lock = threading.Lock()
        self.claims = LineClaims()

    def _record(self, op: str, key: LineId, value: bool | None = None) -> None:
        self.records.append(GpioRecord(time.monotonic(), op, key[0], key[1], value))

    def resolve(self, chip: str, line: int | str) -> LineId:
        """(device path, offset) of a chip path/name/label and a line offset/name, or GpioError."""
        here = where(chip, line)
        found = [c for c in self.chips if chip in (c.path, os.path.basename(c.path), c.label)]
        if not found:
            among = ", ".join(c.path for c in self.chips) or "there are no GPIO chips"
            raise GpioError(f"{here}: no chip with that name or label ({among})")
        c = found[0]
        if isinstance(line, int):
            if not 0 <= line < len(c.line_names):
                raise GpioError(f"{here}: offset out of range (chip has {len(c.line_names)} lines)")
            return c.path, line
        if line in c.line_names:
            return c.path, c.line_names.index(line)
        if line.isdigit() and int(line) < len(c.line_names):
            return c.path, int(line)
        raise GpioError(f"{here}: no line with that name on {c.path}")

    def _request(self, chip: str, line: int | str, direction: str, active_low: bool, owner: str) -> LineId:
        key = self.resolve(chip, line)
        claimed = self.claims.claim(key, owner)
        with self._lock:
            if key in self._lines or key in self._elsewhere:
                if claimed:
                    self.claims.release(key)
                raise GpioError(f"{where(chip, line)}: line is busy (requested by another program or service)")
            level = self._levels.get(key, False) if direction != "output" else active_low
            self._lines[key] = _FakeLine(direction, active_low, level)
            self._levels[key] = level
        self._record(f"request_{direction}", key)
        return key

    def _drop(self, key: LineId) -> None:
        with self._lock:
            self._lines.pop(key, None)
        self.claims.release(key)
        self._record("release", key)

    def open_output(self, chip: str, line: int | str, *, active_low: bool, owner: str) -> OutputLine:
        return _FakeOutput(self, self._request(chip, line, "output", active_low, owner))

    def open_input(
        self, chip: str, line: int | str, *, active_low: bool, owner: str, bias: str = "as_is"
    ) -> InputLine:
        if bias not in BIASES:
            raise GpioError(f"{where(chip, line)}: unknown bias {bias!r}")
        return _FakeInput(self, self._request(chip, line, "input", active_low, owner))

    def watch_button(
        self, chip: str, line: int | str, *, active_low: bool, debounce_ms: int, owner: str = WAKE_BUTTON_OWNER
    ) -> ButtonWatch:
        return _FakeButtonWatch(self, chip, line, active_low, debounce_ms, owner)

    def close(self) -> None:
        with self._lock:
            keys = list(self._lines)
        for key in keys:
            self._drop(key)

    # ---- test side

    def level(self, chip: str, line: int | str) -> bool:
        """The physical level of a line (True = high)."""
        return self._levels.get(self.resolve(chip, line), False)

    def is_active(self, chip: str, line: int | str) -> bool | None:
        """The logical value of a requested line (per its active_low), None when not requested."""
        key = self.resolve(chip, line)
        state = self._lines.get(key)
        return None if state is None else state.level != state.active_low

    def set_level(self, chip: str, line: int | str, high: bool) -> None:
        """Drive an input line from outside (a door contact, a sensor)."""
        key = self.resolve(chip, line)
        with self._lock:
            self._levels[key] = high
            if key in self._lines:
                self._lines[key].level = high

    def hold_elsewhere(self, chip: str, line: int | str) -> None:
        """Let another program hold a line: requesting it fails as busy, as the kernel answers."""
        key = self.resolve(chip, line)
        with self._lock:
            self._elsewhere.add(key)

    def requested(self) -> set[LineId]:
        """(chip path, offset) of every line currently requested."""
        return set(self._lines)

    def press(self, chip: str, line: int | str) -> int:
        """Simulate a press of a watched button; returns how many watches accepted it (after debounce)."""
        key = self.resolve(chip, line)
        self._record("press", key)
        return sum(w.deliver(time.monotonic()) for w in self._watches.get(key, []))


class _FakeOutput:
    def __init__(self, fake: FakeGpio, key: LineId) -> None:
        self._fake, self._key = fake, key
        self._released = False

    def set(self, active: bool) -> None:
        if self._released:
            raise GpioError(f"{where(*self._key)}: line already released")
        with self._fake._lock:
            state = self._fake._lines[self._key]
            state.level = active != state.active_low
            self._fake._levels[self._key] = state.level
        self._fake._record("set", self._key, active)

    def release(self, *, set_inactive: bool) -> None:
        if self._released:
            return
        if set_inactive:
            self.set(False)
        self._released = True
        self._fake._drop(self._key)


class _FakeInput:
    def __init__(self, fake: FakeGpio, key: LineId) -> None:
        self._fake, self._key = fake, key
        self._released = False

    def get(self) -> bool:
        if self._released:
            raise GpioError(f"{where(*self._key)}: line already released")
        state = self._fake._lines[self._key]
        value = state.level != state.active_low
        self._fake._record("read", self._key, value)
        return value

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._fake._drop(self._key)


class _FakeButtonWatch(PressQueue):
    def __init__(
        self, fake: FakeGpio, chip: str, line: int | str, active_low: bool, debounce_ms: int, owner: str
    ) -> None:
        super().__init__(where(chip, line))
        self._fake = fake
        self._chip, self._line = chip, line
        self._active_low = active_low
        self._debounce_s = debounce_ms / 1000
        self._owner = owner
        self._key: LineId | None = None
        self._last: float | None = None
        self.debounced = 0

    async def __aenter__(self) -> _FakeButtonWatch:
        self._key = self._fake._request(self._chip, self._line, "button", self._active_low, self._owner)
        self._fake._watches.setdefault(self._key, []).append(self)
        self._fake._record("watch", self._key)
        return self

    def deliver(self, t: float) -> bool:
        if self._last is not None and t - self._last < self._debounce_s:
            self.debounced += 1
            return False
        self._last = t
        self.push(t)
        return True

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        watches = self._fake._watches.get(key, [])
        if self in watches:
            watches.remove(self)
        self._fake._drop(key)
