"""A real headless browser for page tests: Debian's chromium takes a screenshot; a stdlib PNG decoder reads it."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

CHROMIUM = "/usr/bin/chromium"
#: Without the background-networking flags chromium tries Google's hosts, refused on a closed network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium_or_skip() -> str:
    """The chromium binary; skips (saying why) only when it is not installed (scripts/setup.sh installs it)."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; scripts/setup.sh installs it)")
    return path


def screenshot(page: Path, png: Path, *, size: tuple[int, int] = (1400, 900), timeout: float = 60.0) -> None:
    """Open the local file `page` in headless chromium and write a screenshot of the window to `png`."""
    browser = chromium_or_skip()
    profile = png.parent / f"{png.stem}-chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
         f"--window-size={size[0]},{size[1]}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert png.is_file() and png.stat().st_size > 0, f"chromium wrote no screenshot (exit {proc.returncode}):\n" \
        + proc.stderr[-2000:]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path) -> npt.NDArray[np.uint8]:
    """An 8-bit RGB or RGBA, non-interlaced PNG as an array (height, width, channels)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, bytearray()
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 1:  # Sub: running sum per channel
            row = np.cumsum(line.reshape(width, channels), axis=0).reshape(stride) % 256
        elif kind == 2:  # Up
            row = (line + prev) % 256
        elif kind in (3, 4):  # Average, Paeth: each byte depends on the one decoded to its left
            cur, up = line.tolist(), prev.tolist()
            for i in range(stride):
                left = cur[i - channels] if i >= channels else 0
                if kind == 3:
                    cur[i] = (cur[i] + (left + up[i]) // 2) % 256
                else:
                    upleft = up[i - channels] if i >= channels else 0
                    cur[i] = (cur[i] + _paeth(left, up[i], upleft)) % 256
            row = np.array(cur, dtype=np.int32)
        else:
            raise AssertionError(f"PNG filter type {kind}")
        out[y] = row
        prev = row
    return out.reshape(height, width, channels)


def colour_mask(image: npt.NDArray[np.uint8], hex_colour: str, tolerance: int = 24) -> npt.NDArray[np.bool_]:
    """Pixels within `tolerance` (per channel) of `#rrggbb`."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int32)
    mask: npt.NDArray[np.bool_] = np.all(np.abs(image[..., :3].astype(np.int32) - rgb) <= tolerance, axis=-1)
    return mask
