"""Recorded human speech from Debian packages (vatel_edge/devkit/speech.py): the loader returns the documented
audio, and the onset rule finds the first sound where the clip table says."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.devkit import speech

FMT = VATEL_FORMAT
BLOCK = FMT.samples(10)


def _need(name: str) -> None:
    """Skip on a machine without the clip's Debian package; in CI (scripts/setup.sh ran) it must be there."""
    if not speech.speech_available(name):
        clip = speech.SPEECH_CLIPS[name]
        if os.environ.get("CI"):
            pytest.fail(f"{clip.path} missing although scripts/setup.sh ran ({clip.package})")
        pytest.skip(f"Debian package {clip.package} not installed (scripts/setup.sh installs it)")


@pytest.mark.parametrize("name", speech.HUMAN_SPEECH)
def test_each_clip_loads_as_24khz_pcm_of_the_documented_length(name: str) -> None:
    """human_speech(name) is PCM16 mono at 24 kHz, exactly `samples` long (the source resampled), at a speech
    level, with hardly any sample at full scale (eight_of_spades has 5 clipped ones in its source)."""
    _need(name)
    clip = speech.SPEECH_CLIPS[name]
    pcm = speech.human_speech(name)
    assert len(pcm) == clip.samples * FMT.bytes_per_frame
    x = np.frombuffer(pcm, dtype="<i2")
    assert np.count_nonzero(np.abs(x.astype(np.int32)) >= 32767) <= 5
    assert -30.0 < 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) / 32768) < -10.0


@pytest.mark.parametrize("name", speech.HUMAN_SPEECH)
def test_onset_end_lead_and_pauses_are_where_the_table_says(name: str) -> None:
    """speech_onset / speech_end / loud_onset / speech_pauses on the clip give the documented figures (one 10 ms
    block of tolerance), and the onset kind follows from the lead-in."""
    _need(name)
    clip = speech.SPEECH_CLIPS[name]
    pcm = speech.human_speech(name)
    onset = speech.speech_onset(pcm)
    assert abs(onset - clip.onset_sample) <= BLOCK
    assert abs(speech.speech_end(pcm) - FMT.samples(clip.end_ms)) <= BLOCK
    assert abs(speech.loud_onset(pcm) - onset - FMT.samples(clip.lead_ms)) <= BLOCK
    pauses = [(start // FMT.samples(1), length // FMT.samples(1)) for start, length in speech.speech_pauses(pcm)]
    assert len(pauses) == len(clip.pauses_ms)
    for (start, length), (want_start, want_length) in zip(pauses, clip.pauses_ms, strict=True):
        assert abs(start - want_start) <= 10 and abs(length - want_length) <= 20
    assert clip.onset == ("soft" if clip.lead_ms >= speech.SOFT_LEAD_MS else "hard")


def test_the_set_has_two_speakers_soft_onsets_and_sentences_with_pauses() -> None:
    """What the claim needs: at least three sentences, two different voices (a male one near 100 Hz, a female one
    near 190 Hz, from the pitch of each clip), soft and hard onsets, internal pauses."""
    names = [n for n in speech.HUMAN_SPEECH if speech.speech_available(n)]
    if len(names) < len(speech.HUMAN_SPEECH):
        _need(next(n for n in speech.HUMAN_SPEECH if n not in names))
    clips = [speech.SPEECH_CLIPS[n] for n in names]
    assert len({c.text for c in clips}) >= 3
    assert {c.onset for c in clips} == {"soft", "hard"}
    assert sum(1 for c in clips if c.pauses_ms) >= 3
    pitches = {n: _median_f0(np.frombuffer(speech.human_speech(n), dtype="<i2")) for n in ("dashwood", "front_right")}
    assert 70 < pitches["dashwood"] < 140 and 150 < pitches["front_right"] < 260, pitches


def test_onset_is_found_in_silence_padding_and_a_quiet_signal_is_refused() -> None:
    """speech_onset on a clip placed after 0.5 s of silence moves by exactly 0.5 s (a block multiple); a signal
    with nothing 20 dB over its floor raises ValueError."""
    _need("front_right")
    pcm = speech.human_speech("front_right")
    pad = bytes(FMT.nbytes(500))
    floor = speech.noise_floor_dbfs(pcm)
    assert speech.speech_onset(pad + pcm, floor_dbfs=floor) == speech.speech_onset(pcm) + FMT.samples(500)
    with pytest.raises(ValueError):
        speech.speech_onset(np.full(FMT.samples(200), 100, dtype=np.int16))


def test_unknown_or_missing_clips_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown name is a KeyError; a clip whose package is absent raises FileNotFoundError naming it."""
    with pytest.raises(KeyError):
        speech.human_speech("no such clip")
    clip = speech.SPEECH_CLIPS["front_right"]
    monkeypatch.setitem(speech.SPEECH_CLIPS, "front_right", replace(clip, path=speech.ALSA_SOUNDS / "absent.wav"))
    with pytest.raises(FileNotFoundError, match="alsa-utils"):
        speech.human_speech("front_right")


def _median_f0(x: np.ndarray, rate: int = FMT.rate) -> float:
    """Median pitch (Hz) of the loud 40 ms frames: the autocorrelation peak between 70 and 400 Hz."""
    n = FMT.samples(40)
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    found = []
    for i in range(0, x.size - n, n):
        s = x[i : i + n].astype(np.float64)
        if np.sqrt(np.mean(s**2)) < rms:
            continue
        s -= s.mean()
        c = np.correlate(s, s, "full")[n - 1 :]
        lo, hi = rate // 400, rate // 70
        k = lo + int(np.argmax(c[lo:hi]))
        if c[k] > 0.5 * c[0]:
            found.append(rate / k)
    return float(np.median(found))
