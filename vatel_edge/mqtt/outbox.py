"""The bridge's bounded outgoing queue, with a written overflow policy per kind of message.

Retained messages (availability, discovery, state) are kept one per topic: a newer one replaces the
queued one (latest wins). Events are a FIFO of at most `max_events`: when full the oldest is dropped and
counted. Nothing here waits on the broker: the daemon's side only ever appends, never blocks.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

#: Events held while the broker is slow or unreachable; beyond that the oldest goes (counted).
MAX_EVENTS = 100


@dataclass(frozen=True)
class Message:
    """One outgoing MQTT message."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


class Outbox:
    """Latest-wins retained messages, then drop-oldest events; `on_put` is called after every put."""

    def __init__(self, max_events: int = MAX_EVENTS, on_put: Callable[[], None] | None = None) -> None:
        self._retained: dict[str, Message] = {}
        self._events: collections.deque[Message] = collections.deque()
        self.max_events = max_events
        self.events_dropped = 0
        self.retained_replaced = 0
        self._on_put = on_put

    def __len__(self) -> int:
        return len(self._retained) + len(self._events)

    def put_retained(self, msg: Message) -> None:
        """Queue a retained message; one already queued for the same topic is replaced (keeps its place)."""
        if msg.topic in self._retained:
            self.retained_replaced += 1
        self._retained[msg.topic] = msg
        if self._on_put is not None:
            self._on_put()

    def put_event(self, msg: Message) -> None:
        """Queue an event; when `max_events` are waiting, the oldest is dropped and counted."""
        if len(self._events) >= self.max_events:
            self._events.popleft()
            self.events_dropped += 1
        self._events.append(msg)
        if self._on_put is not None:
            self._on_put()

    def pop(self) -> Message | None:
        """The next message to send: retained ones first (in the order first queued), then events."""
        if self._retained:
            topic = next(iter(self._retained))
            return self._retained.pop(topic)
        if self._events:
            return self._events.popleft()
        return None

    def clear_retained(self) -> None:
        """Forget queued retained messages (a reconnect queues fresh ones)."""
        self._retained.clear()
