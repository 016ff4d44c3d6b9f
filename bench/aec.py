"""Echo canceller benchmark: ERLE, double-talk loss and CPU per frame for each engine on synthetic rooms.

Run: .venv/bin/python bench/aec.py [--frame-ms 20] [--json out.json]
Prints a markdown table and a JSON document. Besides the shipped engines (vatel_edge.audio.aec) it measures
candidates that were considered and not shipped, when importable: aec-audio-processing (WebRTC AEC3,
sdist only), speexaec (Cython speexdsp binding, no residual-echo suppressor) and a pure-numpy PBFDAF.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vatel_edge.audio.aec import EchoCanceller, available_engines, make_echo_canceller
from vatel_edge.audio.format import AudioFormat
from vatel_edge.devkit import aec_lab

RATE = 24_000
ROOMS = {
    "30 ms": aec_lab.Room(delay_s=0.03, gain=0.3),
    "50 ms": aec_lab.Room(delay_s=0.05, gain=0.3),
    "80 ms loud": aec_lab.Room(delay_s=0.08, gain=0.5, rt60_s=0.3),
}


class _Bytes:
    """Adapts a numpy-frame canceller to the bytes interface."""

    def __init__(self, name: str, fn: Callable[[npt.NDArray[np.int16], npt.NDArray[np.int16]], npt.NDArray[np.int16]]):
        self.name = name
        self._fn = fn

    def process(self, mic: bytes, ref: bytes) -> bytes:
        out = self._fn(np.frombuffer(mic, dtype="<i2"), np.frombuffer(ref, dtype="<i2"))
        return np.asarray(out, dtype="<i2").tobytes()

    def reset(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Pbfdaf:
    """Partitioned-block frequency-domain NLMS (overlap-save, block = frame, one partition constrained per
    call), no double-talk detector and no residual suppressor: what a numpy fallback would start from."""

    def __init__(self, block: int, tail: int, mu: float = 1.0) -> None:
        self.b = block
        self.p = max(1, -(-tail // block))
        self.w = np.zeros((self.p, block + 1), np.complex128)
        self.x = np.zeros((self.p, block + 1), np.complex128)
        self.buf = np.zeros(2 * block)
        self.pow = np.full(block + 1, 1e-6)
        self.mu = mu
        self.i = 0

    def __call__(self, mic: npt.NDArray[np.int16], ref: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        b = self.b
        self.buf[:b] = self.buf[b:]
        self.buf[b:] = ref / 32768.0
        xf = np.fft.rfft(self.buf)
        self.x = np.roll(self.x, 1, axis=0)
        self.x[0] = xf
        e = mic / 32768.0 - np.fft.irfft(np.einsum("pk,pk->k", self.x, self.w))[b:]
        ef = np.fft.rfft(np.concatenate([np.zeros(b), e]))
        self.pow = 0.9 * self.pow + 0.1 * np.abs(xf) ** 2
        self.w += np.conj(self.x) * (self.mu * ef / (self.p * self.pow + 2 * b * 1e-6))
        k = self.i % self.p
        self.i += 1
        taps = np.fft.irfft(self.w[k])
        taps[b:] = 0
        self.w[k] = np.fft.rfft(taps)
        return np.clip(np.round(e * 32768), -32768, 32767).astype(np.int16)


def candidates(frame_ms: int) -> dict[str, Callable[[], EchoCanceller]]:
    fmt = AudioFormat(rate=RATE)
    n = fmt.samples(frame_ms)
    found: dict[str, Callable[[], EchoCanceller]] = {}
    for kind in available_engines():
        found[f"{kind} (shipped)"] = lambda kind=kind: make_echo_canceller(kind, frame_ms)  # type: ignore[misc]
    try:
        import aec_audio_processing

        def aap() -> EchoCanceller:
            ap = aec_audio_processing.AudioProcessor(
                enable_aec=True, enable_ns=False, enable_agc=False, enable_vad=False
            )
            ap.set_stream_format(RATE, 1, RATE, 1)
            ap.set_reverse_stream_format(RATE, 1)
            chunk = fmt.samples(10)

            def run(mic: npt.NDArray[np.int16], ref: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
                out = []
                for i in range(0, mic.size, chunk):
                    ap.process_reverse_stream(ref[i : i + chunk].tobytes())
                    out.append(np.frombuffer(ap.process_stream(mic[i : i + chunk].tobytes()), dtype="<i2"))
                return np.concatenate(out)

            return _Bytes("aec-audio-processing", run)

        found["aec-audio-processing (AEC3, sdist)"] = aap
    except ImportError:
        pass
    try:
        import speexaec

        found["speexaec (MDF only)"] = lambda: _Bytes(
            "speexaec", speexaec.EchoCanceller(n, fmt.samples(200), RATE).process
        )
    except ImportError:
        pass
    found["numpy PBFDAF (not shipped)"] = lambda: _Bytes("pbfdaf", Pbfdaf(n, fmt.samples(250)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame-ms", type=int, default=20, choices=(10, 20, 30, 40))
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    frame_ms = args.frame_ms
    n = AudioFormat(rate=RATE).samples(frame_ms)
    agent = aec_lab.agent_speech(RATE)
    user = aec_lab.user_speech(RATE)
    scenes = {name: aec_lab.make_scene(agent, RATE, room=room) for name, room in ROOMS.items()}
    double_talk = aec_lab.make_scene(agent, RATE, room=ROOMS["50 ms"], user=user, user_at_s=5.0)
    results = []
    for name, make in candidates(frame_ms).items():
        row: dict[str, object] = {"engine": name}
        cpu = []
        for room, scene in scenes.items():
            out, per_frame = aec_lab.run_engine(make(), scene, frame_ms)
            row[f"erle_db {room}"] = round(aec_lab.erle_db(scene, out, n), 1)
            cpu.append(per_frame)
        out_dt, _ = aec_lab.run_engine(make(), double_talk, frame_ms)
        out_echo, _ = aec_lab.run_engine(make(), scenes["50 ms"], frame_ms)
        user_p = aec_lab.frame_power(double_talk.user[: out_dt.size], n)
        talking = user_p > user_p.max() * 1e-2
        kept = aec_lab.frame_power(out_dt, n)[talking].sum() - aec_lab.frame_power(out_echo, n)[talking].sum()
        row["double_talk_loss_db"] = round(float(10 * np.log10(user_p[talking].sum() / kept)), 1) if kept > 0 else None
        row[f"cpu_ms_per_{frame_ms}ms_frame"] = round(1e3 * float(np.median(cpu)), 3)
        results.append(row)
    keys = list(results[0])
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    print(f"Echo cancellers at {RATE} Hz, {frame_ms} ms frames, {machine}")
    print()
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in results:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    doc = {"rate": RATE, "frame_ms": frame_ms, "machine": platform.machine(), "results": results}
    print()
    print(json.dumps(doc, indent=2))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
