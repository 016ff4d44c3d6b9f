"""A real Mosquitto broker for the MQTT tests, and an outside consumer (mosquitto_sub / mosquitto_pub).

The broker listens on loopback only: a plain port and a TLS port with a self-signed CA, a password file
(users `device` and `consumer`) and an ACL (the device may write its own topics and Home Assistant's
discovery, the consumer everything). No persistence: a restart forgets retained messages, so whatever is
retained after one was republished by the daemon.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port

DEVICE_USER, DEVICE_PASSWORD = "device", "device-pw-4711"
CONSUMER_USER, CONSUMER_PASSWORD = "consumer", "consumer-pw-0815"

ACL = """\
# the daemons: their own topics, Home Assistant discovery, Home Assistant's birth message
user device
topic readwrite vatel-edge/#
topic write homeassistant/device/#
topic read homeassistant/status

# the outside consumer (Home Assistant, a fleet dashboard)
user consumer
topic readwrite #
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    """ca.crt, and server.crt/server.key for 127.0.0.1 and localhost signed by it."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=vatel-edge test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt", cwd=d)


@dataclass
class Broker:
    root: Path
    port: int
    tls_port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def ca_file(self) -> Path:
        return self.root / "certs" / "ca.crt"

    @classmethod
    def create(cls, root: Path) -> Broker:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed (scripts/setup.sh installs it)")
        root.mkdir(parents=True, exist_ok=True)
        make_certs(root / "certs")
        pw = root / "passwd"
        pw.write_text("")
        for user, password in ((DEVICE_USER, DEVICE_PASSWORD), (CONSUMER_USER, CONSUMER_PASSWORD)):
            subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
        (root / "acl").write_text(ACL)
        broker = cls(root, free_port(), free_port())
        c = root / "certs"
        (root / "mosquitto.conf").write_text(
            f"""\
user root
persistence false
allow_anonymous false
password_file {pw}
acl_file {root / 'acl'}
log_dest file {root / 'mosquitto.log'}
log_type error
log_type warning
log_type notice
listener {broker.port} 127.0.0.1
listener {broker.tls_port} 127.0.0.1
cafile {c / 'ca.crt'}
certfile {c / 'server.crt'}
keyfile {c / 'server.key'}
"""
        )
        return broker

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.root / "mosquitto.conf")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}")
            r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-u", CONSUMER_USER,
                                "-P", CONSUMER_PASSWORD, "-t", "probe", "-m", "x"], capture_output=True, timeout=5)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not answer")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def log(self) -> str:
        p = self.root / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def _auth(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-u", CONSUMER_USER, "-P", CONSUMER_PASSWORD]

    def retained(self, topic: str, *, wait_s: int = 1) -> dict[str, bytes]:
        """Every retained message under `topic` (a filter), as an outside consumer sees it now."""
        wait = str(max(1, int(wait_s)))  # whole seconds only
        r = subprocess.run(["mosquitto_sub", *self._auth(), "-t", topic, "--retained-only", "-W", wait,
                            "-F", "%t\t%x"], capture_output=True, timeout=wait_s + 10)
        out: dict[str, bytes] = {}
        for line in r.stdout.decode().splitlines():
            t, _, hexed = line.partition("\t")
            out[t] = bytes.fromhex(hexed)
        return out

    def wait_retained(self, topic: str, expected: bytes | None = None, *, timeout: float = 15.0) -> bytes:
        """The retained payload of `topic` once there is one (equal to `expected` if given)."""
        deadline = time.monotonic() + timeout
        last: bytes | None = None
        while time.monotonic() < deadline:
            last = self.retained(topic).get(topic)
            if last is not None and (expected is None or last == expected):
                return last
        raise AssertionError(f"{topic}: retained {last!r}, expected {expected!r}")

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        args = ["mosquitto_pub", *self._auth(), "-t", topic, "-s" if data else "-n"] + (["-r"] if retain else [])
        subprocess.run(args, input=data, check=True, capture_output=True, timeout=10)

    def subscribe(self, topic: str) -> Subscriber:
        """A mosquitto_sub collecting every message of `topic` in the background."""
        return Subscriber.start([*self._auth(), "-t", topic])


@dataclass
class Subscriber:
    """mosquitto_sub in the background; `messages` are (topic, payload bytes, retained)."""

    proc: subprocess.Popen[bytes]
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, args: list[str]) -> Subscriber:
        proc = subprocess.Popen(["mosquitto_sub", *args, "-F", "%r\t%t\t%x"], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sub = cls(proc)
        threading.Thread(target=sub._read, daemon=True).start()
        time.sleep(0.3)  # subscribed
        return sub

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            retain, topic, hexed = raw.decode().rstrip("\n").split("\t", 2)
            with self._lock:
                self.messages.append((topic, bytes.fromhex(hexed), retain == "1"))

    def of(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def json_of(self, topic: str) -> list[dict[str, object]]:
        return [json.loads(p) for p in self.of(topic)]

    def wait_for(self, topic: str, pred: object = None, *, timeout: float = 15.0) -> dict[str, object]:
        """The first JSON message on `topic` for which pred(doc) holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for doc in self.json_of(topic):
                if pred is None or pred(doc):  # type: ignore[operator]
                    return doc
            time.sleep(0.05)
        raise AssertionError(f"no matching message on {topic}: {self.json_of(topic)[-5:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
