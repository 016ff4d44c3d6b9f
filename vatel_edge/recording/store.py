"""The recordings on disk: the directory, the WAV tracks written by position, retention, and the writer thread.

Every file operation of the recordings happens in the one writer thread (`RecordingWriter`), fed by a bounded
queue: a full queue drops the audio item and counts it, so the capture thread, the player's writer thread and
the event loop never wait for the disk. Files are created 0600 (O_EXCL), directories 0700.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import shutil
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vatel_edge.audio.aec import stream_clock
from vatel_edge.audio.format import VATEL_FORMAT

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
FILES = {"mic": "mic.wav", "sent": "sent.wav", "played": "played.wav"}
TIMELINE = "timeline.json"
#: A recording's directory name: <YYYYmmdd-HHMMSS>-<n> (UTC time of its t0; n counts up across restarts).
NAME = re.compile(r"(\d{8}-\d{6})-(\d+)")
#: Audio items the writer may fall behind by before new ones are dropped (about 20 s of mic + sent + played).
QUEUE_ITEMS = 3000
_HEADER = 44
#: Room kept for timeline.json when a recording's size is checked against the bound.
TIMELINE_RESERVE = 64 * 1024


def wav_header(samples: int) -> bytes:
    """The 44-byte header of a 24 kHz mono PCM16 WAV holding `samples` samples."""
    fmt = VATEL_FORMAT
    data = samples * fmt.bytes_per_frame
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, fmt.channels, fmt.rate,
                       fmt.rate * fmt.bytes_per_frame, fmt.bytes_per_frame, 8 * fmt.width, b"data", data)


def make_private_dir(path: Path) -> None:
    """`path` (and missing parents) as a directory, mode 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)


def recording_dirs(root: Path) -> list[tuple[int, Path]]:
    """The recordings under `root`, oldest first (by n)."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    found = [(int(m.group(2)), p) for p in entries if (m := NAME.fullmatch(p.name)) and p.is_dir()]
    return sorted(found)


def dir_bytes(path: Path) -> int:
    """Bytes of the files in a recording directory (their full length: holes of zeros count too)."""
    total = 0
    for p in path.iterdir():
        try:
            total += p.stat().st_size
        except OSError:
            continue
    return total


def prune(root: Path, keep: int, max_bytes: int, *, spare: Path | None = None,
          exclude_spare: bool = False) -> list[Path]:
    """Delete the oldest recordings beyond the newest `keep`, then while all of them exceed `max_bytes` (without
    `spare` when `exclude_spare`: the recording being written, counted by the caller). `spare` is never deleted.
    Returns what was deleted."""
    dirs = [p for _, p in recording_dirs(root)]
    gone: list[Path] = []
    while len(dirs) > keep and dirs[0] != spare:
        gone.append(dirs.pop(0))
    sizes = {p: 0 if exclude_spare and p == spare else dir_bytes(p) for p in dirs}
    while dirs and dirs[0] != spare and sum(sizes[p] for p in dirs) > max_bytes:
        gone.append(dirs.pop(0))
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
        log.info("recording %s deleted ([debug] record_sessions / record_max_mb)", p.name)
    return gone


class Track:
    """One WAV file written by sample position: gaps stay zeros (sparse), `finish` writes the header."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(self._fd, FILE_MODE)
        os.pwrite(self._fd, wav_header(0), 0)
        self.end = 0  # samples: one past the last written
        # where played writes go: one that starts within 30 ms of where the previous one ended continues it
        # (the player's time estimates jitter by more than 10 ms with PulseAudio's plugin: its delay moves in
        # steps); drift is followed as the echo reference does
        self.clock = stream_clock(VATEL_FORMAT)

    def write(self, index: int, pcm: bytes) -> None:
        """Write `pcm` at sample `index` (the part before sample 0 is cut)."""
        width = VATEL_FORMAT.bytes_per_frame
        if index < 0:
            pcm, index = pcm[-index * width :], 0
        if not pcm:
            return
        os.pwrite(self._fd, pcm, _HEADER + index * width)
        self.end = max(self.end, index + len(pcm) // width)

    def zero_from(self, index: int) -> None:
        """Nothing from sample `index` on was heard (the device buffer was dropped): zeros there."""
        index = max(0, index)
        if index < self.end:
            os.pwrite(self._fd, bytes((self.end - index) * VATEL_FORMAT.bytes_per_frame),
                      _HEADER + index * VATEL_FORMAT.bytes_per_frame)
        self.clock.clear()

    def finish(self, samples: int) -> None:
        """Make the file exactly `samples` long (zeros appended) with its header; close it."""
        os.ftruncate(self._fd, _HEADER + samples * VATEL_FORMAT.bytes_per_frame)
        os.pwrite(self._fd, wav_header(samples), 0)
        os.close(self._fd)


@dataclass
class Recording:
    """One recording: shared by the loop (its timeline), the taps (queue items) and the writer (its files).

    Sample i of each file is at `t0 + i / rate` (monotonic); a mic frame of capture sequence `seq` starts at
    sample `mic_offset + (seq - seq0) * frame_samples`; seq0 is None until the first frame is known."""

    path: Path
    n: int
    t0: float
    seq0: int | None
    frame_samples: int
    latency: int  # samples the echo path delays the sent stream by
    mic_offset: int = 0
    drops: list[float] = field(default_factory=list)  # monotonic times the playback device buffer was dropped
    dropped: int = 0  # audio items the full queue did not take
    # writer thread only
    tracks: dict[str, Track] = field(default_factory=dict)
    failed: bool = False
    truncated_at: float | None = None
    done: bool = False

    def mic_index(self, seq: int) -> int | None:
        if self.seq0 is None:
            return None
        return self.mic_offset + (seq - self.seq0) * self.frame_samples


class RecordingWriter:
    """The writer thread (see the module docstring). `put` from any thread; `stop` then `join`."""

    def __init__(self, root: Path, keep: int, max_bytes: int) -> None:
        self.root = root
        self.keep = keep
        self.max_bytes = max_bytes
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="vatel-recorder", daemon=True)
        self.on_finished: Callable[[Recording], None] | None = None  # called in the writer thread (tests, logs)
        self._others = 0  # bytes of the other recordings, counted when one opens

    def start(self) -> None:
        self._thread.start()

    def put_audio(self, rec: Recording, item: tuple[Any, ...]) -> None:
        """An audio item of `rec`; dropped and counted when the writer is QUEUE_ITEMS behind (never waits)."""
        if self._queue.qsize() >= QUEUE_ITEMS:
            rec.dropped += 1
            return
        self._queue.put_nowait((rec, *item))

    def put_control(self, rec: Recording, item: tuple[Any, ...]) -> None:
        """open/finish: never dropped (one each per recording)."""
        self._queue.put_nowait((rec, *item))

    def stop(self) -> None:
        self._queue.put_nowait(None)

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end (after `stop`); whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            rec, kind, *args = item
            if rec.failed or rec.done:
                continue
            try:
                getattr(self, f"_do_{kind}")(rec, *args)
            except OSError as exc:
                rec.failed = True
                log.error("recording %s failed (%s); it is given up", rec.path, exc.strerror or exc)
                for track in rec.tracks.values():
                    with contextlib.suppress(OSError):
                        track.finish(track.end)
                rec.tracks.clear()

    def _do_open(self, rec: Recording) -> None:
        make_private_dir(self.root)
        rec.path.mkdir(mode=DIR_MODE)
        os.chmod(rec.path, DIR_MODE)
        for name, file in FILES.items():
            rec.tracks[name] = Track(rec.path / file)
        self._others = sum(dir_bytes(p) for _, p in recording_dirs(self.root) if p != rec.path)

    def _projected(self, rec: Recording, end: int) -> int:
        """The recording's size once finished with its tracks `end` samples long."""
        return len(FILES) * (_HEADER + end * VATEL_FORMAT.bytes_per_frame) + TIMELINE_RESERVE

    def _write(self, rec: Recording, name: str, index: int, pcm: bytes) -> None:
        if rec.truncated_at is not None:
            return
        end = max(max((t.end for t in rec.tracks.values()), default=0), index + len(pcm) // VATEL_FORMAT.width)
        if self._projected(rec, end) + self._others > self.max_bytes:
            prune(self.root, self.keep, max(0, self.max_bytes - self._projected(rec, end)), spare=rec.path,
                  exclude_spare=True)
            self._others = sum(dir_bytes(p) for _, p in recording_dirs(self.root) if p != rec.path)
            if self._projected(rec, end) > self.max_bytes:
                rec.truncated_at = round(index / VATEL_FORMAT.rate, 3)
                log.warning("recording %s reached [debug] record_max_mb: the rest is not recorded", rec.path.name)
                return
        rec.tracks[name].write(index, pcm)

    def _do_mic(self, rec: Recording, seq: int, t: float, pcm: bytes) -> None:
        if rec.seq0 is None:  # no history when it started: the first frame anchors the mic
            rec.seq0 = seq
            rec.mic_offset = max(0, round((t - rec.t0) * VATEL_FORMAT.rate) - rec.frame_samples)
        index = rec.mic_index(seq)
        assert index is not None
        self._write(rec, "mic", index, pcm)

    def _do_sent(self, rec: Recording, seq: int, pcm: bytes) -> None:
        index = rec.mic_index(seq)
        if index is None:
            rec.dropped += 1
            return
        self._write(rec, "sent", index - rec.latency, pcm)

    def _do_played(self, rec: Recording, t_heard: float, pcm: bytes) -> None:
        track = rec.tracks["played"]
        observed = round((t_heard - rec.t0) * VATEL_FORMAT.rate)
        self._write(rec, "played", track.clock.place(observed, len(pcm) // VATEL_FORMAT.bytes_per_frame), pcm)

    def _do_drop(self, rec: Recording, t: float) -> None:
        rec.tracks["played"].zero_from(round((t - rec.t0) * VATEL_FORMAT.rate))

    def _do_finish(self, rec: Recording, doc: dict[str, Any]) -> None:
        samples = max((t.end for t in rec.tracks.values()), default=0)
        for track in rec.tracks.values():
            track.finish(samples)
        rec.tracks.clear()
        summary = doc["summary"]
        summary["duration_s"] = round(samples / VATEL_FORMAT.rate, 3)
        summary["dropped"] = rec.dropped
        summary["truncated_at_s"] = rec.truncated_at
        fd = os.open(rec.path / TIMELINE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            json.dump(doc, f, ensure_ascii=False, indent=1)
        rec.done = True
        if rec.dropped:
            log.warning("recording %s: %d audio items dropped (the disk was too slow)", rec.path.name, rec.dropped)
        log.info("recording %s complete: %.1f s", rec.path, samples / VATEL_FORMAT.rate)
        prune(self.root, self.keep, self.max_bytes, spare=rec.path)
        if self.on_finished is not None:
            self.on_finished(rec)
