"""Resampler: passband, anti-aliasing, streaming equivalence, lengths."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.audio import level_db, tone
from vatel_edge.audio.resample import Resampler, to_channels, to_mono


def run_in_frames(r: Resampler, x: np.ndarray, block: int) -> np.ndarray:
    return np.concatenate([r.process(x[i : i + block]) for i in range(0, len(x), block)])


@pytest.mark.parametrize("freq", [100, 1000, 4000, 8000, 10000])
def test_48k_to_24k_passband_is_flat_to_10khz(freq: int) -> None:
    """Tones up to 10 kHz pass 48 -> 24 kHz within 0.5 dB."""
    y = run_in_frames(Resampler(48000, 24000), tone(freq, 48000, 48000), 960)
    assert abs(level_db(y, freq, 24000)) < 0.5


@pytest.mark.parametrize("freq", [12500, 14000, 18000, 23000])
def test_48k_to_24k_attenuates_aliases_by_60db(freq: int) -> None:
    """A tone above the new 12 kHz Nyquist is attenuated >= 60 dB at its alias frequency."""
    y = run_in_frames(Resampler(48000, 24000), tone(freq, 48000, 48000), 960)
    alias = 24000 - freq
    assert level_db(y, alias, 24000) < -60


@pytest.mark.parametrize(("src", "dst"), [(44100, 24000), (16000, 24000), (24000, 48000), (24000, 44100)])
def test_other_rates_pass_1khz_and_keep_length(src: int, dst: int) -> None:
    """1 kHz passes unchanged in level for the other common rates, and the output length tracks the ratio."""
    x = tone(1000, src, src)
    y = run_in_frames(Resampler(src, dst), x, src // 50)
    assert abs(len(y) - dst) <= 1
    assert abs(level_db(y, 1000, dst)) < 0.1


def test_44k1_to_24k_rejects_alias() -> None:
    """44.1 -> 24 kHz: a 15 kHz tone (alias 9 kHz) is attenuated >= 60 dB."""
    y = run_in_frames(Resampler(44100, 24000), tone(15000, 44100, 44100), 882)
    assert level_db(y, 9000, 24000) < -60


def test_streaming_in_odd_blocks_equals_one_shot() -> None:
    """Frame-by-frame output (any block sizes) is identical to processing the whole signal at once."""
    rng = np.random.default_rng(1)
    x = rng.integers(-20000, 20000, 30000).astype(np.int16)
    whole = Resampler(44100, 24000).process(x)
    r = Resampler(44100, 24000)
    parts, i = [], 0
    for size in rng.integers(1, 900, 200):
        parts.append(r.process(x[i : i + size]))
        i += int(size)
        if i >= len(x):
            break
    parts.append(r.process(x[i:]))
    assert np.array_equal(np.concatenate(parts), whole)


def test_full_scale_input_saturates_instead_of_wrapping() -> None:
    """A full-scale square wave (filter overshoot) clips at int16 limits, never wraps sign."""
    x = np.tile(np.array([32767] * 24 + [-32768] * 24, dtype=np.int16), 200)
    y = Resampler(48000, 24000).process(x)
    assert y.dtype == np.int16
    # around each +full-scale plateau the output stays positive (a wrap would flip it negative)
    assert int(y.max()) == 32767 and int(y.min()) == -32768


def test_equal_rates_pass_through() -> None:
    """in_rate == out_rate copies the samples unchanged."""
    x = np.arange(-100, 100, dtype=np.int16)
    assert np.array_equal(Resampler(24000, 24000).process(x), x)


def test_channel_helpers() -> None:
    """to_mono picks a channel or averages; to_channels duplicates."""
    st = np.array([1, 10, 2, 20, 3, 30], dtype=np.int16)
    assert to_mono(st, 2, 1).tolist() == [10, 20, 30]
    assert to_mono(st, 2, None).tolist() == [6, 11, 16]  # rint of 5.5, 11, 16.5 (banker's rounding)
    assert to_channels(np.array([1, 2], dtype=np.int16), 2).tolist() == [1, 1, 2, 2]
