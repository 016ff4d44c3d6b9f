"""Which microphone hears the user: ALSA's devices, the candidates among them, a few seconds recorded from each
at once, and each one's levels (speech by webrtcvad, silence, clipping, DC offset).

The recorder (`record`) reads an ALSA PCM with every channel it negotiated (24 kHz mono, or the device's native
rate and channels), so the analysis can also pick `audio.capture_channel` of a multi-channel microphone.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import webrtcvad

from vatel_edge.audio.alsa import AlsaPcm
from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.audio.resample import Resampler
from vatel_edge.audio.setup_tools import DeviceInfo
from vatel_edge.doctor.report import Finding, fail, ok, warn
from vatel_edge.errors import AudioDeviceError

Pcm = npt.NDArray[np.int16]

FULL_SCALE = 32768.0
VAD_RATE = 16_000  # webrtcvad rejects 24 kHz (docs: AUDIO-WITHOUT-HARDWARE.md)
VAD_FRAME_MS = 30
VAD_AGGRESSIVENESS = 2
VAD_GATE_DBFS = -60.0  # quieter frames are never speech (webrtcvad calls some near-silent noise voiced)
MIN_VOICED_MS = 300  # less voiced audio than this: the microphone heard no speech
SILENT_DBFS = -80.0  # a whole recording quieter than this is a dead (or muted) microphone
CLIP_LEVEL = 32600
CLIP_FRACTION = 0.001  # more samples than this at full scale: clipping
DC_DBFS = -40.0  # a mean further from zero than this (1 % of full scale): DC offset
PERIOD_MS = 20
PERIODS = 12

#: Name prefixes that are never a microphone of their own (aliases of a card's device, or not capture at all).
_NOT_A_MIC = ("null", "front", "rear", "center_lfe", "side", "surround", "iec958", "spdif", "hdmi", "modem",
              "phoneline", "dmix", "usbstream", "lavrate", "samplerate", "speexrate", "speex", "jack", "oss",
              "upmix", "vdownmix", "a52", "vdpau")
#: Among the names of one card's device, the one to use, best first: plughw converts in alsa-lib and is what the
#: daemon opens best; dsnoop shares the device; the rest are aliases.
_CARD_PREFERENCE = ("plughw", "dsnoop", "sysdefault", "default", "hw")
_CARD = re.compile(r"^(?P<kind>[A-Za-z0-9_]+):CARD=(?P<card>[^,]+)(?:,DEV=(?P<dev>\d+))?")


def candidates(names: Iterable[str]) -> list[str]:
    """The PCM names worth recording from: one per card device (plughw preferred), plus named devices that are not
    aliases (pulse, pipewire, a custom asoundrc PCM); bare `default` only when there is nothing else."""
    by_device: dict[tuple[str, str], str] = {}
    others: list[str] = []
    for name in names:
        kind = name.split(":", 1)[0]
        if kind in _NOT_A_MIC:
            continue
        m = _CARD.match(name)
        if m is not None:
            key = (m.group("card"), m.group("dev") or "0")
            if m.group("kind") not in _CARD_PREFERENCE:
                continue
            best = by_device.get(key)
            rank = _CARD_PREFERENCE.index(m.group("kind"))
            if best is None or rank < _CARD_PREFERENCE.index(best.split(":", 1)[0]):
                by_device[key] = name
        elif name not in ("default", "sysdefault") and name not in others:
            others.append(name)
    found = [*by_device.values(), *others]
    return found or [n for n in names if n == "default"]


def device_findings(devices: Sequence[DeviceInfo]) -> list[Finding]:
    """One line per device with what it negotiated for 24 kHz mono in each direction it opens in; a warn for a
    device that opens in no direction it is listed for; a fail when no microphone or no speaker opens at all."""
    out: list[Finding] = []
    mics = speakers = 0
    absent: list[str] = []
    for d in devices:
        if d.name == "null":
            continue
        works = [(direction, how) for direction, how in (("capture", d.capture), ("playback", d.playback))
                 if how is not None and not how.startswith("error:")]
        if not works:
            errors = [how[6:].strip() for how in (d.capture, d.playback) if how is not None]
            if any("busy" in e.lower() for e in errors):
                out.append(warn("devices", f"{d.name}: does not open ({'; '.join(errors)})",
                                "in use by another program (the service? `sudo systemctl stop vatel-edge`)"))
            else:
                absent.append(d.name)
            continue
        mics += any(direction == "capture" for direction, _ in works)
        speakers += any(direction == "playback" for direction, _ in works)
        out.append(ok("devices", f"{d.name}: " + "; ".join(f"{direction} {how}" for direction, how in works)))
    if absent:
        out.append(warn("devices", f"{len(absent)} device name(s) ALSA lists do not open: {', '.join(absent)}",
                        "plugin names that need a card or a sound server that is not there: normal unless you "
                        "meant to use one of them"))
    hint = ("plug in a USB microphone/speaker or enable the HAT (its dtoverlay in /boot/firmware/config.txt), "
            "reboot, then check `arecord -l` and `aplay -l`")
    if mics == 0 and speakers == 0:
        out.append(fail("devices", "no sound card: ALSA offers no device that opens", hint))
    elif mics == 0:
        out.append(fail("devices", "no microphone: no ALSA capture device opens", hint))
    elif speakers == 0:
        out.append(fail("devices", "no speaker: no ALSA playback device opens", hint))
    return out


# ----------------------------------------------------------------------------------------------------- recording


@dataclass
class Recording:
    """What one device delivered: interleaved samples at its negotiated format, and when each read ended."""

    device: str
    native: AudioFormat | None = None
    data: bytearray = field(default_factory=bytearray)
    reads: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, frames so far)
    error: str | None = None

    def channel(self, index: int) -> Pcm:
        """One channel at 24 kHz."""
        assert self.native is not None
        x = np.frombuffer(bytes(self.data[: len(self.data) // self.native.bytes_per_frame
                                          * self.native.bytes_per_frame]), dtype="<i2")
        mono = x.reshape(-1, self.native.channels)[:, index].copy()
        return Resampler(self.native.rate, VATEL_FORMAT.rate).process(mono) if self.native.rate != VATEL_FORMAT.rate \
            else mono

    def time_of(self, sample24: int) -> float | None:
        """Monotonic time at which 24 kHz sample `sample24` of the recording was read (None: not recorded)."""
        assert self.native is not None
        frame = sample24 * self.native.rate / VATEL_FORMAT.rate
        for t, frames in self.reads:
            if frames > frame:
                return t - (frames - frame) / self.native.rate
        return None


class Recorder:
    """Records one ALSA capture device in its own thread until `stop()` or `seconds` of audio."""

    def __init__(self, device: str, seconds: float) -> None:
        self.rec = Recording(device)
        self._seconds = seconds
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"doctor-rec-{device}", daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def wait_open(self, timeout: float = 5.0) -> bool:
        """True once the device is open and reading (False: it failed or took too long)."""
        return self._opened.wait(timeout) and self.rec.error is None

    def stop(self) -> Recording:
        self._stop.set()
        self._thread.join(10.0)
        return self.rec

    def join(self, timeout: float) -> Recording:
        self._thread.join(timeout)
        if self._thread.is_alive():
            return self.stop()
        return self.rec

    def _run(self) -> None:
        try:
            pcm = AlsaPcm(self.rec.device, "capture", period_ms=PERIOD_MS, periods=PERIODS)
        except AudioDeviceError as exc:
            self.rec.error = str(exc)
            self._opened.set()
            return
        try:
            native = self.rec.native = pcm.native
            want = int(self._seconds * native.rate)
            frames = 0
            period_s = PERIOD_MS / 1000.0
            last_data = time.monotonic()
            self._opened.set()
            while frames < want and not self._stop.is_set():
                data = pcm.read()
                now = time.monotonic()
                if not data:  # nothing yet, or an overrun (None: recovered, a gap we cannot fill)
                    if now - last_data > 2.0:
                        self.rec.error = f"no audio from {self.rec.device!r} for 2 s"
                        return
                    pcm.wait(2 * period_s)
                    continue
                last_data = now
                self.rec.data += data
                frames = len(self.rec.data) // native.bytes_per_frame
                self.rec.reads.append((now, frames))
        except AudioDeviceError as exc:
            self.rec.error = str(exc)
        finally:
            self._opened.set()
            pcm.close()


def record_all(devices: Sequence[str], seconds: float) -> list[Recording]:
    """`seconds` from every device at once (each its own thread); a device that fails has `error` set."""
    recorders = [Recorder(d, seconds).start() for d in devices]
    return [r.join(seconds + 10.0) for r in recorders]


# ------------------------------------------------------------------------------------------------------ analysis


@dataclass(frozen=True)
class MicLevels:
    """One channel of one recording, measured."""

    device: str
    channel: int
    channels: int
    level_dbfs: float  # the whole recording
    speech_dbfs: float | None  # the voiced frames (None: too little speech)
    voiced_ms: int
    peak: int
    clipped: float  # fraction of samples at full scale
    dc_dbfs: float

    @property
    def silent(self) -> bool:
        return self.level_dbfs < SILENT_DBFS


def _dbfs(power: float) -> float:
    return 10.0 * math.log10(power / FULL_SCALE**2) if power > 0 else -96.0


def measure(x24: Pcm, device: str, channel: int = 0, channels: int = 1) -> MicLevels:
    """Levels of one 24 kHz channel: overall, of webrtcvad's voiced frames (behind an energy gate), peak, clipping
    and DC offset."""
    xf = x24.astype(np.float64)
    dc = float(np.mean(xf)) if xf.size else 0.0
    x16 = Resampler(VATEL_FORMAT.rate, VAD_RATE).process((x24 - np.int16(np.clip(round(dc), -32768, 32767)))
                                                         .astype(np.int16))
    n = VAD_RATE * VAD_FRAME_MS // 1000
    vad = webrtcvad.Vad(VAD_AGGRESSIVENESS)
    gate = (FULL_SCALE * 10 ** (VAD_GATE_DBFS / 20)) ** 2
    voiced_power: list[float] = []
    for i in range(x16.size // n):
        chunk = x16[i * n : (i + 1) * n]
        p = float(np.mean(chunk.astype(np.float64) ** 2))
        if p >= gate and vad.is_speech(chunk.astype("<i2").tobytes(), VAD_RATE):
            voiced_power.append(p)
    voiced_ms = len(voiced_power) * VAD_FRAME_MS
    speech = _dbfs(float(np.mean(voiced_power))) if voiced_ms >= MIN_VOICED_MS else None
    return MicLevels(
        device=device, channel=channel, channels=channels,
        level_dbfs=_dbfs(float(np.mean(xf**2))) if xf.size else -96.0,
        speech_dbfs=speech, voiced_ms=voiced_ms,
        peak=int(np.max(np.abs(x24.astype(np.int32)))) if x24.size else 0,
        clipped=float(np.mean(np.abs(x24.astype(np.int32)) >= CLIP_LEVEL)) if x24.size else 0.0,
        dc_dbfs=20.0 * math.log10(abs(dc) / FULL_SCALE) if dc else -96.0,
    )


def measure_recording(rec: Recording) -> list[MicLevels]:
    """Every channel of a recording, measured."""
    if rec.native is None:
        return []
    return [measure(rec.channel(c), rec.device, c, rec.native.channels) for c in range(rec.native.channels)]


def choose(levels: Sequence[MicLevels]) -> MicLevels | None:
    """The channel that heard speech loudest (None: none heard any)."""
    heard = [m for m in levels if m.speech_dbfs is not None and m.clipped <= CLIP_FRACTION]
    heard = heard or [m for m in levels if m.speech_dbfs is not None]
    return max(heard, key=lambda m: m.speech_dbfs or -96.0) if heard else None


def mic_findings(rec: Recording, levels: Sequence[MicLevels]) -> list[Finding]:
    """One line per recorded channel with its levels, and a warn for a silent, clipping or DC-offset one."""
    if rec.error is not None or rec.native is None:
        return [warn("mic", f"{rec.device}: could not record ({rec.error})",
                     "another program (the service?) may hold it: `sudo systemctl stop vatel-edge` and run again")]
    out: list[Finding] = []
    for m in levels:
        name = m.device if m.channels == 1 else f"{m.device} channel {m.channel}"
        speech = f"speech {m.speech_dbfs:.1f} dBFS ({m.voiced_ms} ms voiced)" if m.speech_dbfs is not None \
            else f"no speech ({m.voiced_ms} ms voiced)"
        text = f"{name}: {speech}, level {m.level_dbfs:.1f} dBFS, peak {m.peak}"
        if m.silent:
            out.append(warn("mic", f"{text}: silent",
                            "a dead or muted microphone: unmute and raise its capture gain in `alsamixer -c CARD` "
                            "(F4), check the cable or the HAT"))
        elif m.clipped > CLIP_FRACTION:
            out.append(warn("mic", f"{text}: clipping ({100 * m.clipped:.2f} % of samples at full scale)",
                            "lower the capture gain in `alsamixer` (F4) or speak further away"))
        elif m.dc_dbfs > DC_DBFS:
            out.append(warn("mic", f"{text}: DC offset ({m.dc_dbfs:.1f} dBFS)",
                            "a faulty or badly biased microphone input; another microphone or port may be better"))
        else:
            out.append(ok("mic", text))
    return out
