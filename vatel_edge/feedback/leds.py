"""State LEDs: [feedback.leds] on GPIO output lines, one pattern per line in each visible state.

Every LED line is requested on enter under the owner "feedback.leds" (gpio/base.py LineClaims: a line a tool
or a button also uses is refused with both names, before anything starts). In each visible state the lines
its setting names show their pattern (on, off, blink with a period, lit first for half of it) and every other
LED line is off; on exit every line is driven off and released. A line is only set when its level changes.
"""

from __future__ import annotations

import asyncio
import logging

from vatel_edge.config.feedback import LEDS_OWNER, LedItem, led_lines, led_settings
from vatel_edge.config.schema import LedsConfig
from vatel_edge.errors import GpioError
from vatel_edge.feedback.visible import Visible
from vatel_edge.gpio import GpioBackend, OutputLine
from vatel_edge.lifecycle import AsyncClosing, TaskSet

log = logging.getLogger(__name__)


class StateLeds(AsyncClosing):
    """The LED lines of one configuration; `await show(visible)` on each visible state change."""

    def __init__(self, cfg: LedsConfig, gpio: GpioBackend) -> None:
        self._cfg = cfg
        self._gpio = gpio
        self._settings = led_settings(cfg)
        self._lines: dict[str, OutputLine] = {}
        self._levels: dict[str, bool] = {}
        self._blinks = TaskSet()
        self.showing: Visible | None = None

    @property
    def lines(self) -> tuple[str, ...]:
        """The configured LED lines (as written in the config)."""
        return tuple(led_lines(self._cfg))

    async def __aenter__(self) -> StateLeds:
        try:
            for line in led_lines(self._cfg):
                self._lines[line] = self._gpio.open_output(
                    self._cfg.chip, line, active_low=self._cfg.active_low, owner=LEDS_OWNER)
                self._levels[line] = False
        except GpioError:
            await self.aclose()
            raise
        if self._lines:
            log.info("state LEDs on %s lines %s", self._cfg.chip, ", ".join(self._lines))
        return self

    async def show(self, visible: Visible) -> None:
        """Show `visible`: its lines their patterns, every other LED line off."""
        self.showing = visible
        await self._blinks.cancel_all()
        items = {item.line: item for item in self._settings.get(visible.value, ())}
        for line in self._lines:
            item = items.get(line)
            if item is None or item.pattern == "off":
                self._set(line, False)
            elif item.pattern == "on":
                self._set(line, True)
            else:
                self._blinks.spawn(self._blink(item), f"led {line} blink")

    def _set(self, line: str, active: bool) -> None:
        if self._levels.get(line) is active:
            return
        try:
            self._lines[line].set(active)
        except GpioError as exc:  # a vanished chip must not stop the feedback of the other lines
            log.warning("LED line %s: %s", line, exc)
            return
        self._levels[line] = active

    async def _blink(self, item: LedItem) -> None:
        half = item.period_ms / 2000.0
        lit = True
        while True:
            self._set(item.line, lit)
            await asyncio.sleep(half)
            lit = not lit

    async def aclose(self) -> None:
        """Stop blinking, drive every LED off and release the lines (idempotent)."""
        await self._blinks.cancel_all()
        lines, self._lines = self._lines, {}
        for line, out in lines.items():
            try:
                out.release(set_inactive=True)
            except GpioError as exc:
                log.warning("LED line %s: %s", line, exc)
