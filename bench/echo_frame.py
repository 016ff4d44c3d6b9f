"""The echo path's own cost per capture frame in a session, next to the WebRTC canceller alone.

In a session the capture thread runs every frame through EchoPath.process: the reference lookup
(EchoReference.frame_for, with the mic envelope for the delay search), the engine, and the path's
bookkeeping (echo reduction, the quiet rule, the echo-likeness window). Right after a wake-up every call
costs several times its arithmetic (cold caches: docs/PERFORMANCE.md), so both sides sleep 20 ms between
frames: one frame per wake-up, as the capture thread ran it until it drained two periods per 0.04 s sleep in
a session (mic.SESSION_BATCH_S; the second frame of a drain runs warm, so this is the dearer case). The
floor is the same engine on the same frames.

    .venv/bin/python bench/echo_frame.py [frames]

Run alone it also measures DTLN-aec per frame (audio.echo_cancel = "dtln"), with AEC3 alone as the floor.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import Figure, median
from vatel_edge.audio import aec_dtln
from vatel_edge.audio.aec import available_engines, make_echo_canceller
from vatel_edge.audio.aec_path import open_echo_path
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT as FMT
from vatel_edge.config import AudioConfig
from vatel_edge.devkit.fixtures import shipped_speech

FRAME_MS = 20
KEY = "echo_path_frame"
TITLE = "Echo path per session frame, in process (20 ms between frames)"
FLOOR = "the WebRTC canceller alone, same frames"


def _frames(count: int) -> list[tuple[bytes, bytes]]:
    """(reference, mic) pairs: the shipped agent voice, and the mic hearing it 10 dB down in faint noise."""
    voice = np.frombuffer(shipped_speech("agent_answer.wav"), dtype="<i2")
    n = FMT.samples(FRAME_MS)
    rng = np.random.default_rng(1)
    out = []
    for k in range(count):
        i = (k * n) % (voice.size - n)
        ref = voice[i : i + n]
        mic = np.clip(ref * 0.3 + rng.normal(0, 30, n), -32768, 32767).astype("<i2")
        out.append((ref.astype("<i2").tobytes(), mic.tobytes()))
    return out


def _engine_us(frames: list[tuple[bytes, bytes]], kind: str = "webrtc") -> float:
    engine = make_echo_canceller(kind, FRAME_MS)
    assert engine is not None
    total = 0
    for ref, mic in frames:
        time.sleep(FRAME_MS / 1000)
        t = time.thread_time_ns()
        engine.process(mic, ref)
        total += time.thread_time_ns() - t
    engine.close()
    return total / len(frames) / 1000


def _path_us(frames: list[tuple[bytes, bytes]]) -> tuple[float, dict[str, int]]:
    path = open_echo_path(AudioConfig(echo_cancel="webrtc", frame_ms=FRAME_MS))
    assert path is not None
    total = 0
    for seq, (ref, mic) in enumerate(frames):
        time.sleep(FRAME_MS / 1000)
        now = time.monotonic()
        path.on_written(ref, now + 0.04)  # as the Player: written ahead of the frame that will hear it
        t = time.thread_time_ns()
        path.process(CaptureFrame(mic, now, seq))
        total += time.thread_time_ns() - t
    stats = dict(path.stats)
    path.close()
    return total / len(frames) / 1000, stats


def echo_path_frame(count: int, repeat: int) -> Figure:
    """Median over `repeat` rounds (path and engine alternating) of thread CPU per frame."""
    if "webrtc" not in available_engines():
        raise RuntimeError("the WebRTC canceller (pywebrtc-audio) is not installed")
    frames = _frames(count)
    paths: list[float] = []
    engines: list[float] = []
    stats: dict[str, int] = {}
    for _ in range(repeat):
        p, stats = _path_us(frames)
        paths.append(p)
        engines.append(_engine_us(frames))
    value, floor = median(paths), median(engines)
    if value is None or floor is None:
        raise ValueError(f"echo_path_frame needs at least one round (repeat={repeat})")
    return Figure(KEY, TITLE, "us/frame", value, floor, FLOOR,
                  note=f"{count} frames x {repeat}; the path's own share {value - floor:.0f} us/frame; "
                       f"frames cancelled {stats.get('cancelled', 0)}/{stats.get('frames', 0)}",
                  samples=paths, floor_samples=engines)


def dtln_frame(count: int, repeat: int) -> Figure:
    """DTLN-aec's CPU per frame (audio.echo_cancel = "dtln"), next to AEC3's on the same frames, alternating."""
    if not aec_dtln.available() or "webrtc" not in available_engines():
        raise RuntimeError("needs both dtln and webrtc installed")
    frames = _frames(count)
    dtln = [_engine_us(frames, "dtln") for _ in range(repeat)]
    webrtc = [_engine_us(frames) for _ in range(repeat)]
    value, floor = median(dtln), median(webrtc)
    if value is None or floor is None:
        raise ValueError(f"dtln_frame needs at least one round (repeat={repeat})")
    return Figure("dtln_frame", "DTLN-aec per session frame, in process (20 ms between frames)", "us/frame",
                  value, floor, "the WebRTC canceller alone, same frames",
                  note=f"{count} frames x {repeat}; {value / (10 * FRAME_MS):.1f} % of a core here",
                  samples=dtln, floor_samples=webrtc)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    figs = [echo_path_frame(count, 3)] + ([dtln_frame(count, 3)] if aec_dtln.available() else [])
    for fig in figs:
        print(f"{fig.title}: {fig.value:.0f} us against {fig.floor:.0f} us ({fig.floor_name}); {fig.note}")
