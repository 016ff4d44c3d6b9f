"""The microphone path in a real-time reverberant room with recorded human speech: the room tests' helpers.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

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
            echo = {"name": path.name, "converged": path.converged,
                    "erle_db": path.erle_db, "latency": path.latency, "stats": dict(path.stats)}
    except (AttributeError, RuntimeError):
        echo = {}
    return Recorded(pcm(session.input_audio), recorded, rt.played(), offset, rt.speech, session, events, echo)
