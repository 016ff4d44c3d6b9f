"""The systemd side of sd_notify: a bound AF_UNIX datagram socket that keeps every message received."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from vatel_edge.notify import Notifier


class NotifyListener:
    """A real sd_notify receiver standing in for systemd's notify socket: every assignment line received,
    with its arrival time (monotonic)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def notifier(self) -> Notifier:
        """An in-process Notifier sending here."""
        return Notifier({"NOTIFY_SOCKET": str(self.path)})

    def poll(self) -> None:
        """Take every datagram waiting, one message per assignment line."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode("utf-8", "replace").splitlines())

    def statuses(self) -> list[str]:
        """Every STATUS= text received so far."""
        self.poll()
        return [m.removeprefix("STATUS=") for _, m in self.messages if m.startswith("STATUS=")]

    async def wait_for(self, line: str, timeout: float) -> float:
        """Wait until `line` arrives (or has arrived); its arrival time."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.poll()
            for t, msg in self.messages[seen:]:
                if msg == line:
                    return t
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {line!r} within {timeout} s; got {[m for _, m in self.messages]}")

    def count(self, line: str, since: float) -> int:
        """How many `line` messages arrived at or after `since`."""
        self.poll()
        return sum(1 for t, m in self.messages if m == line and t >= since)

    async def run(self) -> None:
        """Poll continuously so that each message is timestamped when it arrives."""
        while True:
            self.poll()
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.sock.close()
