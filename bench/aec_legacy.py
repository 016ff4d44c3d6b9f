"""The legacy WebRTC AEC (AEC2, Debian's webrtc-audio-processing 0.3) for bench/double_talk.py --legacy.

AEC2 has the setting AEC3's Python bindings do not expose, a suppression level (low / moderate / high), but
only a C++ API. `build` compiles a small C shim (bench/aec_legacy_shim.cc) with g++ and loads it with ctypes;
`LegacyAec` is an EchoCanceller over it. Not used by the daemon. Needs: apt install g++
libwebrtc-audio-processing-dev.
"""

from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vatel_edge.audio.aec import EchoCanceller
from vatel_edge.audio.format import VATEL_FORMAT as FMT

_F = ctypes.POINTER(ctypes.c_float)
LEVELS = {0: "low", 1: "moderate", 2: "high"}


def build(workdir: Path) -> ctypes.CDLL:
    """Compile the shim against the system library and load it."""
    out = workdir / "libaec_legacy.so"
    subprocess.run(
        ["g++", "-O2", "-shared", "-fPIC", "-DWEBRTC_POSIX", "-DWEBRTC_LINUX",
         "-I/usr/include/webrtc_audio_processing", str(Path(__file__).with_name("aec_legacy_shim.cc")),
         "-o", str(out), "-lwebrtc_audio_processing"], check=True)
    lib = ctypes.CDLL(str(out))
    lib.aec2_new.restype = ctypes.c_void_p
    lib.aec2_new.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.aec2_reverse.argtypes = [ctypes.c_void_p, _F, ctypes.c_int, ctypes.c_int]
    lib.aec2_process.argtypes = [ctypes.c_void_p, _F, _F, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.aec2_free.argtypes = [ctypes.c_void_p]
    return lib


class LegacyAec:
    """vatel_edge.audio.aec.EchoCanceller over the shim: 24 kHz PCM16 frames, fed to AEC2 10 ms at a time
    (extended filter and delay-agnostic mode on, high-pass filter off, stream delay reported as 0)."""

    def __init__(self, lib: ctypes.CDLL, level: int) -> None:
        self.name = f"aec2-{LEVELS[level]}"
        self._lib, self._level = lib, level
        self._h: int | None = lib.aec2_new(level, 1, 1)

    def process(self, mic: bytes, ref: bytes) -> bytes:
        m = np.frombuffer(mic, "<i2").astype(np.float32) / 32768
        r = np.frombuffer(ref, "<i2").astype(np.float32) / 32768
        n = FMT.rate // 100
        out = np.empty_like(m)
        for i in range(0, m.size, n):
            rc, mc = np.ascontiguousarray(r[i : i + n]), np.ascontiguousarray(m[i : i + n])
            y = np.empty(n, np.float32)
            e1 = self._lib.aec2_reverse(self._h, rc.ctypes.data_as(_F), n, FMT.rate)
            e2 = self._lib.aec2_process(self._h, mc.ctypes.data_as(_F), y.ctypes.data_as(_F), n, FMT.rate, 0)
            if e1 or e2:
                raise RuntimeError(f"AEC2 error {e1} / {e2}")
            out[i : i + n] = y
        return np.clip(out * 32768, -32768, 32767).astype("<i2").tobytes()

    def reset(self) -> None:
        self.close()
        self._h = self._lib.aec2_new(self._level, 1, 1)

    def close(self) -> None:
        if self._h:
            self._lib.aec2_free(self._h)
            self._h = None


def legacy_engines(workdir: Path) -> dict[str, Callable[[], EchoCanceller]]:
    """One engine per suppression level, the shim built into `workdir`."""
    lib = build(workdir)
    return {f"AEC2, {name} suppression": (lambda level=level: LegacyAec(lib, level)) for level, name in LEVELS.items()}
