"""The real GPIO side: libgpiod v2 Python bindings (gpiod 2.x), one line request per line.

Chips are found by path, by name under /dev or by label; every failure to find or request a line is a
GpioError naming chip and line. The `gpiod` module is imported where it is used.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any

from vatel_edge.errors import GpioError
from vatel_edge.gpio.base import (
    BIASES,
    CONSUMER,
    WAKE_BUTTON_OWNER,
    ButtonWatch,
    InputLine,
    LineClaims,
    LineId,
    OutputLine,
    PressQueue,
    where,
)

log = logging.getLogger(__name__)


class _GpiodOutput:
    def __init__(self, request: Any, offset: int, label: str, on_release: Callable[[], None]) -> None:
        self._request: Any = request
        self._offset = offset
        self._where = label
        self._on_release = on_release
        self._lock = threading.Lock()

    def set(self, active: bool) -> None:
        from gpiod.line import Value

        with self._lock:
            if self._request is None:
                raise GpioError(f"{self._where}: line already released")
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
                self._on_release()


class _GpiodInput:
    def __init__(self, request: Any, offset: int, label: str, on_release: Callable[[], None]) -> None:
        self._request: Any = request
        self._offset = offset
        self._where = label
        self._on_release = on_release
        self._lock = threading.Lock()

    def get(self) -> bool:
        from gpiod.line import Value

        with self._lock:
            if self._request is None:
                raise GpioError(f"{self._where}: line already released")
            return bool(self._request.get_value(self._offset) == Value.ACTIVE)

    def release(self) -> None:
        with self._lock:
            request, self._request = self._request, None
        if request is not None:
            try:
                request.release()
            finally:
                self._on_release()


class _GpiodButtonWatch(PressQueue):
    """Edge events of one line read from its request fd by the event loop (no thread)."""

    def __init__(
        self, backend: GpiodBackend, chip: str, line: int | str, active_low: bool, debounce_ms: int, owner: str
    ) -> None:
        super().__init__(where(chip, line))
        self._backend = backend
        self._chip, self._line = chip, line
        self._active_low = active_low
        self._debounce_ms = debounce_ms
        self._owner = owner
        self._request: Any = None
        self._line_id: LineId | None = None
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
        self._request, self._line_id = await asyncio.to_thread(
            self._backend.request_line, self._chip, self._line, settings, owner=self._owner
        )
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
        try:
            request.release()
        finally:
            if self._line_id is not None:
                self._backend.claims.release(self._line_id)


class GpiodBackend:
    """Real GPIO lines through libgpiod v2. Each line is its own request, held until released."""

    def __init__(self, *, consumer: str = CONSUMER, dev_dir: str = "/dev") -> None:
        self._consumer = consumer
        self._dev_dir = dev_dir
        self._held: list[_GpiodOutput | _GpiodInput] = []
        self.claims = LineClaims()

    def resolve_chip(self, chip: str, line: int | str) -> str:
        """The device path of `chip`: a path, a name under /dev ("gpiochip0"), or a chip label."""
        import gpiod

        if "/" in chip:
            if not os.path.exists(chip):
                raise GpioError(f"{where(chip, line)}: {chip} does not exist")
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
        raise GpioError(f"{where(chip, line)}: no chip with that name or label ({among})")

    def request_line(self, chip: str, line: int | str, settings: Any, *, owner: str) -> tuple[Any, LineId]:
        """Claim and request one line with `settings`; (request, (path, offset)). GpioError with a clear reason."""
        import gpiod

        here = where(chip, line)
        path = self.resolve_chip(chip, line)
        try:
            with gpiod.Chip(path) as c:
                try:
                    offset = c.line_offset_from_id(line)
                except ValueError:
                    raise GpioError(f"{here}: offset out of range (chip has {c.get_info().num_lines} lines)") from None
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        raise GpioError(f"{here}: no line with that name on {path}") from None
                    raise
                claimed = self.claims.claim((path, offset), owner)
                try:
                    request = c.request_lines(config={offset: settings}, consumer=self._consumer)
                except BaseException:
                    if claimed:
                        self.claims.release((path, offset))
                    raise
        except GpioError:
            raise
        except FileNotFoundError:
            raise GpioError(f"{here}: {path} does not exist") from None
        except PermissionError:
            raise GpioError(f"{here}: permission denied on {path} (is the user in the gpio group?)") from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise GpioError(f"{here}: line is busy (requested by another program or service)") from None
            if exc.errno in (errno.ENODEV, errno.ENOTTY):
                raise GpioError(f"{here}: {path} is not a GPIO chip device") from None
            raise GpioError(f"{here}: cannot request the line: {exc.strerror or exc}") from None
        return request, (path, offset)

    def open_output(self, chip: str, line: int | str, *, active_low: bool, owner: str) -> OutputLine:
        from gpiod import LineSettings
        from gpiod.line import Direction, Value

        settings = LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE, active_low=active_low)
        request, line_id = self.request_line(chip, line, settings, owner=owner)
        out = _GpiodOutput(request, line_id[1], where(chip, line), lambda: self.claims.release(line_id))
        self._held.append(out)
        return out

    def open_input(
        self, chip: str, line: int | str, *, active_low: bool, owner: str, bias: str = "as_is"
    ) -> InputLine:
        from gpiod import LineSettings
        from gpiod.line import Bias, Direction

        if bias not in BIASES:
            raise GpioError(f"{where(chip, line)}: unknown bias {bias!r}")
        settings = LineSettings(direction=Direction.INPUT, active_low=active_low, bias=Bias[bias.upper()])
        request, line_id = self.request_line(chip, line, settings, owner=owner)
        inp = _GpiodInput(request, line_id[1], where(chip, line), lambda: self.claims.release(line_id))
        self._held.append(inp)
        return inp

    def watch_button(
        self, chip: str, line: int | str, *, active_low: bool, debounce_ms: int, owner: str = WAKE_BUTTON_OWNER
    ) -> ButtonWatch:
        return _GpiodButtonWatch(self, chip, line, active_low, debounce_ms, owner)

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
