"""Wake word end to end: the real daemon on the real-time test devices (PulseAudio null sinks) against the
simulator, with espeak-ng speech generated here.

* wake.mode = "wakeword": the wake word plus a command opens a session carrying the whole utterance, compared
  with what was fed into the microphone; speech without the wake word opens nothing.
* session.barge_in = "wakeword" in a room with an acoustic echo (module-loopback spk.monitor -> mic) and the
  WebRTC canceller: the agent's own voice saying the wake word cuts nothing (although the raw microphone
  carries a wake word the detector finds), the user's wake word during agent speech cuts playback and the
  words after it reach the server.
* A missing extra and a broken model file: `vatel-edge run` and `check-config` give the documented errors.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.config import daemon_config
from tests.support.daemon import VATEL_EDGE
from tests.support.events import Events
from tests.support.pulse import PulseServer
from vatel_edge.audio.aec import available_engines
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.wakeword import GatedWakeWord, open_models, scan, wakeword_installed
from vatel_edge.config import WakeConfig, config_from_dict
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit import aec_room
from vatel_edge.devkit import wake_lab as lab
from vatel_edge.devkit.fixtures import TEST_DEVICES, lab_config, shipped_speech, toml_text
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.simulator.script import wait_for_utterance
from vatel_edge.state import State

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not wakeword_installed(), reason="the wakeword extra (pymicro-wakeword) is not installed"),
    pytest.mark.skipif(not lab.espeak_available(), reason="espeak-ng is not installed"),
]
FMT = VATEL_FORMAT
COMMAND = "okay nabu, turn on the kitchen light"


async def wait_mic_idle(pulse: PulseServer, timeout: float = 60.0) -> None:
    """Until nothing plays into the `mic` sink any more (an earlier test's feed still running would mix into
    this test's microphone)."""
    sinks = pulse.pactl("list", "short", "sinks").stdout.splitlines()
    mic = next(line.split()[0] for line in sinks if line.split()[1] == "mic")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inputs = pulse.pactl("list", "short", "sink-inputs").stdout.splitlines()
        if not any(line.split()[1] == mic for line in inputs if line.strip()):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("something keeps playing into the mic sink")


@asynccontextmanager
async def wakeword_daemon(sim: Simulator, tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Daemon, Events]]:
    events = Events()
    cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, **{"wake": {"mode": "wakeword"}, **overrides})
    daemon = Daemon(cfg, api_key=sim.api_key, on_event=events)
    async with running(daemon):
        await daemon.wait_state(State.LISTENING, timeout=20)
        await asyncio.sleep(0.5)  # the capture stream is running: what is fed from now on is heard
        yield daemon, events


async def _listen_then_end(s: SimSession) -> None:
    await wait_for_utterance(s, speech_ms=300, silence_ms=700)
    await s.end_session()


@pytest.mark.parametrize("voice", ["en-us", "en-gb"])
async def test_the_wake_word_and_a_command_open_a_session_carrying_the_whole_utterance(
    pulse: PulseServer, tmp_path: Path, voice: str
) -> None:
    """'okay nabu, turn on the kitchen light' in one breath: one session ("wake word Okay Nabu"); the server's
    audio starts >= 250 ms before the first sound of the wake word and carries the utterance whole and
    sample-exact (no gap where the detector was deciding)."""
    utterance = lab.say(COMMAND, voice)
    await wait_mic_idle(pulse)
    async with Simulator(script=_listen_then_end) as sim, wakeword_daemon(sim, tmp_path) as (daemon, events):
        feed = pulse.feed_mic(lab.silence(1500) + utterance + lab.silence(1500))
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=30)
        await daemon.wait_state(State.LISTENING, timeout=10)
        feed.wait(timeout=20)
    assert events.of("wake") == ["wake word Okay Nabu"]
    received = bytes(session.input_audio)
    sound = int(np.flatnonzero(np.abs(np.frombuffer(utterance, dtype="<i2")) > 64)[0])
    block = utterance[2 * sound : 2 * sound + FMT.nbytes(20)]
    at = received.find(block)
    assert at >= 0 and at % 2 == 0, "the wake word's first sound did not arrive sample-exact"
    lead_ms = 1000.0 * (at // 2) / FMT.rate
    assert lead_ms >= 250.0, f"the server's audio started only {lead_ms:.0f} ms before the wake word"
    assert received[at : at + len(utterance) - 2 * sound] == utterance[2 * sound :], "the utterance was not whole"


async def test_speech_without_the_wake_word_opens_nothing(pulse: PulseServer, tmp_path: Path) -> None:
    """Ten seconds of talk the VAD hears (two voices, and a recorded human sentence): no wake, no session,
    although the same audio wakes the daemon in vad mode (checked last)."""
    talk = (lab.say("please put the kettle on, it is cold today", "en-us") + lab.silence(700)
            + lab.say("okay, I think the bus leaves at nine", "en-gb") + lab.silence(700)
            + shipped_speech("user_request.wav"))
    await wait_mic_idle(pulse)
    async with Simulator(script=_listen_then_end) as sim:
        async with wakeword_daemon(sim, tmp_path) as (daemon, _events):
            pulse.feed_mic(talk + lab.silence(500))
            await asyncio.sleep(FMT.duration_ms(len(talk)) / 1000 + 2.0)
            assert daemon.counters.wakes == 0 and sim.sessions == []
        async with wakeword_daemon(sim, tmp_path, wake={"mode": "vad"}) as (daemon, _events):
            feed = pulse.feed_mic(talk + lab.silence(500))
            try:
                await sim.next_session(timeout=20)
            finally:
                feed.terminate()  # the rest of the talk must not leak into the next test's microphone
                feed.wait(timeout=10)


# ------------------------------------------------------------------------------------ barge-in by wake word


@dataclass
class EchoRun:
    events: list[tuple[float, str, str]] = field(default_factory=list)
    sent: bytes = b""
    mic: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    user_sent_at: int | None = None  # sample of `sent` when the user was fed
    turn_done: bool = False
    echo: dict[str, Any] = field(default_factory=dict)  # the daemon's echo status when the session closed

    def barge_ins(self) -> list[str]:
        return [text for _t, kind, text in self.events if kind == "barge_in"]


async def echo_session(
    pulse: PulseServer, tmp_path: Path, agent: bytes, user: bytes | None, user_at_s: float
) -> EchoRun:
    """A manual session in the loopback room (50 ms, -6 dB) with the WebRTC canceller and barge_in = wakeword:
    the agent says `agent`; `user` is fed `user_at_s` after the turn starts."""
    run = EchoRun()
    await wait_mic_idle(pulse)

    async def script(s: SimSession) -> None:
        await s.wait_audio(1500, timeout=20)
        turn = asyncio.create_task(s.send_turn("t1", agent, realtime=True))
        if user is not None:
            await asyncio.sleep(user_at_s)
            run.user_sent_at = len(s.input_audio) // 2
            pulse.feed_mic(user)
        await turn
        run.turn_done = True
        await s.wait_seconds(3.0)
        await s.end_session()

    rec = aec_room._record_mic(pulse, tmp_path / "room-mic.raw")
    try:
        with aec_room.LoopbackRoom(pulse, delay_ms=50, gain_db=-6.0):
            async with Simulator(script=script) as sim:
                cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual"},
                                    audio={"echo_cancel": "webrtc", "mic_during_playback": "auto"},
                                    session={"barge_in": "wakeword", "idle_timeout_s": 60.0})
                daemon = Daemon(cfg, api_key=sim.api_key,
                                on_event=lambda kind, text: run.events.append((time.monotonic(), kind, text)))
                async with running(daemon):
                    await daemon.wait_state(State.LISTENING, timeout=20)
                    assert daemon.trigger("test")
                    session = await sim.next_session(timeout=20)
                    await session.wait_closed(timeout=90)
                    run.echo = dict(daemon.status()["echo"])
    finally:
        run.mic = np.frombuffer(rec.stop(), dtype="<i2")
    run.sent = bytes(session.input_audio)
    return run


needs_webrtc = pytest.mark.skipif("webrtc" not in available_engines(), reason="webrtc engine not installed")


def agent_saying_the_wake_word() -> bytes:
    """The agent's answer (3.5 s of it, while the canceller converges), then the agent says the wake word twice."""
    head = shipped_speech("agent_answer.wav")[: FMT.nbytes(3500)]
    words = (lab.say("okay nabu.", "en-us", dbfs=-18.0) + lab.silence(700)
             + lab.say("okay nabu, that is my name.", "en-us", dbfs=-18.0))
    return head + lab.silence(300) + words + lab.silence(300)


@needs_webrtc
async def test_the_agents_own_voice_saying_the_wake_word_cuts_nothing(pulse: PulseServer, tmp_path: Path) -> None:
    """The agent says "okay nabu" twice through the echoing room: the raw room microphone carries a wake word
    the detector finds, yet on the echo-cancelled microphone no barge-in fires and the turn plays out."""
    agent = agent_saying_the_wake_word()
    run = await echo_session(pulse, tmp_path, agent, None, 0.0)
    assert run.turn_done and run.barge_ins() == []
    wake = WakeConfig(mode="wakeword")
    raw = list(scan(GatedWakeWord.for_wake(wake, open_models(_wake_cfg()), 20), run.mic.astype("<i2").tobytes(), 20))
    assert len(raw) == 2, "the echo in the room microphone holds no wake word: this test would prove nothing"


def _wake_cfg() -> Any:
    return config_from_dict({"vatel": {"agent_id": "00000000-0000-0000-0000-000000000000"},
                             "wake": {"mode": "wakeword"}})


@needs_webrtc
async def test_the_wake_word_during_agent_speech_cuts_playback_and_the_command_reaches_the_server(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """The user says "okay nabu, stop the music" 4 s into a 10 s agent turn: a barge-in by the wake word cuts
    the turn, and the user's words after the wake word are in what the server receives (located there)."""
    agent = shipped_speech("agent_answer.wav")
    word = lab.say("okay nabu", "en-gb")
    command = lab.say("stop the music and turn off the lights", "en-gb")
    user = word + lab.silence(150) + command
    run = await echo_session(pulse, tmp_path, agent, user, 4.0)
    if not run.barge_ins() and run.echo.get("recoveries"):
        # The canceller collapsed in the turn and was restarted, so local barge-in was disarmed when the user
        # spoke (by design: it must not act on the agent's own voice). Seen once in CI, on a loaded machine
        # (a guess, not confirmed: module-loopback, the test's echo path, re-timing itself under load); not
        # reproduced here in 7 runs, 4 of them with a core busy. Once more, in a fresh daemon; a second
        # collapse fails.
        print(f"the canceller collapsed ({run.echo}); the run is repeated once")
        (tmp_path / "again").mkdir()
        run = await echo_session(pulse, tmp_path / "again", agent, user, 4.0)
    cuts = run.barge_ins()
    assert len(cuts) == 1 and cuts[0].startswith("wake word Okay Nabu"), (run.echo, run.events)
    sent = np.frombuffer(run.sent, dtype="<i2")
    cmd = np.frombuffer(command, dtype="<i2")
    assert run.user_sent_at is not None
    pos = aec_room.locate(sent[run.user_sent_at :], cmd) + run.user_sent_at
    seg = sent[pos : pos + cmd.size].astype(np.float64)
    corr = float(np.corrcoef(seg, cmd.astype(np.float64))[0, 1])
    assert corr > 0.5, f"the command after the wake word did not reach the server (correlation {corr:.2f})"


# ------------------------------------------------------------------------------------ start-up errors


def _config_file(tmp_path: Path, **wake: Any) -> Path:
    doc = lab_config("3c90c3cc-0d44-4b50-8888-8dd25736052a", "http://127.0.0.1:9", devices=TEST_DEVICES,
                     wake={"mode": "wakeword", **wake}, control={"socket_path": str(tmp_path / "c.sock")})
    path = tmp_path / "config.toml"
    path.write_text(toml_text(doc), encoding="utf-8")
    return path


def _vatel_edge(*args: str, block_extra: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORG_API_KEY": "test-key"}
    if block_extra:  # the real CLI in an interpreter where pymicro-wakeword cannot be imported
        code = ("import sys; sys.modules['pymicro_wakeword'] = None; from vatel_edge.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [VATEL_EDGE, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def test_a_broken_model_file_is_the_documented_error_at_check_config_and_at_start(tmp_path: Path) -> None:
    """A manifest whose .tflite is garbage: check-config exits 2 and `vatel-edge run` exits 78 (EX_CONFIG, not
    restarted by the unit), both naming wake.wake_words[0] and the file; nothing crashes."""
    manifest = tmp_path / "mine.json"
    manifest.write_text('{"model": "mine.tflite", "wake_word": "Hey Mine", "micro": {"probability_cutoff": 0.9, '
                        '"sliding_window_size": 5}}')
    (tmp_path / "mine.tflite").write_bytes(os.urandom(4096))
    cfg = _config_file(tmp_path, wake_words=["mine.json"])
    want = f"wake.wake_words[0]: {tmp_path / 'mine.tflite'} is not a valid TensorFlow Lite model"
    check = _vatel_edge("check-config", "--config", str(cfg))
    assert check.returncode == 2 and want in check.stderr, check.stderr
    run = _vatel_edge("run", "--config", str(cfg))
    assert run.returncode == 78 and want in run.stderr, run.stderr


def test_without_the_extra_wakeword_mode_is_the_documented_error(tmp_path: Path) -> None:
    """pymicro-wakeword not importable: check-config exits 2 and `vatel-edge run` exits 78, naming the extra
    and the command that installs it."""
    cfg = _config_file(tmp_path)
    want = ("wake.mode = 'wakeword' needs the optional extra 'wakeword' (pymicro-wakeword), which is not "
            "installed: pip install 'vatel-edge[wakeword]'")
    check = _vatel_edge("check-config", "--config", str(cfg), block_extra=True)
    assert check.returncode == 2 and want in check.stderr, check.stderr
    run = _vatel_edge("run", "--config", str(cfg), block_extra=True)
    assert run.returncode == 78 and want in run.stderr, run.stderr
