"""The network floor: a bare websockets client doing what the daemon does on the wire, and nothing else.

Run as a subprocess by the benchmarks (its CPU is read from /proc like the daemon's); it imports only
websockets, httpx and the standard library (with --aec also numpy and pywebrtc_audio), never vatel_edge.
Secrets come from the environment:
BENCH_WS_BASE (ws://host:port), BENCH_TOKEN (a session token), or for --fetch-token BENCH_BASE_URL,
BENCH_API_KEY and BENCH_AGENT_ID.

    stream  --frame-ms 20 --seconds 30     input_audio every frame_ms, in real time; decode every reply
            [--aec]                        ...and run the WebRTC canceller (pywebrtc-audio, as the daemon
                                           configures it) on each frame first, with the agent audio received
                                           as its reference: the canceller alone, no daemon around it
    connect [--fetch-token] [--repeat 2]   print the start times of: (token POST,) connect, send one
                                           input_audio frame; the simulator stamps its arrival
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from urllib.parse import quote

import httpx
import websockets

RATE = 24_000
WIDTH = 2


def frame_bytes(frame_ms: int) -> int:
    """Bytes of one PCM16 mono 24 kHz frame."""
    return RATE * frame_ms // 1000 * WIDTH


def input_audio(pcm: bytes) -> str:
    """The input_audio message, as the daemon encodes it."""
    audio = base64.b64encode(pcm).decode("ascii")
    return json.dumps({"type": "input_audio", "data": {"audio": audio}}, separators=(",", ":"))


async def fetch_token() -> str:
    """POST /v1/session-token once, like the daemon's token client."""
    base = os.environ["BENCH_BASE_URL"].rstrip("/")
    async with httpx.AsyncClient(timeout=10.0) as client:
        resp = await client.post(
            base + "/v1/session-token",
            json={"agent_id": os.environ["BENCH_AGENT_ID"], "transport": "websocket"},
            headers={"Authorization": f"Bearer {os.environ['BENCH_API_KEY']}"},
        )
        resp.raise_for_status()
        token: str = resp.json()["token"]
        return token


def url(token: str) -> str:
    """The connection URL."""
    return f"{os.environ['BENCH_WS_BASE'].rstrip('/')}/v1/connection?token={quote(token, safe='')}"


class _Canceller:
    """The WebRTC canceller on a room-noise microphone (-50 dBFS, as the bench feeds the daemons), with the
    agent audio received as the reference, frame by frame."""

    def __init__(self, frame_ms: int) -> None:
        import numpy as np  # only with --aec
        import pywebrtc_audio

        self._np = np
        self._apm = pywebrtc_audio.AudioProcessor(sample_rate=RATE, num_channels=1, echo_cancellation=True)
        self._n = frame_bytes(frame_ms) // WIDTH
        self._mic = (np.random.default_rng(7).normal(0.0, 104.0, RATE * 10)).astype("<i2")
        self._at = 0
        self.far = bytearray()

    def next_frame(self) -> bytes:
        np, n = self._np, self._n
        if self._at + n > self._mic.size:
            self._at = 0
        near = self._mic[self._at : self._at + n]
        self._at += n
        ref = bytes(self.far[: 2 * n])
        del self.far[: 2 * n]
        far = np.frombuffer(ref + bytes(2 * n - len(ref)), dtype="<i2")
        return bytes(np.asarray(self._apm.process(near, far), dtype="<i2").tobytes())


async def stream(frame_ms: int, seconds: float, aec: bool = False) -> int:
    """Send input_audio in real time and decode everything received, for `seconds`."""
    pcm = bytes(frame_bytes(frame_ms))
    canceller = _Canceller(frame_ms) if aec else None
    received = 0

    async with websockets.connect(url(os.environ["BENCH_TOKEN"]), max_size=2**20) as ws:

        async def receive() -> None:
            nonlocal received
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "response_audio":
                    audio = base64.b64decode(msg["data"]["audio"])
                    received += len(audio)
                    if canceller is not None:
                        canceller.far += audio

        receiver = asyncio.create_task(receive())
        start = time.monotonic()
        n = 0
        try:
            while time.monotonic() - start < seconds and not receiver.done():
                await ws.send(input_audio(pcm if canceller is None else canceller.next_frame()))
                n += 1
                await asyncio.sleep(max(0.0, start + n * frame_ms / 1000 - time.monotonic()))
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
    print(json.dumps({"sent_frames": n, "received_bytes": received}))
    return 0


async def connect_once(fetch: bool, repeat: int) -> int:
    """`repeat` times (the first warms up lazy imports and caches): note the start time, then get
    connected and deliver one input_audio frame. Prints the start times."""
    tokens = os.environ.get("BENCH_TOKEN", "").split(",")
    starts = []
    for n in range(repeat):
        t0 = time.monotonic()
        token = await fetch_token() if fetch else tokens[n]
        async with websockets.connect(url(token)) as ws:
            await ws.send(input_audio(bytes(frame_bytes(20))))
            await asyncio.sleep(0.2)
        starts.append(t0)
    print(json.dumps({"t0": starts}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("stream")
    p.add_argument("--frame-ms", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--aec", action="store_true")
    p = sub.add_parser("connect")
    p.add_argument("--fetch-token", action="store_true")
    p.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.mode == "stream":
        return asyncio.run(stream(args.frame_ms, args.seconds, args.aec))
    return asyncio.run(connect_once(args.fetch_token, args.repeat))


if __name__ == "__main__":
    sys.exit(main())
