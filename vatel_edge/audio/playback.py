"""Speaker playback: a writer thread feeding ALSA period-sized chunks from a turn-tagged queue.

- Agent audio arrives with `feed(turn_id, pcm, is_final)`. Each turn starts after a jitter prebuffer
  (`audio.prebuffer_ms`, or less when the turn is final already); while a turn is open but starved
  the device gets silence instead of an underrun storm; a final turn is played to its last sample,
  padded to a period with silence and let run out before the device is stopped (no cut-off, no click).
- `interrupt()` (barge-in) returns at once: it discards everything queued for the current turn,
  remembers the turn id so late chunks are ignored, and wakes the writer, which drops the device
  buffer. It reports how much of the turn was actually heard (frames written minus the device delay).
- `play_sound()` queues a feedback sound behind whatever is queued.
- Overflow policy: at most MAX_QUEUED_S seconds of audio are queued; beyond that, new chunks are
  dropped, counted in stats["overflow_dropped"] and logged once per burst.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vatel_edge.audio.alsa import AlsaPcm
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.resample import Resampler, to_channels
from vatel_edge.audio.worker import DeviceWorker
from vatel_edge.config import AudioConfig

log = logging.getLogger(__name__)

MAX_QUEUED_S = 300.0
INTERRUPTED_IDS_KEPT = 64
SOUND_TURN = ""  # turn id of feedback sounds (never interrupted by barge-in)
#: The writer takes up to this many periods of queued audio per write, and sleeps until the device has room
#: for them. Measured per thread in a session (PulseAudio rig, 30 s, with the starved wait below): the writer
#: took 1.6 % of a core at 53 wake-ups/s writing one period at a time, 0.7 % at 28/s with two.
WRITE_PERIODS = 2


@dataclass(frozen=True)
class InterruptReport:
    """What a barge-in cut: the turn, how much of it was heard, how much was discarded."""

    turn_id: str | None
    heard_samples: int  # 24 kHz samples of the turn that reached the speaker (estimate)
    discarded_samples: int  # 24 kHz samples queued or in the device that were thrown away
    in_device_samples: int = 0  # of those, how many were already in the device buffer (dropped by drop())

    @property
    def heard_ms(self) -> float:
        """Milliseconds of the turn that were heard."""
        return 1000.0 * self.heard_samples / VATEL_FORMAT.rate


@dataclass
class _Chunk:
    turn_id: str
    pcm: bytes
    is_final: bool


class Player(DeviceWorker):
    """Async context manager owning the speaker (see module docstring)."""

    thread_name = "vatel-playback"
    device_name = "speaker"
    logger = log

    def __init__(self, cfg: AudioConfig, *, retry_base_s: float = 0.5, retry_max_s: float = 10.0) -> None:
        super().__init__(retry_base_s=retry_base_s, retry_max_s=retry_max_s)
        self._cfg = cfg
        self._period = VATEL_FORMAT.samples(cfg.playback_period_ms)  # 24 kHz samples per period
        self._prebuffer = VATEL_FORMAT.samples(cfg.prebuffer_ms)
        self._max_queued = VATEL_FORMAT.samples(MAX_QUEUED_S * 1000)
        self._gain = float(cfg.volume)
        self._lock = threading.Lock()
        self._queue: collections.deque[_Chunk] = collections.deque()
        self._queued = 0  # samples in _queue
        self._interrupted: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._interrupt_pending = False
        self._overflow_burst = 0
        # the writer found too little queued and waits for more (set with that finding, under _lock): the
        # next chunk wakes it; while it waits for room in the device it is left alone
        self._wants_data = True
        # writer-thread state, read (racily but harmlessly) by interrupt()/playing
        self._turn: str | None = None  # turn the writer is playing
        self._turn_written = 0  # 24 kHz samples of _turn written to the device
        self._delay = 0  # 24 kHz samples in the device after the last write
        self._delay_at = 0.0  # monotonic time of that measurement
        self._agent_audible_until = 0.0
        self._audible_until = 0.0  # any audio, sounds included
        self._stats = {
            "underruns": 0,
            "periods": 0,
            "turns": 0,
            "interruptions": 0,
            "late_chunks_dropped": 0,
            "overflow_dropped": 0,
            "reopens": 0,
        }
        self.on_written: Callable[[bytes, float], None] | None = None
        """Called from the writer thread with the 24 kHz mono PCM written to the device (after gain) and
        the monotonic time it is expected to be heard: the reference for an echo canceller. Keep it cheap."""
        self.on_dropped: Callable[[float], None] | None = None
        """Called from the writer thread with the monotonic time the device buffer was dropped for a barge-in:
        nothing written before it sounds after it (the echo reference cuts there). Keep it cheap."""

    # ------------------------------------------------------------------ lifecycle

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or audible (True), or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._queue and self._turn is None
            if idle and time.monotonic() >= self._audible_until:
                return True
            await asyncio.sleep(self._cfg.playback_period_ms / 1000.0)
        return False

    # ------------------------------------------------------------------ the asyncio-side API

    @property
    def stats(self) -> dict[str, int]:
        """underruns, periods (written), turns, interruptions, late_chunks_dropped, overflow_dropped, reopens."""
        return dict(self._stats)

    @property
    def playing(self) -> bool:
        """True while agent audio is queued, prebuffering, or still in the device."""
        with self._lock:
            if any(c.turn_id != SOUND_TURN for c in self._queue):
                return True
            turn = self._turn
        return (turn is not None and turn != SOUND_TURN and self._turn_written == 0) or (
            time.monotonic() < self._agent_audible_until
        )

    def feed(self, turn_id: str, pcm: bytes, is_final: bool) -> None:
        """Queue agent audio (PCM16 LE mono 24 kHz) of `turn_id`; never blocks."""
        if turn_id == SOUND_TURN:
            raise ValueError("turn_id must not be empty")
        self._enqueue(_Chunk(turn_id, pcm, is_final))

    def play_sound(self, pcm: bytes) -> None:
        """Queue a feedback sound (PCM16 LE mono 24 kHz) behind whatever is queued."""
        self._enqueue(_Chunk(SOUND_TURN, pcm, True))

    def set_volume(self, gain: float) -> None:
        """Software gain for everything played from now on (1.0 = unchanged; clipped, never wrapped)."""
        if not 0.0 <= gain <= 4.0:
            raise ValueError(f"gain {gain} outside 0..4")
        self._gain = float(gain)

    def forget_cut_turns(self) -> None:
        """A new session: the server may use the turn ids of an earlier session's cut turns again."""
        with self._lock:
            self._interrupted.clear()

    def interrupt(self) -> InterruptReport:
        """Barge-in: stop the agent now: the turn playing and every agent turn queued behind it, and ignore the
        rest of them (the user interrupted the agent, not one chunk of it). Returns at once."""
        with self._lock:
            turn = self._turn if self._turn != SOUND_TURN else None
            if turn is None:
                turn = next((c.turn_id for c in self._queue if c.turn_id != SOUND_TURN), None)
            if turn is None:
                return InterruptReport(None, 0, 0, 0)
            cut = {turn} | {c.turn_id for c in self._queue if c.turn_id != SOUND_TURN}
            for t in cut:
                self._interrupted[t] = None
            while len(self._interrupted) > INTERRUPTED_IDS_KEPT:
                self._interrupted.popitem(last=False)
            discarded = sum(len(c.pcm) for c in self._queue if c.turn_id in cut) // VATEL_FORMAT.bytes_per_frame
            self._queue = collections.deque(c for c in self._queue if c.turn_id not in cut)
            self._queued = sum(len(c.pcm) for c in self._queue) // VATEL_FORMAT.bytes_per_frame
            in_device = 0
            heard = 0
            if turn == self._turn:
                self._interrupt_pending = True
                elapsed = int((time.monotonic() - self._delay_at) * VATEL_FORMAT.rate)
                in_device = max(0, self._delay - elapsed)
                heard = max(0, self._turn_written - in_device)
        self._stats["interruptions"] += 1
        self._agent_audible_until = 0.0
        self._wake()
        report = InterruptReport(turn, heard, discarded + in_device, in_device)
        log.info(
            "barge-in: turn %s interrupted after %.0f ms heard, %.0f ms discarded",
            turn, report.heard_ms, 1000.0 * report.discarded_samples / VATEL_FORMAT.rate,
        )
        return report

    def _enqueue(self, chunk: _Chunk) -> None:
        samples = len(chunk.pcm) // VATEL_FORMAT.bytes_per_frame
        with self._lock:
            if chunk.turn_id in self._interrupted:
                self._stats["late_chunks_dropped"] += 1
                return
            if self._queued + samples > self._max_queued:
                self._stats["overflow_dropped"] += 1
                if self._overflow_burst == 0:
                    log.warning("playback queue full (%.0f s queued): dropping new audio", MAX_QUEUED_S)
                self._overflow_burst += 1
                return
            self._overflow_burst = 0
            self._queue.append(chunk)
            self._queued += samples
            wake, self._wants_data = self._wants_data, False
        if wake:  # a writer busy pushing into a full device does not need waking per chunk
            self._wake()

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        self.run_reopening(
            self._open,
            lambda pcm: _Writer(self, pcm).run(),
            while_down=self._discard_queue_while_down,
            after_loss=self._forget_turn,
        )

    def _open(self) -> AlsaPcm:
        return AlsaPcm(
            self._cfg.playback_device,
            "playback",
            period_ms=self._cfg.playback_period_ms,
            periods=max(2, round(self._cfg.playback_buffer_ms / self._cfg.playback_period_ms)),
        )

    def _forget_turn(self) -> None:
        """A lost device takes the turn in progress with it: the next device starts with none."""
        with self._lock:
            self._turn = None

    def _discard_queue_while_down(self) -> None:
        """With no speaker, queued audio would play late and stale: drop it."""
        with self._lock:
            self._queue.clear()
            self._queued = 0
            self._turn = None
        self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _take(self, want: int) -> tuple[str | None, bytes, bool]:
        """Up to `want` samples of the turn being played (or of the next item): (turn, pcm, turn_done)."""
        with self._lock:
            if self._turn is None:
                if not self._queue:
                    self._wants_data = True
                    return None, b"", False
                self._turn = self._queue[0].turn_id
                self._turn_written = 0
                if self._turn != SOUND_TURN:
                    self._stats["turns"] += 1
            turn = self._turn
            out = bytearray()
            done = False
            want_bytes = want * VATEL_FORMAT.bytes_per_frame
            while len(out) < want_bytes and self._queue and self._queue[0].turn_id == turn:
                chunk = self._queue[0]
                n = want_bytes - len(out)
                out += chunk.pcm[:n]
                if n < len(chunk.pcm):
                    chunk.pcm = chunk.pcm[n:]
                else:
                    self._queue.popleft()
                    done = chunk.is_final
                    if done:
                        break
            self._queued -= len(out) // VATEL_FORMAT.bytes_per_frame
            self._wants_data = not out and not done and want > 0
            return turn, bytes(out), done

    def _available(self, turn: str) -> tuple[int, bool]:
        """Samples queued for `turn` and whether its final chunk is queued."""
        with self._lock:
            total = 0
            final = False
            for c in self._queue:
                if c.turn_id != turn:
                    break
                total += len(c.pcm) // VATEL_FORMAT.bytes_per_frame
                final = final or c.is_final
            self._wants_data = total < self._prebuffer and not final
            return total, final


class _Writer:
    """The writer loop for one open device (a new one after each reopen)."""

    def __init__(self, player: Player, pcm: AlsaPcm) -> None:
        self.p = player
        self.pcm = pcm
        self.native = pcm.native
        self.resampler = Resampler(VATEL_FORMAT.rate, self.native.rate)
        self.period = player._period
        self.period_s = player._cfg.playback_period_ms / 1000.0
        self.device_period_s = pcm.negotiated.period_frames / self.native.rate
        self.pending = b""  # device bytes not yet accepted by ALSA
        self.running = False  # the device has been written since the last stop
        self.prebuffering = False
        self.ending = False  # the final chunk of the current turn has been written
        self.next_silence_at = 0.0

    def delay_samples(self) -> int:
        return round(self.pcm.delay_frames() * VATEL_FORMAT.rate / self.native.rate)

    def run(self) -> None:
        p = self.p
        while not p._stop.is_set():
            if p._interrupt_pending:
                self.barge_in()
                continue
            turn = p._turn
            if turn is None:
                turn, _, _ = p._take(0)  # start the next item, if any
                if turn is None:
                    self.idle_wait()
                    continue
                self.prebuffering = turn != SOUND_TURN
                self.ending = False
            if self.pending:
                self.push()
                continue
            if self.ending:
                self.finish_turn()
                continue
            if self.prebuffering:
                queued, final = p._available(turn)
                if queued < p._prebuffer and not final:
                    self.starved_wait()
                    continue
                self.prebuffering = False
            turn, pcm, done = p._take(self.period * WRITE_PERIODS)
            if turn is None:
                continue
            if not pcm and not done:
                self.starved_wait()  # turn open but the network is late
                continue
            if done:
                # pad the tail to a whole period: the device never sees half a period, the next turn starts clean
                tail = -(len(pcm) // VATEL_FORMAT.bytes_per_frame) % self.period
                if not self.resampler.passthrough:
                    tail += self.period  # flush the resampler's filter delay too
                pcm += bytes(VATEL_FORMAT.bytes_per_frame * tail)
                self.ending = True
            self.write_period(turn, pcm, agent=turn != SOUND_TURN)

    def idle_wait(self) -> None:
        if self.running:
            self.stop_device()
        self._wait_wake(1.0)

    def _wait_wake(self, timeout: float) -> None:
        select.select([self.p._wake_r], [], [], timeout)
        self.p._drain_wake()

    def starved_wait(self) -> None:
        """Open turn, nothing to play: keep ~2 periods of silence in the device instead of underrunning."""
        now = time.monotonic()
        delay = self.delay_samples() if self.running else 0
        # the time check paces devices that consume instantly (file plugin) at about twice real time
        if self.running and now >= self.next_silence_at and delay < 2 * self.period:
            self.next_silence_at = now + self.period_s / 2
            self.write_period(None, bytes(self.period * VATEL_FORMAT.bytes_per_frame), agent=False)
            return
        # a new chunk wakes the writer (it wants data); otherwise look again when the device is down to two
        # periods (a stream that arrives in real time keeps the queue empty between chunks: waking every half
        # period to find the device still full was half of the writer's wake-ups)
        self._wait_wake(max(self.period_s / 2, (delay - 2 * self.period) / VATEL_FORMAT.rate))

    def write_period(self, turn: str | None, pcm: bytes, *, agent: bool) -> None:
        samples = np.frombuffer(pcm, dtype="<i2")
        gain = self.p._gain
        if gain != 1.0 and turn is not None:
            samples = np.clip(np.rint(samples.astype(np.float32) * gain), -32768, 32767).astype(np.int16)
        out = to_channels(self.resampler.process(samples), self.native.channels)
        self.pending += out.astype("<i2").tobytes()
        n = len(samples)
        with self.p._lock:
            if turn is not None and turn == self.p._turn:
                self.p._turn_written += n
        self.p._stats["periods"] += -(-n // self.period)  # a write carries up to WRITE_PERIODS
        self.push()
        delay = self.delay_samples()
        now = time.monotonic()
        self.p._delay, self.p._delay_at = delay, now
        self.p._audible_until = now + delay / VATEL_FORMAT.rate
        if agent and not self.p._interrupt_pending:  # interrupt() cleared it: a write racing it must not undo that
            self.p._agent_audible_until = self.p._audible_until
        hook = self.p.on_written
        if hook is not None:
            hook(samples.astype("<i2").tobytes(), now + max(0, delay - n) / VATEL_FORMAT.rate)

    def push(self) -> None:
        """Hand pending bytes to ALSA, waiting for room (wakes early for a barge-in)."""
        bpf = self.native.bytes_per_frame
        while self.pending and not self.p._stop.is_set() and not self.p._interrupt_pending:
            n = self.pcm.write(self.pending)
            if n is None:
                if self.running:
                    self.p._stats["underruns"] += 1
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("playback underrun (recovered)")
                continue
            self.running = True
            if n > 0:
                self.pending = self.pending[n * bpf :]
                continue
            self._wait_room(len(self.pending) // bpf)

    def _wait_room(self, frames: int) -> None:
        """The device is full: sleep until it should have room for `frames` (at most WRITE_PERIODS periods),
        at least a quarter period, at most two; a barge-in or stop wakes it at once."""
        neg = self.pcm.negotiated
        room = neg.buffer_frames - self.pcm.delay_frames()
        want = min(frames, neg.period_frames * WRITE_PERIODS)
        wait_s = (want - room) / self.native.rate
        self._wait_wake(min(2 * self.device_period_s, max(self.device_period_s / 4, wait_s)))

    def finish_turn(self) -> None:
        """The turn's last sample is in the device: let it play out, then stop the device cleanly."""
        with self.p._lock:
            next_queued = bool(self.p._queue)
            self.p._wants_data = not next_queued
        if next_queued:  # the next turn or sound follows seamlessly
            self.end_turn()
            return
        if self.delay_samples() > 0:
            self._wait_wake(min(self.period_s, max(0.001, self.delay_samples() / VATEL_FORMAT.rate)))
            return
        self.stop_device()
        self.end_turn()

    def end_turn(self) -> None:
        with self.p._lock:
            self.p._turn = None
            self.p._turn_written = 0
        self.ending = False
        self.prebuffering = False

    def stop_device(self) -> None:
        self.pcm.drop()
        self.running = False
        self.pending = b""
        self.resampler = Resampler(VATEL_FORMAT.rate, self.native.rate)

    def barge_in(self) -> None:
        with self.p._lock:
            self.p._interrupt_pending = False
        self.stop_device()
        hook = self.p.on_dropped
        if hook is not None:
            hook(time.monotonic())
        self.end_turn()
