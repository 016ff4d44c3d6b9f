"""Fleet metrics without MQTT: [metrics] textfile, a Prometheus text file for node_exporter's textfile
collector, rewritten atomically every metrics.interval_s (prometheus-client's write_to_textfile: a
temporary file in the same directory, then rename). Imported only when metrics.textfile is set.

Every figure comes from the daemon's status dict (status.DaemonStatus.to_dict()); none carries a
transcript, an argument or a key.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from vatel_edge.config.schema import MetricsConfig
from vatel_edge.events import EventHub
from vatel_edge.lifecycle import AsyncClosing, cancel_and_wait
from vatel_edge.state import State

log = logging.getLogger(__name__)

#: Counters of the status dict exported as `vatel_edge_<name>_total`.
COUNTERS = ("wakes", "sessions", "sessions_failed", "interruptions", "capture_overruns", "capture_dropped",
            "token_failures", "connection_failures", "bad_frames")


class MetricsFile:
    """The metrics of one daemon (`update(status)`), and `write()` of the file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.up = Gauge("vatel_edge_up", "1 while the daemon runs (the file's age says when it stopped)", registry=r)
        self.state = Gauge("vatel_edge_state", "1 for the current conversation state", ["state"], registry=r)
        self.muted = Gauge("vatel_edge_muted", "1 while the privacy mute is on", registry=r)
        self.uptime = Gauge("vatel_edge_uptime_seconds", "Seconds since the daemon started", registry=r)
        self.counters = {
            name: Gauge(f"vatel_edge_{name}_total", f"{name.replace('_', ' ').capitalize()} since start", registry=r)
            for name in COUNTERS
        }
        self.tool_calls = Gauge("vatel_edge_tool_calls_total", "Tool calls answered since start, by outcome",
                                ["outcome"], registry=r)
        self.last_session_end = Gauge("vatel_edge_last_session_end_timestamp_seconds",
                                      "Wall-clock time the last session ended (0: none yet)", registry=r)
        self.echo_reduction = Gauge("vatel_edge_echo_reduction_db", "Echo reduction of the canceller (NaN: none)",
                                    registry=r)
        self.cloud = Gauge("vatel_edge_cloud_connected", "1 when the token provider reaches the Vatel API",
                           registry=r)

    def update(self, status: Mapping[str, Any]) -> None:
        """Set every metric from a status dict."""
        self.up.set(1)
        current = str(status.get("state", ""))
        for s in State:
            self.state.labels(state=s.value).set(1 if s.value == current else 0)
        self.muted.set(1 if status.get("muted") else 0)
        self.uptime.set(float(status.get("uptime_s") or 0.0))
        counters = status.get("counters") or {}
        for name, gauge in self.counters.items():
            gauge.set(float(counters.get(name, 0) or 0))
        for outcome, n in (counters.get("tool_calls") or {}).items():
            self.tool_calls.labels(outcome=str(outcome)).set(float(n))
        erle = (status.get("echo") or {}).get("erle_db")
        self.echo_reduction.set(float(erle) if isinstance(erle, (int, float)) else math.nan)
        self.cloud.set(1 if status.get("token_status") == "ready" else 0)

    def write(self) -> None:
        """Write the file atomically, world-readable (node_exporter runs as another user)."""
        write_to_textfile(self.path, self.registry)
        os.chmod(self.path, 0o644)


class MetricsWriter(AsyncClosing):
    """Owned task: update and write the file every interval; a failing write is logged once until it works."""

    def __init__(self, cfg: MetricsConfig, status: Callable[[], Mapping[str, Any]], events: EventHub) -> None:
        assert cfg.textfile is not None
        self.file = MetricsFile(cfg.textfile)
        self._interval = cfg.interval_s
        self._status = status
        self._events = events
        self._task: asyncio.Task[None] | None = None
        self._ends: asyncio.Task[None] | None = None
        self._failing = False
        self.writes = 0

    async def __aenter__(self) -> MetricsWriter:
        self._task = asyncio.create_task(self._run(), name="metrics textfile")
        self._ends = asyncio.create_task(self._session_ends(), name="metrics session ends")
        return self

    async def aclose(self) -> None:
        """Stop; the last write says up = 0 (the daemon stopped)."""
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task, self._ends)
        self.file.up.set(0)
        self._write()

    async def _run(self) -> None:
        # Low-frequency and small (a few kB): written on the loop, off the audio path (the capture thread).
        while True:
            self.file.update(self._status())
            self._write()
            await asyncio.sleep(self._interval)

    async def _session_ends(self) -> None:
        """The end time of every session (also one shorter than the interval)."""
        while True:
            async with self._events.subscribe() as sub:
                async for ev in sub:
                    if ev.kind == "session_closed":
                        self.file.last_session_end.set(ev.at)

    def _write(self) -> None:
        try:
            self.file.write()
        except OSError as exc:
            if not self._failing:
                log.warning("metrics.textfile: cannot write %s: %s (retrying every %.0f s)", self.file.path,
                            exc.strerror or exc, self._interval)
            self._failing = True
            return
        if self._failing:
            log.info("metrics.textfile: writing %s again", self.file.path)
        self._failing = False
        self.writes += 1
