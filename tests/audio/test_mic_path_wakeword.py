"""The microphone path in wakeword mode, frames in and held audio out (no devices; see test_mic_path.py).

What the session receives after a wake word: from `preroll_ms` before the onset of the voiced stretch that
contained the wake word, contiguous through everything pushed after it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from vatel_edge.audio.capture import Capture, CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.mic import LISTEN_BATCH_S, VOICE_BATCH_S, WORD_BATCH_S, MicPath
from vatel_edge.audio.playback import Player
from vatel_edge.audio.vad import VadParams, VoiceDetector
from vatel_edge.audio.wakeword import WakeWordDetector, load_models, resolve_models, wakeword_installed
from vatel_edge.config import AudioConfig, WakeConfig
from vatel_edge.devkit import wake_lab as lab
from vatel_edge.wake import SessionAudio, WakeGate

pytestmark = [
    pytest.mark.skipif(not wakeword_installed(), reason="the wakeword extra (pymicro-wakeword) is not installed"),
    pytest.mark.skipif(not lab.espeak_available(), reason="espeak-ng is not installed"),
]
FRAME_MS = 20
STEP = VATEL_FORMAT.nbytes(FRAME_MS)


def frames_of(pcm: bytes) -> list[CaptureFrame]:
    return [CaptureFrame(pcm[i : i + STEP], 100.0 + k * FRAME_MS / 1000, k)
            for k, i in enumerate(range(0, len(pcm) - STEP + 1, STEP))]


def make_path(preroll_ms: int = 300) -> tuple[MicPath, list[str]]:
    audio = AudioConfig()
    wake = WakeConfig(mode="wakeword")
    woke: list[str] = []
    detector = WakeWordDetector(load_models(resolve_models(wake)), refractory_ms=wake.cooldown_ms, frame_ms=FRAME_MS)
    mic = MicPath(Capture(audio), Player(audio), None, frame_ms=FRAME_MS, preroll_ms=preroll_ms,
                  wake_vad=VoiceDetector(VadParams.from_wake(wake)), barge_vad=None, gate=WakeGate(0.0),
                  wake_word=detector)

    def on_wake(reason: str) -> bool:
        woke.append(reason)
        return mic.begin_session() is not None

    mic.on_wake = on_wake
    return mic, woke


async def drained(held: SessionAudio) -> tuple[int, bytes]:
    """(the byte offset in the source of the first held frame, the held audio); frames are checked in order."""
    await asyncio.sleep(0.05)
    frames = [await held.get() for _ in range(len(held))]
    assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + len(frames))), "not contiguous"
    return frames[0].seq * STEP, b"".join(f.pcm for f in frames)


def first_sound(pcm: bytes) -> int:
    return int(np.flatnonzero(np.abs(np.frombuffer(pcm, dtype="<i2")) > 64)[0])


@pytest.mark.parametrize("voice", ["en-us", "en-gb"])
async def test_the_session_audio_starts_before_the_wake_word_and_runs_through_the_command(voice: str) -> None:
    """'okay nabu, turn on the kitchen light' in one breath: one wake ("wake word Okay Nabu"); the session's
    audio begins >= 250 ms before the first sound of "okay" and is the source, byte for byte, from there to
    the last frame pushed (no gap where the detector was deciding)."""
    utterance = lab.say("okay nabu, turn on the kitchen light", voice)
    source = lab.silence(1500) + utterance + lab.silence(800)
    mic, woke = make_path(preroll_ms=300)
    mic.listen()
    frames = frames_of(source)
    for f in frames:
        mic.push(f)
    await asyncio.sleep(0.05)
    assert woke == ["wake word Okay Nabu"]
    assert mic.session_audio is not None
    at, got = await drained(mic.session_audio)
    start = first_sound(source)
    lead_ms = VATEL_FORMAT.duration_ms(2 * start - at)
    assert lead_ms >= 250.0, f"the session's audio began only {lead_ms:.0f} ms before the wake word"
    assert got == source[at : len(frames) * STEP], "the session's audio is not the source, contiguous"


async def test_speech_without_the_wake_word_opens_nothing() -> None:
    """A sentence the VAD hears (and would wake on in vad mode) does not wake in wakeword mode."""
    mic, woke = make_path()
    mic.listen()
    for f in frames_of(lab.silence(500) + lab.say("please put the kettle on, it is cold today", "en-us")
                       + lab.silence(1200)):
        mic.push(f)
    await asyncio.sleep(0.05)
    assert woke == [] and mic.session_audio is None


async def test_the_onset_is_that_of_the_wake_words_stretch_not_of_earlier_talk() -> None:
    """Talk, a second of quiet, then the wake word: the head starts preroll_ms before the wake word's onset,
    not at the earlier talk."""
    talk = lab.say("we should buy some milk", "en-us")
    word = lab.say("okay nabu", "en-us")
    source = lab.silence(800) + talk + lab.silence(1000) + word + lab.silence(1000)
    mic, woke = make_path(preroll_ms=300)
    mic.listen()
    for f in frames_of(source):
        mic.push(f)
    await asyncio.sleep(0.05)
    assert woke == ["wake word Okay Nabu"]
    assert mic.session_audio is not None
    at, _got = await drained(mic.session_audio)
    word_at = len(lab.silence(800) + talk + lab.silence(1000))
    assert word_at - VATEL_FORMAT.nbytes(400) <= at <= word_at - VATEL_FORMAT.nbytes(200), (at, word_at)


async def test_while_the_vad_hears_voice_the_capture_reads_every_two_periods_and_back_after_quiet() -> None:
    """wakeword mode: quiet keeps the long listening sleeps; a voiced frame (the model starts) makes the capture
    thread read every WORD_BATCH_S (not every period, as vad mode does: the model's per-call cost); a
    wake.window_ms of quiet after the last voiced frame, the long sleeps again."""
    assert VOICE_BATCH_S < WORD_BATCH_S < LISTEN_BATCH_S
    mic, woke = make_path()
    mic.listen()
    for f in frames_of(lab.silence(1000)):
        mic.push(f)
    assert mic.capture.batch_s == mic.listen_batch_s == LISTEN_BATCH_S
    speech = frames_of(lab.say("the kitchen light", "en-us"))
    vad = VoiceDetector(VadParams.from_wake(WakeConfig(mode="wakeword")))
    first = [vad.process(f.pcm).voiced for f in speech].index(True)
    for f in speech[: first + 1]:
        mic.push(f)
    assert mic.capture.batch_s == WORD_BATCH_S
    window = -(-WakeConfig().window_ms // FRAME_MS)
    for f in speech[first + 1 :] + frames_of(lab.silence(FRAME_MS * (window + 2))):
        mic.push(f)
    assert mic.capture.batch_s == LISTEN_BATCH_S
    assert woke == []  # no wake word in it: this is about the reads alone
