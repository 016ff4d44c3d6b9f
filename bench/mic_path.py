"""The microphone path in a real-time reverberant room with recorded human speech: the issue-14 figures.

The real daemon (in process: `Daemon` + `running`) on the sandbox's real-time devices, with
`devkit.room.RealTimeRoom` between its speaker and its microphone (RT60 0.4 s, loudspeaker 15 cm from the mic,
tanh soft clipping) and the user (recorded human speech, devkit/speech.py) at 1-3 m. What the simulator
received (`input_audio`) is compared with a `SourceRecorder` on mic.monitor (what the daemon's microphone
captured, underruns of the room included), never with the clean clip; the user's own part of the microphone
(`UserSpeech.at_mic`) is located in that recording, so the user's speech, the room's output and what was sent
share one time base (recorder samples).

NOT YET HOOKED INTO bench/run: preroll_wakes timed out (next_session) in its first quick run on the loaded
machine and local_barge_in did not see the daemon return to listening; the functions are here to finish.
Figures (planned for bench/run, phase "microphone path in the room"):
* preroll_min: pre-roll before the first sound of the clean clip, minimum over N wakes (floor: the configured
  wake.preroll_ms; goal >= 250 ms);
* stream_continuity: over a 3-turn session with a barge-in and a pause, samples of what was sent that are NOT
  the microphone at the session's one lag outside the echo-cancelled stretches (floor 0; goal 0), plus the
  number of distinct lags seen;
* echo_reduction: mic echo power over sent power in echo-only 20 ms frames after the canceller converged
  (floor 30 dB = the goal);
* echo_vad_frames: echo-only frames of what was sent that webrtcvad calls speech (% of echo-only frames);
* user_during_agent: 100 ms blocks of the user speaking during agent audio that arrive correlating >= 0.5 with
  the user's part of the microphone, from the first turn after start, default mic_during_playback = "auto";
* barge_in_local: session.barge_in = "local", user onset -> silence at the speaker (median), and the agent's
  own speech played for as long as the run affords without the user: local barge-ins fired on it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.measure import Figure
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import Config
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.room import RealTimeRoom, RoomSetup, SourceRecorder, UserSpeech
from vatel_edge.devkit.sandbox import PulseServer
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.speech import speech_onset
from vatel_edge.state import State

FMT = VATEL_FORMAT
Pcm = npt.NDArray[np.int16]
Script = Callable[[SimSession], Awaitable[None]]
Scene = tuple[Simulator, Daemon, "RealTimeRoom | None", SourceRecorder, list[tuple[str, str]]]
FRAME = FMT.samples(20)
BLOCK = FMT.samples(100)


# ------------------------------------------------------------------------------------------------ analysis


def pcm(data: bytes | bytearray) -> Pcm:
    return np.frombuffer(bytes(data)[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)


def locate(haystack: Pcm, needle: Pcm | npt.NDArray[np.float64]) -> int:
    """Index where `needle` best matches in `haystack` (FFT cross-correlation)."""
    h, k = haystack.astype(np.float64), np.asarray(needle, dtype=np.float64)
    size = 1 << int(np.ceil(np.log2(h.size + k.size)))
    c = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(k, size)), size)[: h.size - k.size + 1]
    return int(np.argmax(c))


def exact_at(haystack: Pcm, needle: Pcm) -> list[int]:
    """Every sample index where `needle` occurs sample for sample in `haystack`."""
    hay, pin = haystack.astype("<i2").tobytes(), needle.astype("<i2").tobytes()
    found, at = [], hay.find(pin)
    while at >= 0:
        if at % 2 == 0:
            found.append(at // 2)
        at = hay.find(pin, at + 1)
    return found


def session_lag(received: Pcm, recorded: Pcm) -> int:
    """The lag of the sent stream in the recording: recorded[i + lag] == received[i] for its first 20 ms."""
    for start in range(0, received.size - FRAME, FRAME):
        block = received[start : start + FRAME]
        if np.abs(block.astype(np.int32)).max() < 8:
            continue  # digital silence of the sink matches anywhere
        hits = exact_at(recorded, block)
        if len(hits) == 1:
            return hits[0] - start
    raise AssertionError("no 20 ms of what was sent is in the microphone recording")


def exact_blocks(received: Pcm, recorded: Pcm, lag: int, n: int = FRAME) -> npt.NDArray[np.bool_]:
    """Per `n`-sample block of `received`: is it the recording at `lag`, sample for sample?"""
    count = min(received.size, recorded.size - lag) // n
    a = received[: count * n].reshape(count, n)
    b = recorded[lag : lag + count * n].reshape(count, n)
    out: npt.NDArray[np.bool_] = np.all(a == b, axis=1)
    return out


def loud_stretches(x: Pcm, *, threshold: int = 64, gap: int = FMT.samples(300)) -> list[tuple[int, int]]:
    """(start, end) of the stretches where `x` is louder than `threshold`, gaps shorter than `gap` bridged."""
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > threshold)
    if loud.size == 0:
        return []
    out: list[tuple[int, int]] = []
    start = prev = int(loud[0])
    for i in loud[1:]:
        if i - prev > gap:
            out.append((start, prev + 1))
            start = int(i)
        prev = int(i)
    out.append((start, prev + 1))
    return out


def correlation(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not x.any() or not y.any():
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


@dataclass
class Recorded:
    """One scene: what was sent, the microphone recording, and where things are in the recording."""

    received: Pcm  # input_audio the simulator received
    recorded: Pcm  # mic.monitor (SourceRecorder)
    played: Pcm  # spk.monitor as the room read it (room-stream samples)
    offset: int  # recording index of room-stream sample 0
    speech: list[UserSpeech]
    session: SimSession
    events: list[tuple[str, str]] = field(default_factory=list)
    echo: dict[str, Any] = field(default_factory=dict)  # the daemon's EchoPath at the end (None: no engine)

    def user_at_mic(self) -> npt.NDArray[np.float64]:
        """The user's part of the microphone, in recording samples."""
        out = np.zeros(self.recorded.size)
        for said in self.speech:
            a = said.start + self.offset
            part = said.at_mic[: max(0, out.size - a)]
            out[a : a + part.size] += part
        return out

    def onset(self, said: UserSpeech) -> int:
        """Recording index where the first sound of the clean clip (speech_onset) reaches the microphone."""
        return said.start + self.offset + said.direct_delay + speech_onset(said.clean)

    def playing(self) -> list[tuple[int, int]]:
        """Where the speaker played (recording samples; the room's direct delay included)."""
        return [(a + self.offset, b + self.offset) for a, b in loud_stretches(self.played, gap=FMT.samples(900))]


def user_blocks(rec: Recorded, lag: int, spans: Sequence[tuple[int, int]], *, min_dbfs: float = -45.0) -> list[float]:
    """Correlation with the user's part of the mic of every loud 100 ms block of user speech inside `spans`
    (recording samples), in what was sent at `lag`."""
    user = rec.user_at_mic()
    out: list[float] = []
    for a, b in spans:
        for s in range(a, b - BLOCK, BLOCK):
            ref = user[s : s + BLOCK]
            if np.sqrt(np.mean(ref**2)) < 32768 * 10 ** (min_dbfs / 20):
                continue
            got = rec.received[s - lag : s - lag + BLOCK] if s - lag >= 0 else np.zeros(0)
            out.append(correlation(got, ref) if got.size == BLOCK else 0.0)
    return out


# ------------------------------------------------------------------------------------------------ a scene


@asynccontextmanager
async def room_daemon(pulse: PulseServer, cfg_for: Callable[[Simulator], Config], script: Script, *,
                      setup: RoomSetup | None = None, echo: bool = True,
                      ) -> AsyncIterator[Scene]:
    """Simulator, the room (None: no echo path, the caller feeds the mic) and a recorder on mic.monitor, then the
    daemon once listening. The caller says things and waits for the session."""
    events: list[tuple[str, str]] = []
    async with Simulator(script=script) as sim:
        rt = RealTimeRoom(pulse, setup or RoomSetup()) if echo else None
        if rt is not None:
            rt.start()
        try:
            with SourceRecorder(pulse) as recorder:
                daemon = Daemon(cfg_for(sim), api_key=sim.api_key, on_event=lambda k, t: events.append((k, t)))
                async with running(daemon):
                    await daemon.wait_state(State.LISTENING, timeout=20)
                    yield sim, daemon, rt, recorder, events
        finally:
            if rt is not None:
                rt.close()


async def wait_room(rt: RealTimeRoom, sample: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(lambda: rt.position) < sample:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the room did not reach sample {sample}")
        await asyncio.sleep(0.1)


def finish(session: SimSession, rt: RealTimeRoom, recorder: SourceRecorder, daemon: Daemon,
           events: list[tuple[str, str]]) -> Recorded:
    """What the scene recorded, aligned on the user's speech (its part of the microphone found in the recording)."""
    recorded = recorder.samples()
    said = rt.speech[0]
    guess = locate(recorded, said.at_mic)
    offset = guess - said.start
    echo: dict[str, Any] = {}
    path = daemon.echo if hasattr(daemon, "echo") else None
    try:
        if path is not None:
            echo = {"name": path.name, "converged": path.converged, "no_echo_path": path.no_echo_path,
                    "erle_db": path.erle_db, "latency": path.latency, "stats": dict(path.stats)}
    except (AttributeError, RuntimeError):
        echo = {}
    return Recorded(pcm(session.input_audio), recorded, rt.played(), offset, rt.speech, session, events, echo)


# ------------------------------------------------------------------------------------------------ bench figures


def figure_preroll(leads_ms: list[float], preroll_ms: int) -> Figure:
    value = min(leads_ms) if leads_ms else None
    return Figure("preroll_min", f"Pre-roll before the speech onset, minimum over {len(leads_ms)} wakes (room, "
                  "human speech)", "ms", value, float(preroll_ms), "wake.preroll_ms (configured)",
                  goal=">= 250 ms", met=None if value is None else value >= 250.0,
                  note=f"median {statistics.median(leads_ms):.0f} ms" if leads_ms else "",
                  samples=[round(x, 1) for x in leads_ms])


def stat_note(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def elapsed(t0: float) -> float:
    return time.monotonic() - t0


def clip_path(name: str) -> Path:
    from vatel_edge.devkit.speech import SPEECH_CLIPS

    return SPEECH_CLIPS[name].path


# ------------------------------------------------------------------------------------------------ the bench phase

PREROLL_CLIPS = ("front_right", "seven_of_clubs", "side_left", "four_queen_of_clubs", "front_center",
                 "eight_of_spades", "ill_disposed")


def _config(sim: Simulator, **sections: Any) -> Config:
    from vatel_edge.config import config_from_dict
    from vatel_edge.devkit.fixtures import deep_merge, lab_config

    raw = lab_config(sim.agent_id, sim.base_url, wake={"mode": "vad", "preroll_ms": 500, "cooldown_ms": 300},
                     session={"idle_timeout_s": 30.0}, audio={"echo_cancel": "auto", "mic_during_playback": "auto"})
    return config_from_dict(deep_merge(raw, sections))


async def _listen_then_end(s: SimSession) -> None:
    from vatel_edge.devkit.simulator.script import wait_for_utterance

    await wait_for_utterance(s, speech_ms=200, silence_ms=700)
    await s.end_session()


async def preroll_wakes(pulse: PulseServer, wakes: int) -> list[float]:
    """ms of microphone sent before the first sound of the clip, for `wakes` wakes with recorded speech at 2 m."""
    from vatel_edge.devkit.speech import human_speech

    leads: list[float] = []
    async with room_daemon(pulse, _config, _listen_then_end) as (sim, daemon, rt, recorder, events):
        assert rt is not None
        for k in range(wakes):
            said = rt.say(human_speech(PREROLL_CLIPS[k % len(PREROLL_CLIPS)]), at_s=rt.position / FMT.rate + 0.6)
            session = await sim.next_session(timeout=20)
            await session.wait_closed(timeout=30)
            await wait_room(rt, said.end, timeout=15)
            await daemon.wait_state(State.LISTENING, timeout=10)
            await asyncio.sleep(0.4)  # the cooldown
            rec = finish(session, rt, recorder, daemon, events)
            lag = session_lag(rec.received, rec.recorded)
            leads.append(1000.0 * (rec.onset(said) - lag) / FMT.rate)
    return leads


def _vad_speech(frames: list[npt.NDArray[np.float64]]) -> int:
    import webrtcvad

    from vatel_edge.audio.resample import Resampler

    vad = webrtcvad.Vad(2)
    count = 0
    for fr in frames:
        level = 20 * np.log10(np.sqrt(np.mean(fr**2)) / 32768 + 1e-9)
        if level < -45:
            continue
        down = Resampler(FMT.rate, 8000).process(np.clip(fr, -32768, 32767).astype(np.int16))
        count += bool(vad.is_speech(down[:160].astype("<i2").tobytes(), 8000))
    return count


async def three_turns(pulse: PulseServer) -> dict[str, Any]:
    """A fresh daemon's first session: three agent turns (the third interrupted), default settings, the user
    (recorded speech, 2 m) waking it, then talking into the first turn and over the start of the third."""
    from vatel_edge.devkit.fixtures import shipped_speech
    from vatel_edge.devkit.speech import human_speech

    answer = shipped_speech("agent_answer.wav")

    async def script(s: SimSession) -> None:
        await s.wait_audio(800)
        await s.send_turn("t1", answer[: FMT.nbytes(7000)], realtime=True)
        await s.wait_seconds(1.5)
        await s.send_turn("t2", answer[: FMT.nbytes(4000)], realtime=True)
        await s.wait_seconds(1.5)
        third = asyncio.create_task(s.send_turn("t3", answer, realtime=True))
        await s.wait_seconds(4.0)
        third.cancel()
        await s.interrupt()
        await s.wait_seconds(2.5)
        await s.end_session()

    async with room_daemon(pulse, _config, script) as (sim, daemon, rt, recorder, events):
        assert rt is not None
        first = rt.say(human_speech("ill_disposed"), at_s=rt.position / FMT.rate + 0.6)
        t = first.start / FMT.rate
        rt.say(human_speech("dashwood"), at_s=t + 5.0)  # ~1.5 s into the first turn
        rt.say(human_speech("cold_hearted"), at_s=t + 20.5)  # around the third turn's start
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=60)
        await daemon.wait_state(State.LISTENING, timeout=10)
        rec = finish(session, rt, recorder, daemon, events)
    lag = session_lag(rec.received, rec.recorded)
    exact = exact_blocks(rec.received, rec.recorded, lag)
    turns = rec.playing()
    inside = np.zeros(exact.size, dtype=bool)
    for a, b in turns:
        inside[max(0, (a - lag) // FRAME - 5) : max(0, (b - lag) // FRAME + 65)] = True  # + HOLD_S and slack
    outside = np.flatnonzero(~inside)
    bad_samples = int(sum(np.count_nonzero(rec.received[k * FRAME : (k + 1) * FRAME]
                                            != rec.recorded[lag + k * FRAME : lag + (k + 1) * FRAME])
                          for k in outside[~exact[outside]]))
    user = rec.user_at_mic()
    quiet_user = 32768 * 10 ** (-65 / 20)
    mic_frames, sent_frames, echo_mic, echo_sent = [], [], 0.0, 0.0
    noise = float(np.mean(rec.recorded[max(0, lag - FMT.samples(300)) : lag].astype(np.float64) ** 2)) or 1.0
    muted_end = 0
    for k in range(turns[0][0] // FRAME, turns[0][1] // FRAME):
        i = k * FRAME - lag
        if 0 <= i < rec.received.size - FRAME and not rec.received[i : i + FRAME].any():
            muted_end = k * FRAME + FRAME
    for a, b in turns:
        for s in range(a, b - FRAME, FRAME):
            if (np.sqrt(np.mean(user[s - FRAME : s + 2 * FRAME] ** 2)) > quiet_user
                    or s - lag + FRAME > rec.received.size):
                continue
            m = rec.recorded[s : s + FRAME].astype(np.float64)
            y = rec.received[s - lag : s - lag + FRAME].astype(np.float64)
            mic_frames.append(m)
            sent_frames.append(y)
            if s >= muted_end and y.any():  # after convergence (the muted stretch of the first turn over)
                echo_mic += float(np.mean(m**2))
                echo_sent += float(np.mean(y**2))
    blocks = user_blocks(rec, lag, turns)
    at_mic = user_blocks(Recorded(rec.recorded[lag:], rec.recorded, rec.played, rec.offset, rec.speech, rec.session),
                         lag, turns)
    first_turn = user_blocks(rec, lag, turns[:1])
    return {
        "lag": lag, "turns": len(turns), "outside_blocks": int(outside.size), "bad_samples": bad_samples,
        "erle_db": 10 * np.log10(echo_mic / echo_sent) if echo_sent > 0 else None,
        "erle_ceiling_db": 10 * np.log10(echo_mic / max(1e-9, noise * len(mic_frames))) if mic_frames else None,
        "echo_frames": len(sent_frames), "echo_speech_sent": _vad_speech(sent_frames),
        "echo_speech_mic": _vad_speech(mic_frames),
        "user_ok": sum(c >= 0.5 for c in blocks), "user_blocks": len(blocks),
        "user_ok_mic": sum(c >= 0.5 for c in at_mic),
        "user_ok_first": sum(c >= 0.5 for c in first_turn), "user_first": len(first_turn),
        "muted_ms": 1000.0 * max(0, muted_end - turns[0][0]) / FMT.rate,
        "barge_ins": sum(k == "barge_in" for k, _ in events), "echo": rec.echo,
    }


async def local_barge_in(pulse: PulseServer, trials: int, agent_s: float) -> dict[str, Any]:
    """session.barge_in = "local": per trial the agent talks; after `agent_s` of its speech alone the user says
    "Front right" (2 m). Onset -> the first 20 ms of silence in spk.monitor; local barge-ins before the user spoke."""
    from vatel_edge.devkit.fixtures import shipped_speech
    from vatel_edge.devkit.speech import human_speech

    answer = shipped_speech("agent_answer.wav")
    long_turn = answer * (int(agent_s // 10) + 3)
    latencies: list[float] = []
    self_cuts = 0
    spoken_s = 0.0
    cfg = functools_partial(_config, session={"barge_in": "local", "idle_timeout_s": 30.0},
                            wake={"mode": "vad", "preroll_ms": 500, "cooldown_ms": 300})

    stops: list[asyncio.Event] = []

    async def script(s: SimSession) -> None:
        stop = asyncio.Event()
        stops.append(stop)
        await s.wait_audio(600)
        turn = asyncio.create_task(s.send_turn("long", long_turn, realtime=True))
        await stop.wait()
        turn.cancel()
        await s.end_session()

    async with room_daemon(pulse, cfg, script) as (sim, daemon, rt, _recorder, events):
        assert rt is not None
        for _ in range(trials):
            wake = rt.say(human_speech("ill_disposed"), at_s=rt.position / FMT.rate + 0.6)
            session = await sim.next_session(timeout=20)
            await session.wait_audio(600)  # the wake utterance is in; the long turn starts now
            start = rt.position
            before = sum(k == "barge_in" for k, _ in events)
            await asyncio.sleep(agent_s)
            self_cuts += sum(k == "barge_in" for k, _ in events) - before
            spoken_s += (rt.position - start) / FMT.rate
            said = rt.say(human_speech("front_right"), at_s=rt.position / FMT.rate + 0.2)
            await wait_room(rt, said.start + FMT.samples(2500), timeout=15)
            stops[-1].set()
            await session.wait_closed(timeout=30)
            try:
                await daemon.wait_state(State.LISTENING, timeout=10)
            except TimeoutError:
                b_state = daemon.state
                raise RuntimeError(f"after the barge-in trial the daemon stayed {b_state}") from None
            await asyncio.sleep(0.4)
            played = rt.played()
            onset = said.start + said.direct_delay + speech_onset(said.clean)
            silent = None
            for i in range(onset, played.size - FRAME, FMT.samples(5)):
                if not played[i : i + FRAME].any():
                    silent = i
                    break
            if silent is not None:
                latencies.append(1000.0 * (silent - onset) / FMT.rate)
            del wake
    return {"latencies_ms": latencies, "self_cuts": self_cuts, "agent_alone_s": spoken_s}


def functools_partial(fn: Callable[..., Config], **kw: Any) -> Callable[[Simulator], Config]:
    return lambda sim: fn(sim, **kw)


async def mic_path_figures(pulse: PulseServer, *, quick: bool, session_aec: Figure | None) -> list[Figure]:
    """Every figure of this module, measured in one go (see the module docstring)."""
    from bench.echo_room import cpu_per_frame

    figs: list[Figure] = []
    print("mic path: pre-roll", flush=True)
    leads = await preroll_wakes(pulse, 2 if quick else 20)
    figs.append(figure_preroll(leads, 500))
    t = await three_turns(pulse)
    figs.append(Figure(
        "stream_continuity", "Stream continuity, 3-turn session in the room (samples off the one lag outside the "
        "canceller)", "samples", float(t["bad_samples"]), 0.0, "none (the microphone itself)", goal="0, one lag",
        met=t["bad_samples"] == 0,
        note=f"lag {t['lag']} samples; {t['outside_blocks']} 20 ms blocks outside the canceller compared; "
             f"{t['turns']} turns; barge-ins {t['barge_ins']}", extra=t))
    erle, ceiling = t["erle_db"], t["erle_ceiling_db"]
    figs.append(Figure(
        "echo_reduction", "Echo reduction after convergence, reverberant non-linear room", "dB",
        None if erle is None else round(float(erle), 1), None if ceiling is None else round(float(ceiling), 1),
        "ceiling: echo over the room's noise at the mic, same frames", goal=">= 30 dB",
        met=None if erle is None else erle >= 30.0,
        note=f"echo-only frames after the first turn's muted stretch ({t['muted_ms']:.0f} ms); engine {t['echo']}"))
    frames = max(1, t["echo_frames"])
    figs.append(Figure(
        "echo_vad_frames", "Echo-only agent speech a VAD calls speech in what is sent", "%",
        round(100.0 * t["echo_speech_sent"] / frames, 1), round(100.0 * t["echo_speech_mic"] / frames, 1),
        "the same frames at the microphone (no cancellation)", goal="< 3 %",
        met=100.0 * t["echo_speech_sent"] / frames < 3.0,
        note=f"{t['echo_speech_sent']}/{t['echo_frames']} frames (muted frames count as not speech); webrtcvad 2, "
             ">= -45 dBFS"))
    ub = max(1, t["user_blocks"])
    figs.append(Figure(
        "user_during_agent", "User speech during agent speech reaching the server (100 ms blocks r >= 0.5)", "%",
        round(100.0 * t["user_ok"] / ub, 1), round(100.0 * t["user_ok_mic"] / ub, 1),
        "the same blocks at the microphone", goal=">= 90 %, from the first turn",
        met=100.0 * t["user_ok"] / ub >= 90.0,
        note=f"{t['user_ok']}/{t['user_blocks']} blocks; first turn after start {t['user_ok_first']}/"
             f"{t['user_first']} (mic_during_playback auto muted its first {t['muted_ms']:.0f} ms)"))
    print(f"mic path: {figs}", flush=True)
    b = await local_barge_in(pulse, 1 if quick else 5, 4.0 if quick else 12.0)
    lat = b["latencies_ms"]
    figs.append(Figure(
        "barge_in_local", "Local barge-in: user onset -> silence at the speaker (median)", "ms",
        statistics.median(lat) if lat else None, 90.0,
        "session.barge_in_min_speech_ms (the debounce)", goal="<= 250 ms, no self-interruption",
        met=None if not lat else statistics.median(lat) <= 250.0 and b["self_cuts"] == 0,
        note=f"{len(lat)} trials; self-interruptions {b['self_cuts']} in {b['agent_alone_s']:.0f} s of agent speech "
             "alone (the issue asks 10 min)", samples=[round(x, 1) for x in lat]))
    engine_ms = cpu_per_frame("webrtc") * 1000.0
    if session_aec is not None and session_aec.value is not None and session_aec.floor is not None:
        floor = session_aec.floor + 100.0 * engine_ms / 20.0
        figs.append(Figure(
            "session_cpu_aec_vs_floor", "Session CPU with the webrtc canceller vs client + canceller alone", "%core",
            session_aec.value, round(floor, 3), "bare websockets client + the canceller alone on the same frames",
            goal="ratio <= 1.8", met=session_aec.value / floor <= 1.8,
            note=f"canceller alone {engine_ms:.3f} ms per 20 ms frame (bench/echo_room.cpu_per_frame)"))
    else:
        figs.append(missing_cpu())
    return figs


def missing_cpu() -> Figure:
    from bench.measure import missing

    return missing("session_cpu_aec_vs_floor", "Session CPU with the webrtc canceller vs client + canceller alone",
                   "%core", "bare websockets client + the canceller alone", "the session cost phase did not run")
