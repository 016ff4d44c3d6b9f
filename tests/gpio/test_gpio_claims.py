"""Line claiming: one owner per line in a backend, whoever asks (a tool, the wake button); both owners named."""

from __future__ import annotations

import errno
import tomllib
from pathlib import Path
from typing import Any

import gpiod
import pytest

from vatel_edge.config.tools import parse_tools
from vatel_edge.errors import GpioError, ToolError
from vatel_edge.gpio import WAKE_BUTTON_OWNER, FakeGpio, GpiodBackend, LineClaims
from vatel_edge.tools.registry import ToolRegistry

pytestmark = pytest.mark.timeout(60)

LAMP = '[tools.lamp]\naction = "gpio"\nchip = "gpiochip0"\nline = 17\nvalue = true\n'


def test_claims_hold_one_owner_per_line() -> None:
    """The first claim takes the line, the same owner again passes (False), another owner is refused naming both."""
    claims = LineClaims()
    assert claims.claim(("/dev/gpiochip0", 17), "tool 'lamp'") is True
    assert claims.claim(("/dev/gpiochip0", 17), "tool 'lamp'") is False
    assert claims.claim(("/dev/gpiochip0", 18), WAKE_BUTTON_OWNER) is True
    with pytest.raises(GpioError) as info:
        claims.claim(("/dev/gpiochip0", 17), WAKE_BUTTON_OWNER)
    assert str(info.value) == "GPIO chip '/dev/gpiochip0' line 17 is claimed by tool 'lamp' and by wake.button"
    assert claims.owner(("/dev/gpiochip0", 17)) == "tool 'lamp'"
    claims.release(("/dev/gpiochip0", 17))
    claims.release(("/dev/gpiochip0", 17))  # idempotent
    assert claims.owner(("/dev/gpiochip0", 17)) is None
    assert claims.claim(("/dev/gpiochip0", 17), WAKE_BUTTON_OWNER) is True


async def test_wake_button_on_a_tool_line_is_refused_naming_both() -> None:
    """The button asking for a tool's line (another spelling of it) fails naming the tool and the button."""
    fake = FakeGpio()
    async with ToolRegistry(parse_tools(tomllib.loads(LAMP)["tools"]), fake, max_concurrency=1, environ={}):
        watch = fake.watch_button("pinctrl-bcm2711", "GPIO17", active_low=True, debounce_ms=50)
        with pytest.raises(GpioError) as info:
            async with watch:
                pass
        assert str(info.value) == "GPIO chip '/dev/gpiochip0' line 17 is claimed by tool 'lamp' and by wake.button"
        assert fake.requested() == {("/dev/gpiochip0", 17)}
        assert [r.op for r in fake.records] == ["request_output"]  # the refused request never reached the line


async def test_tool_on_the_wake_button_line_is_refused_naming_both() -> None:
    """Button first, then a tool on its line: the registry fails to start, naming the tool, the button and itself."""
    fake = FakeGpio()
    async with fake.watch_button("gpiochip0", 17, active_low=True, debounce_ms=50, owner=WAKE_BUTTON_OWNER):
        with pytest.raises(ToolError) as info:
            async with ToolRegistry(parse_tools(tomllib.loads(LAMP)["tools"]), fake, max_concurrency=1, environ={}):
                pass
        assert str(info.value) == (
            "tools.lamp: GPIO chip '/dev/gpiochip0' line 17 is claimed by wake.button and by tool 'lamp'"
        )
    assert fake.requested() == set()
    assert fake.claims.owner(("/dev/gpiochip0", 17)) is None


def test_same_owner_requesting_again_fails_as_busy_as_before() -> None:
    """The same owner asking twice gets today's answer (busy) and keeps its first line; release frees the claim."""
    fake = FakeGpio()
    first = fake.open_output("gpiochip0", 17, active_low=False, owner="tool 'lamp'")
    with pytest.raises(GpioError, match=r"GPIO chip 'gpiochip0' line 'GPIO17': line is busy"):
        fake.open_input("gpiochip0", "GPIO17", active_low=False, owner="tool 'lamp'")
    assert fake.claims.owner(("/dev/gpiochip0", 17)) == "tool 'lamp'"
    first.set(True)
    first.release(set_inactive=True)
    assert fake.claims.owner(("/dev/gpiochip0", 17)) is None
    fake.open_input("gpiochip0", 17, active_low=False, owner=WAKE_BUTTON_OWNER).release()


def test_line_held_by_another_program_frees_the_claim() -> None:
    """A line busy outside this process fails as busy and leaves no claim behind."""
    fake = FakeGpio()
    fake.hold_elsewhere("gpiochip0", 5)
    with pytest.raises(GpioError, match="line is busy"):
        fake.open_output("gpiochip0", 5, active_low=False, owner="tool 'relay'")
    assert fake.claims.owner(("/dev/gpiochip0", 5)) is None


class _Request:
    def __init__(self) -> None:
        self.released = False

    def set_value(self, offset: int, value: Any) -> None:
        pass

    def release(self) -> None:
        self.released = True


class _Chip:
    """Stands in for gpiod.Chip (no gpiochip here): offsets as given, one request per offset, EBUSY after."""

    held: set[int] = set()  # noqa: RUF012 - shared on purpose: the "kernel" state across Chip objects

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> _Chip:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def line_offset_from_id(self, line: int | str) -> int:
        return int(str(line).removeprefix("GPIO"))

    def request_lines(self, config: dict[int, Any], consumer: str) -> _Request:
        (offset,) = config
        if offset in self.held:
            raise OSError(errno.EBUSY, "Device or resource busy")
        self.held.add(offset)
        return _Request()


def test_gpiod_backend_claims_before_the_kernel_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real backend refuses a second owner before asking the kernel, and frees a claim whose request failed."""
    chip = tmp_path / "gpiochip0"
    chip.write_text("")
    monkeypatch.setattr(gpiod, "Chip", _Chip)
    monkeypatch.setattr(_Chip, "held", {5})  # line 5 is held by another program
    backend = GpiodBackend()
    out = backend.open_output(str(chip), "GPIO17", active_low=False, owner="tool 'lamp'")
    with pytest.raises(GpioError) as info:
        backend.open_input(str(chip), 17, active_low=True, owner=WAKE_BUTTON_OWNER)
    assert str(info.value) == f"GPIO chip '{chip}' line 17 is claimed by tool 'lamp' and by wake.button"
    with pytest.raises(GpioError, match="line is busy"):
        backend.open_output(str(chip), 5, active_low=False, owner="tool 'relay'")
    assert backend.claims.owner((str(chip), 5)) is None
    out.release(set_inactive=True)
    assert backend.claims.owner((str(chip), 17)) is None
