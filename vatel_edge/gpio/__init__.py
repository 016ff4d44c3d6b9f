"""GPIO as its own layer: a narrow interface (base.py) with a real side (gpiod.py) and a recording fake (fake.py).

`make_gpio_backend` picks one by the `[gpio] backend` setting. Tools, the wake button and whatever comes
next (LEDs, a mute switch) request lines through it under an owner label; one owner per line.
"""

from __future__ import annotations

from vatel_edge.errors import GpioError
from vatel_edge.gpio.base import (
    BIASES,
    WAKE_BUTTON_OWNER,
    ButtonPress,
    ButtonWatch,
    GpioBackend,
    InputLine,
    LineClaims,
    LineId,
    OutputLine,
)
from vatel_edge.gpio.fake import FakeChip, FakeGpio, GpioRecord
from vatel_edge.gpio.gpiod import GpiodBackend


def make_gpio_backend(kind: str) -> GpioBackend:
    """The backend named by `[gpio] backend`: "gpiod" (real lines) or "fake" (recording)."""
    if kind == "gpiod":
        return GpiodBackend()
    if kind == "fake":
        return FakeGpio()
    raise GpioError(f'gpio.backend: unknown backend {kind!r} (expected "gpiod" or "fake")')


__all__ = [
    "BIASES",
    "WAKE_BUTTON_OWNER",
    "ButtonPress",
    "ButtonWatch",
    "FakeChip",
    "FakeGpio",
    "GpioBackend",
    "GpioError",
    "GpioRecord",
    "GpiodBackend",
    "InputLine",
    "LineClaims",
    "LineId",
    "OutputLine",
    "make_gpio_backend",
]
