"""SIGHUP reload: a valid new config is applied between sessions; an invalid one is refused, old one kept."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.support.pulse import PulseServer
from vatel_edge.audio.aec import available_engines
from vatel_edge.audio.aec_path import EchoPath
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import load_config
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.speech import human_speech, speech_available
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(60)


def _write(path: Path, sim: Simulator, mode: str, extra: str = "", audio: str = "") -> None:
    path.write_text(
        f'[vatel]\nagent_id = "{sim.agent_id}"\nbase_url = "{sim.base_url}"\n'
        f'[audio]\ncapture_device = "test_mic"\nplayback_device = "test_spk"\n{audio}'
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


async def _quiet_agent(s: SimSession) -> None:
    """The test drives every session itself (the default echo agent would answer the user)."""
    await s.wait_closed(timeout=60)


async def _reloaded(daemon: Daemon) -> EchoPath | None:
    """Reload, then the new runtime's echo path once it listens again."""
    old = daemon.runtime
    assert daemon.request_reload() is True
    for _ in range(200):
        if daemon.runtime is not None and daemon.runtime is not old and daemon.state is State.LISTENING:
            return daemon.echo
        await asyncio.sleep(0.05)
    raise AssertionError("the runtime was not rebuilt")


async def _agent_turn_heard(daemon: Daemon, sim: Simulator, pulse: PulseServer, *, user: bool) -> tuple[int, int]:
    """One session: the agent says 3 s (while the user talks into the microphone, if `user`); returns the
    20 ms frames the server received while the agent's audio played that were digital silence, and all of
    them. Muted frames (mic_during_playback = "auto" before convergence) are digital silence; the user's
    voice through the canceller is not."""
    speech = human_speech("dashwood")
    feed = pulse.feed_mic(speech * 3) if user else None  # ~the whole session
    try:
        await asyncio.sleep(0.5)
        assert daemon.trigger("test")
        session = await sim.next_session(timeout=15)
        await session.wait_audio(200)
        start = len(session.input_audio)
        agent = shipped_speech("agent_answer.wav")[: VATEL_FORMAT.nbytes(3000)]
        await session.send_turn("t1", agent)
        await asyncio.sleep(0.3)  # the daemon has queued the turn by now (wait_idle before it would not wait)
        player = daemon.player
        assert player is not None
        await player.wait_idle(timeout=10)
        got = bytes(session.input_audio[start:])
        await session.end_session()
        await daemon.wait_state(State.LISTENING, timeout=10)
    finally:
        if feed is not None:
            feed.kill()
            feed.wait()
    n = VATEL_FORMAT.nbytes(20)
    frames = np.frombuffer(got[: len(got) // n * n], dtype="<i2").reshape(-1, n // 2)
    return int((~frames.any(axis=1)).sum()), len(frames)


@pytest.mark.skipif("webrtc" not in available_engines(), reason="needs the webrtc echo engine (the aec extra)")
@pytest.mark.skipif(not speech_available("dashwood"), reason="needs recorded speech (pocketsphinx-testdata)")
async def test_a_reload_keeps_the_converged_canceller_unless_the_audio_it_learned_with_changed(
    pulse: PulseServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The canceller converged in a first session; a reload that changes no audio setting it learned with
    (here the volume) keeps it, so the next agent turn streams the user's voice
    from its start; a reload that changes one (the playback buffer) opens a fresh canceller, which mutes the
    microphone again until it converged (the old one is closed)."""
    cfg_path = tmp_path / "config.toml"
    async with Simulator(script=_quiet_agent) as sim:
        monkeypatch.setenv("ORG_API_KEY", sim.api_key)
        base = 'echo_cancel = "webrtc"\nmic_during_playback = "auto"\n'
        _write(cfg_path, sim, "manual", audio=base)
        daemon = Daemon(load_config(cfg_path), api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            first = daemon.echo
            assert first is not None and not first.converged
            await _agent_turn_heard(daemon, sim, pulse, user=False)  # no echo path: the quiet residual converges
            assert first.converged, first.stats

            _write(cfg_path, sim, "manual", audio=base + "volume = 0.8\n")
            kept = await _reloaded(daemon)
            assert daemon.cfg.audio.volume == 0.8
            assert kept is first and kept.converged and kept.active
            silent, total = await _agent_turn_heard(daemon, sim, pulse, user=True)
            print(f"after a reload that kept the canceller: {silent} of {total} frames during agent audio muted")
            assert total >= 100, total
            assert silent <= 5, f"{silent} of {total} frames during the agent turn after the reload were muted"

            _write(cfg_path, sim, "manual", audio=base + "volume = 0.8\nplayback_buffer_ms = 160\n")
            fresh = await _reloaded(daemon)
            assert fresh is not None and fresh is not first and not fresh.converged
            assert not first.active  # closed
            silent, total = await _agent_turn_heard(daemon, sim, pulse, user=True)
            print(f"after a reload with a fresh canceller: {silent} of {total} frames during agent audio muted")
            assert silent >= 25, f"only {silent} of {total} frames muted with a fresh canceller"
        assert not fresh.active  # the daemon closed the kept path when it stopped
