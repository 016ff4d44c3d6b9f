"""The real gpiod backend (libgpiod v2 bindings) without GPIO chips: every error path names chip and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vatel_edge.errors import ToolError
from vatel_edge.gpio import GpiodBackend

pytestmark = pytest.mark.timeout(60)


def test_gpiod_missing_chip_path_names_chip_and_line() -> None:
    """With the real gpiod library, a chip path that does not exist is a ToolError naming chip and line."""
    with pytest.raises(ToolError) as info:
        GpiodBackend().open_output("/dev/gpiochip7", 17, active_low=False, owner="test")
    assert str(info.value) == "GPIO chip '/dev/gpiochip7' line 17: /dev/gpiochip7 does not exist"


def test_gpiod_chip_name_without_devices_is_a_clear_error(tmp_path: Path) -> None:
    """A chip name or label with no matching device lists what was looked at."""
    with pytest.raises(ToolError) as info:
        GpiodBackend(dev_dir=str(tmp_path)).open_input("pinctrl-bcm2711", "GPIO27", active_low=False, owner="test")
    assert str(info.value) == (
        f"GPIO chip 'pinctrl-bcm2711' line 'GPIO27': no chip with that name or label "
        f"(there are no {tmp_path}/gpiochip* devices)"
    )


def test_gpiod_file_that_is_not_a_chip_is_a_clear_error(tmp_path: Path) -> None:
    """A /dev entry that is not a GPIO character device is reported as such (real gpiod open fails)."""
    (tmp_path / "gpiochip0").write_text("")
    backend = GpiodBackend(dev_dir=str(tmp_path))
    with pytest.raises(ToolError) as info:
        backend.open_output("gpiochip0", "GPIO17", active_low=False, owner="test")
    assert str(info.value) == f"GPIO chip 'gpiochip0' line 'GPIO17': {tmp_path}/gpiochip0 is not a GPIO chip device"
    with pytest.raises(ToolError, match="no chip with that name or label"):
        backend.open_output("pinctrl-bcm2711", 17, active_low=False, owner="test")  # the scan skips the non-chip


async def test_gpiod_button_watch_on_a_missing_chip_fails_on_enter() -> None:
    """The real button watch requests its line on enter and fails clearly when the chip is missing."""
    watch = GpiodBackend().watch_button("/dev/gpiochip9", 4, active_low=True, debounce_ms=50)
    with pytest.raises(ToolError, match="GPIO chip '/dev/gpiochip9' line 4: /dev/gpiochip9 does not exist"):
        async with watch:
            pass
