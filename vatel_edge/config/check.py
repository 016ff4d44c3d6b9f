"""What `vatel-edge check-config` finds: the file read, validated, and its API key looked up (never shown).

The command itself (its output and exit status) is in cli.py; this is the part without I/O to the user.
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vatel_edge.config.credentials import read_api_key, read_mqtt_password
from vatel_edge.config.load import decode_config, loads_config, read_config_bytes
from vatel_edge.config.schema import Config, VatelConfig
from vatel_edge.config.validate import Problems, parse_section_partial
from vatel_edge.errors import ConfigError


@dataclass(frozen=True)
class ConfigCheck:
    """The outcome: the valid Config (None when invalid), every problem, and whether the file could be read."""

    path: str
    config: Config | None
    problems: tuple[str, ...]
    readable: bool = True

    @property
    def ok(self) -> bool:
        """Valid, and the API key is available."""
        return self.readable and self.config is not None and not self.problems


def check_config(path: str, *, environ: Mapping[str, str] | None = None) -> ConfigCheck:
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
    if vatel is not None:
        try:
            read_api_key(vatel, environ)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if cfg is not None and cfg.mqtt.enabled:
        try:
            read_mqtt_password(cfg.mqtt, environ)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return ConfigCheck(path, cfg, tuple(problems))


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
