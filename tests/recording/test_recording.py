"""Session recordings end to end: the real daemon on the real-time test devices (PulseAudio null sinks) against
the simulator over real sockets, recording into a temporary state directory.

What is checked: the layout and the file modes; that mic.wav, sent.wav and played.wav line up in time (the sent
audio is what the server received and equals the microphone sample for sample where the timeline says it starts,
as no echo canceller runs on these devices); the timeline's events and summary; retention by count and by size;
nothing with record_sessions = 0; `vatel-edge record --seconds`.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.config import daemon_config
from tests.support.daemon import VATEL_EDGE, quick_end
from tests.support.pulse import PulseServer
from tests.support.recording import LAYOUT, live, read_wav, recording_config, recordings, timeline, wait_complete
from vatel_edge import protocol
from vatel_edge.audio.aec import available_engines
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.daemon import Daemon
from vatel_edge.devkit.fixtures import shipped_speech, toml_text
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.simulator.script import tone
from vatel_edge.errors import ConfigError
from vatel_edge.recording.store import Recording, RecordingWriter, dir_bytes
from vatel_edge.recording.timeline import TimelineBuilder
from vatel_edge.runtime import check_runnable
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(180)
FMT = VATEL_FORMAT
Pcm = npt.NDArray[np.int16]


async def one_session(daemon: Daemon) -> None:
    assert daemon.trigger("test")
    await asyncio.sleep(0.2)
    await daemon.wait_state(State.LISTENING, timeout=20)


async def test_a_session_recording_lines_up_with_what_the_server_received(pulse: PulseServer, tmp_path: Path) -> None:
    """One session with speech, a transcript, a tool call, an agent turn cut by the server: the directory holds
    exactly the four files (0600, directories 0700); the three WAVs are equally long; sent.wav, from where the
    timeline says the sent audio starts, is byte for byte what the simulator received and equals mic.wav there
    (no canceller acts on these devices); played.wav holds the agent's turn from when the timeline says it
    started and is silent after the barge-in; the events and the summary figures are there."""
    agent = tone(3000, freq=330.0)
    sessions: list[SimSession] = []

    async def script(s: SimSession) -> None:
        sessions.append(s)
        await s.wait_audio(2000, timeout=15)
        await s.speech_started()
        await s.send_transcript("please turn on the light")
        await s.speech_stopped()
        await s.tool_call("set_light", {"on": True})
        turn = asyncio.create_task(s.send_turn("t1", agent, text="The light is on.", realtime=True))
        await asyncio.sleep(1.2)
        await s.interrupt()
        await turn
        await asyncio.sleep(0.5)
        await s.end_session()

    speech = shipped_speech("user_request.wav")
    async with Simulator(script=script) as sim, live(recording_config(tmp_path, sim, 3), sim) as (daemon, _):
        feed = pulse.feed_mic(bytes(FMT.nbytes(800)) + speech + bytes(FMT.nbytes(4000)))
        await asyncio.sleep(0.6)
        await one_session(daemon)
        feed.wait(timeout=30)
        done = await wait_complete(tmp_path, 1)
    assert len(done) == 1 and len(sessions) == 1
    rec, received = done[0], bytes(sessions[0].input_audio)
    root = rec.parent
    assert {p.name for p in rec.iterdir()} == LAYOUT
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and stat.S_IMODE(rec.stat().st_mode) == 0o700
    for p in rec.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p

    doc = timeline(rec)
    assert doc["version"] == 1 and doc["rate"] == FMT.rate and doc["session"] == sessions[0].id
    assert doc["files"] == {"mic": "mic.wav", "sent": "sent.wav", "played": "played.wav"}
    assert doc["started_at"].endswith("+00:00")
    mic, sent, played = (read_wav(rec / doc["files"][k]) for k in ("mic", "sent", "played"))
    assert len(mic) == len(sent) == len(played)
    summary = doc["summary"]
    assert abs(summary["duration_s"] - len(mic) / FMT.rate) < 0.01

    # sent.wav from sent_from_s is what the server received, and the raw microphone at the same samples
    start = round(summary["sent_from_s"] * FMT.rate)
    n = len(received) // 2
    assert start >= 0 and start + n <= len(sent)
    got = np.frombuffer(received, dtype="<i2")
    assert np.array_equal(sent[start : start + n], got), "sent.wav is not what the server received"
    assert np.array_equal(mic[start : start + n], got), "the mic at the timeline's offset is not what was sent"
    assert not sent[:start].any() and not sent[start + n :].any()
    assert np.abs(got.astype(np.int32)).max() > 1000, "the sent audio holds no speech: the test proves nothing"

    events = doc["events"]
    kinds = [e["kind"] for e in events]
    for kind in ("state", "wake", "speech_started", "speech_stopped", "transcript", "tool_call", "agent_turn_start",
                 "interrupted", "barge_in", "agent_turn_end", "end"):
        assert kind in kinds, f"no {kind} event in {kinds}"
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    assert events[0]["kind"] == "state" and events[0]["text"] == "listening -> connecting"
    user = [e for e in events if e["kind"] == "transcript" and e["role"] == "user"]
    assert user[0]["text"] == "please turn on the light"
    assert any(e["kind"] == "transcript" and e["role"] == "agent" and e["text"] == "The light is on." for e in events)
    tool = next(e for e in events if e["kind"] == "tool_call")
    assert tool["name"] == "set_light" and tool["outcome"] == "ok"
    wake_t = next(e["t"] for e in events if e["kind"] == "wake")
    # manual trigger: wake.preroll_ms = 500 of the ring, whose newest frame is up to a capture batch old
    assert 0.45 <= summary["preroll_ms"] / 1000 <= 0.8, summary
    assert abs(wake_t - summary["preroll_ms"] / 1000 - summary["sent_from_s"]) < 0.002
    assert 0 < summary["wake_latency_ms"] < 5000
    assert summary["barge_in_stop_ms"] is not None and 0 <= summary["barge_in_stop_ms"] < 300, summary
    assert summary["end_reason"] == "session_ended by server"
    assert doc["erle"] == []  # no canceller runs on these devices

    # played.wav: the agent's tone from its turn's start, nothing after the barge-in
    turn_t = next(e["t"] for e in events if e["kind"] == "agent_turn_start")
    barge_t = next(e["t"] for e in events if e["kind"] == "barge_in")
    loud = np.flatnonzero(np.abs(played.astype(np.int32)) > 100)
    assert loud.size, "played.wav is silent"
    first, last = loud[0] / FMT.rate, loud[-1] / FMT.rate
    assert turn_t - 0.05 <= first <= turn_t + 0.6, (first, turn_t)
    assert last <= barge_t + 0.25, (last, barge_t)
    block = np.frombuffer(agent, dtype="<i2")[4800:7200]
    hit = played[loud[0] : loud[0] + 24000]
    assert any(np.array_equal(hit[i : i + 16], block[:16]) for i in range(0, 9600)), "the agent's audio is not there"


@pytest.mark.skipif(not available_engines(), reason="no echo engine installed")
@pytest.mark.parametrize("engine", available_engines())
async def test_sent_lines_up_with_the_mic_through_the_echo_path(
    pulse: PulseServer, tmp_path: Path, engine: str
) -> None:
    """With an echo canceller in the path and nothing played (so it never acts: the path passes the microphone
    through, delayed by the engine's constant latency), sent.wav still equals mic.wav sample for sample from where
    the timeline says the sent audio starts: the recording takes the latency off."""
    sessions: list[SimSession] = []

    async def script(s: SimSession) -> None:
        sessions.append(s)
        await s.wait_audio(2500, timeout=15)
        await s.end_session()

    speech = shipped_speech("user_request.wav")
    async with Simulator(script=script) as sim, live(
        recording_config(tmp_path, sim, 1, audio={"echo_cancel": engine}), sim
    ) as (daemon, _):
        rt = daemon.runtime
        assert rt is not None and rt.echo is not None and rt.echo.latency >= 0
        latency = rt.echo.latency
        feed = pulse.feed_mic(bytes(FMT.nbytes(500)) + speech + bytes(FMT.nbytes(2000)))
        await asyncio.sleep(0.4)
        await one_session(daemon)
        feed.wait(timeout=30)
        done = await wait_complete(tmp_path, 1)
    assert len(done) == 1
    doc = timeline(done[0])
    mic, sent = read_wav(done[0] / "mic.wav"), read_wav(done[0] / "sent.wav")
    received = np.frombuffer(bytes(sessions[0].input_audio), dtype="<i2")
    start = round(doc["summary"]["sent_from_s"] * FMT.rate)
    n = received.size
    assert doc["erle"] == []
    # the first `latency` samples the path sent are from before the session's first frame: compare after them
    assert np.array_equal(sent[start : start + n], received), "sent.wav is not what the server received"
    lo = start + latency
    assert np.array_equal(sent[lo : start + n], mic[lo : start + n]), f"sent != mic ({engine}, latency {latency})"
    assert np.abs(received.astype(np.int32)).max() > 1000, "no speech was sent: the test proves nothing"


async def test_only_the_last_n_sessions_are_kept(pulse: PulseServer, tmp_path: Path) -> None:
    """record_sessions = 2 and three sessions: exactly the two newest recordings remain, each complete."""
    async with Simulator(script=quick_end) as sim, live(recording_config(tmp_path, sim, 2), sim) as (daemon, _):
        for _ in range(3):
            await one_session(daemon)
            await wait_complete(tmp_path, 1)
        await asyncio.sleep(0.5)
    left = await wait_complete(tmp_path, 2)
    assert [p.name.rsplit("-", 1)[1] for p in recordings(tmp_path)] == ["2", "3"]
    assert [p.name.rsplit("-", 1)[1] for p in left] == ["2", "3"]
    for rec in left:
        assert {p.name for p in rec.iterdir()} == LAYOUT
        assert timeline(rec)["summary"]["end_reason"] == "session_ended by server"


async def test_the_total_size_is_bounded_oldest_first(pulse: PulseServer, tmp_path: Path) -> None:
    """record_max_mb = 2 with room for 20 by count: sessions of ~2.5 s after 4.5 s of kept history take about
    1 MB each (three tracks of ~7 s), so after four sessions the oldest are gone, the rest fit in 2 MB, and the
    newest is kept whole."""

    async def script(s: SimSession) -> None:
        await s.wait_audio(2500, timeout=10)
        await s.end_session()

    async with Simulator(script=script) as sim, live(
        recording_config(tmp_path, sim, 20, debug={"record_max_mb": 2}), sim
    ) as (daemon, _):
        await asyncio.sleep(5.0)  # the kept history fills
        for _ in range(4):
            await one_session(daemon)
            await wait_complete(tmp_path, 1)
            await asyncio.sleep(0.5)
    await asyncio.sleep(0.5)
    left = recordings(tmp_path)
    numbers = [int(p.name.rsplit("-", 1)[1]) for p in left]
    assert numbers and numbers[-1] == 4 and numbers == list(range(numbers[0], 5)), numbers
    assert len(left) < 4, "nothing was deleted: the size bound did not act"
    assert sum(dir_bytes(p) for p in left) <= 2_000_000
    assert dir_bytes(left[-1]) > 600_000
    for p in left:
        summary = timeline(p)["summary"]
        assert summary["truncated_at_s"] is None and summary["duration_s"] > 5.0, summary


async def test_nothing_is_recorded_when_off(pulse: PulseServer, tmp_path: Path) -> None:
    """record_sessions = 0 (the default): a session runs, nothing is created in the state directory, no tap is
    installed, and a record request is refused saying how to turn recordings on."""
    state = tmp_path / "state"
    state.mkdir()
    async with Simulator(script=quick_end) as sim, live(recording_config(tmp_path, sim, 0), sim) as (daemon, _):
        rt = daemon.runtime
        assert rt is not None and not rt.recorder.enabled and rt.recorder not in rt.mic.stages
        assert rt.recorder.on_sent is None
        await one_session(daemon)
        reply = await asyncio.wait_for(rt.recorder.control(daemon._control)({"cmd": "record", "seconds": 5}), 5)
        assert reply["ok"] is False and "record_sessions" in reply["error"]
        await asyncio.sleep(0.5)
    assert list(state.iterdir()) == []


def test_recordings_without_a_state_directory_are_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """record_sessions > 0 with neither [state] directory nor $STATE_DIRECTORY: the daemon refuses to start (and a
    reload is refused), naming the key; with $STATE_DIRECTORY it starts."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = daemon_config(tmp_path, "http://127.0.0.1:9", "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                        debug={"record_sessions": 1})
    with pytest.raises(ConfigError) as exc:
        check_runnable(cfg)
    assert exc.value.problems[0].startswith("debug.record_sessions: ")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "sd"))
    check_runnable(cfg)
    assert stat.S_IMODE((tmp_path / "sd" / "recordings").stat().st_mode) == 0o700


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(VATEL_EDGE, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_record_seconds_records_the_next_seconds(pulse: PulseServer, tmp_path: Path) -> None:
    """`vatel-edge record --seconds 2 --config FILE` while listening: it prints the directory, which is complete
    about 2 s later, holds the microphone of those seconds (and the history before) and no session; a second
    request while it runs extends it. With recordings off the command fails and says why."""
    async with Simulator(script=quick_end) as sim:
        cfg = recording_config(tmp_path, sim, 2)
        conf = tmp_path / "vatel-edge.toml"
        conf.write_text(toml_text({"vatel": {"agent_id": sim.agent_id},
                                   "control": {"socket_path": cfg.control.socket_path}}), encoding="utf-8")
        async with live(cfg, sim):
            mark = tone(1000, freq=500.0, level_dbfs=-15)
            code, out, err = await _cli("record", "--seconds", "2", "--config", str(conf))
            asked = time.monotonic()
            assert code == 0, err
            pulse.feed_mic(mark)
            path = Path(out.splitlines()[0].split(": ", 1)[1])
            assert path.parent == tmp_path / "state" / "recordings"
            done = await wait_complete(tmp_path, 1, timeout=10)
            took = time.monotonic() - asked
        assert len(done) == 1 and done[0] == path
        assert 1.5 <= took <= 4.0, took
        doc = timeline(path)
        assert doc["summary"]["end_reason"] == "recording time elapsed"
        assert not [e for e in doc["events"] if e["kind"] == "wake"]
        mic = read_wav(path / "mic.wav")
        assert 2.0 <= len(mic) / FMT.rate <= 2.0 + 4.5 + 1.5, len(mic) / FMT.rate
        assert np.abs(mic.astype(np.int32)).max() > 3000, "the tone fed during the window is not in mic.wav"
        assert not read_wav(path / "sent.wav").any()

        off = tmp_path / "off"
        off.mkdir()
        cfg_off = recording_config(off, sim, 0)
        conf.write_text(toml_text({"vatel": {"agent_id": sim.agent_id},
                                   "control": {"socket_path": cfg_off.control.socket_path}}), encoding="utf-8")
        async with live(cfg_off, sim):
            code, out, err = await _cli("record", "--seconds", "2", "--config", str(conf))
        assert code == 1 and "record_sessions" in err and out == ""
    assert sys.executable  # the console script runs in this venv (tests/support/daemon.VATEL_EDGE)
    assert os.path.exists(VATEL_EDGE)


def test_a_recording_that_alone_reaches_the_bound_stops_growing(tmp_path: Path) -> None:
    """The writer thread with record_max_mb = 1 and 30 s of microphone frames (3 tracks of 1.44 MB each when
    finished): an older recording is deleted first, then the new one stops where it would pass the bound
    (truncated_at_s in the summary), and what is on disk stays within it; the files are still valid WAVs."""
    root = tmp_path / "recordings"
    old = root / "20260101-000000-1"
    old.mkdir(parents=True)
    (old / "mic.wav").write_bytes(bytes(300_000))
    writer = RecordingWriter(root, 5, 1_000_000)
    writer.start()
    frame = FMT.samples(20)
    rec = Recording(root / "20260101-000100-2", 2, 0.0, 0, frame, 0)
    writer.put_control(rec, ("open",))
    pcm = tone(20, freq=300.0)
    for seq in range(1500):
        while True:  # the test waits for the writer instead of letting the bounded queue drop frames
            before = rec.dropped
            writer.put_audio(rec, ("mic", seq, 0.02 * (seq + 1), pcm))
            if rec.dropped == before:
                break
            time.sleep(0.01)
    doc = TimelineBuilder(0.0, "2").document("2026-01-01T00:01:00+00:00", FMT.rate, {}, {"end_reason": "test"})
    writer.put_control(rec, ("finish", doc))
    writer.stop()
    assert writer.join(10.0)
    assert not old.exists(), "the older recording was not deleted first"
    summary = timeline(rec.path)["summary"]
    assert summary["truncated_at_s"] is not None and 4.0 < summary["truncated_at_s"] < 7.0, summary
    assert dir_bytes(rec.path) <= 1_000_000
    mic = read_wav(rec.path / "mic.wav")
    assert abs(len(mic) / FMT.rate - summary["truncated_at_s"]) < 0.05 and mic.any()


def test_timeline_events_from_the_daemons_event_texts() -> None:
    """The hub's event texts (protocol.describe) become the recording's kinds: transcripts with their role and
    finality, the server's interruption, a tool call at its call time with its outcome and duration."""
    tl = TimelineBuilder(100.0, "7")
    user = protocol.InputAudioTranscript(transcript="half a sen", is_final=False)
    tl.add("input_audio_transcript", protocol.describe(user), {}, 101.0)
    agent = protocol.ResponseText(turn_id="t2", text="Sure: it is on.", is_final=True)
    tl.add("response_text", protocol.describe(agent), {}, 102.0)
    tl.add("tool_call", "tool_call lamp id=c1 args=[]", {"name": "lamp", "id": "c1"}, 103.0)
    tl.add("tool_call_output", "lamp id=c1 -> done", {"name": "lamp", "id": "c1", "outcome": "ok"}, 103.5)
    tl.add("interruption", "interruption", {}, 104.0)
    tl.add("barge_in", "server interruption: turn t2 cut", {"source": "server interruption", "heard_ms": 900}, 104.01)
    events = tl.document("x", FMT.rate, {}, tl.summary([104.03], "test"))["events"]
    assert events[0] == {"t": 1.0, "kind": "transcript", "text": "half a sen", "role": "user", "final": False}
    assert events[1] == {"t": 2.0, "kind": "transcript", "text": "Sure: it is on.", "role": "agent", "final": True,
                         "turn_id": "t2"}
    assert events[2] == {"t": 3.0, "kind": "tool_call", "text": "lamp: ok", "name": "lamp", "outcome": "ok",
                         "id": "c1", "duration_ms": 500.0}
    assert [e["kind"] for e in events[3:]] == ["interrupted", "barge_in"]
    assert tl.summary([104.03], "test")["barge_in_stop_ms"] == 30.0


async def test_a_session_during_a_requested_recording_is_recorded_to_its_end(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """A record request of 1 s, then a session of about 2 s starting within it: one recording, holding the
    session from its wake to LISTENING again (its end reason), longer than the requested second."""

    async def script(s: SimSession) -> None:
        await s.wait_audio(2500, timeout=10)
        await s.end_session()

    async with Simulator(script=script) as sim, live(recording_config(tmp_path, sim, 3), sim) as (daemon, _):
        rt = daemon.runtime
        assert rt is not None
        reply = await rt.recorder.control(daemon._control)({"cmd": "record", "seconds": 1})
        assert reply["ok"] and reply["started"] and not reply["in_session"], reply
        await asyncio.sleep(0.3)
        await one_session(daemon)
        done = await wait_complete(tmp_path, 1)
    assert len(recordings(tmp_path)) == 1 and len(done) == 1
    doc = timeline(done[0])
    kinds = [e["kind"] for e in doc["events"]]
    assert kinds.count("wake") == 1 and "end" in kinds
    assert doc["events"][-1]["text"] == "ending -> listening"
    assert doc["summary"]["end_reason"] == "session_ended by server"
    wake = next(e["t"] for e in doc["events"] if e["kind"] == "wake")
    assert doc["summary"]["duration_s"] >= wake + 1.5
