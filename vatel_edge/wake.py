"""Wake plumbing: the audio held for a session, the wake gate and the trigger loops.

No speech is lost: the microphone path (audio/mic.py) keeps the pre-roll; at the wake it becomes the head
of the session's `SessionAudio` and every later frame is appended behind it, so the server receives one
contiguous stream starting `wake.preroll_ms` before the speech onset (vad) or the trigger point, with no
gap, no duplicate and no reordering (frames carry their capture sequence number).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable

from vatel_edge.audio.capture import CaptureFrame

log = logging.getLogger(__name__)


class SessionAudio:
    """Capture frames held for a session: the pre-roll, then everything captured after the wake.

    Bounded (`max_frames`); overflow policy: drop the oldest held frame and count it. That only
    happens when the connection cannot take the audio for longer than the bound (a stalled
    server), where the newest speech is the one worth keeping.
    """

    def __init__(self, head: Iterable[CaptureFrame], max_frames: int) -> None:
        self._frames: deque[CaptureFrame] = deque(head)
        self._max = max_frames
        self._ready = asyncio.Event()
        self.dropped = 0
        self._closed = False
        while len(self._frames) > self._max:
            self._frames.popleft()
            self.dropped += 1
        if self._frames:
            self._ready.set()

    def put(self, frame: CaptureFrame) -> None:
        """Append a frame captured after the wake."""
        if self._closed:
            return
        if len(self._frames) >= self._max:
            self._frames.popleft()
            self.dropped += 1
            if self.dropped == 1:
                log.warning("session audio backlog full (%d frames): dropping the oldest", self._max)
        self._frames.append(frame)
        self._ready.set()

    async def get(self) -> CaptureFrame:
        """The oldest held frame, waiting for one."""
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def close(self) -> None:
        """Stop accepting frames (the session ended) and forget the backlog."""
        self._closed = True
        self._frames.clear()

    def __len__(self) -> int:
        return len(self._frames)


class WakeGate:
    """Decides whether a wake may start a session now: cooldown after a session, backoff after failures."""

    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._blocked_until = 0.0

    def session_ended(self) -> None:
        """Start the cooldown."""
        self.block_for(self._cooldown_s)

    def block_for(self, seconds: float) -> None:
        """No automatic wake for `seconds` (never shortens an existing block)."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def clear(self) -> None:
        """Lift any block (a manual trigger, a config reload)."""
        self._blocked_until = 0.0

    def open(self) -> bool:
        """Whether an automatic wake may happen now."""
        return self._clock() >= self._blocked_until

    def remaining(self) -> float:
        """Seconds until the gate opens."""
        return max(0.0, self._blocked_until - self._clock())


async def always_on(gate: WakeGate, listening: Callable[[], bool], wake: Callable[[str], object]) -> None:
    """wake.mode = "always" (kiosks): open a session whenever none runs, with the gate's backoff after
    failures and its cooldown after sessions."""
    while True:
        if listening() and gate.open():
            wake("always-on")
        await asyncio.sleep(max(0.05, gate.remaining()))


async def button_presses(
    presses: AsyncIterable[object],
    listening: Callable[[], bool],
    trigger: Callable[[str], object],
    end_session: Callable[[str], object],
) -> None:
    """wake.mode = "button": a press starts a session, a second press ends it."""
    async for _press in presses:
        if listening():
            trigger("button")
        else:
            end_session("button")
