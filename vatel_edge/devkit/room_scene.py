"""The microphone path in a real-time reverberant room with recorded human speech: helpers of the room tests
(tests/daemon/test_room_speech.py) and of bench/mic_path.py.

The real daemon (in process: `Daemon` + `running`) on the test devices, with `devkit.room.RealTimeRoom` between
its speaker and its microphone (RT60 0.4 s, loudspeaker 15 cm from the mic, tanh soft clipping) and the user
(recorded human speech, devkit/speech.py) at 1-3 m. What the simulator received (`input_audio`) is compared
with a `SourceRecorder` on mic.monitor (what the daemon's microphone captured, underruns of the room
included), never with the clean clip; the user's own part of the microphone (`UserSpeech.at_mic`) is located
in that recording, so the user's speech, the room's output and what was sent share one time base.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vatel_edge.audio.aec_path import HOLD_S
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import Config
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.room import RealTimeRoom, Rendered, RoomSetup, SourceRecorder, UserSpeech, render_parts
from vatel_edge.devkit.sandbox import PulseServer
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.speech import human_speech, speech_onset
from vatel_edge.state import State

FMT = VATEL_FORMAT
Pcm = npt.NDArray[np.int16]
Script = Callable[[SimSession], Awaitable[None]]
Scene = tuple[Simulator, Daemon, "RealTimeRoom | None", SourceRecorder, list[tuple[str, str]]]
FRAME = FMT.samples(20)
BLOCK = FMT.samples(100)
ENGINE_LEAD_MS = 250  # how early the canceller may start before the agent audio reaches the mic (three_turns)


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
    capture: dict[str, int] = field(default_factory=dict)  # the daemon's Capture counters at the end
    room: dict[str, Any] = field(default_factory=dict)  # the real-time room's figures (RoomStatus) at the end

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
            ref = path.reference
            echo = {"name": path.name, "converged": path.converged,
                    "erle_db": path.erle_db, "latency": path.latency, "stats": dict(path.stats),
                    "reference": {**ref.stats, "delay_s": ref.delay_s, "estimated_delay_s": ref.estimated_delay_s}}
    except (AttributeError, RuntimeError):
        echo = {}
    room = asdict(rt.status())
    return Recorded(pcm(session.input_audio), recorded, rt.played(), offset, rt.speech, session, events, echo,
                    capture_counters(daemon), room)


def capture_counters(daemon: Daemon) -> dict[str, int]:
    """The daemon's Capture counters now (overruns, dropped, reopens: samples the microphone lost)."""
    capture = daemon.capture
    return capture.stats if capture is not None else {}


def where_blocks(received: Pcm, recorded: Pcm, lag: int, blocks: Sequence[int], n: int = FRAME) -> list[str]:
    """For each block of `received`: where it is in the recording, as lags relative to `lag` ("+0" would be
    exact; "-24" a block 24 samples early: skipped or repeated samples), or "nowhere" (values changed)."""
    out = []
    for k in blocks:
        block = received[k * n : (k + 1) * n]
        hits = exact_at(recorded, block) if np.abs(block.astype(np.int32)).max() >= 8 else []
        out.append(",".join(f"{h - k * n - lag:+d}" for h in hits[:3]) or "nowhere")
    return out


def without_room(session: SimSession, recorder: SourceRecorder, speaker: SourceRecorder, scene: Rendered,
                 daemon: Daemon, events: list[tuple[str, str]]) -> Recorded:
    """A Recorded for a scene without an echo path: the user's rendering located in the mic recording; what the
    speaker played mapped onto the recording by the two recorders' clocks."""
    recorded = recorder.samples()
    begin = scene.user_offset
    at = locate(recorded, scene.user[begin:]) - begin
    spk = speaker.samples()
    played = np.zeros(max(0, recorded.size - at), dtype=np.int16)
    shift = round((speaker.time_of(0) - recorder.time_of(0)) * FMT.rate)  # spk sample i ~ recording i + shift
    step = FMT.samples(10)
    for i in range(0, spk.size, step):
        j = i + shift - at
        if 0 <= j < played.size - step:
            played[j : j + step] = spk[i : i + step]
    said = UserSpeech(0, np.zeros(0, np.int16), scene.user, 0)
    path = daemon.echo
    echo = {"converged": path.converged, "erle_db": path.erle_db} if path is not None else {}
    return Recorded(pcm(session.input_audio), recorded, played, at, [said], session, events, echo)


# ------------------------------------------------------------------------------------------------ scenes


@dataclass
class FirstTurn:
    """The first agent turn after start with the user talking over it (`first_turn`)."""

    rec: Recorded
    lag: int
    deaf_end: int  # recording index where the last 20 ms of digital silence sent during the overlap ends
    user_end: int  # recording index where the overlap of the user's talk with the turn ends
    deaf_ms: float  # the muted stretch from the turn's start
    during: list[float]  # user_blocks over the whole overlap
    after: list[float]  # ... after the muted stretch


async def first_turn(pulse: PulseServer, cfg_for: Callable[[Simulator], Config], *, echo: bool,
                     setup: RoomSetup) -> FirstTurn:
    """A freshly started daemon's first agent turn (the shipped 10 s answer) while the user (recorded human
    speech) talks over all of it; with `echo` the room carries the speaker into the mic, without it the user's
    rendering alone is fed into the mic (a headset, a well-isolated speaker)."""
    answer = shipped_speech("agent_answer.wav")

    async def script(s: SimSession) -> None:
        await s.wait_audio(700)
        await s.send_turn("t1", answer, realtime=True)
        await s.wait_seconds(1.5)
        await s.end_session()

    # 12.5 s with pauses: overlaps the whole 10 s answer
    user = human_speech("dashwood") + bytes(FMT.nbytes(300)) + human_speech("amiable_woman")
    wake_clip = human_speech("ill_disposed")
    async with room_daemon(pulse, cfg_for, script, setup=setup, echo=echo) as (sim, daemon, rt, recorder, events):
        if rt is not None:
            first = rt.say(wake_clip, at_s=rt.position / FMT.rate + 0.5)
            rt.say(user, at_s=(first.start + first.clean.size) / FMT.rate + 0.2)
            session = await sim.next_session(timeout=20)
            await session.wait_closed(timeout=40)
            await daemon.wait_state(State.LISTENING, timeout=10)
            rec = finish(session, rt, recorder, daemon, events)
        else:
            with SourceRecorder(pulse, "spk.monitor") as speaker:
                clean = np.concatenate([pcm(wake_clip), np.zeros(FMT.samples(200), np.int16), pcm(user),
                                        np.zeros(FMT.samples(8000), np.int16)])
                scene = render_parts(b"", clean.tobytes(), FMT.samples(500), setup=setup)
                feed = pulse.feed_mic(scene.mic.astype("<i2").tobytes())
                session = await sim.next_session(timeout=20)
                await session.wait_closed(timeout=40)
                await daemon.wait_state(State.LISTENING, timeout=10)
                feed.kill()
                feed.wait()
                rec = without_room(session, recorder, speaker, scene, daemon, events)
    lag = session_lag(rec.received, rec.recorded)
    turn = rec.playing()[0]
    sent = rec.received
    user_end = min(turn[1], max(s.end for s in rec.speech) + rec.offset)
    silent = [k for k in range((turn[0] - lag) // FRAME, (user_end - lag) // FRAME)
              if 0 <= k * FRAME < sent.size - FRAME and not sent[k * FRAME : (k + 1) * FRAME].any()]
    deaf_end = (silent[-1] + 1) * FRAME + lag if silent else turn[0]
    return FirstTurn(rec, lag, deaf_end, user_end, 1000.0 * (deaf_end - turn[0]) / FMT.rate,
                     user_blocks(rec, lag, [(turn[0], user_end)]), user_blocks(rec, lag, [(deaf_end, user_end)]))


@dataclass
class Turns:
    """Three agent turns with the user talking across them (`three_turns`)."""

    rec: Recorded
    lag: int
    exact: npt.NDArray[np.bool_]  # per 20 ms block of what was sent: the recording at `lag`, sample for sample
    engine: list[tuple[int, int]]  # where the canceller may run (sent-stream samples)
    outside: npt.NDArray[np.intp]  # blocks outside those stretches
    bad: npt.NDArray[np.intp]  # ... of them not exact at `lag` (skipped, repeated or shifted samples)
    exact_between: list[int]  # exact blocks before, between and after the stretches
    corr: list[float]  # user_blocks inside the agent's audio


def three_turn_script(*, heard_ms: float, gaps_s: tuple[float, float], third_times: int, cut_after_s: float,
                      tail_s: float) -> Script:
    """A session script: after `heard_ms` of microphone audio, two agent turns (1.8 s of the shipped answer),
    each followed by its gap in `gaps_s`, then a third (the answer `third_times` over) cut by an interruption
    `cut_after_s` in, and the end `tail_s` later. tests/daemon/test_mic_stream.py and `three_turns` use it
    with their timings."""
    answer = shipped_speech("agent_answer.wav")[: FMT.nbytes(1800)]

    async def script(s: SimSession) -> None:
        await s.wait_audio(heard_ms)
        await s.send_turn("t1", answer, realtime=True)
        await s.wait_seconds(gaps_s[0])
        await s.send_turn("t2", answer, realtime=True)
        await s.wait_seconds(gaps_s[1])
        third = asyncio.create_task(s.send_turn("t3", answer * third_times, realtime=True))
        await s.wait_seconds(cut_after_s)
        third.cancel()
        await s.interrupt()
        await s.wait_seconds(tail_s)
        await s.end_session()

    return script


async def three_turns(pulse: PulseServer, cfg_for: Callable[[Simulator], Config]) -> Turns:
    """Three agent turns (the third cut by a server interruption), the user (recorded human speech, 2 m)
    talking across their starts and ends, and a pause; the stream compared with the mic recording."""
    # gaps: 1.9 s leaves >= 5 exact blocks between the stretches with ENGINE_LEAD_MS (1.6 s left 8 with 100 ms)
    script = three_turn_script(heard_ms=800, gaps_s=(1.9, 1.9), third_times=3, cut_after_s=1.2, tail_s=3.0)
    async with room_daemon(pulse, cfg_for, script) as (sim, daemon, rt, recorder, events):
        assert rt is not None
        t = rt.position / FMT.rate + 0.8
        for name, pause in (("ill_disposed", 0.4), ("dashwood", 0.3), ("amiable_woman", 1.5), ("cold_hearted", 0)):
            said = rt.say(human_speech(name), at_s=t)
            t = (said.start + said.clean.size) / FMT.rate + pause
        session = await sim.next_session(timeout=20)
        await session.wait_closed(timeout=40)
        await daemon.wait_state(State.LISTENING, timeout=10)
        rec = finish(session, rt, recorder, daemon, events)
    lag = session_lag(rec.received, rec.recorded)
    exact = exact_blocks(rec.received, rec.recorded, lag)
    n = FRAME
    # where the engine may run: from the agent audio reaching the mic to HOLD_S after it, plus slack. The engine
    # starts when the Player's reference says the audio sounds, before the rig's room has carried it into the
    # mic: 60-68 ms early in the first turn when run alone, more than 100 ms once in a loaded full-suite run
    # (the block just before the stretch differed). Slack before: ENGINE_LEAD_MS.
    engine = [(a - lag - FMT.samples(ENGINE_LEAD_MS), b - lag + FMT.samples(1000 * HOLD_S + 300))
              for a, b in rec.playing()]
    inside = np.zeros(exact.size, dtype=bool)
    for a, b in engine:
        inside[max(0, a // n) : max(0, b // n + 1)] = True
    outside = np.flatnonzero(~inside)
    gaps = [(0, engine[0][0])] if engine else [(0, exact.size * n)]
    gaps += [(engine[i][1], engine[i + 1][0]) for i in range(len(engine) - 1)]
    if engine:
        gaps.append((engine[-1][1], exact.size * n))
    between = [int(exact[max(0, a // n + 1) : b // n].sum()) for a, b in gaps]
    corr = user_blocks(rec, lag, [(a + lag, b + lag) for a, b in rec.playing()])
    return Turns(rec, lag, exact, engine, outside, outside[~exact[outside]], between, corr)
