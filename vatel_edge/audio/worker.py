"""The shape of an audio device component: its device I/O runs in one owned thread, stopped through an
Event and woken through a non-blocking self-pipe that the thread polls beside the device. A device that
fails to open or vanishes is reopened with backoff by one loop (`run_reopening`), logged once each way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from vatel_edge.audio.alsa import AlsaPcm
from vatel_edge.backoff import Backoff
from vatel_edge.errors import AudioDeviceError
from vatel_edge.lifecycle import AsyncClosing

_W = TypeVar("_W", bound="DeviceWorker")


class DeviceWorker(AsyncClosing):
    """Base of Capture and Player: `async with` starts the thread, exit stops and joins it (idempotent)."""

    thread_name = "vatel-audio"
    #: What the device is called in log lines ("microphone", "speaker").
    device_name = "audio device"
    #: The subclass's module logger: reopen lines keep the logger name of the component they are about.
    logger = logging.getLogger(__name__)
    #: Counters of the subclass; run_reopening counts "reopens" in it.
    _stats: dict[str, int]

    def __init__(self, *, retry_base_s: float = 0.5, retry_max_s: float = 10.0) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self.negotiated: str | None = None  # description of the open device, for status

    async def __aenter__(self: _W) -> _W:
        self.start()
        return self

    def _on_start(self) -> None:
        """Set-up that must happen in the event loop before the thread runs (default: none)."""

    def _run(self) -> None:  # pragma: no cover - every worker defines it
        raise NotImplementedError

    def start(self) -> None:
        """Start the device thread (from within the event loop); a second call does nothing."""
        if self._thread is not None:
            return
        self._on_start()
        self._stop.clear()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def run_reopening(
        self,
        open_device: Callable[[], AlsaPcm],
        use_device: Callable[[AlsaPcm], None],
        *,
        while_down: Callable[[], None] | None = None,
        after_loss: Callable[[], None] | None = None,
    ) -> None:
        """The device thread's loop until stopped: open, use, and reopen with backoff when that fails.

        `use_device` returns when the worker stops and raises AudioDeviceError when the device fails.
        A failed open is logged once ("unavailable") and calls `while_down`; a failure in use is logged
        ("lost"), counted in stats["reopens"] and calls `after_loss`; the first open after either is
        logged once ("is back"). Delays double from retry_base_s to retry_max_s and start over only
        after the device was used until the worker stopped.
        """
        cap = self._retry_max_s
        backoff = Backoff(min(self._retry_base_s, cap), 2.0, cap, jitter="none")
        log, name = self.logger, self.device_name
        lost_logged = False
        while not self._stop.is_set():
            try:
                pcm = open_device()
            except AudioDeviceError as exc:
                if not lost_logged:
                    log.warning("%s unavailable (%s); retrying in the background", name, exc)
                    lost_logged = True
                if while_down is not None:
                    while_down()
                self._stop.wait(backoff.next_delay())
                continue
            described = pcm.negotiated.describe()
            if lost_logged:
                log.warning("%s is back: %s", name, described)
                lost_logged = False
            elif self.negotiated != described:
                log.info("%s open: %s", name, described)
            self.negotiated = described
            try:
                use_device(pcm)
                backoff.reset()
            except AudioDeviceError as exc:
                log.warning("%s lost (%s); reopening in the background", name, exc)
                lost_logged = True
                self._stats["reopens"] += 1
                if after_loss is not None:
                    after_loss()
                self._stop.wait(backoff.next_delay())
            finally:
                pcm.close()

    def _wake(self) -> None:
        """Wake the thread out of its device wait."""
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):  # the pipe is full: the thread is awake anyway
                os.write(self._wake_w, b"x")

    async def aclose(self) -> None:
        """Stop the thread and wait for it; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake()
        await asyncio.to_thread(thread.join)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1
