"""Recorded human speech (not TTS) for the claim "nothing the user says is lost", loaded from Debian packages.

Nothing here is committed audio: the clips ship in Debian packages that scripts/setup.sh installs
(architecture `all`, so the same files on x86_64 and aarch64, no network at run time):

- `pocketsphinx-testdata` (BSD-2, CMU; /usr/share/pocketsphinx/test/data): four sentences from the LibriVox
  reading of Jane Austen's "Sense and Sensibility", chapter 1 (LibriVox recordings are public domain; one
  male reader, 16 kHz from a 64 kb/s MP3, room noise near -45 dBFS) and CMU Sphinx's "cards" test set
  (another male speaker, 16 kHz, noise near -50 dBFS).
- `alsa-utils` (GPL-2; /usr/share/sounds/alsa): the speaker-test announcements, a female voice, 48 kHz, studio
  clean (digital silence around the words).

    pcm = human_speech("front_right")        # PCM16 LE mono 24 kHz bytes
    i = speech_onset(pcm)                    # sample index of the first sound
    SPEECH_CLIPS["front_right"].onset        # "soft": what kind of start, documented below

`speech_onset` is the rule the clip table was measured with: the first 10 ms block whose level is 20 dB over
the clip's noise floor (10th percentile of its block levels, never below -70 dBFS). Apply it to the clean
clip: in a room recording the echo and the noise raise the floor. A "soft" onset has at least 30 ms between
that first sound and the first block within 12 dB of the clip's speech level (`loud_onset`): a fricative or
breath quieter than the voiced part, the sound a voice detector or a gate misses first. A "hard" one reaches
speech level within 20 ms. (The package's tidigits files are LDC material: not used.)

Lab code: the daemon never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.audio.wav import load_wav

Pcm = npt.NDArray[np.int16]
Onset = Literal["soft", "hard"]

FULL_SCALE = 32768.0
SOFT_LEAD_MS = 30  # a lead-in this long from the first sound to speech level makes an onset soft
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")


@dataclass(frozen=True)
class SpeechClip:
    """One recording: where it comes from and what was measured on its 24 kHz version (speech_onset's rule)."""

    name: str
    package: str  # the Debian package that ships it
    path: Path
    licence: str
    speaker: str
    text: str
    samples: int  # at 24 kHz, after resampling
    onset_ms: int  # speech_onset(), from the start of the clip
    end_ms: int  # speech_end()
    lead_ms: int  # loud_onset() - speech_onset(): the soft lead-in
    onset_note: str
    pauses_ms: tuple[tuple[int, int], ...] = ()  # internal pauses (start, length): speech_pauses()

    @property
    def onset(self) -> Onset:
        """"soft" when the voiced part starts 30 ms or more after the first sound, else "hard"."""
        return "soft" if self.lead_ms >= SOFT_LEAD_MS else "hard"

    @property
    def duration_s(self) -> float:
        return self.samples / VATEL_FORMAT.rate

    @property
    def onset_sample(self) -> int:
        return VATEL_FORMAT.samples(self.onset_ms)


_TESTDATA = "pocketsphinx-testdata"
_LIBRIVOX_LICENCE = "public domain (LibriVox reading), packaged under BSD-2 (CMU)"
_LIBRIVOX_SPEAKER = "LibriVox reader of Sense and Sensibility ch. 1, male (f0 ~100 Hz), 16 kHz, noise ~-45 dBFS"
_CARDS_LICENCE = "BSD-2 (Carnegie Mellon University, CMU Sphinx test data)"
_CARDS_SPEAKER = "CMU Sphinx 'cards' test speaker, male (f0 ~100 Hz), 16 kHz, noise ~-50 dBFS"
_ALSA_LICENCE = "GPL-2 (alsa-utils)"
_ALSA_SPEAKER = "alsa-utils speaker-test voice, female (f0 ~190 Hz), 48 kHz, digital silence around"


def _librivox(number: str) -> Path:
    return POCKETSPHINX_DATA / "librivox" / f"sense_and_sensibility_01_austen_64kb-{number}.wav"


_CLIPS = (
    SpeechClip(
        "ill_disposed", _TESTDATA, _librivox("0880"), _LIBRIVOX_LICENCE, _LIBRIVOX_SPEAKER,
        "He was not an ill disposed young man.", samples=71760, onset_ms=280, end_ms=2650, lead_ms=0,
        onset_note="/h/ + vowel: about 20 ms of breath 10-15 dB over the noise (below the rule), then the vowel",
        pauses_ms=((870, 330),),
    ),
    SpeechClip(
        "dashwood", _TESTDATA, _librivox("0870"), _LIBRIVOX_LICENCE, _LIBRIVOX_SPEAKER,
        "And Mister John Dashwood had then leisure to consider how much there might be prudently in his power "
        "to do for them.", samples=170400, onset_ms=290, end_ms=6530, lead_ms=0,
        onset_note="vowel onset ('And'); a long sentence with five internal pauses",
        pauses_ms=((2130, 170), (3850, 210), (4930, 160), (5170, 150), (5650, 160)),
    ),
    SpeechClip(
        "amiable_woman", _TESTDATA, _librivox("0920"), _LIBRIVOX_LICENCE, _LIBRIVOX_SPEAKER,
        "Had he married a more amiable woman, he might have been made still more respectable than he was.",
        samples=145200, onset_ms=350, end_ms=5720, lead_ms=0,
        onset_note="/h/ + vowel ('Had'), the breath below the rule; three internal pauses",
        pauses_ms=((2460, 150), (4650, 200), (5460, 220)),
    ),
    SpeechClip(
        "cold_hearted", _TESTDATA, _librivox("0890"), _LIBRIVOX_LICENCE, _LIBRIVOX_SPEAKER,
        "Unless to be rather cold hearted and rather selfish is to be ill disposed.",
        samples=127200, onset_ms=300, end_ms=4890, lead_ms=0,
        onset_note="vowel onset ('Unless'); two internal pauses",
        pauses_ms=((1210, 180), (3800, 160)),
    ),
    SpeechClip(
        "seven_of_clubs", _TESTDATA, POCKETSPHINX_DATA / "cards" / "003.wav", _CARDS_LICENCE, _CARDS_SPEAKER,
        "Seven of clubs.", samples=36916, onset_ms=130, end_ms=1220, lead_ms=10,
        onset_note="/s/ fricative (98 % of its energy above 3 kHz) but loud, about 10 dB below the vowel: "
                   "within 12 dB of speech level after 10 ms, so hard by the lead rule",
    ),
    SpeechClip(
        "four_queen_of_clubs", _TESTDATA, POCKETSPHINX_DATA / "cards" / "002.wav", _CARDS_LICENCE,
        _CARDS_SPEAKER, "Four, queen of clubs.", samples=47046, onset_ms=140, end_ms=1670, lead_ms=10,
        onset_note="a weak /f/ (about 10 ms, 20 dB below the vowel), then the vowel; one internal pause",
        pauses_ms=((620, 200),),
    ),
    SpeechClip(
        "eight_of_spades", _TESTDATA, POCKETSPHINX_DATA / "cards" / "005.wav", _CARDS_LICENCE, _CARDS_SPEAKER,
        "Eight of spades, four of clubs, seven of hearts.", samples=84060, onset_ms=210, end_ms=3180, lead_ms=0,
        onset_note="vowel onset: from the noise floor (-53 dBFS) to -17 dBFS within one 10 ms block; the source "
                   "has 5 samples clipped at full scale",
    ),
    SpeechClip(
        "front_right", "alsa-utils", ALSA_SOUNDS / "Front_Right.wav", _ALSA_LICENCE, _ALSA_SPEAKER,
        "Front right.", samples=36736, onset_ms=50, end_ms=1400, lead_ms=90,
        onset_note="/f/ fricative for 90 ms at about -48 dBFS, 33 dB below the vowel",
        pauses_ms=((630, 240),),
    ),
    SpeechClip(
        "front_center", "alsa-utils", ALSA_SOUNDS / "Front_Center.wav", _ALSA_LICENCE, _ALSA_SPEAKER,
        "Front center.", samples=34272, onset_ms=40, end_ms=1340, lead_ms=60,
        onset_note="/f/ fricative for 60 ms at about -41 dBFS, 26 dB below the vowel",
        pauses_ms=((470, 320),),
    ),
    SpeechClip(
        "side_left", "alsa-utils", ALSA_SOUNDS / "Side_Left.wav", _ALSA_LICENCE, _ALSA_SPEAKER,
        "Side left.", samples=33706, onset_ms=40, end_ms=1300, lead_ms=30,
        onset_note="/s/ fricative (99 % of its energy above 3 kHz) for 30 ms at about -35 dBFS",
        pauses_ms=((600, 210),),
    ),
)

#: Every clip by name.
SPEECH_CLIPS: dict[str, SpeechClip] = {clip.name: clip for clip in _CLIPS}
#: The clip names, LibriVox sentences first.
HUMAN_SPEECH: tuple[str, ...] = tuple(SPEECH_CLIPS)


def speech_available(name: str) -> bool:
    """Is the package that ships clip `name` installed?"""
    return SPEECH_CLIPS[name].path.is_file()


def human_speech(name: str) -> bytes:
    """Clip `name` as PCM16 LE mono 24 kHz (the project's resampler, delay compensated: vatel_edge.audio.wav).

    KeyError for an unknown name; FileNotFoundError naming the Debian package when it is not installed."""
    clip = SPEECH_CLIPS[name]
    if not clip.path.is_file():
        raise FileNotFoundError(f"{clip.path} missing: install the Debian package {clip.package} (scripts/setup.sh)")
    return load_wav(clip.path)


def _samples(pcm: bytes | Pcm) -> Pcm:
    if isinstance(pcm, bytes):
        return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int16)
    return np.asarray(pcm, dtype=np.int16)


def block_levels(
    pcm: bytes | Pcm, *, block_ms: float = 10.0, fmt: AudioFormat = VATEL_FORMAT
) -> npt.NDArray[np.float64]:
    """RMS level (dBFS, -200 for digital silence) of each whole `block_ms` block."""
    x = _samples(pcm).astype(np.float64)
    n = fmt.samples(block_ms)
    blocks = x[: x.size // n * n].reshape(-1, n)
    power = np.mean(blocks**2, axis=1)
    levels: npt.NDArray[np.float64] = np.where(
        power > 0, 10 * np.log10(np.maximum(power, 1e-20) / FULL_SCALE**2), -200.0
    )
    return levels


def noise_floor_dbfs(pcm: bytes | Pcm, *, block_ms: float = 10.0, min_floor_dbfs: float = -70.0,
                     fmt: AudioFormat = VATEL_FORMAT) -> float:
    """The clip's noise floor: the 10th percentile of its block levels, never below `min_floor_dbfs` (so that
    digital silence does not make the faintest dither a "sound")."""
    levels = block_levels(pcm, block_ms=block_ms, fmt=fmt)
    if levels.size == 0:
        raise ValueError("no whole block in the signal")
    return max(float(np.percentile(levels, 10)), min_floor_dbfs)


def _sounding(pcm: bytes | Pcm, block_ms: float, above_floor_db: float, floor_dbfs: float | None,
              fmt: AudioFormat) -> npt.NDArray[np.intp]:
    levels = block_levels(pcm, block_ms=block_ms, fmt=fmt)
    floor = noise_floor_dbfs(pcm, block_ms=block_ms, fmt=fmt) if floor_dbfs is None else floor_dbfs
    loud: npt.NDArray[np.intp] = np.flatnonzero(levels > floor + above_floor_db)
    if loud.size == 0:
        raise ValueError(f"no block {above_floor_db} dB over the floor ({floor:.1f} dBFS)")
    return loud


def speech_onset(pcm: bytes | Pcm, *, block_ms: float = 10.0, above_floor_db: float = 20.0,
                 floor_dbfs: float | None = None, fmt: AudioFormat = VATEL_FORMAT) -> int:
    """Sample index of the first sound: the start of the first `block_ms` block whose level is
    `above_floor_db` over the noise floor (`floor_dbfs`, by default noise_floor_dbfs() of `pcm` itself).
    Compute it on the clean source. ValueError when nothing is that loud."""
    first = int(_sounding(pcm, block_ms, above_floor_db, floor_dbfs, fmt)[0])
    return first * fmt.samples(block_ms)


def speech_end(pcm: bytes | Pcm, *, block_ms: float = 10.0, above_floor_db: float = 20.0,
               floor_dbfs: float | None = None, fmt: AudioFormat = VATEL_FORMAT) -> int:
    """Sample index just after the last block that speech_onset's rule calls sound."""
    last = int(_sounding(pcm, block_ms, above_floor_db, floor_dbfs, fmt)[-1])
    return (last + 1) * fmt.samples(block_ms)


def loud_onset(pcm: bytes | Pcm, *, block_ms: float = 10.0, below_loud_db: float = 12.0,
               fmt: AudioFormat = VATEL_FORMAT) -> int:
    """Sample index of the first block, from speech_onset() on, within `below_loud_db` of the speech level (the
    95th percentile of the sounding blocks' levels): where the voiced part has started. From the onset to here
    is the soft lead-in (SpeechClip.lead_ms)."""
    levels = block_levels(pcm, block_ms=block_ms, fmt=fmt)
    sounding = _sounding(pcm, block_ms, 20.0, None, fmt)
    loud = float(np.percentile(levels[sounding], 95))
    first = int(sounding[0])
    return (first + int(np.flatnonzero(levels[first:] > loud - below_loud_db)[0])) * fmt.samples(block_ms)


def speech_pauses(pcm: bytes | Pcm, *, min_ms: float = 150.0, block_ms: float = 10.0, above_floor_db: float = 15.0,
                  fmt: AudioFormat = VATEL_FORMAT) -> list[tuple[int, int]]:
    """Internal pauses as (start sample, length in samples): runs of at least `min_ms` between the first and the
    last sound where no block is `above_floor_db` over the noise floor."""
    levels = block_levels(pcm, block_ms=block_ms, fmt=fmt)
    floor = noise_floor_dbfs(pcm, block_ms=block_ms, fmt=fmt)
    active = levels > floor + above_floor_db
    sounding = _sounding(pcm, block_ms, 20.0, floor, fmt)
    n = fmt.samples(block_ms)
    need = max(1, round(min_ms / block_ms))
    pauses: list[tuple[int, int]] = []
    run_start: int | None = None
    for i in range(int(sounding[0]), int(sounding[-1]) + 1):
        if not active[i]:
            run_start = i if run_start is None else run_start
            continue
        if run_start is not None and i - run_start >= need:
            pauses.append((run_start * n, (i - run_start) * n))
        run_start = None
    return pauses
