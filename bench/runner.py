"""`bench/run`: every benchmark phase in order, then the markdown table and the JSON document.

Phases: the in-process listening path; listening cost (daemons + arecord); session cost (daemons +
bare websockets clients); latencies (one daemon, probes on both sinks); the start-up/memory floor.
A phase that fails leaves its figures as "not measured" with the reason; the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.echo_frame import echo_path_frame
from bench.latency import latency
from bench.listening import listening_cost, listening_path, stage_costs
from bench.measure import FIGURE_KEYS, Figure, document, machine, markdown_table, median, missing, rounded
from bench.mqtt import KEYS as MQTT_KEYS
from bench.mqtt import mqtt_figures
from bench.rig import Rig
from bench.session_cost import session_cost, startup_floor
from bench.wakeword import FULL as WAKE_FULL
from bench.wakeword import KEYS as WAKE_KEYS
from bench.wakeword import QUICK as WAKE_QUICK
from bench.wakeword import wakeword_figures

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Settings:
    """How long each phase measures."""

    listen_window_s: float
    session_window_s: float
    warm: int
    cold: int
    path_seconds: float
    path_repeat: int
    floor_runs: int
    wake_quick: bool = False  # the wake-word phase's short variant (bench/wakeword.py QUICK)


FULL = Settings(listen_window_s=60.0, session_window_s=30.0, warm=5, cold=5, path_seconds=10.0, path_repeat=5,
                floor_runs=3)
QUICK = Settings(listen_window_s=5.0, session_window_s=3.0, warm=1, cold=1, path_seconds=2.0, path_repeat=2,
                 floor_runs=1, wake_quick=True)

TITLES = {  # for figures a failed phase could not produce
    "listening_cpu": ("Listening CPU", "%core", "arecord"),
    "listening_path": ("Listening path in process", "us/frame", "webrtcvad alone"),
    "echo_path_frame": ("Echo path per session frame, in process", "us/frame", "the WebRTC canceller alone"),
    "session_cpu_aec_off": ("Session CPU, AEC off", "%core", "bare websockets client"),
    "session_cpu_aec_on": ("Session CPU, AEC webrtc", "%core", "bare websockets client + the WebRTC canceller alone"),
    "wake_latency_warm": ("Wake latency, warm token", "ms", "bare client"),
    "wake_latency_cold": ("Wake latency, cold token", "ms", "bare client"),
    "barge_in": ("Barge-in", "ms", "bare ALSA writer"),
    "first_audio": ("First audio", "ms", "bare ALSA writer"),
    "peak_rss": ("Peak RSS in a session", "MB", "python + same libraries"),
    "startup_ready": ("Start-up to READY=1", "ms", "python + same libraries + one capture period"),
    "wakeword_detection": ("Wake word detected, 1-3 m in the room", "%", "the same utterances dry"),
    "wakeword_false_wakes": ("False wakes without the wake word", "wakes/h", "vad mode on the same material"),
    "wakeword_cpu_noise": ("Listening CPU in room noise, wakeword", "%core", "wake.mode = vad"),
    "wakeword_cpu_speech": ("Listening CPU during speech, wakeword", "%core", "arecord"),
    "wakeword_model_step": ("Wake-word model per 10 ms step", "us", "webrtcvad on the same 10 ms"),
    "wakeword_latency": ("Wake-word latency, warm token", "ms", "the detector's own decision delay"),
}


def _title(key: str) -> tuple[str, str, str]:
    if key in TITLES:
        return TITLES[key]
    if key.startswith("listening_cpu"):
        return key, "%core", "arecord"
    return key, "%core", "bare websockets client"


async def _phase(name: str, figures: dict[str, Figure], errors: dict[str, str], keys: tuple[str, ...],
                 body: Callable[[], Awaitable[list[Figure]]]) -> None:
    """Run one phase; on failure mark its figures as not measured (and say why)."""
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    t = time.monotonic()
    try:
        for fig in await body():
            figures[fig.key] = fig
    except Exception as exc:  # a broken phase must not hide the others' figures
        why = f"{name} failed: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        errors[name] = traceback.format_exc()
        print(f"bench: {why}\n{errors[name]}", file=sys.stderr, flush=True)
        for key in keys:
            if key not in figures:
                title, unit, floor = _title(key)
                figures[key] = missing(key, title, unit, floor, why)
    print(f"bench: {name} done in {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)


async def run_all(settings: Settings, workdir: Path | None) -> tuple[list[Figure], dict[str, Any]]:
    """Every phase; the figures in table order and extra facts for the JSON."""
    figures: dict[str, Figure] = {}
    errors: dict[str, str] = {}
    extra: dict[str, Any] = {}
    startups: list[float] = []
    rss_fig: list[Figure] = []

    async def path() -> list[Figure]:
        fig = listening_path(settings.path_seconds, settings.path_repeat)
        fig.extra["stages_us_per_frame"] = stage_costs(settings.path_seconds, settings.path_repeat)
        return [fig]

    await _phase("listening path (in process)", figures, errors, ("listening_path",), path)

    async def echo_frame() -> list[Figure]:
        return [echo_path_frame(25 * round(settings.path_seconds * 2), min(3, settings.path_repeat))]

    await _phase("echo path per frame (in process)", figures, errors, ("echo_path_frame",), echo_frame)
    with Rig(workdir) as rig:
        extra["workdir"] = str(rig.workdir)

        async def listen() -> list[Figure]:
            figs, ups = await listening_cost(rig, settings.listen_window_s)
            startups.extend(ups)
            return figs

        async def sessions() -> list[Figure]:
            figs, rss = await session_cost(rig, settings.session_window_s)
            rss_fig.append(rss)
            return figs

        async def latencies() -> list[Figure]:
            figs, up = await latency(rig, settings.warm, settings.cold)
            if up is not None:
                startups.append(up)
            return figs

        async def floor() -> list[Figure]:
            walls, rss = await asyncio.to_thread(startup_floor, rig, settings.floor_runs)
            out = []
            up = median([1000 * s for s in startups])
            out.append(Figure(
                "startup_ready", "Start-up: process start -> READY=1 (NOTIFY_SOCKET)", "ms", up,
                median([1000 * w for w in walls]), "python + the same libraries + one capture period, to exit",
                samples=rounded([1000 * s for s in startups], 0), floor_samples=rounded([1000 * w for w in walls], 0),
                note=f"median of {len(startups)} daemons started one by one; READY waits for the first capture frame",
            ))
            if rss_fig:
                fig = rss_fig[0]
                fig.floor = median(rss)
                fig.floor_name = "python + the same libraries + one capture period"
                out.append(fig)
            return out

        await _phase("listening cost", figures, errors, tuple(k for k in FIGURE_KEYS if k.startswith("listening_cpu")),
                     listen)
        await _phase("session cost", figures, errors, tuple(k for k in FIGURE_KEYS if k.startswith("session_cpu")),
                     sessions)
        await _phase("latencies", figures, errors,
                     ("wake_latency_warm", "wake_latency_cold", "barge_in", "first_audio"), latencies)
        await _phase("start-up and memory floors", figures, errors, ("startup_ready", "peak_rss"), floor)

        async def wake_words() -> list[Figure]:
            return await wakeword_figures(rig, WAKE_QUICK if settings.wake_quick else WAKE_FULL)

        await _phase("wake word", figures, errors, WAKE_KEYS, wake_words)

        async def bridge() -> list[Figure]:
            quick = settings.warm < 2
            return await mqtt_figures(rig, 3.0 if quick else settings.listen_window_s / 2, 1 if quick else 7)

        await _phase("MQTT bridge on/off", figures, errors, MQTT_KEYS, bridge)
    for key in FIGURE_KEYS:
        if key not in figures:
            title, unit, floor_name = _title(key)
            figures[key] = missing(key, title, unit, floor_name, "no phase produced it")
    extra["errors"] = {k: v.splitlines()[-1] for k, v in errors.items()}
    return [figures[k] for k in FIGURE_KEYS], extra


def main(argv: list[str] | None = None) -> int:
    """Entry point of bench/run. Exit 0 when every figure was measured (missed goals included)."""
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, one trial each (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the JSON document here")
    parser.add_argument("--workdir", type=Path, help="keep the daemons' configs and logs here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    settings = QUICK if args.quick else FULL
    info = machine()
    start = time.monotonic()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    figures, extra = asyncio.run(run_all(settings, args.workdir))
    doc = document(figures, info, "quick" if args.quick else "full", time.monotonic() - start)
    doc["settings"] = settings.__dict__
    doc.update(extra)
    print(f"vatel-edge benchmarks ({doc['mode']} mode), {info['date']}, {info['nproc']} x {info['cpu']}, "
          f"Python {info['python']}, load {info['loadavg_1m_at_start']} at start, {doc['elapsed_s']:.0f} s")
    print()
    print(markdown_table(figures))
    print()
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if all(f.value is not None for f in figures) else 1
