"""Does the device hear itself? A test sound on the speaker while the microphone records, then the figures:
how loud the echo is, its delay (cross-correlation), and how much the configured echo canceller removes when it
runs offline over that recording with the test sound as its reference.

The test sound (`probe`) is a chime of rising sweeps, long enough (4.5 s) for the WebRTC canceller to converge
(about 2 s, audio/aec_path.py CONVERGE_S) before the reduction is measured.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vatel_edge.audio.aec import EchoCanceller, make_echo_canceller, measure_latency
from vatel_edge.audio.aec_path import CONVERGE_S, CONVERGED_ERLE_DB
from vatel_edge.audio.alsa import AlsaPcm
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.playback import Player
from vatel_edge.config import AudioConfig
from vatel_edge.doctor.mics import FULL_SCALE, Pcm, Recorder, Recording
from vatel_edge.doctor.report import Finding, fail, ok, warn
from vatel_edge.errors import AudioDeviceError, ConfigError

FMT = VATEL_FORMAT
PRE_S = 0.8  # recorded before the sound starts: the microphone's noise floor
TAIL_S = 1.0  # recorded after it ended: the echo's tail and the delay
LEAD_S = 0.02  # the reference runs this far ahead of its echo (as the daemon's EchoReference does)
MIN_CORRELATION = 0.3  # normalised correlation of the recording with the test sound: it is heard
MIN_ECHO_OVER_NOISE_DB = 3.0
MAX_ALIGNED_DELAY_S = 0.3  # the daemon's reference alignment searches up to this much unreported delay


PROBE_S = 4.5


def probe(seconds: float = PROBE_S, level_dbfs: float = -12.0) -> bytes:
    """The test sound: a chime of rising sweeps (140-240 ms each, from 300-900 Hz up 2.5-3.3 octaves), PCM16 mono.

    Sweeps, not steady notes: an echo canceller learns the room only where the sound has energy, and WebRTC AEC3
    reduced the echo of a melody of harmonic notes by 3-4 dB where it reduces sweeps by about 45 dB (synthetic
    echo, offline). Each sweep differs (a fixed seed), so the sound does not repeat and its echo correlates with
    it at one delay only."""
    rng = np.random.default_rng(16)
    total = FMT.samples(seconds * 1000)
    parts: list[npt.NDArray[np.float64]] = []
    size = 0
    while size < total:
        n = FMT.samples(float(rng.uniform(140.0, 240.0)))
        t = np.arange(n) / FMT.rate
        f0 = float(rng.uniform(300.0, 900.0))
        f1 = f0 * float(rng.uniform(6.0, 10.0))
        phase = 2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
        parts.append(np.sin(phase) * np.sin(np.pi * np.arange(n) / n) ** 0.5)
        size += n
    x = np.concatenate(parts)[:total]
    x *= FULL_SCALE * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(x**2))
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _power(x: npt.NDArray[np.int16] | npt.NDArray[np.float64]) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2)) if x.size else 0.0


def _db(power: float) -> float:
    return 10.0 * math.log10(power / FULL_SCALE**2) if power > 0 else -96.0


@dataclass(frozen=True)
class Echo:
    """What the recording says about the echo of the test sound."""

    heard: bool
    lag: int  # sample of the recording where the test sound's echo starts (best correlation)
    correlation: float  # normalised, 0..1
    echo_dbfs: float  # the echo's level in the microphone (noise removed)
    relative_db: float  # echo level minus the played level
    noise_dbfs: float  # the microphone without the sound


def find_echo(mic: Pcm, played: Pcm) -> Echo:
    """Locate `played` in `mic` (normalised FFT cross-correlation) and measure its level against the noise."""
    m = mic.astype(np.float64)
    p = played.astype(np.float64)
    if m.size < p.size + 1:
        raise ValueError("the recording is shorter than the test sound")
    size = 1 << int(np.ceil(np.log2(m.size + p.size)))
    corr = np.fft.irfft(np.fft.rfft(m, size) * np.conj(np.fft.rfft(p, size)), size)[: m.size - p.size + 1]
    energy = np.concatenate(([0.0], np.cumsum(m**2)))
    window = energy[p.size :] - energy[: m.size - p.size + 1]
    norm = np.sqrt(np.maximum(window, 0.0)) * float(np.sqrt(np.dot(p, p)))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 1e-9 * max(1.0, float(norm.max(initial=0.0))), corr / norm, 0.0)
    lag = int(np.argmax(rho))
    rho_max = max(0.0, float(rho[lag]))
    quiet = m[: max(0, lag - FMT.samples(50))]  # before the sound: the microphone alone
    if quiet.size < FMT.samples(100):
        quiet = m[lag + p.size + FMT.samples(400) :]  # or well after it (the echo's tail has died down)
    noise = _power(quiet)
    total = _power(m[lag : lag + p.size])
    echo = max(0.0, total - noise)
    over_noise = 10 * math.log10(echo / noise) if noise > 0 and echo > 0 else (96.0 if echo > 0 else -96.0)
    heard = rho_max >= MIN_CORRELATION and over_noise >= MIN_ECHO_OVER_NOISE_DB
    return Echo(heard, lag, rho_max, _db(echo), _db(echo) - _db(_power(p)), _db(noise))


@dataclass(frozen=True)
class Reduction:
    """The canceller's figures on the recording."""

    engine: str
    erle_db: float  # echo-return-loss enhancement over the converged part
    residual_dbfs: float
    at_noise_floor: bool  # the residual is within 3 dB of the microphone's own noise
    measured_s: float


def cancel_offline(engine: EchoCanceller, mic: Pcm, played: Pcm, echo: Echo, frame_ms: int,
                   converge_s: float = CONVERGE_S) -> Reduction:
    """Run `engine` over the recording with the test sound as its reference (placed LEAD_S ahead of its echo) and
    measure the reduction once it had `converge_s` of sound to learn from."""
    latency = measure_latency(engine, frame_ms)
    n = FMT.samples(frame_ms)
    ref = np.zeros(mic.size, dtype=np.int16)
    start = echo.lag - FMT.samples(LEAD_S * 1000)
    src = played[max(0, -start) :]
    start = max(0, start)
    count = min(src.size, ref.size - start)
    ref[start : start + count] = src[:count]
    frames = mic.size // n
    out = np.concatenate([
        np.frombuffer(engine.process(mic[i * n : (i + 1) * n].astype("<i2").tobytes(),
                                     ref[i * n : (i + 1) * n].astype("<i2").tobytes()), dtype="<i2")
        for i in range(frames)
    ]) if frames else np.zeros(0, dtype=np.int16)
    lo = echo.lag + FMT.samples(converge_s * 1000)
    hi = min(echo.lag + played.size, out.size - latency)
    if hi - lo < n:
        raise ValueError("the test sound is too short to measure the canceller after convergence")
    before = _power(mic[lo:hi])
    after = _power(out[lo + latency : hi + latency])
    noise = FULL_SCALE**2 * 10 ** (echo.noise_dbfs / 10) if echo.noise_dbfs > -96.0 else 0.0
    erle = 10 * math.log10(before / after) if after > 0 else 96.0
    return Reduction(engine.name, erle, _db(after), after <= 2.0 * noise or _db(after) <= -75.0,
                     (hi - lo) / FMT.rate)


# -------------------------------------------------------------------------------------------------- the real run


@dataclass
class EchoRun:
    """One play-and-record: the 24 kHz recording of the chosen channel, what was played, and the delay."""

    mic: Pcm
    played: Pcm
    recording: Recording
    heard_at: float | None = None  # monotonic time the player expects the sound's first sample to sound


async def play_and_record(audio: AudioConfig, channel: int, sound: bytes) -> EchoRun:
    """Play `sound` on audio.playback_device while recording audio.capture_device (PRE_S before, TAIL_S after).

    AudioDeviceError when either device does not open."""
    AlsaPcm(audio.playback_device, "playback", period_ms=audio.playback_period_ms, periods=4).close()
    seconds = PRE_S + FMT.duration_ms(len(sound)) / 1000.0 + TAIL_S
    # the recorder stops after `seconds` of audio, not of wall time: a sound server may deliver it late
    recorder = Recorder(audio.capture_device, seconds).start()
    if not await asyncio.to_thread(recorder.wait_open):
        rec = recorder.stop()
        raise AudioDeviceError(rec.error or f"cannot record from {audio.capture_device!r}")
    heard: list[float] = []

    def on_written(pcm: bytes, t: float) -> None:
        if not heard:
            x = np.frombuffer(pcm, dtype="<i2")
            nz = np.flatnonzero(x)
            if nz.size:
                heard.append(t + (int(nz[0]) - first_nonzero) / FMT.rate)

    # the Player applies audio.volume to sounds too: the reference is what it really wrote
    played = np.clip(np.rint(np.frombuffer(sound, dtype="<i2").astype(np.float32) * audio.volume),
                     -32768, 32767).astype(np.int16)
    first_nonzero = int(np.flatnonzero(played)[0]) if np.any(played) else 0
    try:
        async with Player(audio) as player:
            player.on_written = on_written
            await asyncio.sleep(PRE_S)
            player.play_sound(sound)
            await asyncio.sleep(0)
            await player.wait_idle(seconds + 5.0)
            await asyncio.to_thread(recorder.join, seconds + 5.0)
    finally:
        rec = await asyncio.to_thread(recorder.stop)
    if rec.error is not None or rec.native is None:
        raise AudioDeviceError(rec.error or f"no audio from {audio.capture_device!r}")
    return EchoRun(rec.channel(min(channel, rec.native.channels - 1)), played, rec,
                   heard[0] if heard else None)


def echo_findings(run: EchoRun, echo_cancel: str, frame_ms: int) -> list[Finding]:
    """The echo lines: heard or not (level, delay), and the canceller's reduction on this recording."""
    device = run.recording.device
    if run.mic.size < run.played.size + FMT.samples(100):
        return [fail("echo", f"{device}: the recording is too short ({run.mic.size} samples)",
                     "the microphone stalls: check `vatel-edge mic-test`")]
    echo = find_echo(run.mic, run.played)
    if not echo.heard:
        return [warn("echo", f"the device does not hear itself: no echo of the test sound in {device} "
                             f"(correlation {echo.correlation:.2f}, microphone noise {echo.noise_dbfs:.1f} dBFS)",
                     "fine with headphones or a speaker far away (full duplex works); otherwise the speaker is "
                     "silent: check it with `vatel-edge speaker-test` and its volume in `alsamixer`")]
    out: list[Finding] = []
    delay = None
    t_mic = run.recording.time_of(echo.lag)
    if t_mic is not None and run.heard_at is not None:
        delay = t_mic - run.heard_at
    delay_text = (f", delay {1000 * delay:.0f} ms beyond the speaker's reported latency (capture buffering "
                  "included)") if delay is not None else ""
    text = (f"the microphone hears the speaker: echo {echo.echo_dbfs:.1f} dBFS ({echo.relative_db:+.1f} dB relative "
            f"to what was played; correlation {echo.correlation:.2f}){delay_text}")
    if delay is not None and not -0.1 <= delay <= MAX_ALIGNED_DELAY_S:
        out.append(warn("echo", text, "the echo arrives later than the canceller's reference alignment searches "
                        "(-100..300 ms): a sound server or a USB device buffers a lot; use plughw:/hw: devices"))
    else:
        out.append(ok("echo", text))
    try:
        engine = make_echo_canceller(echo_cancel, frame_ms)
    except ConfigError as exc:
        return [*out, fail("echo", f"audio.echo_cancel: {exc}", "install the engine or choose another one")]
    if engine is None:
        why = "is off" if echo_cancel == "off" else "found no installed engine"
        return [*out, warn("echo", f"no echo cancellation (audio.echo_cancel = {echo_cancel!r} {why}): the agent will "
                                   "hear itself while it speaks",
                           "install one (pip install pywebrtc-audio, or apt-get install libspeexdsp1) and set "
                           "audio.echo_cancel = 'auto'; until then keep audio.mic_during_playback = 'mute'")]
    try:
        red = cancel_offline(engine, run.mic, run.played, echo, frame_ms)
    except ValueError as exc:  # the echo started too late in the recording to measure after convergence
        return [*out, warn("echo", f"the echo canceller could not be measured: {exc}",
                           "run the doctor again; a device that delays its audio by seconds needs plughw:/hw:")]
    finally:
        engine.close()
    text = (f"echo canceller {red.engine} reduces the echo by {red.erle_db:.1f} dB to {red.residual_dbfs:.1f} dBFS "
            f"(over the last {red.measured_s:.1f} s of the test sound)")
    if red.erle_db >= CONVERGED_ERLE_DB or red.at_noise_floor:
        out.append(ok("echo", text + (": down to the microphone's noise" if red.at_noise_floor else "")
                      + "; full duplex works (local barge-in can be used)"))
    else:
        out.append(warn("echo", text + f": less than {CONVERGED_ERLE_DB:.0f} dB, the agent may hear itself",
                        "lower the speaker volume or move the microphone away from it; keep session.barge_in = "
                        "'server' (local barge-in would cut the agent on its own echo)"))
    return out
