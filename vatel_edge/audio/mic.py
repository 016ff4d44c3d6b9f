"""The one microphone path: stages in order in the capture thread, then the sink the state chooses.

Every capture frame runs, in the capture reader thread and in the same order in every state, through
`stages` (echo cancellation first; room for noise suppression or gain), then to one route:

* LISTEN (the daemon is LISTENING): the pre-roll ring, and the wake VAD (vad and wakeword modes) on the
  processed frame; in wakeword mode the wake-word detector (audio/wakeword.py) runs behind it, only while
  the VAD hears a voiced stretch. When the VAD (or the wake word) fires behind the wake gate, the route
  switches to SESSION in the same locked step and the session's audio starts `preroll_ms` before the ONSET
  of the voiced stretch that fired (the one containing the wake word), not before the trigger point. The
  event loop is woken once per wake, never per frame. The capture thread drains the device every
  LISTEN_BATCH_S (0.2 s), and every period while the VAD hears voice (VOICE_BATCH_S; every 0.04 s in
  wakeword mode, WORD_BATCH_S), so a wake is not held back by the sleep.
* SESSION (from the wake to the end of the session): each frame to the session's held audio
  (wake.SessionAudio, drained by the sender into input_audio), and local barge-in while the agent speaks
  (the VAD, the wake word, or both, on the echo-cancelled frame once the canceller has converged). A
  trigger from the loop (manual, button, always-on) takes the ring's last `preroll_ms` under the same
  lock, so the hand-over is atomic: the ring, then every later frame, in sequence order.
* HOLD (starting, ending): the ring only.

A stage keeps its latency constant (the echo path delays its bypass by the engine's own latency), so what
the server receives is the microphone at one constant lag. A failure inside the path is a bug: it is
logged once, frames stop counting for the watchdog (`last_frame_at` returns None) and `failed` completes,
which ends the daemon's run (systemd restarts it) instead of leaving a daemon that pretends to hear.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from vatel_edge.audio.aec_path import EchoPath
from vatel_edge.audio.capture import Capture, CaptureFrame
from vatel_edge.audio.playback import Player
from vatel_edge.audio.vad import VadParams, VadResult, VoiceDetector
from vatel_edge.audio.wakeword import GatedWakeWord, WakeWordDetector
from vatel_edge.wake import SessionAudio, WakeGate

log = logging.getLogger(__name__)

#: Longest audio held for a session that cannot send yet (connect + stalls); beyond it the oldest goes.
MAX_HELD_AUDIO_S = 30.0
#: How far back before the trigger the onset of its voiced stretch may lie (the ring holds this + pre-roll).
ONSET_LOOKBACK_MS = 3000
#: Unvoiced time that ends a voiced stretch when looking back for its onset: longer than the pause after a
#: short first word ("Front ... right", measured in the room test), so that word belongs to the stretch.
ONSET_GAP_MS = 700
#: While not in a session, the capture thread drains the device and sleeps up to this long (fewer wake-ups).
#: Each wake-up costs far more than its arithmetic (cold caches after the sleep): measured in the PulseAudio
#: rig (capture thread alone, the listening path with the canceller idle, 20 s), 0.95 % of a core at 0.1 s and
#: 0.60 % at 0.2 s. The device buffer (capture.CAPTURE_BUFFER_MS) holds 480 ms.
LISTEN_BATCH_S = 0.2
#: ... except while the wake VAD hears voice (a voiced frame within the last `wake.window_ms`): then the
#: thread reads every period as it arrives, so a wake fires when its frame is complete, not up to a sleep
#: later. Quiet or steady noise keeps the long sleeps (webrtcvad calls 0.1 % of pink noise frames voiced).
#: The sleep is shortened below LISTEN_BATCH_S when wake.min_speech_ms is short (listening_sleep_s), so the
#: first voiced frame of a wake is always read before the VAD can fire on it.
VOICE_BATCH_S = 0.0
#: ... and in wakeword mode, where every voiced frame also runs the wake-word model, two periods per wake-up:
#: the model's per-call cost after a wake-up dominates. Measured (bench/wakeword.py's cpu phase, 40 s of
#: continuous speech without the wake word): the daemon took 4.8 % of a core reading every period, 3.8 %
#: at 0.04 s, 2.2 % without reading faster at all (0.2 s sleeps, which would delay the wake by ~0.1 s).
WORD_BATCH_S = 0.04
#: In a session the capture thread sleeps this long after each drain (about two 20 ms periods per wake-up
#: instead of one). Measured in the PulseAudio rig with the WebRTC canceller (per thread, 30 s): the capture
#: thread took 4.7-5.0 % of a core waking per period and 3.8-4.2 % at 0.04 s, the event loop 3.5 % and
#: 3.0-3.5 % (fewer hand-overs). The cost: a frame reaches the session and the local barge-in detector up to
#: 40 ms later (20 ms on average). The frames keep their sample-clock stamps (capture.FrameClock).
SESSION_BATCH_S = 0.04


def listening_sleep_s(wake_vad: VadParams | None, frame_ms: int) -> float:
    """The listening sleep: LISTEN_BATCH_S, or less when the wake VAD could fire within it after the first
    voiced frame (min_speech_ms less that VAD frame, and half a capture period of the sleep's jitter)."""
    if wake_vad is None:
        return LISTEN_BATCH_S
    room_ms = wake_vad.min_speech_ms - wake_vad.frame_ms - frame_ms / 2
    return max(frame_ms / 1000, min(LISTEN_BATCH_S, room_ms / 1000))


class Stage(Protocol):
    """One step of the microphone path: synchronous, in the capture thread, constant latency."""

    def process(self, frame: CaptureFrame) -> CaptureFrame: ...


class BargeInTarget(Protocol):
    """What the local barge-in VAD reports to (live_session.LiveSession); called on the event loop."""

    def accepts_local_barge_in(self) -> bool: ...

    def local_voice(self, source: str) -> None: ...


class Route(enum.Enum):
    """Where processed frames go."""

    HOLD = "hold"
    LISTEN = "listen"
    SESSION = "session"


class MicPath:
    """The capture sink: stages, then the pre-roll and wake, or the session's audio (see the module docstring)."""

    def __init__(
        self,
        capture: Capture,
        player: Player,
        echo: EchoPath | None,
        *,
        frame_ms: int,
        preroll_ms: int,
        wake_vad: VoiceDetector | None,
        barge_vad: VoiceDetector | None,
        gate: WakeGate,
        on_wake: Callable[[str], bool] = lambda reason: False,
        wake_word: WakeWordDetector | None = None,
        barge_word: GatedWakeWord | None = None,
    ) -> None:
        self.capture = capture
        self._player = player
        self._echo = echo
        self.stages: list[Stage] = [echo] if echo is not None else []
        self._frame_ms = frame_ms
        self._preroll_frames = -(-preroll_ms // frame_ms) if preroll_ms > 0 else 0
        self._gap_frames = max(1, ONSET_GAP_MS // frame_ms)
        self._ring: deque[tuple[CaptureFrame, bool]] = deque(
            maxlen=self._preroll_frames + -(-ONSET_LOOKBACK_MS // frame_ms) + 1
        )
        self._wake_vad = wake_vad
        self._barge_vad = barge_vad  # session.barge_in local/both with a canceller: the VAD during playback
        self._wake_word = wake_word  # wake.mode = "wakeword": behind the wake VAD
        self._barge_word = barge_word  # session.barge_in wakeword/both with a canceller: the wake word
        self._barge_armed = False
        self._wake_reason = "voice"
        self.gate = gate
        self.on_wake = on_wake  # loop side: the daemon's wake; False when it refuses
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()  # route, ring, pending head and the wake VAD: thread and loop
        self._route = Route.HOLD
        self._pending: list[CaptureFrame] | None = None  # head of a voice wake not yet taken by the loop
        self.session_audio: SessionAudio | None = None  # loop-owned
        self.barge_in_target: BargeInTarget | None = None
        self.first_frame = asyncio.Event()
        self.failed: asyncio.Future[None] = self._loop.create_future()
        self._last_at: float | None = None
        self._dead = False
        self._seen_first = False
        #: Frames the capture thread keeps reading per period after the last voiced one (listening).
        self._hot_frames = -(-wake_vad.params.window_ms // frame_ms) if wake_vad is not None else 0
        self._hot = 0  # frames of that still to go
        self._voice_batch_s = VOICE_BATCH_S if wake_word is None else WORD_BATCH_S
        self.muted = False  # privacy mute: frames go nowhere (no pre-roll, no wake, no session audio)
        self.onset_lead_ms: float | None = None  # the last voice wake: pre-roll before its onset (status, tests)
        self.listen_batch_s = listening_sleep_s(wake_vad.params if wake_vad is not None else None, frame_ms)
        capture.batch_s = self.listen_batch_s
        capture.set_sink(self.push_batch)

    # ------------------------------------------------------------------ event loop side

    @property
    def local_barge_in(self) -> bool:
        """A local detector may cut the agent (session.barge_in local/wakeword/both with a canceller)."""
        return self._barge_vad is not None or self._barge_word is not None

    def last_frame_at(self) -> float | None:
        """The newest frame that went through the whole path; None once the path failed (for the watchdog)."""
        return None if self._dead else self._last_at

    async def wait_first_frame(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the path's first frame; whether it came."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_frame.wait(), timeout)
        return self.first_frame.is_set()

    def listen(self) -> None:
        """LISTENING: keep the pre-roll and run the wake VAD (in the capture thread) on fresh audio only."""
        self.end_session()  # LISTENING means no session: whatever was held for one is over
        with self._lock:
            self._route = Route.LISTEN
            self._hot = 0
            self._ring.clear()  # audio from before (a session's tail) is never pre-roll
            if self._wake_vad is not None:
                self._wake_vad.reset()
            if self._wake_word is not None:
                self._wake_word.reset()

    def stop_listening(self) -> None:
        """Leaving LISTENING without a session (shutdown): no wake fires any more."""
        with self._lock:
            if self._route is Route.LISTEN:
                self._route = Route.HOLD

    def begin_session(self) -> SessionAudio:
        """The trigger point: the session's audio, headed by the pre-roll (idempotent within one wake).

        After a voice wake the head is the one the capture thread cut at the onset; after any other trigger
        it is the ring's last `preroll_ms`. Either way the switch to SESSION happened under the path's lock,
        so every later frame follows the head in sequence order."""
        if self.session_audio is not None:
            return self.session_audio
        with self._lock:
            if self._pending is not None:
                head, self._pending = self._pending, None
            else:
                # the ring's newest preroll_ms, or all of it when it holds less (a trigger soon after listening)
                head = [f for f, _ in list(self._ring)[-self._preroll_frames :]] if self._preroll_frames else []
            self._to_session()
        self.session_audio = SessionAudio(head, int(MAX_HELD_AUDIO_S * 1000 / self._frame_ms))
        return self.session_audio

    def end_session(self) -> None:
        """The session is over: its held audio is dropped and frames go to the ring again (idempotent)."""
        with self._lock:
            if self._route is Route.SESSION:
                self._route = Route.HOLD
            self._pending = None
        if self.session_audio is not None:
            self.session_audio.close()
        self.session_audio = None
        self.barge_in_target = None
        self.capture.batch_s = self.listen_batch_s

    def _voice_wake(self) -> None:
        """Loop side of a voice wake (scheduled by the capture thread before any later frame's put)."""
        if self._pending is None:
            return  # a trigger took the head first
        if not self.on_wake(self._wake_reason):
            self.listen()  # refused (a trigger won the race, or shutting down): listen on

    def _put(self, frame: CaptureFrame) -> None:
        if self.session_audio is not None:
            self.session_audio.put(frame)

    def _first(self) -> None:
        self.first_frame.set()

    def _fail(self, exc: BaseException) -> None:
        if not self.failed.done():
            self.failed.set_exception(exc)

    # ------------------------------------------------------------------ capture thread

    def push(self, frame: CaptureFrame) -> None:
        """One frame through the stages and to its route (capture thread); see `push_batch`."""
        self.push_batch([frame])

    def push_batch(self, frames: list[CaptureFrame]) -> None:
        """The capture sink (capture thread): consecutive frames through the stages and to their route."""
        if self._dead or not frames:
            return
        try:
            done = []
            for frame in frames:
                for stage in self.stages:
                    frame = stage.process(frame)
                done.append(frame)
            session = self._route_frames(done)
            if self.local_barge_in:
                for frame in session:
                    self._local_barge_in(frame.pcm)
        except Exception as exc:  # a bug in the path: say it once and stop pretending to hear
            self._dead = True
            log.error("the microphone path failed: %s", exc, exc_info=exc)
            self._loop.call_soon_threadsafe(self._fail, exc)
            return
        self._last_at = done[-1].t
        if not self._seen_first:
            self._seen_first = True
            self._loop.call_soon_threadsafe(self._first)

    def _route_frames(self, frames: list[CaptureFrame]) -> list[CaptureFrame]:
        """Put each frame where the route says (under the lock); the frames that went to a session.

        The wake VAD runs over the listening frames of the batch in one call (VoiceDetector.process_batch: the
        same decisions as frame by frame); frames after a wake in the same batch go to the session."""
        session: list[CaptureFrame] = []
        with self._lock:
            if self.muted:
                self._ring.clear()
                if self._hot and self._route is Route.LISTEN:  # nothing is heard: back to the long sleeps
                    self._hot, self.capture.batch_s = 0, self.listen_batch_s
                return session
            vad: list[VadResult] = []
            first_vad = 0
            for k, frame in enumerate(frames):
                if self._route is Route.SESSION:
                    self._loop.call_soon_threadsafe(self._put, frame)
                    session.append(frame)
                    continue
                voiced = triggered = False
                if self._route is Route.LISTEN and self._wake_vad is not None:
                    if not vad:
                        first_vad = k
                        vad = self._wake_vad.process_batch([f.pcm for f in frames[k:]])
                    result = vad[k - first_vad]
                    voiced, triggered = result.voiced, result.triggered
                    self._hot = self._hot_frames if voiced else max(0, self._hot - 1)
                    if self._wake_word is not None:
                        word = self._wake_word.process(frame.pcm, voiced).word
                        triggered = word is not None
                        self._wake_reason = f"wake word {word}" if word else "voice"
                self._ring.append((frame, voiced))
                if triggered and self.gate.open():
                    self._pending = self._onset_head()
                    self._to_session()
                    self._loop.call_soon_threadsafe(self._voice_wake)
            if self._route is Route.LISTEN and self._wake_vad is not None:
                self.capture.batch_s = self._voice_batch_s if self._hot else self.listen_batch_s
        return session

    def _to_session(self) -> None:
        """Under the lock, at either trigger (begin_session, a voice wake): every later frame goes to the session,
        the ring (already cut into the head) empties, the capture reads at the session's pace."""
        self._route = Route.SESSION
        self._ring.clear()
        self.capture.batch_s = SESSION_BATCH_S

    def _onset_head(self) -> list[CaptureFrame]:
        """The ring from `preroll_ms` before the onset of the newest voiced stretch, through the newest frame.

        A VAD wake fires on a voiced frame; a wake word fires up to the detector's hangover after the word's
        last voiced frame, so the search starts at the newest voiced frame."""
        ring = list(self._ring)
        last = next((i for i in range(len(ring) - 1, -1, -1) if ring[i][1]), len(ring) - 1)
        onset = last
        gap = 0
        for i in range(last, -1, -1):
            if ring[i][1]:
                onset, gap = i, 0
            else:
                gap += 1
                if gap >= self._gap_frames:
                    break
        start = max(0, onset - self._preroll_frames)
        self.onset_lead_ms = float((onset - start) * self._frame_ms)
        return [f for f, _ in ring[start:]]

    def _local_barge_in(self, pcm: bytes) -> None:
        """session.barge_in local/wakeword/both: on the echo-cancelled mic while the agent plays, voice (the
        VAD, debounced by session.barge_in_min_speech_ms) or the wake word (behind its own VAD) cuts playback.

        Armed only once the echo canceller has converged, and counted afresh for every stretch of playback. A
        detection whose audio resembles the agent's own voice (EchoPath.echo_likeness: the echo leaking through
        a canceller whose echo path just changed) is dropped and counted, not acted on."""
        target, echo = self.barge_in_target, self._echo
        ready = (
            target is not None
            and self._player.playing
            and target.accepts_local_barge_in()  # a cut turn's tail may still sound: not again
            and echo is not None
            and echo.converged
        )
        if not ready:
            if self._barge_armed:
                self._disarm()
            return
        self._barge_armed = True
        source: str | None = None
        if self._barge_vad is not None and self._barge_vad.process(pcm).triggered:
            source = "local vad"
        if self._barge_word is not None:
            word = self._barge_word.process(pcm)[2].word
            source = source or (f"wake word {word}" if word else None)
        if source is not None and echo is not None and echo.resembles_echo():
            # the canceller let the agent's own voice through (an echo path that just changed): not the user
            echo.stats["barge_in_vetoes"] += 1
            if echo.stats["barge_in_vetoes"] == 1:
                log.info("local barge-in: ignored a detection that resembles the agent's own voice (echo leaking "
                         "through the canceller); later ones are counted in the echo stats (barge_in_vetoes)")
            self._disarm()
            self._barge_armed = True
            return
        if source is not None:
            self._disarm()
            assert target is not None
            self._loop.call_soon_threadsafe(target.local_voice, source)

    def _disarm(self) -> None:
        if self._barge_vad is not None:
            self._barge_vad.reset()
        if self._barge_word is not None:
            self._barge_word.reset()
        self._barge_armed = False

