"""The GPIO interface: output lines, input lines, button presses, and who claimed which line.

Both sides (gpiod.py, fake.py) implement `GpioBackend`. Every request names its owner (a tool, the wake
button, ...); one owner per line: a second owner asking for a line already claimed is a GpioError naming
both, before any request reaches the kernel. Every failure names chip and line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from vatel_edge.errors import GpioError

log = logging.getLogger(__name__)

CONSUMER = "vatel-edge"
#: Presses waiting for the daemon; when full, newer presses are dropped (one waiting press already wakes).
BUTTON_QUEUE_SIZE = 8
BIASES = ("as_is", "pull_up", "pull_down", "disabled")
#: The owner of the wake button's line (the [wake] button_* keys).
WAKE_BUTTON_OWNER = "wake.button"

#: A line as the hardware knows it: (chip device path, line offset).
LineId = tuple[str, int]


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
    """What tools and the button wake mode need from GPIO, nothing more.

    `owner` labels who asks ("tool 'lamp'", "wake.button"); see `LineClaims`.
    """

    def open_output(self, chip: str, line: int | str, *, active_low: bool, owner: str) -> OutputLine:
        """Request `line` as an output driven inactive; GpioError naming chip and line if impossible."""
        ...

    def open_input(
        self, chip: str, line: int | str, *, active_low: bool, owner: str, bias: str = "as_is"
    ) -> InputLine:
        """Request `line` as an input; GpioError naming chip and line if impossible."""
        ...

    def watch_button(
        self, chip: str, line: int | str, *, active_low: bool, debounce_ms: int, owner: str = WAKE_BUTTON_OWNER
    ) -> ButtonWatch:
        """A watch of `line` (claimed and requested on enter) yielding debounced presses."""
        ...

    def close(self) -> None:
        """Release every line still requested (idempotent)."""
        ...


def where(chip: str, line: int | str) -> str:
    """How a line is named in every GPIO message."""
    return f"GPIO chip {chip!r} line {line!r}"


class LineClaims:
    """One owner per line within one backend: whoever asks (a tool output, the wake button, an LED...).

    Claims are taken before the line is requested and dropped when it is released. The same owner
    asking again is let through, so its request fails as it always did (busy); another owner is refused
    here with both names, which the kernel's "busy" could not say.
    """

    def __init__(self) -> None:
        self._owners: dict[LineId, str] = {}
        self._lock = threading.Lock()

    def claim(self, line: LineId, owner: str) -> bool:
        """Claim `line` for `owner`; True when this call took it (False: `owner` already held it).

        GpioError "GPIO chip '/dev/gpiochip0' line 17 is claimed by tool 'lamp' and by wake.button"
        when another owner holds it.
        """
        with self._lock:
            holder = self._owners.get(line)
            if holder is None:
                self._owners[line] = owner
                return True
        if holder != owner:
            raise GpioError(f"{where(*line)} is claimed by {holder} and by {owner}")
        return False

    def release(self, line: LineId) -> None:
        """Drop the claim on `line` (idempotent)."""
        with self._lock:
            self._owners.pop(line, None)

    def owner(self, line: LineId) -> str | None:
        """Who holds `line`, None when nobody does."""
        return self._owners.get(line)


class PressQueue:
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
