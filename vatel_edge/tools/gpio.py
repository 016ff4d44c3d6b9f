"""GPIO behind a narrow interface: output lines, input lines, button presses; a gpiod side and a fake side.

The real side uses the libgpiod v2 Python bindings (gpiod 2.x). The fake side records every request, set
and read with its time and lets tests drive input levels and button presses; it resolves chips and line
names like the real side so configuration errors look the same. `make_gpio_backend` picks one by the
`[gpio] backend` setting. Every failure to find or request a line is a ToolError naming chip and line.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Protocol

from vatel_edge.errors import ToolError

log = logging.getLogger(__name__)

CONSUMER = "vatel-edge"
#: Presses waiting for the daemon; when full, newer presses are dropped (one waiting press already wakes).
BUTTON_QUEUE_SIZE = 8
BIASES = ("as_is", "pull_up", "pull_down", "disabled")


@dataclass(frozen=True)
class ButtonPress:
    """One debounced press (the line became active)."""

    t: float  # time.monotonic() seconds of the edge
    seq: int  # 0, 1, 2, ... per watch


class OutputLine(Protocol):
    """A requested output line, held until released."""

    def set(self, active: bool) -> None: ...
    def release(self, *, set_inactive: bool) -> None: ...


class InputLine(Protocol):
    """A requested input line."""

    def get(self) -> bool: ...
    def release(self) -> None: ...


class ButtonWatch(Protocol):
    """Async context manager and async iterator of debounced presses of one line."""

    async def __aenter__(self) -> ButtonWatch: ...
    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def __aiter__(self) -> AsyncIterator[ButtonPress]: ...
    async def __anext__(self) -> ButtonPress: ...


class GpioBackend(Protocol):
    """What tools and the button wake mode need from GPIO, nothing more."""

    def open_output(self, chip: str, line: int | str, *, active_low: bool) -> OutputLine:
        """Request `line` as an output driven inactive; ToolError naming chip and line if impossible."""
        ...

    def open_input(self, chip: str, line: int | str, *, active_low: bool, bias: str = "as_is") -> InputLine:
        """Request `line` as an input; ToolError naming chip and line if impossible."""
        ...

    def watch_button(self, chip: str, line: int | str, *, active_low: bool, debounce_ms: int) -> ButtonWatch:
        """A watch of `line` (requested on enter) yielding debounced presses."""
        ...

    def close(self) -> None:
        """Release every line still requested (idempotent)."""
        ...


def make_gpio_backend(kind: str) -> GpioBackend:
    """The backend named by `[gpio] backend`: "gpiod" (real lines) or "fake" (recording)."""
    if kind == "gpiod":
        return GpiodBackend()
    if kind == "fake":
        return FakeGpio()
    raise ToolError(f'gpio.backend: unknown backend {kind!r} (expected "gpiod" or "fake")')


def _where(chip: str, line: int | str) -> str:
    return f"GPIO chip {chip!r} line {line!r}"


class _PressQueue:
    """Bounded queue of presses shared by both watch sides; drops the newest press when full."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._queue: asyncio.Queue[ButtonPress] = asyncio.Queue(maxsize=BUTTON_QUEUE_SIZE)
        self._seq = 0
        self.dropped = 0

    def push(self, t: float) -> None:
        press = ButtonPress(t=t, seq=self._seq)
        self._seq += 1
        try:
            self._queue.put_nowait(press)
        except asyncio.QueueFull:
            self.dropped += 1
            log.debug("%s: press dropped, %d presses already waiting", self._what, self._queue.qsize())

    def __aiter__(self) -> AsyncIterator[ButtonPress]:
        return self

    async def __anext__(self) -> ButtonPress:
        return await self._queue.get()


# --------------------------------------------------------------------------- gpiod (real)


class _GpiodOutput:
    def __init__(self, request: Any, offset: int, where: str) -> None:
        self._request: Any = request
        self._offset = offset
        self._where = where
        self._lock = threading.Lock()

    def set(self, active: bool) -> None:
        from gpiod.line import Value

        with self._lock:
            if self._request is None:
                raise ToolError(f"{self._where}: line already released")
            self._request.set_value(self._offset, Value.ACTIVE if active else Value.INACTIVE)

    def release(self, *, set_inactive: bool) -> None:
        from gpiod.line import Value

        with self._lock:
            request, self._request = self._request, None
            if request is None:
                return
            try:
                if set_inactive:
                    request.set_value(self._offset, Value.INACTIVE)
            finally:
                request.release()


class _GpiodInput:
    def __init__(self, request: Any, offset: int, where: str) -> None:
        self._request: Any = request
        self._offset = offset
        self._where = where
        self._lock = threading.Lock()

    def get(self) -> bool:
        from gpiod.line import Value

        with self._lock:
            if self._request is None:
                raise ToolError(f"{self._where}: line already released")
            return bool(self._request.get_value(self._offset) == Value.ACTIVE)

    def release(self) -> None:
        with self._lock:
            request, self._request = self._request, None
        if request is not None:
            request.release()


class _GpiodButtonWatch(_PressQueue):
    """Edge events of one line read from its request fd by the event loop (no thread)."""

    def __init__(self, backend: GpiodBackend, chip: str, line: int | str, active_low: bool, debounce_ms: int) -> None:
        super().__init__(_where(chip, line))
        self._backend = backend
        self._chip, self._line = chip, line
        self._active_low = active_low
        self._debounce_ms = debounce_ms
        self._request: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> _GpiodButtonWatch:
        from gpiod import LineSettings
        from gpiod.line import Direction, Edge

        settings = LineSettings(
            direction=Direction.INPUT,
            edge_detection=Edge.BOTH,
            active_low=self._active_low,
            debounce_period=timedelta(milliseconds=self._debounce_ms),
        )
        self._request, _ = await asyncio.to_thread(self._backend.request_line, self._chip, self._line, settings)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._request.fd, self._on_readable)
        return self

    def _on_readable(self) -> None:
        from gpiod.edge_event import EdgeEvent

        try:
            events = self._request.read_edge_events()
        except OSError as exc:
            log.warning("%s: reading edge events failed: %s", self._what, exc)
            return
        for event in events:
            # With active_low the kernel reports edges of the logical value: rising = pressed.
            if event.event_type == EdgeEvent.Type.RISING_EDGE:
                self.push(event.timestamp_ns / 1e9)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        request, self._request = self._request, None
        if request is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(request.fd)
        request.release()


class GpiodBackend:
    """Real GPIO lines through libgpiod v2. Each line is its own request, held until released."""

    def __init__(self, *, consumer: str = CONSUMER, dev_dir: str = "/dev") -> None:
        self._consumer = consumer
        self._dev_dir = dev_dir
        self._held: list[_GpiodOutput | _GpiodInput] = []

    def resolve_chip(self, chip: str, line: int | str) -> str:
        """The device path of `chip`: a path, a name under /dev ("gpiochip0"), or a chip label."""
        import gpiod

        if "/" in chip:
            if not os.path.exists(chip):
                raise ToolError(f"{_where(chip, line)}: {chip} does not exist")
            return chip
        direct = os.path.join(self._dev_dir, chip)
        if os.path.exists(direct):
            return direct
        devices = sorted(glob.glob(os.path.join(self._dev_dir, "gpiochip*")))
        for path in devices:
            try:
                with gpiod.Chip(path) as c:
                    info = c.get_info()
            except OSError as exc:
                log.debug("cannot open %s while looking for chip %r: %s", path, chip, exc.strerror)
                continue
            if chip in (info.label, info.name):
                return path
        among = ", ".join(devices) if devices else f"there are no {self._dev_dir}/gpiochip* devices"
        raise ToolError(f"{_where(chip, line)}: no chip with that name or label ({among})")

    def request_line(self, chip: str, line: int | str, settings: Any) -> tuple[Any, int]:
        """Request one line with `settings`; (request, offset). ToolError with a clear reason."""
        import gpiod

        where = _where(chip, line)
        path = self.resolve_chip(chip, line)
        try:
            with gpiod.Chip(path) as c:
                try:
                    offset = c.line_offset_from_id(line)
                except ValueError:
                    raise ToolError(f"{where}: offset out of range (chip has {c.get_info().num_lines} lines)") from None
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        raise ToolError(f"{where}: no line with that name on {path}") from None
                    raise
                request = c.request_lines(config={offset: settings}, consumer=self._consumer)
        except ToolError:
            raise
        except FileNotFoundError:
            raise ToolError(f"{where}: {path} does not exist") from None
        except PermissionError:
            raise ToolError(f"{where}: permission denied on {path} (is the user in the gpio group?)") from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise ToolError(f"{where}: line is busy (requested by another program or service)") from None
            if exc.errno in (errno.ENODEV, errno.ENOTTY):
                raise ToolError(f"{where}: {path} is not a GPIO chip device") from None
            raise ToolError(f"{where}: cannot request the line: {exc.strerror or exc}") from None
        return request, offset

    def open_output(self, chip: str, line: int | str, *, active_low: bool) -> OutputLine:
        from gpiod import LineSettings
        from gpiod.line import Direction, Value

        settings = LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE, active_low=active_low)
        request, offset = self.request_line(chip, line, settings)
        out = _GpiodOutput(request, offset, _where(chip, line))
        self._held.append(out)
        return out

    def open_input(self, chip: str, line: int | str, *, active_low: bool, bias: str = "as_is") -> InputLine:
        from gpiod import LineSettings
        from gpiod.line import Bias, Direction

        if bias not in BIASES:
            raise ToolError(f"{_where(chip, line)}: unknown bias {bias!r}")
        settings = LineSettings(direction=Direction.INPUT, active_low=active_low, bias=Bias[bias.upper()])
        request, offset = self.request_line(chip, line, settings)
        inp = _GpiodInput(request, offset, _where(chip, line))
        self._held.append(inp)
        return inp

    def watch_button(self, chip: str, line: int | str, *, active_low: bool, debounce_ms: int) -> ButtonWatch:
        return _GpiodButtonWatch(self, chip, line, active_low, debounce_ms)

    def close(self) -> None:
        held, self._held = self._held, []
        for item in held:
            try:
                if isinstance(item, _GpiodOutput):
                    item.release(set_inactive=False)
                else:
                    item.release()
            except OSError as exc:
                log.warning("releasing a GPIO line failed: %s", exc)


# --------------------------------------------------------------------------- fake


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
        self._lines: dict[tuple[str, int], _FakeLine] = {}
        self._levels: dict[tuple[str, int], bool] = {}
        self._watches: dict[tuple[str, int], list[_FakeButtonWatch]] = {}
        self._lock = threading.Lock()

    def _record(self, op: str, key: tuple[str, int], value: bool | None = None) -> None:
        self.records.append(GpioRecord(time.monotonic(), op, key[0], key[1], value))

    def resolve(self, chip: str, line: int | str) -> tuple[str, int]:
        """(device path, offset) of a chip path/name/label and a line offset/name, or ToolError."""
        where = _where(chip, line)
        found = [c for c in self.chips if chip in (c.path, os.path.basename(c.path), c.label)]
        if not found:
            among = ", ".join(c.path for c in self.chips) or "there are no GPIO chips"
            raise ToolError(f"{where}: no chip with that name or label ({among})")
        c = found[0]
        if isinstance(line, int):
            if not 0 <= line < len(c.line_names):
                raise ToolError(f"{where}: offset out of range (chip has {len(c.line_names)} lines)")
            return c.path, line
        if line in c.line_names:
            return c.path, c.line_names.index(line)
        if line.isdigit() and int(line) < len(c.line_names):
            return c.path, int(line)
        raise ToolError(f"{where}: no line with that name on {c.path}")

    def _request(self, chip: str, line: int | str, direction: str, active_low: bool) -> tuple[str, int]:
        key = self.resolve(chip, line)
        with self._lock:
            if key in self._lines:
                raise ToolError(f"{_where(chip, line)}: line is busy (requested by another program or service)")
            level = self._levels.get(key, False) if direction != "output" else active_low
            self._lines[key] = _FakeLine(direction, active_low, level)
            self._levels[key] = level
        self._record(f"request_{direction}", key)
        return key

    def _drop(self, key: tuple[str, int]) -> None:
        with self._lock:
            self._lines.pop(key, None)
        self._record("release", key)

    def open_output(self, chip: str, line: int | str, *, active_low: bool) -> OutputLine:
        return _FakeOutput(self, self._request(chip, line, "output", active_low))

    def open_input(self, chip: str, line: int | str, *, active_low: bool, bias: str = "as_is") -> InputLine:
        if bias not in BIASES:
            raise ToolError(f"{_where(chip, line)}: unknown bias {bias!r}")
        return _FakeInput(self, self._request(chip, line, "input", active_low))

    def watch_button(self, chip: str, line: int | str, *, active_low: bool, debounce_ms: int) -> ButtonWatch:
        return _FakeButtonWatch(self, chip, line, active_low, debounce_ms)

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

    def requested(self) -> set[tuple[str, int]]:
        """(chip path, offset) of every line currently requested."""
        return set(self._lines)

    def press(self, chip: str, line: int | str) -> int:
        """Simulate a press of a watched button; returns how many watches accepted it (after debounce)."""
        key = self.resolve(chip, line)
        self._record("press", key)
        return sum(w.deliver(time.monotonic()) for w in self._watches.get(key, []))


class _FakeOutput:
    def __init__(self, fake: FakeGpio, key: tuple[str, int]) -> None:
        self._fake, self._key = fake, key
        self._released = False

    def set(self, active: bool) -> None:
        if self._released:
            raise ToolError(f"{_where(*self._key)}: line already released")
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
    def __init__(self, fake: FakeGpio, key: tuple[str, int]) -> None:
        self._fake, self._key = fake, key
        self._released = False

    def get(self) -> bool:
        if self._released:
            raise ToolError(f"{_where(*self._key)}: line already released")
        state = self._fake._lines[self._key]
        value = state.level != state.active_low
        self._fake._record("read", self._key, value)
        return value

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._fake._drop(self._key)


class _FakeButtonWatch(_PressQueue):
    def __init__(self, fake: FakeGpio, chip: str, line: int | str, active_low: bool, debounce_ms: int) -> None:
        super().__init__(_where(chip, line))
        self._fake = fake
        self._chip, self._line = chip, line
        self._active_low = active_low
        self._debounce_s = debounce_ms / 1000
        self._key: tuple[str, int] | None = None
        self._last: float | None = None
        self.debounced = 0

    async def __aenter__(self) -> _FakeButtonWatch:
        self._key = self._fake._request(self._chip, self._line, "button", self._active_low)
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


__all__ = [
    "ButtonPress",
    "ButtonWatch",
    "FakeChip",
    "FakeGpio",
    "GpioBackend",
    "GpioRecord",
    "GpiodBackend",
    "InputLine",
    "OutputLine",
    "make_gpio_backend",
]
