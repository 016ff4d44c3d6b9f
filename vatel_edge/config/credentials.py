"""The organization API key: from the key file, systemd's credential directory, or an environment variable.

A key file accessible by group or others is refused; the key itself never appears in an error.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from vatel_edge.config.schema import MqttConfig, VatelConfig
from vatel_edge.errors import ConfigError

CREDENTIAL_NAME = "org_api_key"
#: A key file is a line of text; anything bigger is not a key file (and is not read into memory).
_MAX_KEY_FILE_BYTES = 64 * 1024


def _read_key_file(label: str, path: Path) -> str:
    """Read a key file: a regular file, not group/other accessible when `label` is the config key."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang start-up (regular files ignore it).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot open {path}: {exc.strerror or exc.__class__.__name__}") from None
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the path names a moment later
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{label}: {path} is not a regular file")
        if label.endswith("_file") and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):  # a config key, not systemd's
            raise ConfigError(
                f"{label}: {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it: chmod 600 it"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= _MAX_KEY_FILE_BYTES:
            chunk = os.read(fd, _MAX_KEY_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror or exc.__class__.__name__}") from None
    finally:
        os.close(fd)
    if size > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{label}: {path} is larger than {_MAX_KEY_FILE_BYTES} bytes; not a key file")
    try:
        return b"".join(chunks).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: {path} is not UTF-8 text") from None


def _check_key_text(label: str, key: str) -> str:
    """A key goes into an HTTP header: printable ASCII, no spaces (HTTP libraries echo bad headers)."""
    if not all("!" <= c <= "~" for c in key):
        raise ConfigError(f"{label}: the key contains spaces, line breaks or non-ASCII characters (not shown)")
    return key


def _check_unit_credential(label: str, path: Path) -> None:
    """The file the unit loads exists (else the service does not start) and this user may read it."""
    try:
        path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{label}: {path} does not exist; the service cannot start without it "
                          "(install the key: sudo scripts/install.sh)") from None
    except PermissionError:
        raise ConfigError(f"{label}: {path} cannot be looked at by this user (permission denied); "
                          "the service reads it as root: run with sudo") from None
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{label}: {path} exists but this user may not read it; "
                          "the service reads it as root: run with sudo")


def read_api_key(
    vatel: VatelConfig, environ: Mapping[str, str] | None = None, *, unit_credentials: Mapping[str, Path] | None = None
) -> str:
    """The organization key, from the key file, systemd's credential directory, or the env var (in that order).

    `unit_credentials` (check-config outside the unit) stands in for $CREDENTIALS_DIRECTORY when that is unset:
    the files the installed unit's LoadCredential= names, read as the service will get them.
    A key file accessible by group or others is refused. The key itself never appears in errors.
    """
    env = os.environ if environ is None else environ
    candidates: list[tuple[str, Path]] = []
    if vatel.api_key_file:
        candidates.append(("vatel.api_key_file", Path(vatel.api_key_file)))
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        candidates.append(("$CREDENTIALS_DIRECTORY", Path(cred_dir) / CREDENTIAL_NAME))
    elif unit_credentials and CREDENTIAL_NAME in unit_credentials:
        label = f"the service's credential {CREDENTIAL_NAME} (LoadCredential=)"
        _check_unit_credential(label, unit_credentials[CREDENTIAL_NAME])
        candidates.append((label, unit_credentials[CREDENTIAL_NAME]))
    for label, path in candidates:
        if not path.exists():
            if label == "vatel.api_key_file":
                raise ConfigError(f"vatel.api_key_file: {path} does not exist")
            continue
        key = _read_key_file(label, path)
        if key:
            return _check_key_text(label, key)
        raise ConfigError(f"{label}: {path} is empty")
    key = env.get(vatel.api_key_env, "").strip()
    if key:
        return _check_key_text(f"${vatel.api_key_env}", key)
    raise ConfigError(
        f"vatel.api_key_env: environment variable {vatel.api_key_env} is not set "
        "(and no vatel.api_key_file or systemd credential was found)"
    )


MQTT_CREDENTIAL_NAME = "mqtt_password"


def read_mqtt_password(
    mqtt: MqttConfig, environ: Mapping[str, str] | None = None, *, unit_credentials: Mapping[str, Path] | None = None
) -> str | None:
    """The broker password: mqtt.password_file (refused when group/world-accessible), else the systemd
    credential mqtt_password (or the file the installed unit loads as it, see read_api_key), else None
    (no password). Never in argv, never in an error."""
    env = os.environ if environ is None else environ
    if mqtt.password_file:
        path = Path(mqtt.password_file)
        if not path.exists():
            raise ConfigError(f"mqtt.password_file: {path} does not exist")
        label = "mqtt.password_file"
    elif env.get("CREDENTIALS_DIRECTORY") and (Path(env["CREDENTIALS_DIRECTORY"]) / MQTT_CREDENTIAL_NAME).exists():
        path, label = Path(env["CREDENTIALS_DIRECTORY"]) / MQTT_CREDENTIAL_NAME, "$CREDENTIALS_DIRECTORY"
    elif not env.get("CREDENTIALS_DIRECTORY") and unit_credentials and MQTT_CREDENTIAL_NAME in unit_credentials:
        path, label = unit_credentials[MQTT_CREDENTIAL_NAME], f"the service's credential {MQTT_CREDENTIAL_NAME}"
        _check_unit_credential(label, path)
    else:
        return None
    password = _read_key_file(label, path)
    if not password:
        raise ConfigError(f"{label}: {path} is empty")
    return password
