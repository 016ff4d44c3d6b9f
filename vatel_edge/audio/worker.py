"""The shape of an audio device component: its device I/O runs in one owned thread, stopped through an
Event and woken through a non-blocking self-pipe that the thread polls beside the device."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import TypeVar

from vatel_edge.lifecycle import AsyncClosing

_W = TypeVar("_W", bound="DeviceWorker")


class DeviceWorker(AsyncClosing):
    """Base of Capture and Player: `async with` starts the thread, exit stops and joins it (idempotent)."""

    thread_name = "vatel-audio"

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1

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
