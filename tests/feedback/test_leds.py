"""State LEDs on the recording fake GPIO: the patterns, the claims shared with the tools, the config's checks."""

from __future__ import annotations

import asyncio

import pytest

from vatel_edge.config import loads_config
from vatel_edge.config.schema import LedsConfig
from vatel_edge.errors import ConfigError, GpioError
from vatel_edge.feedback.leds import StateLeds
from vatel_edge.feedback.visible import Visible
from vatel_edge.gpio import FakeGpio

CHIP = "/dev/gpiochip0"
AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
LEDS = LedsConfig(listening="5:on", connecting="6:blink:200", in_session="6:on, 12:on", muted="19:on",
                  agent_speaking="12:off, 13:on")


def sets(gpio: FakeGpio) -> list[tuple[int, bool | None]]:
    return [(r.offset, r.value) for r in gpio.records if r.op == "set"]


async def test_each_state_lights_its_lines_and_every_other_led_is_off() -> None:
    """Only level changes are written; a state's setting names some lines, the rest go dark."""
    gpio = FakeGpio()
    async with StateLeds(LEDS, gpio) as leds:
        assert gpio.requested() == {(CHIP, n) for n in (5, 6, 12, 19, 13)}
        await leds.show(Visible.LISTENING)
        assert sets(gpio) == [(5, True)]
        await leds.show(Visible.IN_SESSION)
        assert sets(gpio)[1:] == [(5, False), (6, True), (12, True)]
        await leds.show(Visible.AGENT_SPEAKING)
        assert sets(gpio)[4:] == [(6, False), (12, False), (13, True)]
        await leds.show(Visible.OFFLINE)  # no setting: everything off
        assert sets(gpio)[7:] == [(13, False)]
    assert gpio.requested() == set()  # released, driven off


async def test_blink_toggles_at_its_period_and_stops_when_the_state_changes() -> None:
    gpio = FakeGpio()
    async with StateLeds(LEDS, gpio) as leds:
        await leds.show(Visible.CONNECTING)
        await asyncio.sleep(0.55)  # 200 ms period: on at 0, off at 0.1, on at 0.2 ...
        toggles = [v for n, v in sets(gpio) if n == 6]
        assert 5 <= len(toggles) <= 7 and toggles[:3] == [True, False, True]
        await leds.show(Visible.MUTED)
        settled = len(sets(gpio))
        await asyncio.sleep(0.3)
        assert len(sets(gpio)) == settled, "the blink went on after the state changed"
        assert gpio.is_active(CHIP, 19) and not gpio.is_active(CHIP, 6)


async def test_a_line_held_by_a_tool_is_refused_naming_both() -> None:
    """The same claims as the tools: the LED's request fails naming the tool and feedback.leds; nothing is held."""
    gpio = FakeGpio()
    gpio.open_output("gpiochip0", 12, active_low=False, owner="tool 'lamp'")
    with pytest.raises(GpioError, match=r"line 12 is claimed by tool 'lamp' and by feedback.leds"):
        async with StateLeds(LEDS, gpio):
            pass
    assert gpio.requested() == {(CHIP, 12)}


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads_config(f'[vatel]\nagent_id = "{AGENT}"\n' + text)
    return info.value.problems


def test_config_names_both_users_of_a_line_and_checks_the_settings() -> None:
    """check-config finds an LED line a tool, a button or the switch also uses; bad settings are one line each."""
    found = problems(
        '[feedback.leds]\nlistening = "17:on"\nmuted = "22 on"\nconnecting = "5:blink:20"\n'
        '[feedback.hooks]\ncommand = ["/bin/x", "{state}"]\n'
        '[privacy]\nmute_switch_line = "17"\n[buttons]\ntalk_line = "27"\nvolume_up_line = "27"\n'
        '[tools.lamp]\naction = "gpio"\nchip = "gpiochip0"\nline = 17\nvalue = "{on}"\n'
    )
    assert found[:3] == [
        'feedback.leds.muted: expected LINE:PATTERN items, comma-separated (PATTERN on, off, blink or '
        'blink:PERIOD_MS), or empty, got "22 on"',
        "feedback.leds.connecting: blink period of line 5 must be 100..10000 ms, got 20",
        "feedback.hooks.command[1]: unknown placeholder {state} (known: {old}, {new})",
    ]
    found = problems(
        '[feedback.leds]\nlistening = "17:on"\n[privacy]\nmute_switch_line = "17"\n'
        '[buttons]\ntalk_line = "27"\nvolume_up_line = "27"\n'
        '[tools.lamp]\naction = "gpio"\nchip = "/dev/gpiochip0"\nline = 17\nvalue = "{on}"\n'
    )
    assert found == [
        "feedback.leds.listening: GPIO chip 'gpiochip0' line '17' is claimed by tool 'lamp' and by feedback.leds",
        "privacy.mute_switch_line: GPIO chip 'gpiochip0' line '17' is claimed by tool 'lamp' and by "
        "privacy.mute_switch",
        "buttons.talk_line: GPIO chip 'gpiochip0' line '27' is claimed by buttons.volume_up and by buttons.talk",
    ]


def test_nested_sections_load_beside_their_parent() -> None:
    """[feedback] and [feedback.leds] in one file: each its own section; a non-table under the name is refused."""
    cfg = loads_config(f'[vatel]\nagent_id = "{AGENT}"\n[feedback]\nend_sound = "/x.wav"\n'
                       '[feedback.leds]\nlistening = "GPIO5:on, 6:blink"\n[feedback.hooks]\ncommand = ["/bin/true"]\n')
    assert cfg.feedback.end_sound == "/x.wav" and cfg.feedback_leds.listening == "GPIO5:on, 6:blink"
    assert cfg.feedback_hooks.command == ("/bin/true",)
    assert problems("[feedback]\nleds = 3\n") == ["feedback.leds: expected a table, got 3"]
