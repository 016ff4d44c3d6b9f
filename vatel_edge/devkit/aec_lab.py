"""Synthetic rooms and figures of merit for echo cancellers (used by tests/aec and bench/aec.py).

A scene is agent speech played by the speaker (the reference), its echo through a simple room impulse
response (bulk delay, direct path, exponentially decaying sparse reflections), a little noise, and
optionally a user utterance on top (double talk). Everything is float64 in PCM16 units until quantised.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import webrtcvad

from vatel_edge.audio.aec import EchoCanceller
from vatel_edge.audio.format import AudioFormat
from vatel_edge.audio.resample import Resampler

Signal = npt.NDArray[np.float64]
Pcm = npt.NDArray[np.int16]

FULL_SCALE = 32768.0


def dbfs(x: Signal | Pcm) -> float:
    """RMS level in dBFS (-200 for silence)."""
    p = float(np.mean(np.asarray(x, dtype=np.float64) ** 2))
    return 10 * np.log10(p / FULL_SCALE**2) if p > 0 else -200.0


def at_level(x: Signal, level_dbfs: float) -> Signal:
    """`x` scaled to an RMS of `level_dbfs`."""
    return x * 10 ** ((level_dbfs - dbfs(x)) / 20)


def espeak(text: str, rate: int, *, voice: str = "en", wpm: int = 160) -> Signal:
    """`text` spoken by espeak-ng, resampled by sox to `rate` Hz mono. FileNotFoundError if either is missing."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(tool)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        raw = Path(tmp) / "speech.raw"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), text], check=True, timeout=60)
        subprocess.run(
            ["sox", str(wav), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw", str(raw)],
            check=True,
            timeout=60,
        )
        return np.fromfile(raw, dtype="<i2").astype(np.float64)


def speech_like(seconds: float, rate: int, *, seed: int = 0, f0: float = 120.0) -> Signal:
    """A voiced, syllabic stand-in for speech: gliding harmonics, formant-ish tilt, 4 Hz syllables, pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.28)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    x = np.zeros(n)
    for k in range(1, 30):
        if k * f0 * 1.2 > rate / 2.2:
            break
        x += np.sin(k * phase + rng.uniform(0, 6.28)) / k**1.2 * (1 + 0.8 * np.sin(2 * np.pi * 0.3 * k * t))
    x += 0.05 * rng.standard_normal(n)
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.28)), 0, None) ** 2
    words = (np.sin(2 * np.pi * 0.45 * t + rng.uniform(0, 6.28)) > -0.6).astype(np.float64)
    result: Signal = x * syllables * words
    return result


#: What the agent and the user say in the echo labs (tests/aec and bench/aec.py).
AGENT_TEXT = (
    "Hello, I am your voice assistant. The weather today is sunny with a light breeze, and the temperature "
    "will reach twenty two degrees this afternoon. Would you like me to set a reminder for your meeting?"
)
USER_TEXT = "Stop, stop. Please turn off the lights in the kitchen."


def speech(text: str, rate: int, *, seconds: float, seed: int, voice: str = "en", wpm: int = 160) -> Signal:
    """`text` by espeak-ng; without espeak-ng or sox a speech-like stand-in of `seconds` (voice `seed`), so
    that the measurements keep their meaning."""
    try:
        return espeak(text, rate, voice=voice, wpm=wpm)
    except FileNotFoundError:
        return speech_like(seconds, rate, seed=seed, f0=120.0 + 80.0 * seed)


def agent_speech(rate: int) -> Signal:
    """The agent's answer (AGENT_TEXT, about 12 s)."""
    return speech(AGENT_TEXT, rate, seconds=12.0, seed=0)


def user_speech(rate: int) -> Signal:
    """The user's barge-in (USER_TEXT, about 3 s, another voice)."""
    return speech(USER_TEXT, rate, seconds=3.0, seed=1, voice="en-us+f3", wpm=170)


@dataclass(frozen=True)
class Room:
    """A linear echo path: `delay_s` of silence, a direct path of `gain`, reflections decaying over `rt60_s`."""

    delay_s: float = 0.05
    gain: float = 0.3
    rt60_s: float = 0.2
    tail_s: float = 0.12
    reflection_density: float = 0.03
    seed: int = 7

    def impulse_response(self, rate: int) -> Signal:
        rng = np.random.default_rng(self.seed)
        d = round(self.delay_s * rate)
        n = d + round(self.tail_s * rate)
        h = np.zeros(n)
        h[d] = self.gain
        m = n - d - 1
        t = np.arange(m) / rate
        taps = rng.standard_normal(m) * (rng.random(m) < self.reflection_density)
        h[d + 1 :] = 0.5 * self.gain * taps * np.exp(-6.9 * t / self.rt60_s)
        return h

    def echo(self, ref: Signal, rate: int) -> Signal:
        return np.convolve(ref, self.impulse_response(rate))[: ref.size]


@dataclass
class Scene:
    """One synthetic recording: what the speaker played, what the mic heard, and its parts."""

    ref: Pcm  # the reference (what was played)
    mic: Pcm  # echo + noise (+ user)
    echo: Signal  # the echo part alone (float, before quantisation)
    user: Signal  # the user's voice alone at the mic (zeros without double talk)
    rate: int


def make_scene(
    agent: Signal,
    rate: int,
    *,
    room: Room | None = None,
    agent_dbfs: float = -20.0,
    noise_dbfs: float = -65.0,
    user: Signal | None = None,
    user_dbfs: float = -28.0,
    user_at_s: float = 0.0,
    seed: int = 3,
) -> Scene:
    """The agent speaking through `room`, with white noise and optionally `user` starting at `user_at_s`."""
    room = room or Room()
    ref = np.clip(np.round(at_level(agent, agent_dbfs)), -FULL_SCALE, FULL_SCALE - 1)
    echo = room.echo(ref, rate)
    noise = np.random.default_rng(seed).standard_normal(ref.size) * FULL_SCALE * 10 ** (noise_dbfs / 20)
    voice = np.zeros(ref.size)
    if user is not None:
        start = round(user_at_s * rate)
        u = at_level(user, user_dbfs)[: ref.size - start]
        voice[start : start + u.size] = u
    mic = np.clip(np.round(echo + noise + voice), -FULL_SCALE, FULL_SCALE - 1)
    return Scene(ref=ref.astype(np.int16), mic=mic.astype(np.int16), echo=echo, user=voice, rate=rate)


def run_engine(engine: EchoCanceller, scene: Scene, frame_ms: int) -> tuple[Pcm, float]:
    """Feed the scene frame by frame; returns the output (whole frames) and CPU seconds per frame."""
    fmt = AudioFormat(rate=scene.rate)
    n = fmt.samples(frame_ms)
    frames = scene.mic.size // n
    mic = scene.mic[: frames * n].astype("<i2").tobytes()
    ref = scene.ref[: frames * n].astype("<i2").tobytes()
    nb = n * fmt.bytes_per_frame
    out = bytearray()
    cpu0 = time.process_time()
    for i in range(frames):
        out += engine.process(mic[i * nb : (i + 1) * nb], ref[i * nb : (i + 1) * nb])
    cpu = (time.process_time() - cpu0) / max(1, frames)
    return np.frombuffer(bytes(out), dtype="<i2").astype(np.int16), cpu


def frame_power(x: Signal | Pcm, n: int) -> Signal:
    """Mean square per `n`-sample frame (whole frames only)."""
    x = np.asarray(x, dtype=np.float64)
    frames = x.size // n
    result: Signal = np.mean(x[: frames * n].reshape(frames, n) ** 2, axis=1)
    return result


def echo_only_frames(scene: Scene, n: int, *, skip_s: float = 2.0, margin_db: float = 20.0) -> npt.NDArray[np.bool_]:
    """Frames after `skip_s` where the echo is strong (within 30 dB of its peak) and the user is quieter by
    at least `margin_db` than the echo (echo-only)."""
    echo_p = frame_power(scene.echo, n)
    user_p = frame_power(scene.user, n)
    loud = echo_p > echo_p.max() * 1e-3
    alone = user_p * 10 ** (margin_db / 10) < echo_p
    mask: npt.NDArray[np.bool_] = loud & alone
    mask[: int(skip_s * scene.rate / n)] = False
    return mask


def erle_db(scene: Scene, out: Pcm, n: int, *, skip_s: float = 2.0) -> float:
    """Echo return loss enhancement over echo-only frames after `skip_s`: 10 log10(P(mic) / P(output))."""
    mask = echo_only_frames(scene, n, skip_s=skip_s)
    mic_p = frame_power(scene.mic, n)[: out.size // n][mask[: out.size // n]]
    out_p = frame_power(out, n)[mask[: out.size // n]]
    return float(10 * np.log10(mic_p.sum() / max(out_p.sum(), 1e-9)))


@dataclass(frozen=True)
class DoubleTalkScore:
    """What reached the server in a double-talk scene (bench/double_talk.py, tests/aec/test_dtln.py)."""

    user_ok: int  # loud 100 ms blocks of the user's speech that arrived correlating >= 0.5 with it
    user_blocks: int
    user_ok_first: int  # ... of them in the user's first 2.5 s
    user_first: int
    echo_voiced: int  # echo-only 20 ms frames that webrtcvad (aggressiveness 2, >= -45 dBFS) calls speech
    echo_frames: int


def score_double_talk(sent: Signal, user: Signal, echo: Signal, *, user_span: tuple[int, int],
                      echo_only: list[int], latency: int, rate: int) -> DoubleTalkScore:
    """Score `sent` (what would reach the server, `latency` samples behind the microphone) against the user's
    clean speech at the microphone (`user`, speaking in `user_span`) and the echo alone (`echo`); `echo_only`:
    the start of every 20 ms frame where only the agent sounds (frames whose echo is below -50 dBFS skipped)."""
    block, frame = rate // 10, rate // 50
    start, end = user_span
    ok = total = ok_first = first = 0
    for s in range(start, end - block, block):
        ref = user[s : s + block]
        if np.sqrt(np.mean(ref**2)) < 32768 * 10 ** (-45 / 20):
            continue
        got = sent[s + latency : s + latency + block]
        hit = got.size == block and bool(got.any()) and float(np.corrcoef(got, ref)[0, 1]) >= 0.5
        total += 1
        ok += hit
        if s < start + rate * 5 // 2:
            first += 1
            ok_first += hit
    vad = webrtcvad.Vad(2)
    voiced = frames = 0
    for s in echo_only:
        if np.sqrt(np.mean(echo[s : s + frame] ** 2)) < 32768 * 10 ** (-50 / 20):
            continue
        fr = sent[s + latency : s + latency + frame]
        level = 20 * np.log10(np.sqrt(np.mean(fr**2)) / 32768 + 1e-9)
        down = Resampler(rate, 8000).process(fr.astype(np.int16))
        frames += 1
        voiced += bool(level >= -45 and vad.is_speech(down[:160].astype("<i2").tobytes(), 8000))
    return DoubleTalkScore(ok, total, ok_first, first, voiced, frames)
