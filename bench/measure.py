"""What the benchmarks report: figures next to their floors, /proc readers, the table and the JSON.

A `Figure` is one measured value, the floor it is compared with (measured in the same run, so the
ratio survives a shared, drifting machine), the goal and whether it was met. Nothing here does I/O
besides reading /proc.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Every figure `bench/run` reports, in table order (the smoke test checks them all).
FIGURE_KEYS: tuple[str, ...] = (
    "listening_cpu",
    "listening_path",
    "echo_path_frame",
    "session_cpu_aec_off",
    "session_cpu_aec_on",
    "wake_latency_warm",
    "wake_latency_cold",
    "barge_in",
    "first_audio",
    "peak_rss",
    "startup_ready",
    "listening_cpu_vad10",
    "listening_cpu_vad20",
    "listening_cpu_vad30",
    "listening_cpu_aec_auto",
    "session_cpu_frame10_chunk40",
    "session_cpu_frame40_chunk40",
    "session_cpu_frame20_chunk20",
    "session_cpu_frame20_chunk100",
    "mqtt_listening_cpu_broker_up",
    "mqtt_listening_cpu_broker_down",
    "mqtt_wake_latency_broker_up",
    "mqtt_wake_latency_broker_down",
    "wakeword_detection",
    "wakeword_false_wakes",
    "wakeword_cpu_noise",
    "wakeword_cpu_speech",
    "wakeword_model_step",
    "wakeword_latency",
)


@dataclass
class Figure:
    """One measured figure next to its floor."""

    key: str
    title: str
    unit: str
    value: float | None
    floor: float | None
    floor_name: str
    goal: str = ""
    met: bool | None = None  # None: no goal, or not measurable in this run
    note: str = ""
    samples: list[float] = field(default_factory=list)
    floor_samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """value / floor (None when either is missing or the floor is zero)."""
        if self.value is None or self.floor is None or self.floor <= 0:
            return None
        return self.value / self.floor

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (ratio included)."""
        out = asdict(self)
        out["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        return out


def missing(key: str, title: str, unit: str, floor_name: str, why: str, goal: str = "") -> Figure:
    """A figure that could not be measured in this run, saying why."""
    return Figure(key, title, unit, None, None, floor_name, goal=goal, met=None, note=f"NOT MEASURED: {why}")


# ---------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, live and exited) in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, name: str) -> int | None:
    """A `kB` line of /proc/PID/status (VmHWM, VmRSS, ...)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_1m_at_start": round(load[0], 2),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---------------------------------------------------------------------- statistics


def median(xs: Sequence[float]) -> float | None:
    """Median, None for no samples."""
    return float(statistics.median(xs)) if xs else None


def rounded(xs: Iterable[float], digits: int = 2) -> list[float]:
    """Samples rounded for the JSON."""
    return [round(x, digits) for x in xs]


# ---------------------------------------------------------------------- rendering


def _num(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "%core":
        return f"{x:.3f} %"
    if unit == "ms":
        return f"{x:.1f} ms"
    if unit == "MB":
        return f"{x:.1f} MB"
    if unit == "us/frame":
        return f"{x:.1f} µs/frame"
    return f"{x:.4g} {unit}"


def verdict(fig: Figure) -> str:
    """met / MISSED / n/a."""
    if fig.met is None:
        return "n/a" if fig.value is not None or not fig.note.startswith("NOT") else "not measured"
    return "met" if fig.met else "**MISSED**"


def markdown_table(figures: Sequence[Figure]) -> str:
    """The table `bench/run` prints (and docs/PERFORMANCE.md carries)."""
    rows = [
        "| figure | value | floor (same run) | ratio | goal | verdict | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for fig in figures:
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}x"
        floor = f"{_num(fig.floor, fig.unit)} ({fig.floor_name})"
        rows.append(
            f"| {fig.title} | {_num(fig.value, fig.unit)} | {floor} | {ratio} | {fig.goal or '-'} | "
            f"{verdict(fig)} | {fig.note.replace('|', '/')} |"
        )
    return "\n".join(rows)


def document(figures: Sequence[Figure], info: dict[str, Any], mode: str, elapsed_s: float) -> dict[str, Any]:
    """The JSON document."""
    return {
        "mode": mode,
        "machine": info,
        "elapsed_s": round(elapsed_s, 1),
        "figures": {fig.key: fig.to_dict() for fig in figures},
    }
