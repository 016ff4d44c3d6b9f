"""The [tools.NAME] config tables (vatel_edge.config.tools): valid shapes and one line per problem naming the key."""

from __future__ import annotations

import pytest

from tests.support.tools import tools_from_toml
from vatel_edge.config import loads_config
from vatel_edge.config.tools import BuiltinSpec, GpioSpec, HttpSpec, Placeholder, ShellSpec, Template
from vatel_edge.errors import ConfigError

BRIEF_EXAMPLE = """
[tools.set_light]
action = "gpio"
chip = "/dev/gpiochip0"
line = 17
value = "{on}"
active_low = false

[tools.door_state]
action = "gpio"
chip = "gpiochip0"
line = "GPIO27"
read = true
states = ["closed", "open"]

[tools.play_station]
action = "shell"
argv = ["/usr/local/bin/radio", "--station", "{station}", "--volume={level}"]
timeout_s = 10
[tools.play_station.args.station]
type = "enum"
choices = ["bbc", "npr"]
[tools.play_station.args.level]
type = "integer"
min = 0
max = 10
required = false
default = 5

[tools.scene]
action = "http"
method = "POST"
url = "http://homeassistant.local:8123/api/services/scene/turn_on"
json = { entity_id = "scene.{name}" }
headers_env = { Authorization = "HA_TOKEN_HEADER" }
timeout_s = 5
[tools.scene.args.name]
pattern = "[a-z0-9_]+"

[tools.volume]
action = "builtin"
name = "set_volume"
"""


def test_the_documented_example_parses() -> None:
    """The example tool tables of the docs parse into the expected specs."""
    tools = tools_from_toml(BRIEF_EXAMPLE)
    light = tools["set_light"].params
    assert isinstance(light, GpioSpec)
    assert (light.chip, light.line, light.mode, light.value) == ("/dev/gpiochip0", 17, "set", Placeholder("on"))
    assert tools["set_light"].args["on"].type == "boolean"  # declared by the value placeholder itself
    door = tools["door_state"].params
    assert isinstance(door, GpioSpec) and door.mode == "read" and door.states == ("closed", "open")
    radio = tools["play_station"]
    assert isinstance(radio.params, ShellSpec)
    assert radio.params.argv[3] == Template(("--volume=", Placeholder("level")))
    assert radio.args["level"].default == 5 and not radio.args["level"].required
    scene = tools["scene"].params
    assert isinstance(scene, HttpSpec) and scene.method == "POST" and dict(scene.headers_env) == {
        "Authorization": "HA_TOKEN_HEADER"
    }
    assert tools["scene"].timeout_s == 5.0
    volume = tools["volume"]
    assert volume.params == BuiltinSpec("set_volume") and volume.args["level"].max == 100


def test_tools_reach_the_whole_config() -> None:
    """The config loader hands [tools] to parse_tools and keeps the result on Config.tools."""
    cfg = loads_config('[vatel]\nagent_id = "123e4567-e89b-12d3-a456-426614174000"\n' + BRIEF_EXAMPLE)
    assert set(cfg.tools) == {"set_light", "door_state", "play_station", "scene", "volume"}


def test_config_problems_are_merged_with_other_sections() -> None:
    """A bad tool table and a bad [audio] key are both reported by loads_config."""
    text = (
        '[vatel]\nagent_id = "123e4567-e89b-12d3-a456-426614174000"\n[audio]\nframe_ms = 7\n'
        '[tools.x]\naction = "shel"\n'
    )
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    assert any(p.startswith("audio.frame_ms:") for p in info.value.problems)
    expected = 'tools.x.action: expected one of "gpio" | "shell" | "http" | "builtin", got "shel"'
    assert expected + ' (did you mean "shell"?)' in info.value.problems


T = "[tools.t]\n"
SH = T + 'action = "shell"\nargv = ["/bin/true"]\n'
GP = T + 'action = "gpio"\nchip = "gpiochip0"\nline = 3\n'
HT = T + 'action = "http"\nurl = "http://h/x"\n'

BAD_CASES = [
    (T + 'description = "x"', "tools.t.action: required key is missing"),
    (SH + 'timeout = 3', 'tools.t.timeout: unknown key for action = "shell" (did you mean "timeout_s"?)'),
    (SH + 'timeout_s = 0', "tools.t.timeout_s: expected a number 0.1..3600, got 0"),
    (SH + 'cancel_on_interruption = "yes"', "tools.t.cancel_on_interruption: expected a boolean"),
    (T + 'action = "shell"', "tools.t.argv: required key is missing"),
    (T + 'action = "shell"\nargv = []', "tools.t.argv: expected a non-empty array of strings"),
    (T + 'action = "shell"\nargv = ["/bin/echo", 3]', "tools.t.argv: expected a non-empty array of strings"),
    (T + 'action = "shell"\nargv = ["{prog}"]\nargs.prog = {}', "tools.t.argv[0]: the program must be a fixed"),
    (
        T + 'action = "shell"\nargv = ["/bin/echo", "{statin}"]\nargs.station = {}',
        'tools.t.argv[1]: placeholder {statin} does not name a declared argument (did you mean "station"?)',
    ),
    (
        T + 'action = "shell"\nargv = ["/bin/echo", "{n}"]\nargs.n = {required = false}',
        "tools.t.argv[1]: placeholder {n} refers to optional argument n without a default",
    ),
    (SH + 'max_output_bytes = 10', "tools.t.max_output_bytes: expected an integer 64..1048576, got 10"),
    (SH + 'env_pass = ["A B"]', 'tools.t.env_pass: not an environment variable name: "A B"'),
    (
        SH + 'args.x = {type = "str"}',
        'tools.t.args.x.type: expected one of "string" | "integer" | "number" | "boolean" | "enum", got "str" '
        '(did you mean "string"?)',
    ),
    (SH + 'args.x = {typ = "string"}', 'tools.t.args.x.typ: unknown key (did you mean "type"?)'),
    (SH + 'args.x = {type = "enum"}', 'tools.t.args.x.choices: required for type = "enum"'),
    (SH + 'args.x = {choices = ["a"]}', 'tools.t.args.x.choices: only applies to type = "enum"'),
    (SH + 'args.x = {type = "enum", choices = ["a", "a"]}', "tools.t.args.x.choices: has duplicates"),
    (SH + 'args.x = {min = 1}', 'tools.t.args.x.min: only applies to type = "integer" or "number"'),
    (SH + 'args.x = {type = "integer", min = 5, max = 1}', "tools.t.args.x.min: 5 is greater than max (1)"),
    (SH + 'args.x = {type = "integer", min = 0.5}', "tools.t.args.x.min: expected an integer"),
    (SH + 'args.x = {pattern = "("}', "tools.t.args.x.pattern: not a valid regular expression"),
    (SH + 'args.x = {type = "integer", pattern = "[0-9]"}', 'tools.t.args.x.pattern: only applies to type = "string"'),
    (
        SH + 'args.x = {type = "integer", default = "5"}',
        'tools.t.args.x.default: expected a value of type integer, got "5"',
    ),
    (SH + 'args.x = {type = "integer", max = 3, default = 5}', "tools.t.args.x.default: 5 is above the maximum 3"),
    (SH + 'args.x = {default = "a", required = true}', "tools.t.args.x.required: true contradicts the default"),
    (SH + 'args.1x = {}', "tools.t.args.1x: argument names must be identifiers"),
    (T + 'action = "gpio"\nline = 3\nvalue = true', "tools.t.chip: required key is missing"),
    (T + 'action = "gpio"\nchip = "gpiochip0"\nvalue = true', "tools.t.line: required key is missing"),
    (
        T + 'action = "gpio"\nchip = "gpiochip0"\nline = 512\nvalue = true',
        "tools.t.line: expected an integer 0..511 or a line name, got 512",
    ),
    (
        T + 'action = "gpio"\nchip = "gpiochip0"\nline = true\nvalue = true',
        "tools.t.line: expected an integer 0..511 or a line name, got true",
    ),
    (
        T + 'action = "gpio"\nchip = "gpiochip0"\nline = 3',
        "tools.t: give exactly one of value, pulse_ms or read = true (got none)",
    ),
    (
        GP + 'value = true\npulse_ms = 5',
        "tools.t: give exactly one of value, pulse_ms or read = true (got value and pulse_ms)",
    ),
    (GP + 'value = "on"', 'tools.t.value: expected true, false or "{argument}", got "on"'),
    (
        GP + 'value = "{x}"\nargs.x = {type = "string"}',
        "tools.t.value: placeholder {x} must refer to a boolean argument, not string",
    ),
    (GP + 'pulse_ms = 20000', "tools.t.pulse_ms: 20000 ms does not fit in timeout_s (10 s)"),
    (GP + 'read = true\nstates = ["a"]', "tools.t.states: expected two labels [inactive, active], got 1"),
    (GP + 'value = true\nstates = ["a", "b"]', "tools.t.states: only applies to read = true"),
    (GP + 'read = true\non_exit = "keep"', "tools.t.on_exit: only applies to output lines"),
    (GP + 'value = true\non_exit = "off"', 'tools.t.on_exit: expected one of "inactive" | "keep", got "off"'),
    (
        GP + 'read = true\nbias = "pullup"',
        'tools.t.bias: expected one of "as_is" | "pull_up" | "pull_down" | "disabled", got "pullup" '
        '(did you mean "pull_up"?)',
    ),
    (GP + 'value = true\nargv = ["x"]', 'tools.t.argv: unknown key for action = "gpio"'),
    (T + 'action = "http"', "tools.t.url: required key is missing"),
    (T + 'action = "http"\nurl = "ftp://h/x"', 'tools.t.url: expected an http:// or https:// URL, got "ftp://h/x"'),
    (
        T + 'action = "http"\nurl = "http://{host}/x"\nargs.host = {}',
        "tools.t.url: placeholders may only appear after the host",
    ),
    (
        T + 'action = "http"\nurl = "http://h{port}/x"\nargs.port = {}',
        "tools.t.url: placeholders may only appear after the host",
    ),
    (
        HT + 'method = "FETCH"',
        'tools.t.method: expected one of "GET" | "POST" | "PUT" | "PATCH" | "DELETE", got "FETCH"',
    ),
    (HT + 'json = {a = "{b}"}', "tools.t.json.a: placeholder {b} does not name a declared argument"),
    (HT + 'json = {a = ["{b}"]}', "tools.t.json.a[0]: placeholder {b} does not name a declared argument"),
    (HT + 'headers_env = {Authorization = 5}', "tools.t.headers_env.Authorization: expected a string, got 5"),
    (
        HT + 'headers_env = {Authorization = "HA TOKEN"}',
        'tools.t.headers_env.Authorization: not an environment variable name: "HA TOKEN"',
    ),
    (HT + 'headers = {"Bad Header" = "x"}', "tools.t.headers.Bad Header: not a valid HTTP header name"),
    (T + 'action = "builtin"', "tools.t.name: required key is missing"),
    (
        T + 'action = "builtin"\nname = "set_volum"',
        'tools.t.name: expected one of "set_volume" | "end_session" | "device_status", got "set_volum" '
        '(did you mean "set_volume"?)',
    ),
    (T + 'action = "builtin"\nname = "end_session"\nargs.x = {}', "tools.t.args: built-in tools have fixed arguments"),
    ("[tools]\nt = 3", "tools.t: expected a table, got 3"),
]
BAD_IDS = [f"{p.split(':')[0]}-{i}" for i, (_, p) in enumerate(BAD_CASES)]


@pytest.mark.parametrize(("toml", "problem"), BAD_CASES, ids=BAD_IDS)
def test_each_config_error_names_the_key_path(toml: str, problem: str) -> None:
    """Every invalid tool table is a ConfigError with one line that starts with the key path."""
    with pytest.raises(ConfigError) as info:
        tools_from_toml(toml)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_all_problems_of_all_tools_are_collected() -> None:
    """Problems in several tools are reported together, one line each."""
    with pytest.raises(ConfigError) as info:
        tools_from_toml(
            '[tools.a]\naction = "shel"\n[tools.b]\naction = "http"\n[tools.c]\naction = "builtin"\nname = "x"'
        )
    assert [p.split(":")[0] for p in info.value.problems] == ["tools.a.action", "tools.b.url", "tools.c.name"]


def test_an_invalid_argument_does_not_also_cascade_into_placeholder_errors() -> None:
    """A placeholder naming a declared-but-invalid argument reports only the argument's problem."""
    with pytest.raises(ConfigError) as info:
        tools_from_toml('[tools.t]\naction = "shell"\nargv = ["/bin/echo", "{x}"]\nargs.x = {type = "str"}')
    assert [p.split(":")[0] for p in info.value.problems] == ["tools.t.args.x.type"]


def test_line_given_as_digit_string_is_an_offset() -> None:
    """line = "17" means offset 17; other strings are line names."""
    tools = tools_from_toml('[tools.t]\naction = "gpio"\nchip = "gpiochip0"\nline = "17"\nvalue = true')
    params = tools["t"].params
    assert isinstance(params, GpioSpec) and params.line == 17


def test_two_tools_may_share_a_line_only_with_the_same_settings() -> None:
    """Tools sharing a line share one request, so their direction and polarity must agree."""
    same = tools_from_toml(
        '[tools.on]\naction = "gpio"\nchip = "gpiochip0"\nline = 5\nvalue = true\n'
        '[tools.off]\naction = "gpio"\nchip = "gpiochip0"\nline = 5\nvalue = false\n'
    )
    assert set(same) == {"on", "off"}
    with pytest.raises(ConfigError) as info:
        tools_from_toml(
            '[tools.on]\naction = "gpio"\nchip = "gpiochip0"\nline = 5\nvalue = true\n'
            '[tools.read]\naction = "gpio"\nchip = "gpiochip0"\nline = 5\nread = true\n'
        )
    assert info.value.problems[0].startswith("tools.read.line: gpiochip0 line 5 is also used by tools.on")


def test_templates_support_escaped_braces_and_leave_other_braces_alone() -> None:
    """{{ and }} are literal braces; braces around a non-identifier are plain text."""
    assert Template.parse("{{x}}").parts == ("{x}",)
    assert Template.parse("awk '{print $1}'").parts == ("awk '{print $1}'",)
    assert Template.parse("a{b}c").parts == ("a", Placeholder("b"), "c")


def test_every_example_in_the_tools_cookbook_parses() -> None:
    """The TOML blocks of docs/TOOLS.md are valid tool tables."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "TOOLS.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 5
    tools = tools_from_toml("\n".join(blocks))
    assert {"set_light", "relay_on", "door_state", "play_station", "scene", "thermostat", "set_volume"} <= set(tools)
