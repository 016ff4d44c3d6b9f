"""What server events mean for one session, with no I/O: events and local facts in, commands out.

A `Conversation` is to a Vatel session what websockets' `Protocol` is to a connection: it takes decoded
server events (`protocol.decode_server_message`) and local facts (the user's voice detected locally, a
tick of the clock with whether the player is still playing, a tool call answered, a request to end) and
returns the commands that follow from them, in order: play this chunk of turn T, cut turn T, run this
tool call, cancel the interruptible tools, fire this state transition, end the session with this
reason, note this on the timeline. `live_session.LiveSession` performs them on the devices, the tool
registry, the socket and the state machine.

It owns the per-session facts: the current turn, the turns cut by barge-in (the only list of them;
late chunks of a cut turn never reach the player), the answered tool-call ids, the time of the last
activity, the end reason, the idle and max-duration limits and the microphone-during-playback policy.
It imports neither asyncio nor websockets; tests feed it JSON frames (tests/conversation/).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vatel_edge import protocol
from vatel_edge.errors import ProtocolError
from vatel_edge.state import Event
from vatel_edge.status import Counters

log = logging.getLogger(__name__)

#: Cut turn ids remembered to drop their late chunks (bounded; a session has far fewer turns).
MAX_CUT_TURNS = 64
#: Answered tool-call ids remembered to refuse duplicates (bounded).
MAX_ANSWERED_CALLS = 1024

MicPolicy = str  # audio.mic_during_playback: "auto", "stream" or "mute"


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Play:
    """Feed `pcm` (24 kHz mono PCM16) of `turn_id` to the player; `new_turn` when the turn changed."""

    turn_id: str
    pcm: bytes
    is_final: bool
    new_turn: bool

    def __repr__(self) -> str:  # never the audio itself in a log line
        return f"Play(turn_id={self.turn_id!r}, {len(self.pcm)} bytes, is_final={self.is_final})"


@dataclass(frozen=True)
class Cut:
    """Barge-in: stop playing `turn_id` now (None: whatever plays), said by `source`."""

    turn_id: str | None
    source: str


@dataclass(frozen=True)
class CancelTools:
    """Cancel the running tool actions marked cancel_on_interruption."""


@dataclass(frozen=True)
class RunTool:
    """Run `call` and answer it (exactly once) with a tool_call_output; then call `tool_answered`."""

    call: protocol.ToolCall


@dataclass(frozen=True)
class Fire:
    """Fire `event` on the state machine when it is legal in the current state."""

    event: Event
    reason: str = ""


@dataclass(frozen=True)
class Identified:
    """The server named the session (session_started)."""

    session_id: str


@dataclass(frozen=True)
class EndSession:
    """End the session with `reason` (issued once per session)."""

    reason: str


@dataclass(frozen=True)
class Note:
    """A timeline note: `kind` (the event type, "tool_call_output", ...), a one-line text (may quote a
    transcript or a tool's output) and structured `fields` (never transcripts, arguments or outputs)."""

    kind: str
    text: str
    fields: Mapping[str, Any] = field(default_factory=dict)


Command = Play | Cut | CancelTools | RunTool | Fire | Identified | EndSession | Note


@dataclass(frozen=True)
class Limits:
    """When a session ends by itself (session.idle_timeout_s, session.max_duration_s)."""

    idle_timeout_s: float
    max_duration_s: float


# --------------------------------------------------------------------------- the conversation


class Conversation:
    """The meaning of one session's events. Not thread-safe: one owner (the event loop) calls it."""

    def __init__(
        self,
        limits: Limits,
        *,
        mic_policy: MicPolicy = "auto",
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.mic_policy = mic_policy
        self.counters = counters if counters is not None else Counters()
        self._clock = clock
        self.started_at = clock()
        self.last_activity = self.started_at
        self.session_id: str | None = None
        self.current_turn: str | None = None
        self.end_reason = ""
        self._cut: deque[str] = deque(maxlen=MAX_CUT_TURNS)
        self._answered: deque[str] = deque(maxlen=MAX_ANSWERED_CALLS)
        self._speaking = False  # agent audio of the current turn was fed and has not drained or been cut

    # ------------------------------------------------------------------ facts the session reads

    @property
    def ended(self) -> bool:
        """An end reason is set: the session is over or ending."""
        return bool(self.end_reason)

    @property
    def agent_speaking(self) -> bool:
        """Agent audio was fed for the current turn and has neither drained nor been cut."""
        return self._speaking

    def is_cut(self, turn_id: str | None) -> bool:
        """Whether barge-in cut `turn_id`."""
        return turn_id is not None and turn_id in self._cut

    def accepts_local_barge_in(self) -> bool:
        """Whether local voice now would cut the agent (its current turn plays and was not cut yet)."""
        return self._speaking and not self.is_cut(self.current_turn)

    def mute_mic(self, playing: bool, echo_converged: bool | None) -> bool:
        """audio.mic_during_playback: send silence instead of the microphone now?

        `echo_converged` is None when no echo canceller runs. "auto" streams during playback only while a
        canceller runs and has converged (its first ~2 s of agent audio leak echo the server would take for
        the user); "mute" always mutes during playback; "stream" never does.
        """
        if not playing:
            return False
        if self.mic_policy == "auto":
            return not echo_converged
        return self.mic_policy == "mute"

    # ------------------------------------------------------------------ inputs

    def start(self) -> None:
        """The socket is open: the idle and max-duration limits count from now."""
        self.started_at = self.last_activity = self._clock()

    def receive_frame(self, frame: str | bytes) -> list[Command]:
        """One raw WebSocket frame: decoded, then `receive_event`; a malformed frame is counted and skipped."""
        try:
            event = protocol.decode_server_message(frame)
        except ProtocolError as exc:
            self.counters.bad_frames += 1
            log.debug("skipping malformed server frame: %s", exc)
            return [Note("bad_frame", str(exc), {"error": "malformed server frame"})]
        return self.receive_event(event)

    def receive_event(self, event: protocol.ServerEvent) -> list[Command]:
        """One decoded server event."""
        now = self._clock()
        if isinstance(event, protocol.ResponseAudio):
            return self._response_audio(event, now)
        out: list[Command] = [Note(event.type, protocol.describe(event), _fields(event))]
        if isinstance(event, protocol.SessionStarted):
            self.session_id = event.session_id
            out.append(Identified(event.session_id))
        elif isinstance(event, protocol.Interruption):
            # Every barge_in mode honours the server; local/both only add the local VAD, which may have cut
            # this turn already: then the server's interruption has nothing left to stop.
            if not self._speaking and self.is_cut(self.current_turn):
                log.info("server interruption: turn %s was already cut locally", self.current_turn)
            else:
                out += self._barge_in("server interruption")
        elif isinstance(event, protocol.ToolCall):
            out += self._tool_call(event)
        elif isinstance(event, protocol.SessionEnded):
            out += self.end("session_ended by server")
        elif isinstance(event, (protocol.SpeechStarted, protocol.InputAudioTranscript, protocol.SpeechStopped)):
            self.last_activity = now
        return out

    def local_voice(self, source: str = "local vad") -> list[Command]:
        """The local barge-in detector heard the user while the agent spoke (see `accepts_local_barge_in`)."""
        if not self.accepts_local_barge_in():
            return []
        return self._barge_in(source)

    def tick(self, playing: bool) -> list[Command]:
        """A tick of the clock; `playing`: the player still has agent audio queued or sounding."""
        now = self._clock()
        out: list[Command] = []
        if playing:
            self.last_activity = now
        elif self._speaking:
            self._speaking = False
            self.last_activity = now
            out.append(Fire(Event.AGENT_DONE))
        lim = self.limits
        if now - self.last_activity > lim.idle_timeout_s:
            out += self.end(f"idle for {lim.idle_timeout_s:.0f} s")
        elif now - self.started_at > lim.max_duration_s:
            out += self.end(f"max duration {lim.max_duration_s:.0f} s reached")
        return out

    def tool_answered(self, call: protocol.ToolCall, output: str) -> list[Command]:
        """A RunTool finished with `output` (already sent or failed to send)."""
        outcome = "error" if output.startswith("error:") else "ok"
        self.counters.count_tool_call(outcome)
        return [Note("tool_call_output", f"{call.tool_name} id={call.tool_call_id} -> {output}",
                     {"name": call.tool_name, "id": call.tool_call_id, "outcome": outcome})]

    def end(self, reason: str) -> list[Command]:
        """End the session (server, button, tool, idle, shutdown); the first reason wins."""
        if self.end_reason:
            return []
        self.end_reason = reason
        return [EndSession(reason)]

    def closed(self, outcome: str) -> None:
        """The socket closed with `outcome` (a SessionOutcome's text); the end reason unless one is set."""
        if not self.end_reason:
            self.end_reason = outcome

    # ------------------------------------------------------------------ meanings

    def _response_audio(self, event: protocol.ResponseAudio, now: float) -> list[Command]:
        if self.is_cut(event.turn_id):
            self.counters.late_chunks_dropped += 1
            return []
        new_turn = event.turn_id != self.current_turn
        self.current_turn = event.turn_id
        self.last_activity = now
        self._speaking = True
        return [
            Play(event.turn_id, event.audio, event.is_final, new_turn),
            Fire(Event.AGENT_AUDIO, f"turn {event.turn_id}"),
        ]

    def _barge_in(self, source: str) -> list[Command]:
        turn = self.current_turn
        if turn is not None and turn not in self._cut:
            self._cut.append(turn)
        self._speaking = False
        self.counters.interruptions += 1
        return [Cut(turn, source), CancelTools(), Fire(Event.BARGE_IN, source)]

    def _tool_call(self, call: protocol.ToolCall) -> list[Command]:
        if call.tool_call_id in self._answered:
            log.warning("duplicate toolCallId %s ignored (already answered or running)", call.tool_call_id)
            return []
        self._answered.append(call.tool_call_id)
        return [RunTool(call)]


def _fields(event: protocol.ServerEvent) -> dict[str, Any]:
    """The structured, transcript-free part of a server event's timeline note."""
    if isinstance(event, protocol.SessionStarted):
        return {"session_id": event.session_id}
    if isinstance(event, protocol.ToolCall):
        return {"name": event.tool_name, "id": event.tool_call_id}
    if isinstance(event, protocol.UnknownEvent):
        return {"event_type": event.event_type}
    return {}
