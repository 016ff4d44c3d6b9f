"""The daemon's live event stream: state changes and timeline events, to any number of local subscribers.

`EventHub.publish` is called on the event loop by the daemon (never blocks); each subscriber has its own
bounded queue, and a subscriber whose queue is full is dropped (its iterator ends) instead of slowing the
daemon. Consumers: `vatel-edge events` over the control socket, state hooks and LEDs, the MQTT bridge.

An event's `text` is the one-line description the logs use (it may quote a transcript or a tool's output:
for local consumers); `fields` is structured and never carries transcripts, tool arguments or outputs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: Events a subscriber may fall behind by before it is dropped.
SUBSCRIBER_QUEUE = 256


class Emit(Protocol):
    """Where the daemon's parts send events: `emit(kind, text, **fields)`."""

    def __call__(self, kind: str, text: str, **fields: Any) -> None: ...


@dataclass(frozen=True)
class DaemonEvent:
    """One state change or timeline event."""

    kind: str  # "state", "wake", "session_started", "session_closed", "barge_in", "tool_call_output", "error", ...
    text: str
    at: float  # wall-clock seconds (time.time())
    fields: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"kind", "text", "at", **fields}."""
        return {"kind": self.kind, "text": self.text, "at": round(self.at, 3), **self.fields}


class Subscription:
    """One subscriber: `async with hub.subscribe() as sub: async for event in sub: ...`."""

    def __init__(self, hub: EventHub, max_queue: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[DaemonEvent | None] = asyncio.Queue(maxsize=max_queue + 1)
        self._max = max_queue
        self.dropped = False

    def _offer(self, event: DaemonEvent) -> bool:
        """Queue `event`; False (and the end of the iterator) when the subscriber fell too far behind."""
        if self._queue.qsize() >= self._max:
            self.dropped = True
            self._queue.put_nowait(None)
            return False
        self._queue.put_nowait(event)
        return True

    def close(self) -> None:
        """Stop receiving (idempotent); a waiting iterator ends."""
        if self._hub.remove(self):
            self._queue.put_nowait(None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[DaemonEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[DaemonEvent]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event


class EventHub:
    """Fan-out of the daemon's events (see the module docstring). Event-loop thread only."""

    def __init__(self, max_queue: int = SUBSCRIBER_QUEUE) -> None:
        self._subs: list[Subscription] = []
        self._max = max_queue
        self.published = 0

    @property
    def subscribers(self) -> int:
        """How many subscribers are attached now."""
        return len(self._subs)

    def subscribe(self) -> Subscription:
        """A new subscriber, receiving every event published from now on."""
        sub = Subscription(self, self._max)
        self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription) -> bool:
        """Detach `sub`; whether it was attached."""
        if sub in self._subs:
            self._subs.remove(sub)
            return True
        return False

    def publish(self, kind: str, text: str, **fields: Any) -> DaemonEvent:
        """Hand one event to every subscriber, dropping those that fell behind (logged once each)."""
        event = DaemonEvent(kind, text, time.time(), fields)
        self.published += 1
        for sub in list(self._subs):
            if not sub._offer(event):
                self._subs.remove(sub)
                log.warning("event subscriber dropped: %d events behind", self._max)
        return event
