"""check_config_command: exit 0/1/2, a summary on success, one problem per line on failure, no key."""

from __future__ import annotations

import io
from pathlib import Path

from vatel_edge.cli import check_config_command
from vatel_edge.config import DEFAULT_CONFIG_PATH

AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
SECRET = "sk-test-0123456789abcdef"
KEY_ENV = {"ORG_API_KEY": SECRET}


def run(path: Path | str, environ: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config_command(str(path), out, err, environ=environ)
    assert SECRET not in out.getvalue() + err.getvalue()
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_default_path_is_etc() -> None:
    """The documented default location."""
    assert DEFAULT_CONFIG_PATH == "/etc/vatel-edge/config.toml"


def test_valid_config_prints_ok_and_summary(tmp_path: Path) -> None:
    """Exit 0; OK line then agent, base_url, wake mode, devices and tool count; nothing on stderr."""
    path = write(
        tmp_path,
        f'[vatel]\nagent_id = "{AGENT}"\n[wake]\nmode = "always"\n[audio]\ncapture_device = "hw:1"\n',
    )
    code, out, err = run(path, KEY_ENV)
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"OK: {path}"
    summary = "\n".join(lines[1:])
    for expected in (AGENT, "https://api.vatel.ai", "always", "capture=hw:1", "playback=default", "tools:    0"):
        assert expected in summary


def test_invalid_config_exits_2_with_each_problem_on_its_own_line(tmp_path: Path) -> None:
    """Exit 2; every problem on its own stderr line, then a count; nothing on stdout."""
    path = write(tmp_path, '[vatel]\nagent_id = "x"\n[audio]\nvolume = 9\n[wkae]\n')
    code, out, err = run(path, KEY_ENV)
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        'wkae: unknown section (did you mean "wake"?)',
        'vatel.agent_id: expected a UUID, got "x"',
        "audio.volume: expected a number 0.0..4.0, got 9.0",
        f"INVALID: {path} (3 problems)",
    ]


def test_syntax_error_exits_2_with_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error is an invalid config (2), reported with its position."""
    path = write(tmp_path, f'[vatel]\nagent_id = "{AGENT}"\nbase_url = https://x\n')
    code, _, err = run(path, KEY_ENV)
    assert code == 2
    assert err.splitlines()[0].startswith(f"{path}: TOML syntax error at line 3, column 12:")


def test_missing_api_key_is_a_problem(tmp_path: Path) -> None:
    """A valid file whose key cannot be found exits 2 naming the env var."""
    path = write(tmp_path, f'[vatel]\nagent_id = "{AGENT}"\n')
    code, out, err = run(path, {})
    assert code == 2
    assert out == ""
    assert err.splitlines()[0].startswith("vatel.api_key_env: environment variable ORG_API_KEY is not set")
    assert err.splitlines()[-1] == f"INVALID: {path} (1 problem)"


def test_key_problem_reported_with_other_problems(tmp_path: Path) -> None:
    """An unusable key file is reported alongside problems in other sections."""
    keyfile = tmp_path / "key"
    keyfile.write_text(SECRET, encoding="utf-8")
    keyfile.chmod(0o644)
    path = write(tmp_path, f'[vatel]\nagent_id = "{AGENT}"\napi_key_file = "{keyfile}"\n[audio]\nvolume = 9\n')
    code, _, err = run(path, KEY_ENV)
    assert code == 2
    lines = err.splitlines()
    assert "audio.volume: expected a number 0.0..4.0, got 9.0" in lines
    assert any(line.startswith(f"vatel.api_key_file: {keyfile} is accessible by group or others") for line in lines)


def test_key_is_not_checked_when_key_settings_are_invalid(tmp_path: Path) -> None:
    """A broken api_key_env is reported once; no second, confusing "not set" problem."""
    path = write(tmp_path, f'[vatel]\nagent_id = "{AGENT}"\napi_key_env = "not a name"\n')
    code, _, err = run(path, {})
    assert code == 2
    assert len(err.splitlines()) == 2
    assert err.splitlines()[0].startswith("vatel.api_key_env: expected an environment variable name")


def test_missing_file_exits_1(tmp_path: Path) -> None:
    """A config path that does not exist exits 1 with a one-line message."""
    path = tmp_path / "absent.toml"
    code, out, err = run(path, KEY_ENV)
    assert (code, out, err) == (1, "", f"{path}: no such config file\n")


def test_unreadable_file_exits_1(tmp_path: Path) -> None:
    """A path that cannot be read (here a directory: root can read any mode) exits 1."""
    code, out, err = run(tmp_path, KEY_ENV)
    assert code == 1
    assert out == ""
    assert err.startswith(f"{tmp_path}: cannot read config file:")


def test_non_utf8_file_exits_2(tmp_path: Path) -> None:
    """A readable file that is not UTF-8 is an invalid config."""
    path = write(tmp_path, b'[vatel]\nagent_id = "\xff"\n')
    code, _, err = run(path, KEY_ENV)
    assert code == 2
    assert err.splitlines()[0] == f"{path}: not UTF-8 text (bad byte at offset 20)"
