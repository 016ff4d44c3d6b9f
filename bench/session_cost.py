"""Session figures: CPU per audio second of full-duplex sessions (next to a bare websockets client) and peak RSS.

All variants run at once, each `vatel-edge run` (wake.mode = manual, started through the control socket)
in its own session with the simulator, which streams agent audio in real time (send_turn realtime=True,
chunk_ms per variant) while the daemon streams the microphone (room noise, mic_during_playback =
stream). Next to them, bench/ws_floor.py sends and receives the same messages with nothing else
around them. CPU is read from /proc over the same window for everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.listening import daemon_config
from bench.measure import Figure, cpu_seconds
from bench.rig import FMT, REPO, DaemonProc, Rig, kill, pink_noise, until
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.simulator import SimSession, Simulator

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Variant:
    """One measured session configuration."""

    key: str
    title: str
    frame_ms: int
    chunk_ms: int
    echo_cancel: str


VARIANTS = (
    Variant("session_cpu_aec_off", "Session CPU, AEC off (frame 20 ms, chunk 40 ms)", 20, 40, "off"),
    Variant("session_cpu_aec_on", "Session CPU, AEC webrtc (frame 20 ms, chunk 40 ms)", 20, 40, "webrtc"),
    Variant("session_cpu_frame10_chunk40", "Session CPU, audio.frame_ms 10, chunk 40 ms", 10, 40, "off"),
    Variant("session_cpu_frame40_chunk40", "Session CPU, audio.frame_ms 40, chunk 40 ms", 40, 40, "off"),
    Variant("session_cpu_frame20_chunk20", "Session CPU, frame 20 ms, send_turn chunk_ms 20", 20, 20, "off"),
    Variant("session_cpu_frame20_chunk100", "Session CPU, frame 20 ms, send_turn chunk_ms 100", 20, 100, "off"),
)
RSS_GOAL_MB = 60.0
AEC_SESSION_GOAL_RATIO = 1.8  # issue 14: the daemon with the canceller vs the canceller alone + a bare client


def _floor_key(v: Variant) -> tuple[int, int, bool]:
    """The floor a variant is measured against: frame, chunk, and whether the canceller runs in it."""
    return v.frame_ms, v.chunk_ms, v.echo_cancel == "webrtc"


def aec_wired() -> tuple[bool, str]:
    """Whether the running daemon code uses the echo canceller at all (checked on the code, not assumed)."""
    probe = "import sys, vatel_edge.daemon; print(int('vatel_edge.audio.aec' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    imported = out.stdout.strip() == "1"
    sources = [REPO / "vatel_edge" / "daemon.py", *(REPO / "vatel_edge" / "audio").glob("[cp]*.py")]
    mentioned = any("make_echo_canceller" in p.read_text(encoding="utf-8") for p in sources)
    wired = imported or mentioned
    how = "vatel_edge.daemon imports vatel_edge.audio.aec" if imported else (
        "make_echo_canceller is called from the daemon/audio path" if mentioned else
        "vatel_edge.daemon neither imports vatel_edge.audio.aec nor calls make_echo_canceller")
    return wired, how


def aec_engine_cost(frame_ms: int = 20) -> float | None:
    """The webrtc engine's own ms per frame, from bench/aec.py (run here, not duplicated)."""
    out_path = BENCH / ".aec-latest.json"
    try:
        subprocess.run([sys.executable, str(BENCH / "aec.py"), "--frame-ms", str(frame_ms), "--json", str(out_path)],
                       capture_output=True, timeout=180, check=True, cwd=REPO)
        doc = json.loads(out_path.read_text())
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            out_path.unlink()
    for row in doc.get("results", []):
        if str(row.get("engine", "")).startswith("webrtc"):
            value = row.get(f"cpu_ms_per_{frame_ms}ms_frame")
            return float(value) if value is not None else None
    return None


def agent_script(chunk_ms: int, turn_s: float) -> Callable[[SimSession], Awaitable[None]]:
    """The simulated agent of a cost session: one long real-time turn while the client streams."""
    voice = shipped_speech("agent_answer.wav")
    reps = int(FMT.nbytes(turn_s * 1000) // len(voice)) + 1
    pcm = (voice * reps)[: FMT.nbytes(turn_s * 1000)]

    async def run(s: SimSession) -> None:
        await s.wait_audio(20, timeout=30)
        await s.send_turn("turn-1", pcm, chunk_ms=chunk_ms, realtime=True)
        await s.wait_seconds(0.3)
        await s.end_session()

    return run


def start_floor(rig: Rig, sim: Simulator, frame_ms: int, seconds: float, aec: bool = False) -> subprocess.Popen[bytes]:
    """bench/ws_floor.py stream (with `aec`: and the WebRTC canceller alone on each frame), with a token minted
    by the simulator (passed in the environment)."""
    env = {**rig.env, "BENCH_TOKEN": sim.issue_token(), "BENCH_WS_BASE": sim.base_url.replace("http://", "ws://")}
    return subprocess.Popen(
        [sys.executable, str(BENCH / "ws_floor.py"), "stream", "--frame-ms", str(frame_ms),
         "--seconds", f"{seconds:g}", *(["--aec"] if aec else [])],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _first_response_audio(s: SimSession) -> bool:
    return any(m.direction == "out" and m.type == "response_audio" for m in s.messages)


async def session_cost(rig: Rig, window_s: float) -> tuple[list[Figure], Figure]:
    """Figures 3 and 8b, and the session daemon's peak RSS (figure 7, without its floor yet)."""
    settle_s = 1.0
    turn_s = settle_s + window_s + 3.0
    wired, how = aec_wired()
    chunks = sorted({v.chunk_ms for v in VARIANTS})
    async with contextlib.AsyncExitStack() as stack:
        sims = {c: await stack.enter_async_context(Simulator(script=agent_script(c, turn_s))) for c in chunks}
        feeder = rig.feed_mic(pink_noise(turn_s + 30.0, -50.0))
        daemons: dict[str, DaemonProc] = {}
        floors: dict[tuple[int, int, bool], subprocess.Popen[bytes]] = {}
        try:
            for v in VARIANTS:
                sim = sims[v.chunk_ms]
                cfg = daemon_config(sim, audio={"frame_ms": v.frame_ms, "echo_cancel": v.echo_cancel},
                                    wake={"mode": "manual"})
                d = DaemonProc(rig, v.key, cfg, sim.api_key)
                daemons[v.key] = d
                d.start()
            for d in daemons.values():
                try:
                    await d.wait_ready()
                except TimeoutError:
                    raise RuntimeError(f"daemon {d.name} never sent READY=1:\n{d.log_tail()}") from None
            for v in VARIANTS:
                reply = await daemons[v.key].request("trigger")
                if not reply.get("started"):
                    raise RuntimeError(f"daemon {v.key} did not start a session: {reply}")
                key = _floor_key(v)
                if key not in floors:
                    floors[key] = start_floor(rig, sims[v.chunk_ms], v.frame_ms, turn_s, aec=key[2])
            expected = {c: sum(1 for v in VARIANTS if v.chunk_ms == c) + sum(1 for f in floors if f[1] == c)
                        for c in chunks}
            await until(lambda: all(len(sims[c].sessions) >= n and all(map(_first_response_audio, sims[c].sessions))
                                    for c, n in expected.items()), timeout=30)
            await asyncio.sleep(settle_s)
            t0 = time.monotonic()
            c0 = {k: d.cpu() for k, d in daemons.items()}
            f0 = {k: cpu_seconds(p.pid) for k, p in floors.items()}
            await asyncio.sleep(window_s)
            t1 = time.monotonic()
            c1 = {k: d.cpu() for k, d in daemons.items()}
            f1 = {k: cpu_seconds(p.pid) for k, p in floors.items()}
            hwm = {k: d.hwm_mb() for k, d in daemons.items()}
            states = {k: (await d.request("status")).get("status", {}).get("state") for k, d in daemons.items()}
        finally:
            for p in floors.values():
                await asyncio.to_thread(kill, p)
            for d in daemons.values():
                await d.stop()
            await asyncio.to_thread(kill, feeder)
    wall = t1 - t0
    engine_ms = aec_engine_cost() if not wired else None
    figures = []
    for v in VARIANTS:
        value = 100 * (c1[v.key] - c0[v.key]) / wall
        floor_key = _floor_key(v)
        floor = 100 * (f1[floor_key] - f0[floor_key]) / wall
        note = f"{wall:.0f} s window, state {states[v.key]}; {value / 100:.4f} CPU s per audio s"
        floor_name = f"bare websockets client, frame {v.frame_ms} ms, chunk {v.chunk_ms} ms"
        if floor_key[2]:
            floor_name = (f"bare websockets client + the WebRTC canceller alone, frame {v.frame_ms} ms, "
                          f"chunk {v.chunk_ms} ms")
        fig = Figure(v.key, v.title, "%core", value, floor, floor_name,
                     extra={"cpu_s": round(c1[v.key] - c0[v.key], 3),
                            "floor_cpu_s": round(f1[floor_key] - f0[floor_key], 3),
                            "window_s": round(wall, 2), "vm_hwm_mb": hwm[v.key]})
        if v.echo_cancel != "off":
            if wired:
                fig.note = f"canceller wired ({how}); " + note
                fig.goal = f"ratio <= {AEC_SESSION_GOAL_RATIO:g}"
                fig.met = fig.ratio is not None and fig.ratio <= AEC_SESSION_GOAL_RATIO
            else:
                projected = "" if engine_ms is None else (
                    f"; the engine alone costs {engine_ms:.3f} ms per 20 ms frame (bench/aec.py), "
                    f"i.e. about +{100 * engine_ms / 20:.2f} % core once wired")
                fig.note = f"NOT WIRED: {how}, so this row measures the AEC-off path{projected}; " + note
                fig.extra["aec_wired"] = False
                fig.extra["aec_engine_ms_per_frame"] = engine_ms
        else:
            fig.note = note
        figures.append(fig)
    base = daemons["session_cpu_aec_off"]
    peak = hwm["session_cpu_aec_off"]
    rss = Figure("peak_rss", "Peak RSS in a session (VmHWM)", "MB", peak, None, "", goal=f"<= {RSS_GOAL_MB:g} MB",
                 met=None if peak is None else peak <= RSS_GOAL_MB,
                 note=f"max over all {len(hwm)} session daemons {max(x for x in hwm.values() if x is not None):.1f} MB",
                 extra={"all_mb": {k: None if x is None else round(x, 1) for k, x in hwm.items()},
                        "daemon": base.name})
    return figures, rss


def startup_floor(rig: Rig, runs: int) -> tuple[list[float], list[float]]:
    """A bare process doing the daemon's unavoidable start-up (interpreter, the same libraries, one capture
    period from demo_mic): wall seconds from spawn to exit, and its VmHWM in MB."""
    script = (
        "import numpy, websockets, httpx, alsaaudio, webrtcvad\n"
        "p = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, alsaaudio.PCM_NORMAL, device='demo_mic', channels=1, rate=24000,"
        " format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=480, periods=4)\n"
        "p.read()\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    walls: list[float] = []
    rss: list[float] = []
    for _ in range(runs):
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", script], env=rig.env, capture_output=True, text=True, timeout=60,
                             check=True)
        walls.append(time.monotonic() - t0)
        rss.append(int(out.stdout.strip().splitlines()[-1]) / 1024)
    return walls, rss

