"""read_api_key: env var, key file (0600 only), systemd credentials; the key never appears in errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vatel_edge.config import CREDENTIAL_NAME, VatelConfig, read_api_key
from vatel_edge.errors import ConfigError

AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
SECRET = "sk-test-7c0ffee7c0ffee7c0ffee"


def key_file(tmp_path: Path, content: str, mode: int, name: str = "org_api_key") -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    return path


def refused(vatel: VatelConfig, environ: dict[str, str]) -> str:
    """The error read_api_key raises, checked to be free of the secret."""
    with pytest.raises(ConfigError) as info:
        read_api_key(vatel, environ)
    message = str(info.value)
    assert SECRET not in message
    assert SECRET[8:20] not in message  # not even a slice of it
    return message


def test_key_from_default_env_var() -> None:
    """ORG_API_KEY is read by default, surrounding whitespace stripped."""
    assert read_api_key(VatelConfig(agent_id=AGENT), {"ORG_API_KEY": f"  {SECRET}\n"}) == SECRET


def test_key_from_configured_env_var() -> None:
    """api_key_env names another variable."""
    vatel = VatelConfig(agent_id=AGENT, api_key_env="MY_KEY")
    assert read_api_key(vatel, {"MY_KEY": SECRET, "ORG_API_KEY": "other"}) == SECRET


def test_missing_env_var_names_the_variable() -> None:
    """With no file, credential or variable the error says which variable was looked for."""
    message = refused(VatelConfig(agent_id=AGENT), {})
    assert message.startswith("vatel.api_key_env: environment variable ORG_API_KEY is not set")


def test_blank_env_var_counts_as_missing() -> None:
    """A variable holding only whitespace is no key."""
    message = refused(VatelConfig(agent_id=AGENT), {"ORG_API_KEY": "  \n"})
    assert "ORG_API_KEY is not set" in message


def test_reads_os_environ_when_no_mapping_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit environ the process environment is used."""
    monkeypatch.setenv("VATEL_TEST_KEY_VAR", SECRET)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert read_api_key(VatelConfig(agent_id=AGENT, api_key_env="VATEL_TEST_KEY_VAR")) == SECRET


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_file_owner_only_is_read(tmp_path: Path, mode: int) -> None:
    """A key file readable only by its owner is used, and wins over the env var."""
    path = key_file(tmp_path, SECRET + "\n", mode)
    vatel = VatelConfig(agent_id=AGENT, api_key_file=str(path))
    assert read_api_key(vatel, {"ORG_API_KEY": "from-env"}) == SECRET


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_key_file_accessible_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    """Group- or world-accessible key files are refused with the mode and the fix, never the key."""
    path = key_file(tmp_path, SECRET, mode)
    message = refused(VatelConfig(agent_id=AGENT, api_key_file=str(path)), {"ORG_API_KEY": "from-env"})
    assert message == (
        f"vatel.api_key_file: {path} is accessible by group or others (mode {mode:04o}); "
        "refusing to use it: chmod 600 it"
    )


def test_missing_key_file_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    """A configured key file that does not exist is an error even when the env var is set."""
    path = tmp_path / "nope"
    message = refused(VatelConfig(agent_id=AGENT, api_key_file=str(path)), {"ORG_API_KEY": SECRET})
    assert message == f"vatel.api_key_file: {path} does not exist"


def test_empty_key_file_is_refused(tmp_path: Path) -> None:
    """An empty (or whitespace-only) key file is an error."""
    path = key_file(tmp_path, " \n", 0o600)
    message = refused(VatelConfig(agent_id=AGENT, api_key_file=str(path)), {})
    assert message == f"vatel.api_key_file: {path} is empty"


def test_directory_as_key_file_is_refused(tmp_path: Path) -> None:
    """A directory is no key file."""
    path = tmp_path / "dir"
    path.mkdir(mode=0o700)
    message = refused(VatelConfig(agent_id=AGENT, api_key_file=str(path)), {})
    assert message == f"vatel.api_key_file: {path} is not a regular file"


@pytest.mark.timeout(20)
def test_fifo_as_key_file_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO at the key path must not hang start-up waiting for a writer."""
    path = tmp_path / "fifo"
    os.mkfifo(path, 0o600)
    message = refused(VatelConfig(agent_id=AGENT, api_key_file=str(path)), {})
    assert message == f"vatel.api_key_file: {path} is not a regular file"


def test_oversized_key_file_is_refused(tmp_path: Path) -> None:
    """A big file is not read whole into memory as a key."""
    path = key_file(tmp_path, "k" * 100_000, 0o600)
    message = refused(VatelConfig(agent_id=AGENT, api_key_file=str(path)), {})
    assert "not a key file" in message


def test_non_utf8_key_file_is_refused(tmp_path: Path) -> None:
    """Binary junk in the key file is an error naming the file, not a UnicodeDecodeError."""
    path = tmp_path / "k"
    path.write_bytes(b"\xff\xfe" + SECRET.encode())
    path.chmod(0o600)
    message = refused(VatelConfig(agent_id=AGENT, api_key_file=str(path)), {})
    assert message == f"vatel.api_key_file: {path} is not UTF-8 text"


@pytest.mark.parametrize("content", [f"{SECRET} extra", f"{SECRET}\nsecond-line", f"{SECRET}é"])
def test_key_with_whitespace_or_non_ascii_is_refused_without_showing_it(tmp_path: Path, content: str) -> None:
    """A key with inner whitespace or non-ASCII would be echoed by HTTP header validation; refused here."""
    path = key_file(tmp_path, content, 0o600)
    message = refused(VatelConfig(agent_id=AGENT, api_key_file=str(path)), {})
    assert message == "vatel.api_key_file: the key contains spaces, line breaks or non-ASCII characters (not shown)"


def test_env_key_with_inner_space_is_refused_without_showing_it() -> None:
    """The same rule holds for a key from the environment."""
    message = refused(VatelConfig(agent_id=AGENT), {"ORG_API_KEY": f"{SECRET} x"})
    assert message == "$ORG_API_KEY: the key contains spaces, line breaks or non-ASCII characters (not shown)"


def test_systemd_credential_is_read_and_wins_over_env(tmp_path: Path) -> None:
    """LoadCredential=org_api_key:... puts the key in $CREDENTIALS_DIRECTORY/org_api_key."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    # systemd may give the credential group read access inside its private directory: accepted.
    key_file(creds, SECRET + "\n", 0o440, name=CREDENTIAL_NAME)
    environ = {"CREDENTIALS_DIRECTORY": str(creds), "ORG_API_KEY": "from-env"}
    assert read_api_key(VatelConfig(agent_id=AGENT), environ) == SECRET


def test_key_file_wins_over_systemd_credential(tmp_path: Path) -> None:
    """An explicitly configured key file is used before the credential directory."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    key_file(creds, "from-credential", 0o400, name=CREDENTIAL_NAME)
    path = key_file(tmp_path, SECRET, 0o600, name="explicit")
    vatel = VatelConfig(agent_id=AGENT, api_key_file=str(path))
    assert read_api_key(vatel, {"CREDENTIALS_DIRECTORY": str(creds)}) == SECRET


def test_credentials_directory_without_our_credential_falls_back_to_env(tmp_path: Path) -> None:
    """A credentials directory for other credentials does not hide the env var."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    assert read_api_key(VatelConfig(agent_id=AGENT), {"CREDENTIALS_DIRECTORY": str(creds), "ORG_API_KEY": SECRET}) == (
        SECRET
    )


def test_empty_systemd_credential_is_refused(tmp_path: Path) -> None:
    """An empty credential is an error naming the credential path."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    path = key_file(creds, "", 0o400, name=CREDENTIAL_NAME)
    message = refused(VatelConfig(agent_id=AGENT), {"CREDENTIALS_DIRECTORY": str(creds), "ORG_API_KEY": SECRET})
    assert message == f"$CREDENTIALS_DIRECTORY: {path} is empty"
