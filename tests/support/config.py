"""Daemon configs of the tests, on the real-time test devices (test_mic / test_spk), built on the devkit's
lab config so that the tests, the demo and the benchmarks set a daemon up the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vatel_edge.config import Config, config_from_dict
from vatel_edge.devkit.fixtures import TEST_DEVICES, deep_merge, lab_config, toml_text

#: Overrides that make every fault resolve quickly: manual wake, no cooldown, short network timeouts.
FAST: dict[str, Any] = {
    "wake": {"mode": "manual", "cooldown_ms": 0},
    "session": {"idle_timeout_s": 5.0, "close_timeout_s": 0.5},
    "vatel": {"http_timeout_s": 1.0, "connect_timeout_s": 1.0},
}


def daemon_config(tmp_path: Path, base_url: str, agent_id: str, **overrides: Any) -> Config:
    """A daemon config on the real-time test devices with a fake-GPIO tool; sections overridable."""
    raw = lab_config(
        agent_id,
        base_url,
        devices=TEST_DEVICES,
        wake={"mode": "vad", "preroll_ms": 500, "cooldown_ms": 300},
        session={"idle_timeout_s": 10.0},
        control={"socket_path": str(tmp_path / "control.sock")},
        tools={"set_light": {"action": "gpio", "chip": "gpiochip0", "line": 17, "value": "{on}"}},
    )
    return config_from_dict(deep_merge(raw, overrides))


def reliability_config(tmp_path: Path, base_url: str, agent_id: str, **overrides: Any) -> Config:
    """The daemon config of the reliability suite (daemon_config, plus FAST, plus `overrides`)."""
    return daemon_config(tmp_path, base_url, agent_id, **deep_merge(FAST, overrides))


def config_toml(
    tmp_path: Path,
    base_url: str,
    agent_id: str,
    *,
    allow_insecure: bool = False,
    http_timeout_s: float = 5.0,
    connect_timeout_s: float = 1.0,
    idle_timeout_s: float = 5.0,
    extra: str = "",
) -> str:
    """A config *file* for daemons that read one (subprocesses, reloads): manual wake, test devices;
    `extra` is TOML text appended (e.g. [tools.NAME] tables)."""
    doc = lab_config(
        agent_id,
        base_url,
        devices=TEST_DEVICES,
        vatel={"allow_insecure": allow_insecure, "http_timeout_s": http_timeout_s,
               "connect_timeout_s": connect_timeout_s},
        wake={"mode": "manual", "cooldown_ms": 0},
        session={"idle_timeout_s": idle_timeout_s, "close_timeout_s": 0.5},
        control={"socket_path": str(tmp_path / "control.sock")},
    )
    return toml_text(doc) + "\n" + extra
