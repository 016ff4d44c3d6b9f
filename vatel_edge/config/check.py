"""What `vatel-edge check-config` finds: the file read, validated, and its API key looked up (never shown).

Checking the config the installed unit runs (outside the unit: no $CREDENTIALS_DIRECTORY), the key is looked
up where the service will get it: the file the unit's LoadCredential= names (unit.py). `root` is the tree the
unit is read from: `/`, or an image's directory (every path of the unit is taken under it).

The command itself (its output and exit status) is in cli.py; this is the part without I/O to the user.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vatel_edge.config.credentials import read_api_key, read_mqtt_password
from vatel_edge.config.load import decode_config, loads_config, read_config_bytes
from vatel_edge.config.schema import Config, VatelConfig
from vatel_edge.config.unit import read_installed_unit
from vatel_edge.config.validate import Problems, parse_section_partial
from vatel_edge.errors import ConfigError

#: vatel.agent_id of the shipped example config/vatel-edge.toml (tests/config checks they agree).
EXAMPLE_AGENT_ID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


@dataclass(frozen=True)
class ConfigCheck:
    """The outcome: the valid Config (None when invalid), every problem, and whether the file could be read."""

    path: str
    config: Config | None
    problems: tuple[str, ...]
    readable: bool = True
    warnings: tuple[str, ...] = ()  # valid, but probably not what the user wants; not problems

    @property
    def ok(self) -> bool:
        """Valid, and the API key is available."""
        return self.readable and self.config is not None and not self.problems


def _unit_credentials(path: str, root: str, environ: Mapping[str, str] | None) -> dict[str, Path] | None:
    """The installed unit's credential files when `path` is the config it runs and we are outside it."""
    env = os.environ if environ is None else environ
    if env.get("CREDENTIALS_DIRECTORY"):
        return None
    unit = read_installed_unit(Path(root))
    if unit is None or unit.config is None or not _same_file(unit.config, Path(path)):
        return None
    return unit.credentials


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def check_config(path: str, *, environ: Mapping[str, str] | None = None, root: str = "/") -> ConfigCheck:
    """Read and validate `path` and look up the API key; an unavailable key is one of the problems."""
    try:
        data = read_config_bytes(Path(path))
    except ConfigError as exc:
        return ConfigCheck(path, None, tuple(exc.problems), readable=False)
    problems: list[str] = []
    cfg: Config | None = None
    vatel: VatelConfig | None = None
    text = ""
    try:
        text = decode_config(Path(path), data)
        cfg = loads_config(text, path)
        vatel = cfg.vatel
        from vatel_edge.audio.wakeword import check_wake_words  # the models are files: checked like the key

        problems.extend(check_wake_words(cfg))
    except ConfigError as exc:
        problems.extend(exc.problems)
        vatel = _vatel_alone(text)
    unit_credentials = _unit_credentials(path, root, environ)
    if vatel is not None:
        try:
            read_api_key(vatel, environ, unit_credentials=unit_credentials)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if cfg is not None and cfg.mqtt.enabled:
        try:
            read_mqtt_password(cfg.mqtt, environ, unit_credentials=unit_credentials)
        except ConfigError as exc:
            problems.extend(exc.problems)
    warnings: list[str] = []
    if cfg is not None and cfg.vatel.agent_id.lower() == EXAMPLE_AGENT_ID:
        warnings.append(f"vatel.agent_id is still the example's placeholder {EXAMPLE_AGENT_ID}: "
                        "set your agent's id (sudoedit the config, then restart the service)")
    return ConfigCheck(path, cfg, tuple(problems), warnings=tuple(warnings))


def _vatel_alone(text: str) -> VatelConfig | None:
    """[vatel] built from its valid keys when the key settings are fine (to check the key in a broken config)."""
    try:
        raw = tomllib.loads(text)
    except (ValueError, RecursionError):  # TOMLDecodeError is a ValueError; already reported
        return None
    vatel, failed = parse_section_partial("vatel", VatelConfig, raw.get("vatel", {}), Problems())
    if vatel is None or failed & {"vatel.api_key_env", "vatel.api_key_file"}:
        return None
    return typing.cast(VatelConfig, vatel)
