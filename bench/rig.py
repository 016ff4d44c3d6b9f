"""The bench rig: the sandbox sound server, `vatel-edge run` subprocesses, and timestamped probes.

- `Rig` starts a private PulseAudio server (vatel_edge.devkit.sandbox) with null sinks mic/spk and an ALSA
  config naming demo_mic, demo_spk and bench_spkmon (the monitor of spk: what the speaker "plays").
- `DaemonProc` is the real daemon as systemd would run it: `vatel-edge run --config PATH`, the API key in
  the environment, NOTIFY_SOCKET pointing at a datagram socket we bound (READY=1 marks start-up done).
- `Probe` reads an ALSA capture device in a thread and stamps each read with time.monotonic(); from
  those stamps it maps a sample index to the time the sample became available to any reader, which is
  how latencies through PulseAudio are calibrated in the same run (CLOCK_MONOTONIC is system-wide, so
  the simulator's message times, the probes and the subprocesses share one time base).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.measure import cpu_seconds, proc_status_kb
from vatel_edge.audio.alsa import AlsaPcm
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.control import control_request
from vatel_edge.devkit.fixtures import toml_text
from vatel_edge.devkit.sandbox import SANDBOX_ASOUNDRC, PulseServer, kill_process
from vatel_edge.errors import AudioDeviceError, ControlError

FMT = VATEL_FORMAT
REPO = Path(__file__).resolve().parent.parent
BENCH_ASOUNDRC = SANDBOX_ASOUNDRC + """\
pcm.bench_spkmon {
    type pulse
    device "spk.monitor"
}
"""


def vatel_edge_argv() -> list[str]:
    """The installed `vatel-edge` command next to this interpreter, else `python -m vatel_edge.cli`."""
    exe = Path(sys.executable).parent / "vatel-edge"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vatel_edge.cli"]


def pink_noise(seconds: float, level_dbfs: float, seed: int = 7) -> bytes:
    """Room-like noise (1/f spectrum) as PCM16 mono 24 kHz at an RMS level."""
    n = FMT.samples(seconds * 1000)
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    x *= 32768 * 10 ** (level_dbfs / 20) / math.sqrt(float(np.mean(x * x)))
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


class Rig:
    """Sandbox sound server and work directory for one bench run. Context manager; stop() is idempotent."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="vatel-bench-"))
        self.pulse: PulseServer | None = None
        self.env: dict[str, str] = {}
        # Unix socket paths are limited to 107 bytes: sockets live in a short directory of their own.
        self.sockdir = Path(tempfile.mkdtemp(prefix="vb-", dir="/tmp"))

    def __enter__(self) -> Rig:
        asoundrc = self.workdir / "asound.conf"
        asoundrc.write_text(BENCH_ASOUNDRC, encoding="utf-8")
        os.environ["ALSA_CONFIG_PATH"] = str(asoundrc)
        self.pulse = PulseServer.start(self.sockdir / "pulse")
        self.env = {**self.pulse.env, "ALSA_CONFIG_PATH": str(asoundrc), "PYTHONPATH": str(REPO)}
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the sound server and its helpers."""
        pulse, self.pulse = self.pulse, None
        if pulse is not None:
            pulse.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def sink_configured_latency(self, sink: str) -> float | None:
        """The configured latency of a sink in seconds (a null sink renders this far ahead of real time)."""
        assert self.pulse is not None
        out = self.pulse.pactl("list", "sinks", check=False).stdout
        for block in out.split("Sink #"):
            if f"Name: {sink}\n" in block:
                for line in block.splitlines():
                    if "configured" in line:
                        return int(line.split("configured")[1].split()[0]) / 1e6
        return None

    def feed_mic(self, pcm: bytes) -> subprocess.Popen[bytes]:
        """pacat `pcm` into the mic sink, in real time."""
        assert self.pulse is not None
        return self.pulse.feed_mic(pcm)


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> None:
    """Poll `predicate` until it holds (TimeoutError after `timeout`)."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(step)


def start_arecord(rig: Rig, device: str, period: int, periods: int) -> subprocess.Popen[bytes]:
    """arecord reading `device` into /dev/null with the daemon's period and buffer: the capture floor."""
    return subprocess.Popen(
        ["arecord", "-q", "-D", device, "-f", "S16_LE", "-r", str(FMT.rate), "-c", "1", "-t", "raw",
         f"--period-size={period}", f"--buffer-size={period * periods}", "/dev/null"],
        env=rig.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def kill(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL (only this process)."""
    kill_process(proc, timeout)


class DaemonProc:
    """`vatel-edge run` as a subprocess with its own config, control socket and NOTIFY_SOCKET."""

    def __init__(self, rig: Rig, name: str, config: Mapping[str, Any], api_key: str) -> None:
        self.rig = rig
        self.name = name
        self.dir = rig.workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = {section: dict(table) for section, table in config.items()}
        self.control = str(rig.sockdir / f"{name}.control")
        cfg.setdefault("control", {})["socket_path"] = self.control
        self.config_path = self.dir / "config.toml"
        self.config_path.write_text(toml_text(cfg), encoding="utf-8")
        self._api_key = api_key
        self.notify_path = rig.sockdir / f"{name}.notify"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_at: float | None = None
        self.notifications: list[tuple[float, str]] = []  # (monotonic time, datagram) from NOTIFY_SOCKET
        self._sock: socket.socket | None = None
        self._ready = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def startup_s(self) -> float | None:
        """Process start to READY=1."""
        return None if self.ready_at is None else self.ready_at - self.started_at

    def start(self) -> None:
        """Bind the notify socket, spawn the daemon and read its notifications (call in the event loop)."""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.notify_path))
        self._sock.setblocking(False)
        env = {**self.rig.env, "ORG_API_KEY": self._api_key, "NOTIFY_SOCKET": str(self.notify_path)}
        log = open(self.dir / "daemon.log", "wb")  # noqa: SIM115 - closed below, the child keeps its copy
        try:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [*vatel_edge_argv(), "run", "--config", str(self.config_path)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            log.close()
        self._drainer = asyncio.get_running_loop().create_task(self._drain(self._sock), name=f"notify-{self.name}")

    async def _drain(self, sock: socket.socket) -> None:
        """Read every notification, as systemd would: a notify socket nobody reads stalls the sender."""
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(sock, 4096)
            now = time.monotonic()
            self.notifications.append((now, data.decode("utf-8", "replace")))
            if self.ready_at is None and b"READY=1" in data.split(b"\n"):
                self.ready_at = now
                self._ready.set()

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait for READY=1 on the notify socket; seconds since the process started."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        assert self.ready_at is not None
        return self.ready_at - self.started_at

    def cpu(self) -> float:
        """CPU seconds so far (utime + stime)."""
        return cpu_seconds(self.pid)

    def hwm_mb(self) -> float | None:
        """Peak resident set (VmHWM) in MB."""
        kb = proc_status_kb(self.pid, "VmHWM")
        return None if kb is None else kb / 1024

    async def request(self, cmd: str) -> dict[str, Any]:
        """One control-socket request."""
        return await control_request(self.control, {"cmd": cmd})

    async def wait_state(self, state: str, timeout: float) -> None:
        """Poll the control socket until the daemon reports `state`."""
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(ControlError):
                    reply = await self.request("status")
                    if reply.get("status", {}).get("state") == state:
                        return
                await asyncio.sleep(0.05)

    def log_tail(self, chars: int = 1500) -> str:
        """The end of the daemon's log (for error messages)."""
        try:
            return (self.dir / "daemon.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def stop(self) -> None:
        """SIGTERM and wait; idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            await asyncio.to_thread(kill, proc)
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.notify_path.unlink()


@dataclass
class Mark:
    """A probe read: when it returned and how many samples had been read by then."""

    t: float
    end: int


class Probe:
    """Reads an ALSA capture device in a thread; keeps the PCM and per-read monotonic stamps."""

    def __init__(self, device: str, period_ms: float = 10.0) -> None:
        self.device = device
        self.period_ms = period_ms
        self.pcm = bytearray()
        self.marks: list[Mark] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._opened = threading.Event()

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, name=f"probe-{self.device}", daemon=True)
        self._thread.start()
        if not self._opened.wait(10):
            raise RuntimeError(f"probe {self.device}: device did not open")
        if self._error is not None:
            raise RuntimeError(f"probe {self.device}: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop reading; idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(5)

    def _run(self) -> None:
        try:
            pcm = AlsaPcm(self.device, "capture", period_ms=self.period_ms, periods=8)
        except AudioDeviceError as exc:  # reported by __enter__
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        period_s = self.period_ms / 1000
        try:
            while not self._stop.is_set():
                data = pcm.read()
                if not data:
                    pcm.wait(2 * period_s)
                    continue
                now = time.monotonic()
                self.pcm += data
                self.marks.append(Mark(now, len(self.pcm) // FMT.bytes_per_frame))
        finally:
            pcm.close()

    def samples(self) -> npt.NDArray[np.int16]:
        """Everything read so far."""
        return np.frombuffer(bytes(self.pcm[: len(self.pcm) // 2 * 2]), dtype="<i2")

    def offset(self, around_sample: int | None = None, span_s: float = 1.5) -> float:
        """Time base a: sample i was available at a + i / rate (earliest stamp near `around_sample`)."""
        marks = self.marks
        if around_sample is not None:
            span = FMT.samples(span_s * 1000)
            near = [m for m in marks if abs(m.end - around_sample) <= span]
            marks = near or marks
        return min(m.t - m.end / FMT.rate for m in marks)

    def time_of(self, sample: int) -> float:
        """When `sample` became available to a reader (locally calibrated)."""
        return self.offset(sample) + sample / FMT.rate

    def sample_at(self, t: float) -> int:
        """The sample index available at monotonic time `t` (approximately)."""
        return max(0, int((t - self.offset()) * FMT.rate))


def first_loud(x: npt.NDArray[np.int16], start: int, stop: int | None, threshold: int) -> int | None:
    """Index of the first |sample| > threshold in x[start:stop]."""
    seg = np.abs(x[start:stop].astype(np.int32))
    idx = np.flatnonzero(seg > threshold)
    return None if idx.size == 0 else start + int(idx[0])


def last_loud(x: npt.NDArray[np.int16], start: int, stop: int | None, threshold: int) -> int | None:
    """Index of the last |sample| > threshold in x[start:stop]."""
    seg = np.abs(x[start:stop].astype(np.int32))
    idx = np.flatnonzero(seg > threshold)
    return None if idx.size == 0 else start + int(idx[-1])


class BarePlayer:
    """The playback floor: a bare ALSA writer (same period and buffer as the daemon) in a thread.

    Writes `pcm` period by period, then drops the device after `drop_after_s`; records the time of the
    first write and of the drop.
    """

    def __init__(self, device: str, period_ms: int, buffer_ms: int) -> None:
        self.device = device
        self.period_ms = period_ms
        self.periods = max(2, round(buffer_ms / period_ms))
        self.first_write_at: float | None = None
        self.dropped_at: float | None = None

    def play(self, pcm: bytes, drop_after_s: float) -> None:
        """Blocking: play, then drop."""
        dev = AlsaPcm(self.device, "playback", period_ms=self.period_ms, periods=self.periods)
        try:
            step = FMT.nbytes(self.period_ms)
            pos = 0
            while pos < len(pcm):
                if self.first_write_at is None:
                    self.first_write_at = time.monotonic()
                n = dev.write(pcm[pos : pos + step])
                if n:
                    pos += n * FMT.bytes_per_frame
                elif n == 0:
                    dev.wait(2 * self.period_ms / 1000)
                if self.first_write_at is not None and time.monotonic() - self.first_write_at >= drop_after_s:
                    break
            self.dropped_at = time.monotonic()
            dev.drop()
            time.sleep(0.2)
        finally:
            dev.close()
