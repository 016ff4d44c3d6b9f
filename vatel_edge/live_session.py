"""The I/O of one Vatel session: opening it (`Connector`), its tasks, and the conversation's commands performed.

`LiveSession.run()` owns the session's tasks (the receiver, the input_audio sender, the ticker and the
end), feeds the conversation (conversation.py) with server events and local facts, and performs the
commands it returns on the Player, the ToolRegistry, the VatelSession and the state machine. It returns a
`SessionResult` once the session is over and every tool action has been drained or cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vatel_edge import protocol
from vatel_edge.audio.aec_path import EchoPath
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.playback import InterruptReport, Player
from vatel_edge.backoff import Backoff
from vatel_edge.config import Config
from vatel_edge.conversation import (
    CancelTools,
    Command,
    Conversation,
    Cut,
    EndSession,
    Fire,
    Identified,
    Note,
    Play,
    RunTool,
)
from vatel_edge.errors import SessionError, TokenError, VatelEdgeError
from vatel_edge.events import Emit
from vatel_edge.journal import log_context, register_secret, set_daemon_log_context
from vatel_edge.lifecycle import TaskSet
from vatel_edge.notify import Notifier
from vatel_edge.runtime import Sounds
from vatel_edge.session import SessionOutcome, VatelSession
from vatel_edge.state import Event, StateMachine
from vatel_edge.status import Counters
from vatel_edge.token import TokenProvider
from vatel_edge.tools.builtin import ToolContext
from vatel_edge.tools.registry import ToolRegistry
from vatel_edge.wake import SessionAudio, WakeGate

log = logging.getLogger(__name__)

#: How often the ticker tells the conversation the time and whether the player still plays.
TICK_PERIOD_S = 0.05
#: Longest tail of agent audio played after the session ended before it is cut.
FINAL_AUDIO_MAX_S = 15.0

EventSink = Callable[[str, str], None]  # the daemon's `on_event(kind, text)` for tests and the demo


@dataclass(frozen=True)
class SessionResult:
    """How one session ended."""

    end_reason: str  # the conversation's end reason (or the socket's outcome); "closed" when neither
    outcome: SessionOutcome | None
    session_id: str | None


@dataclass(frozen=True)
class SessionParts:
    """What a live session acts on (the runtime's components and the daemon's sinks)."""

    player: Player
    tools: ToolRegistry
    echo: EchoPath | None
    sounds: Sounds
    gate: WakeGate
    sm: StateMachine
    notifier: Notifier
    emit: Emit
    tool_context: Callable[[str | None], ToolContext]  # the context for a tool call of session `id`
    frame_ms: int
    close_timeout_s: float
    on_sent: Callable[[CaptureFrame, bytes], None] | None = None  # each input_audio sent, with its frame (recording)


class LiveSession:
    """One open session: `await run()` until it ends; `end(reason)` ends it from outside."""

    def __init__(self, session: VatelSession, conversation: Conversation, audio: SessionAudio,
                 parts: SessionParts) -> None:
        self._session = session
        self.conversation = conversation
        self._audio = audio
        self._p = parts
        self._ended = asyncio.Event()
        self._tool_tasks = TaskSet()
        self._last_cut: tuple[str, InterruptReport] | None = None  # a Cut waiting for its CancelTools

    @property
    def session_id(self) -> str | None:
        """The server's session id, once session_started said it."""
        return self.conversation.session_id

    async def run(self, stopping: Callable[[], bool] = lambda: False) -> SessionResult:
        """CONNECTED to LISTENING: converse until the server, a limit or `end()` ends the session, close the
        socket, then let the agent's last words play out (cut instead when `stopping()`, a shutdown)."""
        p, conv = self._p, self.conversation
        p.player.forget_cut_turns()  # turn ids are per session (the conversation's cut list is too)
        p.sm.fire(Event.CONNECTED)
        p.sounds.play("wake")
        conv.start()
        if conv.ended:  # end() came while connecting (a shutdown, a button)
            self._ended.set()
        async with self._session:
            tasks = TaskSet()
            try:
                receiver = tasks.spawn(self._receive(), "session receiver")
                tasks.spawn(self._send_audio(), "input_audio sender")
                tasks.spawn(self._tick(), "session ticker")
                ender = tasks.spawn(self._ended.wait(), "session end")
                await asyncio.wait({receiver, ender}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await tasks.cancel_all()
                await p.tools.drain(timeout=p.close_timeout_s)
                await self._tool_tasks.cancel_all()
        outcome = self._session.outcome
        result = SessionResult(conv.end_reason or (str(outcome) if outcome else "closed"), outcome, conv.session_id)
        p.emit("session_closed", result.end_reason, reason=result.end_reason, session_id=result.session_id)
        if p.sm.can(Event.SESSION_END):
            p.sm.fire(Event.SESSION_END, conv.end_reason)
        await self._finish(stopping())
        return result

    async def _finish(self, stopping: bool) -> None:
        """ENDING: let the agent's last words play out (bounded), play the end sound, then LISTENING.

        Going back to LISTENING while the agent still talks would let the wake trigger hear the
        device's own voice, so the tail plays first; a shutdown cuts it instead.
        """
        player = self._p.player
        if player.playing and (stopping or not await player.wait_idle(timeout=FINAL_AUDIO_MAX_S)):
            player.interrupt()
        self._p.sounds.play("end")
        self._p.gate.session_ended()
        self._p.sm.fire(Event.ENDED)

    def end(self, reason: str) -> bool:
        """End the session (button, tool, control socket, shutdown); False when it is already ending."""
        commands = self.conversation.end(reason)
        self.perform(commands)
        return bool(commands)

    # ------------------------------------------------------------------ mic_path.BargeInTarget

    def accepts_local_barge_in(self) -> bool:
        """Whether voice now would cut the agent (see Conversation.accepts_local_barge_in)."""
        return self.conversation.accepts_local_barge_in()

    def local_voice(self, source: str) -> None:
        """The local barge-in VAD heard the user while the agent played."""
        self.perform(self.conversation.local_voice(source))

    # ------------------------------------------------------------------ commands

    def perform(self, commands: list[Command]) -> None:
        """Carry out the conversation's commands, in order."""
        p = self._p
        for cmd in commands:
            if isinstance(cmd, Play):
                if cmd.new_turn:
                    set_daemon_log_context(turn_id=cmd.turn_id)
                p.player.feed(cmd.turn_id, cmd.pcm, cmd.is_final)
            elif isinstance(cmd, Fire):
                p.sm.fire_if(cmd.event, cmd.reason)
            elif isinstance(cmd, Note):
                p.emit(cmd.kind, cmd.text, **cmd.fields)
            elif isinstance(cmd, Cut):
                self._last_cut = (cmd.source, p.player.interrupt())
            elif isinstance(cmd, CancelTools):
                cancelled = p.tools.cancel_interruptible()
                self._emit_barge_in(cancelled)
            elif isinstance(cmd, RunTool):
                self._tool_tasks.spawn(self._answer_tool_call(cmd.call), f"tool {cmd.call.tool_name}")
            elif isinstance(cmd, Identified):
                set_daemon_log_context(session_id=cmd.session_id)
                p.notifier.status(f"in session {cmd.session_id}")
            elif isinstance(cmd, EndSession):
                self._ended.set()

    def _emit_barge_in(self, cancelled: int) -> None:
        """The timeline note of a barge-in: who cut which turn, how much of it was heard, what was cancelled."""
        cut, self._last_cut = self._last_cut, None
        if cut is None:
            return
        source, report = cut
        heard = f", {report.heard_ms / 1000:.2f} s of it heard"
        turn = self.conversation.current_turn
        self._p.emit("barge_in", f"{source}: turn {turn} cut{heard}; {cancelled} tool action(s) cancelled",
                     source=source, turn_id=turn, heard_ms=round(report.heard_ms), tools_cancelled=cancelled)

    # ------------------------------------------------------------------ tasks

    async def _receive(self) -> None:
        session = self._session
        async for event in session.events():
            try:
                self.perform(self.conversation.receive_event(event))
            except VatelEdgeError as exc:
                self.conversation.counters.bad_frames += 1
                log.warning("could not handle %s: %s", event.type, exc)
        self.conversation.counters.bad_frames += session.stats.bad_frames
        if session.outcome is not None:
            self.conversation.closed(str(session.outcome))

    async def _send_audio(self) -> None:
        """Drain the held audio into input_audio, in capture order; silence instead while muted by policy."""
        silence = bytes(VATEL_FORMAT.nbytes(self._p.frame_ms))
        player, echo = self._p.player, self._p.echo
        while True:
            frame = await self._audio.get()
            pcm = frame.pcm
            if self.conversation.mute_mic(player.playing, echo.converged if echo is not None else None):
                pcm = silence[: len(pcm)]
            try:
                await self._session.send_input_audio(pcm)
            except SessionError as exc:
                # The socket is gone: the receiver ends too and records the session's real outcome.
                log.info("input_audio stopped: %s", exc)
                return
            if self._p.on_sent is not None:
                self._p.on_sent(frame, pcm)

    async def _tick(self) -> None:
        """Idle and max-duration limits; the end of agent speech."""
        while True:
            await asyncio.sleep(TICK_PERIOD_S)
            self.perform(self.conversation.tick(self._p.player.playing))

    async def _answer_tool_call(self, call: protocol.ToolCall) -> None:
        ctx = self._p.tool_context(self.conversation.session_id)
        with log_context(tool=call.tool_name, tool_call_id=call.tool_call_id):
            output = await self._p.tools.call(call, ctx)
            self.perform(self.conversation.tool_answered(call, output))
            try:
                await self._session.send_tool_call_output(call.tool_call_id, output)
            except SessionError as exc:
                log.warning("could not answer tool call %s: %s", call.tool_call_id, exc)


class DaemonToolContext:
    """What a tool call may ask of the daemon during session `session_id` (tools.builtin.ToolContext)."""

    def __init__(self, session_id: str | None, set_volume: Callable[[int], None],
                 end_session: Callable[[str], object], device_status: Callable[[], dict[str, Any]]) -> None:
        self.session_id = session_id
        self._set_volume = set_volume
        self._end_session = end_session
        self._device_status = device_status

    def set_volume(self, level: int) -> None:
        self._set_volume(level)

    def end_session(self) -> None:
        self._end_session("end_session tool")

    def device_status(self) -> dict[str, Any]:
        return self._device_status()


class Connector:
    """Opens sessions: a fresh token, then the WebSocket. A failure is counted, backed off (no automatic
    wake until the backoff passed), said once in the log and in the sd_notify STATUS, and returns None."""

    def __init__(self, counters: Counters, notifier: Notifier, sm: StateMachine, emit: Emit,
                 set_error: Callable[[str], None]) -> None:
        self._counters = counters
        self._notifier = notifier
        self._sm = sm
        self._emit = emit
        self._set_error = set_error
        self._backoff = Backoff(1.0, 2.0, 60.0)

    async def open(self, cfg: Config, tokens: TokenProvider, gate: WakeGate, sounds: Sounds) -> VatelSession | None:
        """The open session, or None after CONNECT_FAILED (the state is LISTENING again)."""
        try:
            token = await tokens.get()
            register_secret(token.value)
            session = await VatelSession.connect(
                cfg.vatel.ws_base, token.value, open_timeout=cfg.vatel.connect_timeout_s,
                close_timeout=cfg.session.close_timeout_s,
            )
        except (TokenError, SessionError) as exc:
            if isinstance(exc, TokenError):
                self._counters.token_failures += 1
            else:
                self._counters.connection_failures += 1
            delay = self._backoff.next_delay()
            self._set_error(f"could not open a session: {exc}")
            if self._backoff.attempts == 1:
                log.error("could not open a session: %s (retrying wakes after %.0f s)", exc, delay)
            gate.block_for(delay)
            self._sm.fire(Event.CONNECT_FAILED, exc.__class__.__name__)
            # After the transition (which says "listening"): why the last wake failed, and when it retries.
            provider = tokens.status
            if isinstance(exc, TokenError) and provider != "ready":
                self._notifier.status(provider if provider.startswith("offline") else f"offline: {provider}")
            else:
                self._notifier.status(f"offline: {exc}; retrying in {max(1, round(delay))} s")
            self._emit("error", str(exc), error=str(exc), stage="connect")
            sounds.play("error")
            return None
        self._backoff.reset()
        return session
