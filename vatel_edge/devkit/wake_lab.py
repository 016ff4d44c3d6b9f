"""Wake-word lab material, generated at run time (no audio is committed): espeak-ng speech and a room.

* `say(text, voice, wpm)`: espeak-ng speech as 24 kHz PCM16 at a fixed speech level.
* `wake_utterances()`: at least 40 "okay nabu" utterances (voices x speeds x carrier phrases).
* `other_speech_texts()`: English prose that never says the wake word (Debian's license texts), for the
  false-wake run; `tv_like(pcm)` lays a music-like bed under speech.
* `in_room(pcm, distance_m)`: the speech as a microphone 1-3 m away hears it (devkit/room.py, reverberant,
  with room noise).

Lab code: the daemon never imports it.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.resample import Resampler

FMT = VATEL_FORMAT
Pcm = npt.NDArray[np.int16]
#: RMS level speech is normalised to (of its voiced part, roughly: the whole utterance).
SPEECH_DBFS = -22.0
#: Room noise at the microphone for the detection and false-wake runs.
ROOM_NOISE_DBFS = -55.0
WAKE_PHRASES = ("okay nabu", "okay nabu, turn on the kitchen light", "okay nabu, what is the weather")
WAKE_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-us+f3", "en-us+m3", "en-gb+f2", "en-us+m7")
WAKE_SPEEDS = (135, 160, 185)
LICENSE_DIR = Path("/usr/share/common-licenses")


def espeak_available() -> bool:
    """Whether espeak-ng is installed (scripts/setup.sh installs it)."""
    return shutil.which("espeak-ng") is not None


def _normalise(x: npt.NDArray[np.float64], dbfs: float) -> Pcm:
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    if rms > 0:
        x = x * (32768.0 * 10 ** (dbfs / 20) / rms)
    out: Pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    return out


@functools.lru_cache(maxsize=256)
def say(text: str, voice: str = "en-us", wpm: int = 160, dbfs: float = SPEECH_DBFS) -> bytes:
    """`text` spoken by espeak-ng, as 24 kHz mono PCM16 bytes at `dbfs` RMS (leading/trailing silence cut)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text], capture_output=True,
                         check=True, timeout=120).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    y = Resampler(rate, FMT.rate).process(x).astype(np.float64)
    loud = np.flatnonzero(np.abs(y) > 100)
    if loud.size:
        y = y[max(0, loud[0] - FMT.samples(5)) : loud[-1] + FMT.samples(20)]
    return _normalise(y, dbfs).astype("<i2").tobytes()


@dataclass(frozen=True)
class Utterance:
    """One generated utterance and how it was made."""

    text: str
    voice: str
    wpm: int

    @property
    def pcm(self) -> bytes:
        return say(self.text, self.voice, self.wpm)

    def __str__(self) -> str:
        return f"{self.text!r} ({self.voice}, {self.wpm} wpm)"


def wake_utterances(limit: int | None = None) -> list[Utterance]:
    """Wake-word utterances: every phrase x voice x speed (63), or the first `limit` of a spread order."""
    out = [Utterance(p, v, s) for s in WAKE_SPEEDS for v in WAKE_VOICES for p in WAKE_PHRASES]
    return out[:limit] if limit is not None else out


def silence(ms: float) -> bytes:
    return bytes(FMT.nbytes(ms))


def other_speech_texts() -> Iterator[str]:
    """Sentences of English prose without the wake word: the license texts Debian ships (base-files)."""
    for path in sorted(LICENSE_DIR.glob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for sentence in re.split(r"(?<=[.;:])\s+", re.sub(r"\s+", " ", text)):
            words = re.sub(r"[^A-Za-z0-9,.' -]", " ", sentence).strip()
            if len(words.split()) >= 3 and "nabu" not in words.lower():
                yield words[:400]


def tv_like(pcm: bytes, seed: int = 0, bed_db: float = -12.0) -> bytes:
    """`pcm` over a music-like bed (chords of harmonics with a beat, `bed_db` below the speech): TV audio."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rng = np.random.default_rng(seed)
    t = np.arange(x.size) / FMT.rate
    bed = np.zeros_like(t)
    for root in rng.choice([110.0, 130.8, 146.8, 164.8, 196.0], size=3, replace=False):
        for h in (1, 2, 3, 5):
            bed += np.sin(2 * np.pi * root * h * t + rng.uniform(0, 6.28)) / h
    bed *= 0.6 + 0.4 * (np.sin(2 * np.pi * 2.0 * t) > 0)  # a beat at 120 bpm
    rms_x = float(np.sqrt(np.mean(x**2))) or 1.0
    bed *= rms_x * 10 ** (bed_db / 20) / (float(np.sqrt(np.mean(bed**2))) or 1.0)
    return _normalise(x + bed, SPEECH_DBFS).astype("<i2").tobytes()


def in_room(pcm: bytes, distance_m: float, *, noise_dbfs: float = ROOM_NOISE_DBFS, seed: int = 0,
            tail_ms: float = 400.0) -> bytes:
    """`pcm` said `distance_m` (1-3) from the device in the lab's reverberant room, with room noise."""
    from vatel_edge.devkit.room import RoomSetup, render

    setup = RoomSetup(user_distance_m=distance_m, noise_dbfs=noise_dbfs, seed=seed)
    return render(b"", pcm + silence(tail_ms), 0, setup=setup)


def room_gain_db(distance_m: float) -> float:
    """How much quieter the room makes a user at `distance_m` (for lifting the source to a speaking level)."""
    from vatel_edge.devkit.room import RoomSetup, room_response

    return room_response(RoomSetup(user_distance_m=distance_m)).user_gain_db()
