"""The microphone path (audio/mic.py) with frames in and sinks out: no devices, no threads but the test's.

Capture and Player are built but never started; frames are pushed into the path's capture sink directly
(in the capture thread it is the same call), and what reaches the session's held audio is read back.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from vatel_edge.audio.capture import Capture, CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.mic import LISTEN_BATCH_S, VOICE_BATCH_S, MicPath, listening_sleep_s
from vatel_edge.audio.playback import Player
from vatel_edge.audio.vad import VadParams, VoiceDetector
from vatel_edge.config import AudioConfig
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.wake import SessionAudio, WakeGate

FRAME_MS = 20
N = VATEL_FORMAT.samples(FRAME_MS)


def frames_of(pcm: bytes, first_seq: int = 0) -> list[CaptureFrame]:
    step = VATEL_FORMAT.nbytes(FRAME_MS)
    return [CaptureFrame(pcm[i : i + step], 100.0 + (first_seq + k) * FRAME_MS / 1000, first_seq + k)
            for k, i in enumerate(range(0, len(pcm) - step + 1, step))]


def silence(ms: int) -> bytes:
    return bytes(VATEL_FORMAT.nbytes(ms))


def make_path(*, preroll_ms: int = 100, vad: bool = False, min_speech_ms: int = 240) -> MicPath:
    audio = AudioConfig()
    wake = VoiceDetector(VadParams(min_speech_ms=min_speech_ms)) if vad else None
    woke: list[str] = []
    mic = MicPath(Capture(audio), Player(audio), None, frame_ms=FRAME_MS, preroll_ms=preroll_ms, wake_vad=wake,
                  barge_vad=None, gate=WakeGate(0.0))

    def on_wake(reason: str) -> bool:
        woke.append(reason)
        return mic.begin_session() is not None

    mic.on_wake = on_wake
    mic.woke = woke  # type: ignore[attr-defined]
    return mic


async def drained(held: SessionAudio) -> list[CaptureFrame]:
    await asyncio.sleep(0.05)  # let the capture sink's call_soon_threadsafe deliveries run
    return [await held.get() for _ in range(len(held))]


async def test_a_trigger_takes_the_newest_frames_covering_preroll_ms() -> None:
    mic = make_path(preroll_ms=100)
    mic.listen()
    for f in frames_of(silence(240)):
        mic.push(f)
    held = mic.begin_session()
    assert [f.seq for f in await drained(held)] == [7, 8, 9, 10, 11]


async def test_a_trigger_soon_after_listening_takes_all_the_ring_holds() -> None:
    """Fewer frames than the pre-roll since listening began (a trigger within preroll_ms): all of them, not the
    newest one (a negative slice start took the last frame only, and CI caught a 145 ms pre-roll of 500)."""
    mic = make_path(preroll_ms=500)
    mic.listen()
    for f in frames_of(silence(480)):
        mic.push(f)
    assert [f.seq for f in await drained(mic.begin_session())] == list(range(24))


def test_the_listening_sleep_is_short_enough_to_see_the_first_voiced_frame_before_the_vad_can_fire() -> None:
    """The sleep plus half a period of jitter ends before min_speech_ms (less the first VAD frame) of voice."""
    assert listening_sleep_s(None, 20) == LISTEN_BATCH_S == 0.2
    assert listening_sleep_s(VadParams(), 20) == 0.2  # 240 ms, 30 ms VAD frames: 200 ms of room
    assert listening_sleep_s(VadParams(min_speech_ms=120), 20) == pytest.approx(0.08)
    assert listening_sleep_s(VadParams(min_speech_ms=30, frame_ms=30), 20) == 0.02  # never below a period
    for ms in range(30, 1000, 10):
        sleep = listening_sleep_s(VadParams(min_speech_ms=ms), 20)
        assert sleep == 0.02 or sleep + 0.01 <= (ms - 30) / 1000 + 1e-9


async def test_while_listening_voice_makes_the_capture_read_every_period_until_a_window_of_quiet() -> None:
    """Quiet: long drains (LISTEN_BATCH_S). A voiced frame: every period (VOICE_BATCH_S), so the wake is not
    held back by a sleep; wake.window_ms after the last voiced frame: long drains again."""
    mic = make_path(vad=True, min_speech_ms=2000)  # the VAD never fires: this is about the drains alone
    mic.listen()
    window = -(-VadParams().window_ms // FRAME_MS)
    for f in frames_of(silence(1000)):
        mic.push(f)
    assert mic.capture.batch_s == mic.listen_batch_s == LISTEN_BATCH_S
    speech = shipped_speech("user_request.wav")
    frames = frames_of(speech[: VATEL_FORMAT.nbytes(1000)], first_seq=50)
    voiced = [mic._wake_vad.process(f.pcm).voiced for f in frames]  # type: ignore[union-attr]
    mic.listen()  # the same detector state as the push below sees
    first = voiced.index(True)
    for f in frames[: first + 1]:
        mic.push(f)
    assert mic.capture.batch_s == VOICE_BATCH_S
    quiet = frames_of(silence(FRAME_MS * (window + 2)), first_seq=100)
    for k, f in enumerate(quiet):
        mic.push(f)
        if k < window - 1:
            assert mic.capture.batch_s == VOICE_BATCH_S, k
    assert mic.capture.batch_s == LISTEN_BATCH_S
    assert not mic.woke  # type: ignore[attr-defined]
    mic.push(frames[first])  # voice again, then the privacy mute: nothing is heard, so the long sleeps
    assert mic.capture.batch_s == VOICE_BATCH_S
    mic.muted = True
    mic.push(frames[first + 1])
    assert mic.capture.batch_s == LISTEN_BATCH_S


async def test_preroll_rounds_up_to_whole_frames_and_zero_disables_it() -> None:
    mic = make_path(preroll_ms=50)
    mic.listen()
    for f in frames_of(silence(100)):
        mic.push(f)
    assert [f.seq for f in await drained(mic.begin_session())] == [2, 3, 4]
    off = make_path(preroll_ms=0)
    off.listen()
    off.push(frames_of(silence(20))[0])
    assert await drained(off.begin_session()) == []


async def test_the_hand_over_is_atomic_whatever_the_timing() -> None:
    """A capture thread pushing frames while the loop triggers: the session gets the ring and then every
    later frame, each exactly once, in sequence order."""
    mic = make_path(preroll_ms=200)
    mic.listen()
    frames = frames_of(silence(4000))
    started = threading.Event()

    def capture_thread() -> None:
        for i, f in enumerate(frames):
            if i == 20:
                started.set()
            mic.push(f)

    thread = threading.Thread(target=capture_thread)
    thread.start()
    await asyncio.to_thread(started.wait)
    held = mic.begin_session()
    await asyncio.to_thread(thread.join)
    got = [f.seq for f in await drained(held)]
    assert got == list(range(got[0], len(frames))), "a frame was lost, repeated or overtook the pre-roll"
    assert got[0] >= 10


@pytest.mark.parametrize("min_speech_ms", [120, 240, 480])
async def test_a_voice_wake_starts_preroll_ms_before_the_onset_not_before_the_trigger(min_speech_ms: int) -> None:
    """The VAD fires min_speech_ms (and more) after the speech began; the session's audio still starts
    preroll_ms before the first voiced frame of that stretch."""
    speech = shipped_speech("user_request.wav")
    pcm = silence(1500) + speech + silence(500)
    mic = make_path(preroll_ms=300, vad=True, min_speech_ms=min_speech_ms)
    mic.listen()
    frames = frames_of(pcm)
    for f in frames:
        mic.push(f)
    await asyncio.sleep(0.05)
    assert mic.woke == ["voice"]  # type: ignore[attr-defined]
    held = mic.session_audio
    assert held is not None
    got = await drained(held)
    onset = int(np.flatnonzero(np.abs(np.frombuffer(speech, dtype="<i2")) > 64)[0]) + VATEL_FORMAT.samples(1500)
    onset_frame = onset // N
    lead_frames = onset_frame - got[0].seq
    assert lead_frames * FRAME_MS >= 250, f"only {lead_frames * FRAME_MS} ms before the first sound"
    assert [f.seq for f in got] == list(range(got[0].seq, len(frames))), "not contiguous after the onset"
    assert mic.onset_lead_ms == 300.0


async def test_a_refused_voice_wake_keeps_listening() -> None:
    mic = make_path(preroll_ms=100, vad=True)
    mic.on_wake = lambda reason: False
    mic.listen()
    for f in frames_of(silence(500) + shipped_speech("user_request.wav")):
        mic.push(f)
    await asyncio.sleep(0.05)
    assert mic.session_audio is None


async def test_a_failing_stage_stops_the_path_once_and_says_so() -> None:
    mic = make_path()
    mic.listen()

    class Boom:
        def process(self, frame: CaptureFrame) -> CaptureFrame:
            raise ValueError("bug")

    for f in frames_of(silence(60)):
        mic.push(f)
    assert mic.last_frame_at() is not None
    mic.stages.append(Boom())
    for f in frames_of(silence(60), first_seq=3):
        mic.push(f)
    await asyncio.sleep(0.01)
    assert mic.failed.done() and isinstance(mic.failed.exception(), ValueError)
    assert mic.last_frame_at() is None


async def test_stages_run_in_order_in_every_route() -> None:
    """The same stages run while listening and in a session (the state only picks the sink)."""
    mic = make_path(preroll_ms=0)
    seen: list[tuple[str, int]] = []

    class Tag:
        def __init__(self, name: str) -> None:
            self.name = name

        def process(self, frame: CaptureFrame) -> CaptureFrame:
            seen.append((self.name, frame.seq))
            return frame

    mic.stages[:] = [Tag("a"), Tag("b")]
    mic.listen()
    frames = frames_of(silence(80))
    mic.push(frames[0])
    mic.push(frames[1])
    held = mic.begin_session()
    mic.push(frames[2])
    mic.push(frames[3])
    assert seen == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]
    assert [f.seq for f in await drained(held)] == [2, 3]
