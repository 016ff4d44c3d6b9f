"""VoiceDetector on recorded speech: a batch of frames decides exactly as the same frames one by one."""

from __future__ import annotations

import numpy as np
import pytest

from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.resample import Resampler
from vatel_edge.audio.vad import VadParams, VoiceDetector
from vatel_edge.devkit.speech import human_speech


def _speech_in_noise() -> list[bytes]:
    rng = np.random.default_rng(5)
    talk = np.frombuffer(human_speech("dashwood"), dtype="<i2").astype(np.int32)
    x = (rng.standard_normal(talk.size + VATEL_FORMAT.samples(2000)) * 150).astype(np.int32)
    x[VATEL_FORMAT.samples(1000) : VATEL_FORMAT.samples(1000) + talk.size] += talk
    pcm = np.clip(x, -32768, 32767).astype("<i2").tobytes()
    n = VATEL_FORMAT.nbytes(20)
    return [pcm[i : i + n] for i in range(0, len(pcm) - n + 1, n)]


@pytest.mark.parametrize(("frame_ms", "min_level_dbfs"), [(30, -45.0), (20, -96.0), (10, -30.0)])
def test_a_batch_decides_as_the_frames_one_by_one(frame_ms: int, min_level_dbfs: float) -> None:
    frames = _speech_in_noise()
    params = VadParams(frame_ms=frame_ms, min_speech_ms=120, min_level_dbfs=min_level_dbfs)
    one = VoiceDetector(params)
    single = [one.process(f) for f in frames]
    batched = VoiceDetector(params)
    rng = np.random.default_rng(frame_ms)
    out = []
    i = 0
    while i < len(frames):
        k = int(rng.integers(1, 7))
        out += batched.process_batch(frames[i : i + k])
        i += k
    assert out == single
    assert sum(r.voiced for r in single) > 20 and sum(r.triggered for r in single) > 5  # the speech was heard
    if min_level_dbfs > -47:  # the noise (-47 dBFS) is below the energy gate: never voiced
        assert not any(r.voiced for r in single[: 1000 // 20 - 2])


def test_output_counts_predicts_what_process_returns() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(60_000) * 3000).astype(np.int16)
    for rates in [(24000, 8000), (48000, 24000), (16000, 24000), (44100, 24000), (24000, 24000)]:
        r = Resampler(*rates)
        at = 0
        for n in rng.integers(1, 1500, 40):
            lengths = [int(n), int(n) // 2 + 1]
            expected = r.output_counts(lengths)
            got = [r.process(x[at : at + lengths[0]]).size, r.process(x[at + lengths[0] : at + sum(lengths)]).size]
            assert expected == got, rates
            at += sum(lengths)
