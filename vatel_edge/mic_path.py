"""The microphone path: the only reader of the microphone, from the capture frame to its sink.

Each frame goes through the echo path first (when a canceller runs), then to one sink chosen by the state:
while LISTENING the pre-roll (and the wake VAD, which runs in the capture thread during quiet listening,
see `Capture.listen`); from the wake on the session's held audio (`SessionAudio`), which the session's
sender drains into `input_audio`, and the local barge-in VAD while the agent speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from vatel_edge.audio.aec_path import EchoPath
from vatel_edge.audio.capture import Capture, CaptureFrame
from vatel_edge.audio.playback import Player
from vatel_edge.audio.vad import VoiceDetector
from vatel_edge.wake import PrerollBuffer, SessionAudio, WakeGate

log = logging.getLogger(__name__)

#: Longest audio held for a session that cannot send yet (connect + stalls); beyond it the oldest goes.
MAX_HELD_AUDIO_S = 30.0


class BargeInTarget(Protocol):
    """What the local barge-in VAD reports to (live_session.LiveSession)."""

    def accepts_local_barge_in(self) -> bool: ...

    def local_voice(self, source: str) -> None: ...


class MicPath:
    """Routes capture frames: echo cancellation, then the pre-roll and wake, or the session's audio."""

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
    ) -> None:
        self.capture = capture
        self._player = player
        self._echo = echo
        self._frame_ms = frame_ms
        self._preroll_ms = preroll_ms
        self._preroll = PrerollBuffer(preroll_ms, frame_ms)
        self._wake_vad = wake_vad
        self._barge_vad = barge_vad  # session.barge_in local/both with a canceller: the VAD during playback
        self._barge_armed = False  # the barge VAD has seen frames of the current stretch of playback
        self.gate = gate
        self.session_audio: SessionAudio | None = None
        self.barge_in_target: BargeInTarget | None = None
        self.first_frame = asyncio.Event()
        self.running = False  # run() is pumping (the watchdog stops pinging when it died)

    @property
    def local_barge_in(self) -> bool:
        """The local VAD may cut the agent (session.barge_in local/both with a canceller)."""
        return self._barge_vad is not None

    def last_frame_at(self) -> float | None:
        """The newest capture frame's time while the pump runs; None once it died (for the watchdog)."""
        return self.capture.last_frame_at if self.running else None

    async def run(self, on_wake: Callable[[str], object]) -> None:
        """The pump: read every frame and route it; `on_wake("voice")` when the capture thread's VAD fired."""
        self.running = True
        try:
            while True:
                frame = await self.capture.read()
                self.first_frame.set()
                if self._echo is not None:
                    frame = self._echo.process(frame)
                held = self.session_audio
                if held is not None:
                    if self._barge_vad is not None:
                        self._local_barge_in(self._barge_vad, frame.pcm)
                    held.put(frame)
                    continue
                self._preroll.append(frame)
                if frame.wake:
                    on_wake("voice")  # the capture thread's VAD fired on this frame
        finally:
            self.running = False

    async def wait_first_frame(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the pump's first frame; whether it came."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_frame.wait(), timeout)
        return self.first_frame.is_set()

    def listen_quietly(self) -> None:
        """LISTENING: the capture thread keeps the pre-roll and runs the wake VAD itself, waking the event
        loop only when it fires (or when another trigger ends quiet listening); see Capture.listen."""
        if self.capture.listening:
            return
        if self._wake_vad is not None:
            self._wake_vad.reset()  # safe: the capture thread only uses the VAD once the listener is set
        self._preroll.take()  # the capture ring is the pre-roll from now on
        keep = -(-self._preroll_ms // self._frame_ms)
        self.capture.listen(self._wake_in_capture_thread, keep_frames=keep)

    def stop_listening(self) -> None:
        """Leaving LISTENING: the ring (pre-roll) follows in order, into the session's audio."""
        self.capture.listen(None)

    def begin_session(self) -> SessionAudio:
        """The trigger point: the pre-roll becomes the head of the session's audio, now."""
        max_frames = int(MAX_HELD_AUDIO_S * 1000 / self._frame_ms)
        self.session_audio = SessionAudio(self._preroll.take(), max_frames)
        return self.session_audio

    def end_session(self) -> None:
        """The session is over: its held audio is dropped and frames go to the pre-roll again."""
        if self.session_audio is not None:
            self.session_audio.close()
        self.session_audio = None
        self.barge_in_target = None

    def _wake_in_capture_thread(self, frame: CaptureFrame) -> bool:
        """Runs in the capture thread while listening: the wake VAD (vad mode) behind the wake gate."""
        vad = self._wake_vad
        return vad is not None and vad.process(frame.pcm).triggered and self.gate.open()

    def _local_barge_in(self, vad: VoiceDetector, pcm: bytes) -> None:
        """session.barge_in local/both: voice on the echo-cancelled mic while the agent plays cuts playback.

        Debounced by session.barge_in_min_speech_ms of voiced audio; armed only once the echo canceller has
        converged, and counted afresh for every stretch of playback."""
        target = self.barge_in_target
        ready = (
            target is not None
            and self._player.playing
            and target.accepts_local_barge_in()  # a cut turn's tail may still sound: not again
            and self._echo is not None
            and self._echo.converged
        )
        if not ready:
            if self._barge_armed:
                vad.reset()
                self._barge_armed = False
            return
        self._barge_armed = True
        if vad.process(pcm).triggered:
            vad.reset()
            self._barge_armed = False
            assert target is not None
            target.local_voice("local vad")
