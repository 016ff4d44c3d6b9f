"""Config validation: every class of error names the key path and what is wrong, all at once."""

from __future__ import annotations

import dataclasses

import pytest

from vatel_edge.config import (
    SECTIONS,
    AudioConfig,
    Config,
    VatelConfig,
    coerce_field,
    config_from_dict,
    describe_value,
    did_you_mean,
    loads_config,
    parse_section,
)
from vatel_edge.errors import ConfigError

AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
VATEL = f'[vatel]\nagent_id = "{AGENT}"\n'


def problems_of(text: str) -> list[str]:
    """The problems loads_config reports for `text` (fails the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        loads_config(text, "test.toml")
    return info.value.problems


def test_minimal_config_gives_defaults_everywhere() -> None:
    """Only vatel.agent_id is required; every other section takes its dataclass defaults."""
    cfg = loads_config(VATEL)
    assert cfg.vatel == VatelConfig(agent_id=AGENT)
    for name, cls in SECTIONS.items():
        if name != "vatel":
            assert cfg.section(name) == cls()
    assert cfg.tools == {}
    assert cfg.vatel.ws_base == "wss://api.vatel.ai"


def test_sections_are_frozen() -> None:
    """Config sections are frozen dataclasses: nothing can change them after validation."""
    cfg = loads_config(VATEL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.audio.volume = 2.0  # type: ignore[misc]


# --------------------------------------------------------------------------- syntax, required


def test_toml_syntax_error_names_line_and_column() -> None:
    """A TOML syntax error is one problem carrying the file, the line and the column."""
    text = VATEL + "[audio]\nvolume = = 1\n"
    assert problems_of(text) == ["test.toml: TOML syntax error at line 4, column 10: Invalid value"]


def test_unterminated_table_header_is_a_syntax_error() -> None:
    """A broken [header] is reported with its position."""
    (problem,) = problems_of("[vatel\n")
    assert problem.startswith("test.toml: TOML syntax error at line 1, column 7:")


def test_duplicate_key_is_a_syntax_error() -> None:
    """TOML forbids defining a key twice; the loader says so instead of keeping either value."""
    (problem,) = problems_of(VATEL + f'agent_id = "{AGENT}"\n')
    assert "TOML syntax error" in problem


def test_huge_integer_literal_is_a_config_error() -> None:
    """tomllib raises ValueError for integers over 4300 digits; that must still be a ConfigError."""
    (problem,) = problems_of(VATEL + "[audio]\nvolume = " + "1" * 5000 + "\n")
    assert problem.startswith("test.toml: TOML value out of range")


def test_deeply_nested_arrays_are_a_config_error() -> None:
    """tomllib recurses per nesting level; a hostile file must give ConfigError, not RecursionError."""
    (problem,) = problems_of("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in problem


def test_empty_file_reports_missing_agent_id() -> None:
    """An empty file is missing [vatel] and so its one required key."""
    assert problems_of("") == ["vatel.agent_id: required key is missing"]


def test_empty_agent_id_is_reported_as_empty_not_as_bad_uuid() -> None:
    """agent_id = "" is one problem (empty), not two."""
    assert problems_of('[vatel]\nagent_id = ""\n') == ["vatel.agent_id: required key is empty"]


def test_wrong_typed_agent_id_is_not_also_reported_missing() -> None:
    """A present but mistyped required key gives the type problem only."""
    assert problems_of("[vatel]\nagent_id = 5\n") == ['vatel.agent_id: expected a string, got 5 (write it quoted: "5")']


# --------------------------------------------------------------------------- unknown names


def test_unknown_section_with_suggestion() -> None:
    """A misspelt section name is an error suggesting the right one."""
    assert problems_of(VATEL + "[sesion]\n") == ['sesion: unknown section (did you mean "session"?)']


def test_unknown_section_without_close_match_has_no_suggestion() -> None:
    """No "did you mean" when nothing is close."""
    assert problems_of(VATEL + "[zzzzqqq]\n") == ["zzzzqqq: unknown section"]


def test_unknown_key_with_suggestion() -> None:
    """A misspelt key names its section and suggests the right key."""
    assert problems_of(VATEL + "[audio]\nvolum = 1.0\n") == ['audio.volum: unknown key (did you mean "volume"?)']


def test_key_suggestion_is_case_insensitive_first() -> None:
    """`Frame_MS` suggests `frame_ms` even though difflib alone would not."""
    assert did_you_mean("FRAME_MS", ["frame_ms", "volume"]) == ' (did you mean "frame_ms"?)'


def test_nested_unknown_table_is_an_unknown_key() -> None:
    """[audio.extra] is an unknown key of [audio], whatever its contents."""
    assert problems_of(VATEL + "[audio.extra]\nq = 1\n") == ["audio.extra: unknown key"]


def test_key_of_other_section_at_top_level_points_to_its_section() -> None:
    """agent_id written above the first header belongs under [vatel]; the message says so."""
    problems = problems_of(f'agent_id = "{AGENT}"\n')
    assert problems[0].startswith("agent_id: unknown top-level key; it belongs under [vatel]")
    assert problems[1] == "vatel.agent_id: required key is missing"


def test_non_bare_unknown_key_is_quoted_and_stays_on_one_line() -> None:
    """A key with spaces or a line break is quoted in the path, so each problem is one line."""
    problems = problems_of(VATEL + '[audio]\n"a b" = 1\n"x\\ny" = 2\n')
    assert problems == ['audio."a b": unknown key', 'audio."x\\ny": unknown key']


# --------------------------------------------------------------------------- wrong types


def test_section_given_as_a_value_is_refused() -> None:
    """`audio = 5` is not a table."""
    assert problems_of("audio = 5\n" + VATEL) == ["audio: expected a table, got 5"]


def test_section_given_as_an_array_of_tables_is_refused() -> None:
    """[[audio]] makes an array, not a section."""
    assert problems_of(VATEL + "[[audio]]\nvolume = 1.0\n") == ["audio: expected a table, got an array"]


def test_vatel_not_a_table_is_refused() -> None:
    """vatel = "x" is reported once, as not a table."""
    assert problems_of('vatel = "x"\n') == ['vatel: expected a table, got "x"']


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("capture_device = 3", 'audio.capture_device: expected a string, got 3 (write it quoted: "3")'),
        ('capture_device = ["a"]', "audio.capture_device: expected a string, got an array"),
        ('capture_device = {a = 1}', "audio.capture_device: expected a string, got a table"),
        ('frame_ms = "20"', 'audio.frame_ms: expected an integer, got "20"'),
        ("capture_channel = 2.0", "audio.capture_channel: expected an integer 0..31, got 2.0"),
        ("capture_channel = true", "audio.capture_channel: expected an integer 0..31, got true"),
        ("capture_channel = [1]", "audio.capture_channel: expected an integer 0..31, got an array"),
        ('volume = "loud"', 'audio.volume: expected a number 0.0..4.0, got "loud"'),
        ("volume = true", "audio.volume: expected a number 0.0..4.0, got true"),
        ("volume = nan", "audio.volume: expected a number 0.0..4.0, got nan"),
        ("volume = 1979-05-27", "audio.volume: expected a number 0.0..4.0, got 1979-05-27"),
    ],
)
def test_wrong_scalar_type_names_path_expected_and_got(line: str, problem: str) -> None:
    """Each scalar type refuses the others (bool is no integer, a float no integer), naming what it got."""
    assert problems_of(VATEL + f"[audio]\n{line}\n") == [problem]


def test_boolean_field_refuses_strings_and_ints() -> None:
    """allow_insecure = "yes" and = 1 are not booleans."""
    assert problems_of(VATEL + 'allow_insecure = "yes"\n') == ['vatel.allow_insecure: expected a boolean, got "yes"']
    assert problems_of(VATEL + "allow_insecure = 1\n") == ["vatel.allow_insecure: expected a boolean, got 1"]


def test_integer_widens_to_float_field() -> None:
    """An integer is fine where a number is expected, and becomes a float."""
    cfg = loads_config(VATEL + "[audio]\nvolume = 2\n")
    assert cfg.audio.volume == 2.0
    assert isinstance(cfg.audio.volume, float)


def test_line_number_given_unquoted_to_a_string_field_hints_the_quoting() -> None:
    """wake.button_line = 17 explains how to write it."""
    assert problems_of(VATEL + "[wake]\nbutton_line = 17\n") == [
        'wake.button_line: expected a string, got 17 (write it quoted: "17")'
    ]


def test_optional_string_accepts_string_and_refuses_other_types() -> None:
    """A `str | None` field takes a string and names the type when given something else."""
    cfg = loads_config(VATEL + 'first_message = "Hi"\n')
    assert cfg.vatel.first_message == "Hi"
    assert problems_of(VATEL + "first_message = 3\n") == [
        'vatel.first_message: expected a string, got 3 (write it quoted: "3")'
    ]


# --------------------------------------------------------------------------- range, choice, uuid


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("capture_channel = 32", "audio.capture_channel: expected an integer 0..31, got 32"),
        ("capture_channel = -1", "audio.capture_channel: expected an integer 0..31, got -1"),
        ("volume = 4.5", "audio.volume: expected a number 0.0..4.0, got 4.5"),
        ("volume = inf", "audio.volume: expected a number 0.0..4.0, got inf"),
        ("volume = -inf", "audio.volume: expected a number 0.0..4.0, got -inf"),
        ("prebuffer_ms = 1001", "audio.prebuffer_ms: expected an integer 0..1000, got 1001"),
    ],
)
def test_out_of_range_names_the_range(line: str, problem: str) -> None:
    """Numbers outside min..max are refused with the range in the message."""
    assert problems_of(VATEL + f"[audio]\n{line}\n") == [problem]


def test_range_bounds_are_inclusive() -> None:
    """min and max themselves are allowed."""
    cfg = loads_config(VATEL + "[audio]\ncapture_channel = 31\nvolume = 0\n")
    assert (cfg.audio.capture_channel, cfg.audio.volume) == (31, 0.0)


def test_string_choice_with_suggestion() -> None:
    """A string not among the choices lists them and suggests the closest."""
    assert problems_of(VATEL + '[wake]\nmode = "buton"\n') == [
        'wake.mode: expected one of "vad" | "wakeword" | "always" | "button" | "manual", got "buton" '
        '(did you mean "button"?)'
    ]


def test_string_choice_wrong_case_suggests_lower_case() -> None:
    """ "VAD" is refused (choices are exact) but points at "vad"."""
    (problem,) = problems_of(VATEL + '[wake]\nmode = "VAD"\n')
    assert problem.endswith('got "VAD" (did you mean "vad"?)')


def test_integer_choice() -> None:
    """frame_ms takes only its listed values."""
    assert problems_of(VATEL + "[audio]\nframe_ms = 25\n") == [
        "audio.frame_ms: expected one of 10 | 20 | 30 | 40, got 25"
    ]


@pytest.mark.parametrize(
    "value",
    [
        "x",
        "3c90c3cc-0d44-4b50-8888-8dd25736052",
        "3c90c3cc0d444b5088888dd25736052a",
        "3c90c3cc-0d44-4b50-8888-8dd25736052g",
    ],
)
def test_uuid_field_refuses_non_uuids(value: str) -> None:
    """agent_id must look like a UUID."""
    assert problems_of(f'[vatel]\nagent_id = "{value}"\n') == [f'vatel.agent_id: expected a UUID, got "{value}"']


def test_optional_uuid_refuses_empty_string() -> None:
    """version_id = "" is neither unset nor a UUID."""
    assert problems_of(VATEL + 'version_id = ""\n') == ['vatel.version_id: expected a UUID, got ""']


def test_uuid_in_upper_case_is_accepted() -> None:
    """UUIDs are case-insensitive hex."""
    cfg = loads_config(f'[vatel]\nagent_id = "{AGENT.upper()}"\n')
    assert cfg.vatel.agent_id == AGENT.upper()


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    "url",
    ["http://localhost:8080", "http://127.0.0.1:9000", "http://127.0.0.2", "http://[::1]:8000/", "http://localhost."],
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    """A local simulator on loopback may use http (and so ws)."""
    cfg = loads_config(VATEL + f'base_url = "{url}"\n')
    assert cfg.vatel.ws_base.startswith("ws://")


@pytest.mark.parametrize("url", ["http://example.com", "http://10.0.0.5:8080", "http://[2001:db8::1]/", "http://localhost.evil.com"])
def test_plain_http_to_other_hosts_is_refused(url: str) -> None:
    """http:// (so ws://) to a non-loopback host is refused unless allow_insecure."""
    (problem,) = problems_of(VATEL + f'base_url = "{url}"\n')
    assert problem.startswith("vatel.base_url: plain http (and so ws://) to non-loopback host")
    assert "allow_insecure" in problem


def test_allow_insecure_permits_plain_http() -> None:
    """allow_insecure = true lets http:// through to any host."""
    cfg = loads_config(VATEL + 'base_url = "http://example.com"\nallow_insecure = true\n')
    assert cfg.vatel.ws_base == "ws://example.com"


@pytest.mark.parametrize(
    "url", ["ftp://api.vatel.ai", "wss://api.vatel.ai", "api.vatel.ai", "https://", "http://[::1", "https://h:99999"]
)
def test_base_url_must_be_an_http_url(url: str) -> None:
    """Only http(s) URLs with a host and a valid port; a broken URL is a problem, not a crash."""
    (problem,) = problems_of(VATEL + f'base_url = "{url}"\n')
    assert problem.startswith(f'vatel.base_url: expected an http(s) URL, got "{url}"')


def test_base_url_with_credentials_is_refused_without_echoing_them() -> None:
    """user:password@ in the URL is refused, and the password is not repeated."""
    (problem,) = problems_of(VATEL + 'base_url = "https://me:sk-hunter2@api.vatel.ai"\n')
    assert problem.startswith("vatel.base_url: must not contain user:password@")
    assert "hunter2" not in problem


def test_base_url_with_query_is_refused() -> None:
    """A query string would be mangled by the derived WebSocket URL."""
    (problem,) = problems_of(VATEL + 'base_url = "https://api.vatel.ai/?x=1"\n')
    assert problem.startswith("vatel.base_url: must not have a query or fragment")


@pytest.mark.parametrize(
    ("url", "ws"),
    [
        ("https://api.vatel.ai", "wss://api.vatel.ai"),
        ("https://api.vatel.ai/", "wss://api.vatel.ai"),
        ("HTTPS://api.vatel.ai", "wss://api.vatel.ai"),
        ("https://example.com/vatel/", "wss://example.com/vatel"),
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765"),
    ],
)
def test_ws_base_is_derived_from_base_url(url: str, ws: str) -> None:
    """https -> wss and http -> ws, scheme case-insensitive, trailing slash dropped."""
    assert loads_config(VATEL + f'base_url = "{url}"\n').vatel.ws_base == ws


# --------------------------------------------------------------------------- key settings


def test_api_key_env_must_be_a_variable_name_and_is_not_echoed() -> None:
    """A key pasted into api_key_env is refused without being repeated."""
    secret = "sk-live-4f1c2b9e8d7a6"
    (problem,) = problems_of(VATEL + f'api_key_env = "{secret}"\n')
    assert problem.startswith("vatel.api_key_env: expected an environment variable name")
    assert secret not in problem


def test_api_key_file_must_be_absolute_and_is_not_echoed() -> None:
    """A key pasted into api_key_file is refused (not an absolute path) without being repeated."""
    secret = "sk-live-4f1c2b9e8d7a6"
    (problem,) = problems_of(VATEL + f'api_key_file = "{secret}"\n')
    assert problem.startswith("vatel.api_key_file: expected an absolute path")
    assert secret not in problem


# --------------------------------------------------------------------------- cross-field


def test_min_speech_longer_than_window_is_refused() -> None:
    """The VAD could never wake if min_speech_ms exceeds window_ms."""
    assert problems_of(VATEL + "[wake]\nmin_speech_ms = 600\nwindow_ms = 500\n") == [
        "wake.min_speech_ms: 600 is longer than wake.window_ms (500); the VAD could never wake"
    ]


def test_playback_buffer_must_hold_two_periods() -> None:
    """The ALSA buffer must be at least two periods."""
    assert problems_of(VATEL + "[audio]\nplayback_period_ms = 50\nplayback_buffer_ms = 90\n") == [
        "audio.playback_buffer_ms: 90 must be at least two periods (audio.playback_period_ms = 50)"
    ]


def test_button_mode_needs_a_line() -> None:
    """wake.mode = "button" without wake.button_line is refused; with one it loads."""
    assert problems_of(VATEL + '[wake]\nmode = "button"\n') == ['wake.button_line: required when wake.mode = "button"']
    assert loads_config(VATEL + '[wake]\nmode = "button"\nbutton_line = "17"\n').wake.button_line == "17"


def test_token_refresh_margin_must_be_shorter_than_ttl() -> None:
    """A refresh margin as long as the token's life would make every token stale."""
    assert problems_of(VATEL + "token_ttl_s = 10\ntoken_refresh_margin_s = 10\n") == [
        "vatel.token_refresh_margin_s: 10.0 must be shorter than vatel.token_ttl_s (10.0); "
        "every token would be stale on arrival"
    ]


def test_cross_check_is_skipped_when_one_of_its_keys_is_invalid() -> None:
    """An invalid window_ms is reported once; the check against min_speech_ms does not add noise."""
    assert problems_of(VATEL + '[wake]\nmin_speech_ms = 600\nwindow_ms = "x"\n') == [
        'wake.window_ms: expected an integer 10..10000, got "x"'
    ]


# --------------------------------------------------------------------------- all at once


def test_every_problem_is_reported_at_once() -> None:
    """Problems of different sections, types and cross checks come in one ConfigError."""
    text = (
        '[vatel]\nagent_id = "nope"\nbase_url = "http://example.com"\n'
        '[audio]\nvolume = 9\nframe_ms = "20"\nvolum = 1\n'
        "[wake]\nmin_speech_ms = 900\n"
        "[sesion]\n"
    )
    assert sorted(problems_of(text)) == sorted(
        [
            'sesion: unknown section (did you mean "session"?)',
            'vatel.agent_id: expected a UUID, got "nope"',
            'audio.volume: expected a number 0.0..4.0, got 9.0',
            'audio.frame_ms: expected an integer, got "20"',
            'audio.volum: unknown key (did you mean "volume"?)',
            "vatel.base_url: plain http (and so ws://) to non-loopback host 'example.com' is refused; "
            "use https, or set vatel.allow_insecure = true",
            "wake.min_speech_ms: 900 is longer than wake.window_ms (480); the VAD could never wake",
        ]
    )


def test_config_error_message_is_the_problems_one_per_line() -> None:
    """str(ConfigError) is every problem on its own line."""
    with pytest.raises(ConfigError) as info:
        loads_config("[audio]\nvolume = 9\n")
    assert str(info.value).splitlines() == info.value.problems
    assert len(info.value.problems) == 2


def test_tools_table_is_handed_to_the_tools_parser() -> None:
    """[tools] problems come from vatel_edge.config.tools and are reported with the rest."""
    problems = problems_of("[tools]\nx = 1\n")
    assert "vatel.agent_id: required key is missing" in problems
    assert any(p.startswith("tools") for p in problems)


# --------------------------------------------------------------------------- helpers


def test_describe_value_reads_like_toml_and_stays_short() -> None:
    """Strings quoted and escaped, booleans lower-case, long strings shortened with their length."""
    assert describe_value("a") == '"a"'
    assert describe_value('q"\n') == '"q\\"\\n"'
    assert describe_value(True) == "true"
    assert describe_value({}) == "a table"
    assert describe_value([1]) == "an array"
    long = describe_value("x" * 500)
    assert long.endswith("(500 characters)")
    assert len(long) < 100


def test_coerce_field_and_parse_section_directly() -> None:
    """The building blocks work on plain values, as the tools parser uses them."""
    field = {f.name: f for f in dataclasses.fields(AudioConfig)}["volume"]
    assert coerce_field("x.volume", 2, float, field.metadata) == 2.0
    with pytest.raises(ConfigError, match=r"^x\.volume: expected a number 0\.0\.\.4\.0, got 5\.0$"):
        coerce_field("x.volume", 5, float, field.metadata)
    assert parse_section("audio", AudioConfig, {"volume": 0.5}) == AudioConfig(volume=0.5)


def test_config_from_dict_keeps_the_path() -> None:
    """config_from_dict records where the config came from."""
    cfg = config_from_dict({"vatel": {"agent_id": AGENT}}, path="/x.toml")
    assert isinstance(cfg, Config)
    assert cfg.path == "/x.toml"
