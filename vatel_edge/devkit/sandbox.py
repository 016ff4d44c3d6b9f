"""A private PulseAudio server with two 24 kHz mono null sinks: real-time ALSA devices without a sound card.

Used by `vatel-edge demo`, the benchmarks and the real-time tests:

    server = PulseServer.start(root)        # sinks `mic` and `spk`; sets os.environ["PULSE_SERVER"]
    install_alsa_config(path)               # ALSA devices demo_mic (mic.monitor) and demo_spk (spk)
    feeder = server.feed_mic(raw_bytes)     # pacat into `mic`: what the daemon's microphone hears
    rec = server.record_spk(path)           # parec from spk.monitor: what the daemon played
    pcm = rec.stop()
    server.stop()                           # kills every process it started; idempotent

The ALSA pulse plugin's libpulse reads PULSE_SERVER when each PCM is opened, so start() must run
before the devices are opened; ALSA_CONFIG_PATH must be set before alsa-lib is first used.
"""


from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RATE = 24_000
RAW_ARGS = ["--raw", "--format=s16le", f"--rate={RATE}", "--channels=1"]


def kill_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL (only this process); idempotent."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass
class Recording:
    """A running parec; stop() returns what it recorded."""

    proc: subprocess.Popen[bytes]
    path: Path

    def stop(self) -> bytes:
        kill_process(self.proc)
        return self.path.read_bytes()


@dataclass
class PulseServer:
    """One private pulseaudio daemon and the helper processes started against it."""

    root: Path
    socket: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _saved_env: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def start(cls, root: Path | None = None, *, timeout: float = 20.0) -> PulseServer:
        """Start the daemon under `root` (a fresh temp dir by default) and wait until it answers."""
        if shutil.which("pulseaudio") is None:
            raise RuntimeError("pulseaudio is not installed")
        root = Path(tempfile.mkdtemp(prefix="vatel-pulse-")) if root is None else root
        runtime, home = root / "rt", root / "home"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        sock = runtime / "pa.sock"
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            "HOME": str(home),
            "PULSE_SERVER": f"unix:{sock}",
        }
        sink = f"format=s16le rate={RATE} channels=1"
        proc = subprocess.Popen(
            [
                "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
                "--disable-shm=yes", "--log-target=stderr", "--log-level=error",
                f"--load=module-native-protocol-unix auth-anonymous=1 socket={sock}",
                f"--load=module-null-sink sink_name=mic {sink}",
                f"--load=module-null-sink sink_name=spk {sink}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(root / "pulseaudio.log", "wb"),  # noqa: SIM115 - closed with the process
            start_new_session=True,
        )
        server = cls(root, sock, proc, env)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {(root / 'pulseaudio.log').read_text()[-2000:]}")
            if sock.exists() and server.pactl("info", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("pulseaudio did not answer in time")
            time.sleep(0.05)
        for key in ("PULSE_SERVER", "XDG_RUNTIME_DIR"):
            server._saved_env[key] = os.environ.get(key)
            os.environ[key] = env[key]
        return server

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run pactl against this server."""
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, check=check, timeout=10
        )

    def feed_mic(self, pcm: bytes) -> subprocess.Popen[bytes]:
        """Play raw S16_LE 24 kHz mono into the `mic` sink (in real time) with pacat."""
        path = self.root / f"feed-{len(self._children)}.raw"
        path.write_bytes(pcm)
        proc = subprocess.Popen(
            ["pacat", "--playback", "-d", "mic", *RAW_ARGS, str(path)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._children.append(proc)
        return proc

    def record_spk(self, path: Path | None = None) -> Recording:
        """Record spk.monitor (everything played to test_spk) with parec until Recording.stop()."""
        path = self.root / f"rec-{len(self._children)}.raw" if path is None else path
        # parec writes raw audio to stdout (given a file name it does not write raw data); a low latency
        # request also makes the null sink render in small blocks, i.e. play in real time
        with open(path, "wb") as sink_file:
            proc = subprocess.Popen(
                ["parec", "-d", "spk.monitor", "--latency-msec=10", *RAW_ARGS],
                env=self.env, stdin=subprocess.DEVNULL, stdout=sink_file, stderr=subprocess.DEVNULL,
            )
        self._children.append(proc)
        self.wait_sink_latency("spk", 0.1)
        return Recording(proc, path)

    def sink_latency_s(self, sink: str) -> float | None:
        """The sink's current latency as `pactl list sinks` reports it."""
        block: list[str] = []
        for line in [*self.pactl("list", "sinks").stdout.splitlines(), "Sink #end"]:
            if line.startswith("Sink #"):
                if any(row.strip() == f"Name: {sink}" for row in block):
                    for row in block:
                        if row.strip().startswith("Latency:"):
                            return int(row.split()[1]) / 1e6
                block = []
            block.append(line)
        return None

    def wait_sink_latency(self, sink: str, below_s: float, timeout: float = 10.0) -> None:
        """Wait until the null sink renders in small blocks. A null sink nobody asks for low latency renders
        2 s at a time; parec --latency-msec makes it follow, once the block in progress has been played."""
        deadline = time.monotonic() + timeout
        while (latency := self.sink_latency_s(sink)) is None or latency >= below_s:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink {sink} latency stays at {latency} s")
            time.sleep(0.05)

    def reset(self, *, everything: bool = True) -> list[str]:
        """Between two users of one server: kill the helpers (feed_mic, record_spk) still running and, with
        `everything`, unload loopbacks and extra sinks and kill the streams still open (anyone's); returns what
        was left over (empty when the previous user cleaned up)."""
        left = []
        for child in self._children:
            if child.poll() is None:
                left.append(f"running: {str(child.args)[:80]}")
                kill_process(child)
        self._children.clear()
        if not everything:
            return left
        for line in self.pactl("list", "short", "modules", check=False).stdout.splitlines():
            index, name, *rest = [*line.split("\t"), ""]
            args = rest[0] if rest else ""
            if name == "module-loopback" or (name == "module-null-sink" and not re.search(
                    r"sink_name=(mic|spk)\b", args)):
                left.append(f"module: {name} {args}"[:100])
                self.pactl("unload-module", index, check=False)
        for kind in ("sink-inputs", "source-outputs"):
            for line in self.pactl("list", "short", kind, check=False).stdout.splitlines():
                index = line.split("\t")[0]
                left.append(f"{kind[:-1]} #{index} still open")
                self.pactl(f"kill-{kind[:-1]}", index, check=False)
        return left

    def stop(self) -> None:
        """Kill every helper and the daemon, restore the environment; idempotent."""
        for child in self._children:
            kill_process(child)
        self._children.clear()
        kill_process(self.proc)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()


SANDBOX_ASOUNDRC = """\
# vatel-edge sandbox devices: a private PulseAudio server's null sinks (PULSE_SERVER selects it).
pcm.demo_mic {
    type pulse
    device "mic.monitor"
    hint { show on description "vatel-edge sandbox microphone (null sink mic)" }
}
pcm.demo_spk {
    type pulse
    device "spk"
    hint { show on description "vatel-edge sandbox speaker (null sink spk)" }
}
"""


def install_alsa_config(path: Path) -> Path:
    """Write the sandbox asoundrc to `path` and point ALSA_CONFIG_PATH at it (before alsa-lib is used)."""
    path.write_text(SANDBOX_ASOUNDRC, encoding="utf-8")
    os.environ["ALSA_CONFIG_PATH"] = str(path)
    return path
