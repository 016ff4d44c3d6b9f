"""SIGHUP reload: a valid new config is applied between sessions; an invalid one is refused, old one kept."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.support.pulse import PulseServer
from vatel_edge.config import load_config
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.simulator import Simulator
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(60)


def _write(path: Path, sim: Simulator, mode: str, extra: str = "") -> None:
    path.write_text(
        f'[vatel]\nagent_id = "{sim.agent_id}"\nbase_url = "{sim.base_url}"\n'
        f'[audio]\ncapture_device = "test_mic"\nplayback_device = "test_spk"\n'
        f'[wake]\nmode = "{mode}"\n[control]\nsocket_path = "{path.parent / "ctl.sock"}"\n'
        f'[gpio]\nbackend = "fake"\n{extra}',
        encoding="utf-8",
    )


async def test_valid_reload_applies_and_invalid_reload_keeps_the_running_config(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_path = tmp_path / "config.toml"
    async with Simulator() as sim:
        monkeypatch.setenv("ORG_API_KEY", sim.api_key)  # a reload re-reads the key too
        _write(cfg_path, sim, "manual")
        daemon = Daemon(load_config(cfg_path), api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            _write(cfg_path, sim, "always")
            assert daemon.request_reload() is True
            # "always" opens a session by itself once the new config is in force.
            await sim.next_session(timeout=15)
            assert daemon.cfg.wake.mode == "always"

            _write(cfg_path, sim, "vad", extra="[wake.oops]\n")
            with caplog.at_level(logging.ERROR, logger="vatel_edge.daemon"):
                assert daemon.request_reload() is False
            assert daemon.cfg.wake.mode == "always"
            assert "reload refused" in caplog.text and "wake.oops" in caplog.text
            assert daemon.status()["last_error"].startswith("reload refused")


async def test_a_reload_whose_mqtt_password_cannot_be_read_is_refused_and_the_daemon_runs_on(
    pulse: PulseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new config the runtime could not open (here: mqtt.password_file missing) is refused by the reload
    check before the running runtime closes; the daemon keeps its config and keeps listening."""
    cfg_path = tmp_path / "config.toml"
    async with Simulator() as sim:
        monkeypatch.setenv("ORG_API_KEY", sim.api_key)
        _write(cfg_path, sim, "manual")
        daemon = Daemon(load_config(cfg_path), api_key=sim.api_key)
        async with running(daemon) as task:
            await daemon.wait_state(State.LISTENING, timeout=20)
            _write(cfg_path, sim, "always", extra=(
                '[mqtt]\nenabled = true\nurl = "mqtt://127.0.0.1:1"\n'
                f'password_file = "{tmp_path / "missing-password"}"\n'))
            with caplog.at_level(logging.ERROR, logger="vatel_edge.daemon"):
                assert daemon.request_reload() is False
            assert "mqtt.password_file" in caplog.text
            await asyncio.sleep(1.0)
            assert not task.done() and daemon.state is State.LISTENING and daemon.cfg.wake.mode == "manual"
            assert sim.sessions == []
