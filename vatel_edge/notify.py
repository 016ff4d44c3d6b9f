"""sd_notify without libsystemd: READY, STATUS, WATCHDOG, STOPPING, RELOADING over $NOTIFY_SOCKET.

`Notifier` speaks the notify protocol (one datagram of newline-separated assignments to the AF_UNIX
socket named by $NOTIFY_SOCKET, '@' meaning the abstract namespace); without $NOTIFY_SOCKET every call is a
no-op. It never raises: the first failed send is logged as a warning, later ones at debug level.

`Watchdog` is the owned task that pings WATCHDOG=1 only while the service is really alive: the event loop
runs the ping task on time and capture frames keep arriving. When either stops, pings are withheld and
systemd's WatchdogSec= restarts the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Final

from vatel_edge.lifecycle import AsyncClosing, cancel_and_wait

log = logging.getLogger(__name__)

MAX_STATUS_CHARS: Final = 1000
NOTIFY_ENV: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(value: str) -> str | bytes | None:
    """The socket address of a $NOTIFY_SOCKET value: a path, or an abstract name for '@name'; None if unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock: and relative addresses are not supported


def parse_watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """WatchdogSec= in seconds from WATCHDOG_USEC, or None when unset, malformed, or meant for another pid."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    wd_pid = environ.get("WATCHDOG_PID", "")
    if wd_pid:
        try:
            if int(wd_pid) != pid:
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class Notifier:
    """Sends sd_notify messages to the service manager; a no-op outside systemd. Thread-safe, never raises."""

    def __init__(
        self,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ) -> None:
        """Read NOTIFY_SOCKET/WATCHDOG_* from `environ` (default os.environ).

        With `unset_environment` they are removed afterwards, so child processes (shell tools) do not inherit
        them; the daemon should pass True.
        """
        env = os.environ if environ is None else environ
        self._socket_value = env.get("NOTIFY_SOCKET", "")
        self._address = notify_address(self._socket_value) if self._socket_value else None
        self._watchdog_s = parse_watchdog_interval(env, os.getpid())
        if unset_environment:
            for name in NOTIFY_ENV:
                env.pop(name, None)
        self._sock: socket.socket | None = None
        self._failed = False
        if self._socket_value and self._address is None:
            log.warning("NOTIFY_SOCKET %r is not a supported address; sd_notify disabled", self._socket_value)

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """WatchdogSec= in seconds (ping at half of it), or None when the watchdog is off or not ours."""
        return self._watchdog_s

    def send(self, *assignments: str) -> bool:
        """Send assignments like 'READY=1' in one datagram; True when delivered (False when disabled)."""
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                # Non-blocking: this runs on the event loop, and a notify socket nobody reads (a full
                # receive queue) must cost a dropped, logged message, never a stalled loop.
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            first = not self._failed
            self._failed = True
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "sd_notify to %s failed: %s%s",
                self._socket_value,
                exc.strerror or exc.__class__.__name__,
                " (further failures logged at debug level)" if first else "",
            )
            return False
        return True

    def ready(self) -> bool:
        """READY=1: start-up finished (Type=notify)."""
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """STATUS=...: one line shown by `systemctl status`."""
        line = " ".join(text.split())[:MAX_STATUS_CHARS]
        return self.send(f"STATUS={line}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: keep-alive ping."""
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """STOPPING=1: shutting down."""
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (systemd >= 253 requires it to match the reload to this message)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def ready_after_reload(self) -> bool:
        """READY=1 after a reload finished."""
        return self.send("READY=1")

    def close(self) -> None:
        """Close the socket (idempotent); a later send reopens it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog(AsyncClosing):
    """Owned task pinging WATCHDOG=1 while the loop is healthy and capture frames keep arriving.

    Every `interval_s / 2` it checks:
    * loop lag: how late its own sleep woke up; above `max_loop_lag_s` that ping is withheld;
    * frames: `last_frame_at()` (monotonic, None before the first frame; the start of the watchdog counts
      then) must be at most `max_frame_age_s` old, else pings stop until frames return.
    Inactive (no task) when the service has no watchdog (`interval_s` None and WATCHDOG_USEC unset).
    """

    def __init__(
        self,
        notifier: Notifier,
        last_frame_at: Callable[[], float | None],
        *,
        max_frame_age_s: float,
        interval_s: float | None = None,
        max_loop_lag_s: float | None = None,
    ) -> None:
        """`interval_s` defaults to the notifier's WatchdogSec=; `max_loop_lag_s` to a quarter of it."""
        self._notifier = notifier
        self._last_frame_at = last_frame_at
        self._max_frame_age_s = max_frame_age_s
        self._interval_s = interval_s if interval_s is not None else notifier.watchdog_interval()
        self._max_lag_s = max_loop_lag_s
        self._task: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self.pings = 0
        self.withheld = 0
        self.stalled = False
        self.lagging = False

    @property
    def active(self) -> bool:
        """True while the ping task runs."""
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> Watchdog:
        if self._interval_s is not None and self._task is None:
            self._started_at = time.monotonic()
            self._task = asyncio.create_task(self._run(), name="vatel-edge watchdog")
        return self


    async def aclose(self) -> None:
        """Stop pinging and await the task (idempotent)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def frame_age(self, now: float) -> float:
        """Seconds since the newest capture frame (since the watchdog started when none arrived yet)."""
        last = self._last_frame_at()
        return now - (last if last is not None else self._started_at)

    async def _run(self) -> None:
        assert self._interval_s is not None
        period = self._interval_s / 2
        max_lag = self._max_lag_s if self._max_lag_s is not None else self._interval_s / 4
        self._check_and_ping(lag=0.0, max_lag=max_lag)
        while True:
            due = time.monotonic() + period
            await asyncio.sleep(period)
            self._check_and_ping(lag=max(0.0, time.monotonic() - due), max_lag=max_lag)

    def _check_and_ping(self, *, lag: float, max_lag: float) -> None:
        now = time.monotonic()
        age = self.frame_age(now)
        stalled = age > self._max_frame_age_s
        if stalled and not self.stalled:
            log.error(
                "microphone stalled: no capture frames for %.0f s; "
                "withholding watchdog pings so systemd restarts the service",
                age,
            )
        elif self.stalled and not stalled:
            log.warning("capture frames arriving again; watchdog pings resumed")
        self.stalled = stalled
        lagging = lag > max_lag
        if lagging and not self.lagging:
            log.error("event loop lagging: woke %.2f s late (limit %.2f s); withholding a watchdog ping", lag, max_lag)
        elif self.lagging and not lagging:
            log.warning("event loop on time again; watchdog pings resumed")
        self.lagging = lagging
        if stalled or lagging:
            self.withheld += 1
            return
        if self._notifier.watchdog():
            self.pings += 1
