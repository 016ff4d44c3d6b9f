"""The recording fake GPIO backend: its button watch, and picking a backend by `[gpio] backend`."""

from __future__ import annotations

import asyncio

import pytest

from vatel_edge.errors import ToolError
from vatel_edge.gpio import FakeGpio, GpiodBackend, make_gpio_backend

pytestmark = pytest.mark.timeout(60)

CHIP = "/dev/gpiochip0"


async def test_fake_button_watch_yields_debounced_presses() -> None:
    """The fake's button watch yields presses; a second press within the debounce period is dropped."""
    fake = FakeGpio()
    async with fake.watch_button("gpiochip0", "GPIO4", active_low=True, debounce_ms=60_000) as watch:
        assert fake.press("gpiochip0", 4) == 1
        assert fake.press("gpiochip0", 4) == 0  # bounce
        press = await asyncio.wait_for(watch.__anext__(), 5)
        assert press.seq == 0
        assert (CHIP, 4) in fake.requested()
    assert fake.requested() == set()
    async with fake.watch_button("gpiochip0", 4, active_low=True, debounce_ms=0) as watch:
        fake.press(CHIP, 4)
        fake.press(CHIP, 4)
        got = [await asyncio.wait_for(watch.__anext__(), 5) for _ in range(2)]
        assert [p.seq for p in got] == [0, 1]


def test_make_gpio_backend_picks_the_configured_side() -> None:
    """"gpiod" gives the real backend, "fake" the recording one; anything else is an error."""
    assert isinstance(make_gpio_backend("gpiod"), GpiodBackend)
    assert isinstance(make_gpio_backend("fake"), FakeGpio)
    with pytest.raises(ToolError, match="unknown backend"):
        make_gpio_backend("sysfs")
