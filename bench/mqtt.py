"""The MQTT bridge's cost, side by side in one run: wake latency and listening CPU of three `vatel-edge run`
daemons on the same microphone: bridge off (the floor), bridge on with the broker up (a real Mosquitto on
loopback), and bridge on with the broker down (nothing listens on its port: reconnect attempts with backoff).

Each daemon talks to its own simulator, so every session is attributed. Listening CPU: utime+stime over the
same window of room noise (the energy gate opened, webrtcvad on every frame). Wake latency: the utterance is
fed once per trial to all three at once; each value is the time from the feed start to that daemon's first
input_audio (the feed's start-up delay is the same for all three, so the differences are the bridge's cost).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from typing import Any

from bench.latency import _first
from bench.listening import NOISE_DBFS, daemon_config
from bench.measure import Figure, median
from bench.rig import DaemonProc, Rig, kill, pink_noise
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.simulator import SimSession, Simulator

VARIANTS = ("off", "broker_up", "broker_down")
KEYS = ("mqtt_listening_cpu_broker_up", "mqtt_listening_cpu_broker_down", "mqtt_wake_latency_broker_up",
        "mqtt_wake_latency_broker_down")
#: "within noise": the bridge may cost at most this much more than off (the run-to-run spread of these figures).
LATENCY_NOISE_MS = 5.0
CPU_NOISE_PCT = 0.3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _end_soon(s: SimSession) -> None:
    await s.wait_audio(300, timeout=20)
    await s.end_session()


def _mqtt(variant: str, port: int) -> dict[str, Any]:
    if variant == "off":
        return {}
    return {"enabled": True, "url": f"mqtt://127.0.0.1:{port}", "device_id": f"bench-{variant}"}


async def mqtt_figures(rig: Rig, window_s: float, trials: int) -> list[Figure]:
    """Listening CPU and wake latency, bridge off / on with the broker up / on with the broker down."""
    if shutil.which("mosquitto") is None:
        raise RuntimeError("mosquitto is not installed (scripts/setup.sh installs it)")
    up_port, down_port = _free_port(), _free_port()
    broker = subprocess.Popen(  # noqa: ASYNC220 - started once, not waited on here
        ["mosquitto", "-p", str(up_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sims = {v: Simulator(script=_end_soon) for v in VARIANTS}
    daemons: dict[str, DaemonProc] = {}
    feeder: subprocess.Popen[bytes] | None = None
    latencies: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for sim in sims.values():
            await sim.__aenter__()
        for v in VARIANTS:
            cfg = daemon_config(sims[v], wake={"min_level_dbfs": -96.0, "cooldown_ms": 200},
                                audio={"echo_cancel": "off"}, **({"mqtt": _mqtt(v, up_port if v == "broker_up"
                                                                              else down_port)} if v != "off" else {}))
            d = DaemonProc(rig, f"mqtt-{v}", cfg, sims[v].api_key)
            daemons[v] = d
            d.start()
            await d.wait_ready()
        # Listening CPU over one window of room noise, all three at once.
        feeder = rig.feed_mic(pink_noise(window_s + 5.0, NOISE_DBFS))
        await asyncio.sleep(2.0)
        t0, c0 = time.monotonic(), {v: d.cpu() for v, d in daemons.items()}
        await asyncio.sleep(window_s)
        t1, c1 = time.monotonic(), {v: d.cpu() for v, d in daemons.items()}
        await asyncio.to_thread(feeder.wait, window_s + 20)
        feeder = None
        if any(sim.sessions for sim in sims.values()):
            raise RuntimeError("a daemon woke up on the room noise; the listening figures are void")
        cpu = {v: 100 * (c1[v] - c0[v]) / (t1 - t0) for v in VARIANTS}
        # Wake latency: one utterance, heard by all three.
        utterance = bytes(3_600) + shipped_speech("user_request.wav") + bytes(48_000)
        for _ in range(trials):
            fed_at = time.monotonic()
            feeder = rig.feed_mic(utterance)
            for v in VARIANTS:
                s = await sims[v].next_session(timeout=30)
                while s.started_at < fed_at:  # a wake from before this trial (the noise feed's end)
                    await s.wait_closed(timeout=30)
                    s = await sims[v].next_session(timeout=30)
                await s.wait_closed(timeout=30)
                first = _first(s, "in", "input_audio")
                if first is not None:
                    latencies[v].append(1000 * (first - fed_at))
            for d in daemons.values():
                await d.wait_state("listening", timeout=15)
            await asyncio.to_thread(feeder.wait, 20)
            feeder = None
            await asyncio.sleep(0.5)
        links = {v: (await d.request("status")).get("status", {}).get("state") for v, d in daemons.items()}
    finally:
        if feeder is not None:
            await asyncio.to_thread(kill, feeder)
        for d in daemons.values():
            await d.stop()
        for sim in sims.values():
            await sim.aclose()
        await asyncio.to_thread(kill, broker)

    figs: list[Figure] = []
    for v in ("broker_up", "broker_down"):
        label = "broker up" if v == "broker_up" else "broker down"
        fig = Figure(f"mqtt_listening_cpu_{v}", f"Listening CPU, MQTT bridge on, {label}", "%core", cpu[v], cpu["off"],
                     "the same daemon, bridge off, same source and window",
                     goal=f"within {CPU_NOISE_PCT:g} % core of off",
                     note=f"{t1 - t0:.0f} s window, VAD on every frame; state {links[v]}")
        fig.met = cpu[v] - cpu["off"] <= CPU_NOISE_PCT
        figs.append(fig)
    for v in ("broker_up", "broker_down"):
        label = "broker up" if v == "broker_up" else "broker down"
        value, floor = median(latencies[v]), median(latencies["off"])
        fig = Figure(f"mqtt_wake_latency_{v}", f"Wake latency, MQTT bridge on, {label} (feed start -> first "
                     "input_audio)", "ms", value, floor, "the same daemon, bridge off, same utterance at once",
                     goal=f"within {LATENCY_NOISE_MS:g} ms of off",
                     note=f"median of {len(latencies[v])}; the utterance's voiced onset and the wake window are in "
                          "both", samples=[round(x, 1) for x in latencies[v]],
                     floor_samples=[round(x, 1) for x in latencies["off"]])
        fig.met = value is not None and floor is not None and value - floor <= LATENCY_NOISE_MS
        figs.append(fig)
    return figs


async def main(window_s: float = 30.0, trials: int = 5) -> None:
    """`python -m bench.mqtt`: this phase alone."""
    with Rig() as rig:
        for fig in await mqtt_figures(rig, window_s, trials):
            print(f"{fig.title}: {fig.value:.3f} {fig.unit} (off: {fig.floor:.3f}) "
                  f"{'met' if fig.met else 'MISSED'}; {fig.note}")


if __name__ == "__main__":
    import sys

    asyncio.run(main(*(float(a) for a in sys.argv[1:2]), *(int(a) for a in sys.argv[2:3])))
