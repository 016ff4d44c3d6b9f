"""The runtime component of the recordings: the taps on the audio paths, the event follower, `record` requests.

See the package docstring for what a recording holds and when one starts and ends.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from vatel_edge.audio.aec_path import EchoPath
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.mic import ONSET_LOOKBACK_MS, MicPath
from vatel_edge.audio.playback import Player
from vatel_edge.config import Config
from vatel_edge.control import ControlHandler, control_request
from vatel_edge.errors import ConfigError
from vatel_edge.events import DaemonEvent, EventHub
from vatel_edge.feedback.store import state_directory
from vatel_edge.lifecycle import AsyncClosing, cancel_and_wait
from vatel_edge.recording.store import FILES, Recording, RecordingWriter, make_private_dir, recording_dirs
from vatel_edge.recording.timeline import TimelineBuilder

log = logging.getLogger(__name__)

RECORDINGS = "recordings"
RECORD_CMD = "record"
#: Raw microphone kept in memory beyond the longest pre-roll (ONSET_LOOKBACK_MS + wake.preroll_ms before the wake).
HISTORY_MARGIN_MS = 1000
#: How often the echo reduction is sampled while the agent plays, and an on-demand recording's end checked.
TICK_S = 0.25
MAX_RECORD_S = 3600.0
#: The states of a session: a recording that contains one ends only once the daemon is LISTENING again.
SESSION_STATES = frozenset({"connecting", "in_session", "agent_speaking", "ending"})
OFF = ("recordings are off: set [debug] record_sessions = N (1 or more) in the config and reload "
       "(README: Session recordings)")


def recordings_root(cfg: Config, environ: Mapping[str, str] | None = None) -> Path | None:
    """`recordings/` of the state directory ([state] directory, else $STATE_DIRECTORY); None without one."""
    base = state_directory(cfg.state.directory, environ)
    return base / RECORDINGS if base is not None else None


def check_recordings(cfg: Config, environ: Mapping[str, str] | None = None) -> None:
    """With [debug] record_sessions > 0: a ConfigError naming the key unless recordings/ can be made (0700)."""
    if cfg.debug.record_sessions == 0:
        return
    root = recordings_root(cfg, environ)
    if root is None:
        raise ConfigError("debug.record_sessions: recordings need a state directory: set [state] directory, or run "
                          "under systemd (the unit's StateDirectory= sets $STATE_DIRECTORY)")
    try:
        make_private_dir(root)
        if not os.access(root, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        raise ConfigError(f"debug.record_sessions: cannot use {root} for recordings: {exc.strerror or exc}") from None


@dataclass
class _Active:
    """The recording in progress (loop side)."""

    rec: Recording
    timeline: TimelineBuilder
    started_at: str  # ISO 8601 UTC of t0
    until: float | None  # monotonic end of an on-demand window; None: the session's end


class Recorder(AsyncClosing):
    """Records sessions when [debug] record_sessions > 0; with 0 it only answers `record` (recordings are off).

    Taps: `process` is the microphone path's first stage (the raw frame, capture thread), `on_sent` the live
    session's input_audio sender (loop), the player's on_written/on_dropped (its writer thread)."""

    def __init__(self, cfg: Config, mic: MicPath, player: Player, echo: EchoPath | None, events: EventHub | None,
                 *, environ: Mapping[str, str] | None = None) -> None:
        self.keep = cfg.debug.record_sessions
        root = recordings_root(cfg, environ) if self.keep > 0 else None
        self.enabled = root is not None and events is not None
        self.root = root
        self._hub = events
        self._mic, self._player, self._echo = mic, player, echo
        frame_ms = cfg.audio.frame_ms
        self._frame_samples = VATEL_FORMAT.samples(frame_ms)
        self._frame_s = frame_ms / 1000.0
        self._silence = bytes(VATEL_FORMAT.nbytes(frame_ms))
        history_ms = ONSET_LOOKBACK_MS + cfg.wake.preroll_ms + HISTORY_MARGIN_MS
        self._ring: deque[CaptureFrame] = deque(maxlen=-(-history_ms // frame_ms))
        self._lock = threading.Lock()  # the ring and _active between the capture thread and the loop
        self._active: _Active | None = None
        self._in_session = False
        self._next_n = 1
        self._recording = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.writer = RecordingWriter(root, self.keep, cfg.debug.record_max_mb * 1_000_000) if root else None
        self._prev_written = player.on_written
        self._prev_dropped = player.on_dropped
        if self.enabled:
            mic.stages.insert(0, self)  # before the echo canceller: the raw microphone
            player.on_written, player.on_dropped = self._on_written, self._on_dropped

    @property
    def on_sent(self) -> Callable[[CaptureFrame, bytes], None] | None:
        """The input_audio tap for live_session.SessionParts (None while recordings are off: no cost)."""
        return self._sent if self.enabled else None

    @property
    def current(self) -> Path | None:
        """The directory of the recording in progress."""
        a = self._active
        return a.rec.path if a is not None else None

    async def __aenter__(self) -> Recorder:
        if self.enabled and self.writer is not None:
            assert self.root is not None
            self._next_n = 1 + max((n for n, _ in recording_dirs(self.root)), default=0)
            self.writer.start()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._follow(), name="recorder events"),
                           loop.create_task(self._tick(), name="recorder ticker")]
        return self

    async def aclose(self) -> None:
        """Finish the recording in progress and wait for the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(*self._tasks)
        a = self._active
        if a is not None:
            self._finish(a, "recording stopped (shutdown or reload)")
        if self.writer is not None and self.enabled:
            self.writer.stop()
            if not await asyncio.to_thread(self.writer.join, 10.0):
                log.warning("the recording writer did not finish within 10 s")

    # ------------------------------------------------------------------ control socket

    def control(self, inner: ControlHandler) -> ControlHandler:
        """The daemon's control handler, answering {"cmd": "record", "seconds": S} itself."""

        async def handle(request: dict[str, Any]) -> dict[str, Any]:
            if request.get("cmd") == RECORD_CMD:
                return self.record(request.get("seconds"))
            return await inner(request)

        return handle

    def record(self, seconds: object) -> dict[str, Any]:
        """Record from now for `seconds` (extending the recording in progress, if any)."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 1 <= seconds <= MAX_RECORD_S:
            return {"ok": False, "error": f"seconds must be a number from 1 to {MAX_RECORD_S:g}"}
        if not self.enabled or self._closed:
            return {"ok": False, "error": OFF}
        until = time.monotonic() + float(seconds)
        a, started = self._active, self._active is None
        if a is None:
            a = self._start(until)
        else:
            a.until = max(a.until or 0.0, until)
        return {"ok": True, "path": str(a.rec.path), "seconds": seconds, "started": started,
                "in_session": self._in_session}

    # ------------------------------------------------------------------ taps (other threads)

    def process(self, frame: CaptureFrame) -> CaptureFrame:
        """Microphone path stage (capture thread): keep the raw frame (silence while muted); pass it on."""
        kept = frame if not self._mic.muted else CaptureFrame(self._silence[: len(frame.pcm)], frame.t, frame.seq)
        with self._lock:
            self._ring.append(kept)
            a = self._active
        if a is not None and self.writer is not None:
            self.writer.put_audio(a.rec, ("mic", kept.seq, kept.t, kept.pcm))
        return frame

    def _on_written(self, pcm: bytes, t_heard: float) -> None:
        if self._prev_written is not None:
            self._prev_written(pcm, t_heard)
        a = self._active
        if a is not None and self.writer is not None:
            self.writer.put_audio(a.rec, ("played", t_heard, pcm))

    def _on_dropped(self, t: float) -> None:
        if self._prev_dropped is not None:
            self._prev_dropped(t)
        a = self._active
        if a is not None and self.writer is not None:
            a.rec.drops.append(t)
            self.writer.put_audio(a.rec, ("drop", t))

    def _sent(self, frame: CaptureFrame, pcm: bytes) -> None:
        a = self._active
        if a is None or self.writer is None:
            return
        rec = a.rec
        if a.timeline.first_sent_at is None:
            index = rec.mic_index(frame.seq)
            captured = rec.t0 + (index - rec.latency) / VATEL_FORMAT.rate if index is not None else \
                frame.t - self._frame_s - rec.latency / VATEL_FORMAT.rate
            a.timeline.sent(time.monotonic(), captured)
        self.writer.put_audio(rec, ("sent", frame.seq, pcm))

    # ------------------------------------------------------------------ loop side

    def _start(self, until: float | None) -> _Active:
        assert self.root is not None and self.writer is not None
        n, self._next_n = self._next_n, self._next_n + 1
        now, wall = time.monotonic(), time.time()
        with self._lock:
            history = list(self._ring)
            seq0 = history[0].seq if history else None
            t0 = min((f.t - (f.seq - history[0].seq + 1) * self._frame_s for f in history), default=now)
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(wall - (now - t0)))
            rec = Recording(self.root / f"{stamp}-{n}", n, t0, seq0, self._frame_samples,
                            self._echo.latency if self._echo is not None else 0)
            started_at = datetime.datetime.fromtimestamp(wall - (now - t0), datetime.UTC)
            a = _Active(rec, TimelineBuilder(t0, str(n)), started_at.isoformat(timespec="milliseconds"), until)
            self.writer.put_control(rec, ("open",))
            for f in history:
                self.writer.put_audio(rec, ("mic", f.seq, f.t, f.pcm))
            self._active = a
        self._recording.set()
        log.info("recording to %s (%s)", rec.path, "a session" if until is None else "on request")
        return a

    def _finish(self, a: _Active, end_reason: str) -> None:
        assert self.writer is not None
        with self._lock:
            self._active = None
        self._recording.clear()
        tl = a.timeline
        doc = tl.document(a.started_at, VATEL_FORMAT.rate, FILES, tl.summary(list(a.rec.drops), end_reason))
        self.writer.put_control(a.rec, ("finish", doc))

    def _maybe_finish(self) -> None:
        a = self._active
        if a is None or self._in_session or (a.until is not None and time.monotonic() < a.until):
            return
        self._finish(a, "session ended" if a.until is None else "recording time elapsed")

    def _on_event(self, ev: DaemonEvent) -> None:
        at = time.monotonic() - (time.time() - ev.at)  # published `ev.at` (wall clock): on the monotonic axis
        if ev.kind == "state":
            self._in_session = ev.fields.get("new") in SESSION_STATES
            if ev.fields.get("new") == "connecting" and self._active is None:
                self._start(None)
        a = self._active
        if a is not None:
            a.timeline.add(ev.kind, ev.text, ev.fields, at)
        if ev.kind == "state" and not self._in_session:
            self._maybe_finish()

    async def _follow(self) -> None:
        """Every hub event into the recording in progress (resubscribed if the hub ever dropped us)."""
        assert self._hub is not None
        while True:
            async with self._hub.subscribe() as sub:
                async for ev in sub:
                    self._on_event(ev)
            await asyncio.sleep(TICK_S)

    async def _tick(self) -> None:
        """While recording: the echo reduction while the agent plays; the end of an on-demand window."""
        while True:
            await self._recording.wait()
            await asyncio.sleep(TICK_S)
            a, echo = self._active, self._echo
            if a is None:
                continue
            if echo is not None and echo.active and self._player.playing and (db := echo.erle_db) is not None:
                a.timeline.add_erle(time.monotonic(), db)
            self._maybe_finish()


async def record_command(socket_path: str, seconds: float, out: TextIO = sys.stdout) -> int:
    """`vatel-edge record --seconds S`: ask the running daemon to record; print where (0), or why not (1)."""
    reply = await control_request(socket_path, {"cmd": RECORD_CMD, "seconds": seconds})
    if not reply.get("ok"):
        print(f"vatel-edge: {reply.get('error', 'no answer')}", file=sys.stderr)
        return 1
    what = "extending the recording in progress" if not reply.get("started") else "recording"
    print(f"{what}: {reply['path']}", file=out)
    print(f"  the next {seconds:g} s (a session in progress then is recorded to its end); timeline.json is "
          "written when it is complete", file=out)
    return 0
