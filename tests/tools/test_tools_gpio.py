"""GPIO actions through the registry: on the fake backend, and a start-up error on the real gpiod one.

The backends themselves are tested in tests/gpio/.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.tools import RecordingContext, make_call, tools_from_toml
from vatel_edge.errors import ToolError
from vatel_edge.gpio import FakeGpio, GpiodBackend
from vatel_edge.tools.registry import ToolRegistry

pytestmark = pytest.mark.timeout(60)

CHIP = "/dev/gpiochip0"

LIGHTS = """
[tools.set_light]
action = "gpio"
chip = "/dev/gpiochip0"
line = 17
value = "{on}"

[tools.relay_on]
action = "gpio"
chip = "gpiochip0"
line = "GPIO22"
value = true
active_low = true
on_exit = "keep"

[tools.relay_off]
action = "gpio"
chip = "gpiochip0"
line = "GPIO22"
value = false
active_low = true
on_exit = "keep"

[tools.door_state]
action = "gpio"
chip = "pinctrl-bcm2711"
line = "GPIO27"
read = true
states = ["closed", "open"]

[tools.raw_input]
action = "gpio"
chip = "gpiochip0"
line = 5
read = true
active_low = true
bias = "pull_up"

[tools.doorbell]
action = "gpio"
chip = "gpiochip0"
line = 6
pulse_ms = 30
cancel_on_interruption = true
"""


def registry_for(toml: str, fake: FakeGpio) -> ToolRegistry:
    return ToolRegistry(tools_from_toml(toml), fake, max_concurrency=4, environ={})


async def test_set_drives_the_line_from_a_boolean_argument(ctx: RecordingContext) -> None:
    """value = "{on}" drives line 17 active/inactive from the agent's on (strings accepted); the answer is "ok"."""
    fake = FakeGpio()
    async with registry_for(LIGHTS, fake) as reg:
        assert fake.is_active(CHIP, 17) is False  # requested inactive on enter
        assert await reg.call(make_call("set_light", on="true"), ctx) == "ok"
        assert fake.is_active(CHIP, 17) is True and fake.level(CHIP, 17) is True
        assert await reg.call(make_call("set_light", on=False), ctx) == "ok"
        assert fake.is_active(CHIP, 17) is False
        assert await reg.call(make_call("set_light", on="dim"), ctx) == (
            "error: argument on: expected a boolean (true/false), got 'dim'"
        )
        assert await reg.call(make_call("set_light"), ctx) == "error: missing required argument on"
    sets = [r.value for r in fake.records if r.op == "set" and r.offset == 17]
    assert sets == [True, False, False]  # the last one: on_exit = "inactive"


async def test_output_lines_are_requested_once_and_values_persist(ctx: RecordingContext) -> None:
    """Lines are requested on enter (two tools on GPIO22 share one request) and hold their value between calls."""
    fake = FakeGpio()
    async with registry_for(LIGHTS, fake) as reg:
        requests = [r for r in fake.records if r.op.startswith("request_")]
        assert sorted(r.offset for r in requests) == [5, 6, 17, 22, 27]
        assert await reg.call(make_call("relay_on"), ctx) == "ok"
        await asyncio.sleep(0)
        assert fake.is_active(CHIP, 22) is True
        assert fake.level(CHIP, 22) is False  # active_low: active = low
        assert await reg.call(make_call("relay_off"), ctx) == "ok"
        assert fake.is_active(CHIP, 22) is False and fake.level(CHIP, 22) is True
        assert await reg.call(make_call("relay_on"), ctx) == "ok"
        assert len([r for r in fake.records if r.op.startswith("request_")]) == 5
    assert fake.requested() == set()


async def test_on_exit_keep_leaves_the_value_and_inactive_resets_it(ctx: RecordingContext) -> None:
    """on_exit = "keep" releases without touching the line; the default "inactive" drives it inactive first."""
    fake = FakeGpio()
    async with registry_for(LIGHTS, fake) as reg:
        await reg.call(make_call("relay_on"), ctx)
        await reg.call(make_call("set_light", on=True), ctx)
    assert fake.level(CHIP, 22) is False  # still driven active (active_low)
    assert fake.level(CHIP, 17) is False
    last_sets = {r.offset: r.value for r in fake.records if r.op == "set"}
    assert last_sets == {22: True, 17: False, 6: False}


async def test_read_answers_the_value_or_the_state_label(ctx: RecordingContext) -> None:
    """read = true answers "1"/"0", or the states labels; active_low inverts the physical level."""
    fake = FakeGpio()
    async with registry_for(LIGHTS, fake) as reg:
        assert await reg.call(make_call("door_state"), ctx) == "closed"
        fake.set_level(CHIP, 27, True)
        assert await reg.call(make_call("door_state"), ctx) == "open"
        fake.set_level(CHIP, 5, True)
        assert await reg.call(make_call("raw_input"), ctx) == "0"
        fake.set_level(CHIP, 5, False)
        assert await reg.call(make_call("raw_input"), ctx) == "1"


async def test_pulse_drives_active_then_inactive(ctx: RecordingContext) -> None:
    """pulse_ms drives the line active, waits, and leaves it inactive."""
    fake = FakeGpio()
    async with registry_for(LIGHTS, fake) as reg:
        assert await reg.call(make_call("doorbell"), ctx) == "ok"
        assert fake.is_active(CHIP, 6) is False
    assert [r.value for r in fake.records if r.op == "set" and r.offset == 6] == [True, False, False]


async def test_interrupted_pulse_still_ends_inactive(ctx: RecordingContext) -> None:
    """A long pulse cancelled on barge-in leaves its line inactive and answers the cancellation."""
    fake = FakeGpio()
    toml = '[tools.buzz]\naction = "gpio"\nchip = "gpiochip0"\nline = 12\npulse_ms = 20000\ntimeout_s = 30\n'
    toml += "cancel_on_interruption = true\n"
    async with registry_for(toml, fake) as reg:
        task = asyncio.create_task(reg.call(make_call("buzz"), ctx))
        for _ in range(500):
            if fake.is_active(CHIP, 12):
                break
            await asyncio.sleep(0.01)
        assert fake.is_active(CHIP, 12) is True
        assert reg.cancel_interruptible() == 1
        assert await task == "error: cancelled (user interrupted)"
        assert fake.is_active(CHIP, 12) is False


async def test_only_configured_lines_are_ever_touched(ctx: RecordingContext) -> None:
    """Whatever the agent sends (other line numbers, chip names, junk), only config lines are requested or set."""
    fake = FakeGpio()
    async with registry_for(LIGHTS, fake) as reg:
        hostile = [
            make_call("set_light", on=True, line=3, chip="/dev/gpiochip1", offset=4),
            make_call("set_light", on="1; line=4"),
            make_call("door_state", line=2),
            make_call("raw_input", chip="gpiochip0", line="GPIO2"),
            make_call("relay_on", value=False, line=9),
            make_call("doorbell", pulse_ms=999999, line=8),
            make_call("gpio", chip="gpiochip0", line=2),
            make_call("set_line_2", on=True),
        ]
        for call in hostile:
            await reg.call(call, ctx)
    touched = {r.offset for r in fake.records}
    assert touched == {5, 6, 17, 22, 27}
    assert {r.chip for r in fake.records} == {CHIP}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[tools.x]\naction = "gpio"\nchip = "gpiochip9"\nline = 17\nvalue = true',
            "tools.x: GPIO chip 'gpiochip9' line 17: no chip with that name or label (/dev/gpiochip0)",
        ),
        (
            '[tools.x]\naction = "gpio"\nchip = "gpiochip0"\nline = "GPIO99"\nvalue = true',
            "tools.x: GPIO chip 'gpiochip0' line 'GPIO99': no line with that name on /dev/gpiochip0",
        ),
        (
            '[tools.x]\naction = "gpio"\nchip = "gpiochip0"\nline = 100\nread = true',
            "tools.x: GPIO chip 'gpiochip0' line 100: offset out of range (chip has 58 lines)",
        ),
    ],
)
async def test_missing_chip_or_line_is_a_startup_error_naming_tool_chip_and_line(toml: str, message: str) -> None:
    """A chip or line that does not exist stops start-up with a ToolError naming the tool, chip and line."""
    fake = FakeGpio()
    with pytest.raises(ToolError) as info:
        first = '[tools.a]\naction = "gpio"\nchip = "gpiochip0"\nline = 1\nvalue = true\n'
        async with registry_for(first + toml, fake):
            pass
    assert str(info.value) == message
    assert fake.requested() == set()  # the line requested before the failure was released


async def test_busy_line_is_a_startup_error() -> None:
    """A line already held elsewhere (another program, a running daemon) is reported as busy."""
    fake = FakeGpio()
    fake.hold_elsewhere("gpiochip0", 17)
    with pytest.raises(ToolError, match=r"tools\.set_light: GPIO chip '/dev/gpiochip0' line 17: line is busy"):
        async with registry_for(LIGHTS, fake):
            pass


# ----------------------------------------------------------------------------- real gpiod


async def test_gpiod_registry_start_fails_naming_the_tool() -> None:
    """A registry on the real backend reports the tool whose chip is missing."""
    tools = tools_from_toml('[tools.lamp]\naction = "gpio"\nchip = "/dev/gpiochip3"\nline = "GPIO17"\nvalue = true')
    with pytest.raises(ToolError) as info:
        async with ToolRegistry(tools, GpiodBackend(), max_concurrency=1):
            pass
    assert str(info.value) == "tools.lamp: GPIO chip '/dev/gpiochip3' line 'GPIO17': /dev/gpiochip3 does not exist"
