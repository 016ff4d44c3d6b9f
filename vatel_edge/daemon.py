"""The long-running loop: listen locally, wake, run a Vatel session with full-duplex audio, listen again.

One capture pump owns the microphone. While LISTENING its frames feed the pre-roll and the wake
trigger; from the wake on they feed the session's held audio (SessionAudio), which a sender task
drains into `input_audio` once the WebSocket is open. Every transition goes through the state
machine (state.py). Errors of the network, the server, tools and devices are contained here: they
end a session or get retried, never the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from vatel_edge import protocol
from vatel_edge.audio.aec_path import EchoPath, check_duplex, open_echo_path
from vatel_edge.audio.capture import Capture, CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.playback import Player
from vatel_edge.audio.vad import VoiceDetector
from vatel_edge.audio.wav import load_wav
from vatel_edge.backoff import Backoff
from vatel_edge.config import Config, load_config, read_api_key
from vatel_edge.control import ControlServer, DaemonStatus
from vatel_edge.control import Counters as StatusCounters
from vatel_edge.errors import ConfigError, SessionError, TokenError, VatelEdgeError
from vatel_edge.journal import log_context, register_secret, set_daemon_log_context
from vatel_edge.lifecycle import cancel_and_wait
from vatel_edge.notify import Notifier, Watchdog
from vatel_edge.session import VatelSession
from vatel_edge.state import Event, State, StateMachine, Transition
from vatel_edge.token import TokenProvider
from vatel_edge.tools.gpio import ButtonWatch, GpioBackend, make_gpio_backend
from vatel_edge.tools.registry import ToolRegistry
from vatel_edge.wake import PrerollBuffer, SessionAudio, WakeGate

log = logging.getLogger(__name__)

#: Longest audio held for a session that cannot send yet (connect + stalls); beyond it the oldest goes.
MAX_HELD_AUDIO_S = 30.0
#: How often the session supervisor checks timeouts and the end of agent speech.
SUPERVISE_PERIOD_S = 0.05
#: Wait this long for the first capture frame before declaring READY anyway (and saying why).
READY_WAIT_S = 10.0
#: Longest tail of agent audio played after the session ended before it is cut.
FINAL_AUDIO_MAX_S = 15.0
#: Interrupted turn ids remembered to drop their late chunks (bounded).
MAX_INTERRUPTED_TURNS = 64

EventSink = Callable[[str, str], None]


@dataclass
class Counters:
    """What `vatel-edge status` reports."""

    wakes: int = 0
    sessions: int = 0
    interruptions: int = 0
    tool_calls: Counter[str] = field(default_factory=Counter)
    token_failures: int = 0
    connection_failures: int = 0
    late_chunks_dropped: int = 0
    bad_frames: int = 0


class _ToolContext:
    """What tools may ask of the daemon during a session."""

    def __init__(self, daemon: Daemon, session_id: str | None) -> None:
        self._daemon = daemon
        self.session_id = session_id

    def set_volume(self, level: int) -> None:
        self._daemon.set_volume(level)

    def end_session(self) -> None:
        self._daemon.end_session("end_session tool")

    def device_status(self) -> dict[str, Any]:
        return self._daemon.status()


class Daemon:
    """The daemon; `await run()` until `stop()`. Tests and the demo drive it in-process."""

    def __init__(
        self,
        cfg: Config,
        *,
        api_key: str,
        notifier: Notifier | None = None,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._api_key = api_key
        register_secret(api_key)
        self.notifier = notifier or Notifier()
        self._on_event = on_event
        self._clock = clock
        self.sm = StateMachine(clock)
        self.sm.add_listener(self._on_transition)
        self.counters = Counters()
        self.started_at = clock()
        self.last_error: str | None = None
        self._last_error_at: float | None = None
        self._session_started_at = clock()
        self._last_activity = clock()
        self.session_id: str | None = None
        self._stop = asyncio.Event()
        self._first_frame = asyncio.Event()
        self._reload_cfg: Config | None = None
        self._restart = asyncio.Event()
        self._wakes: asyncio.Queue[str] = asyncio.Queue(maxsize=1)  # overflow: a second wake is ignored
        self._session_audio: SessionAudio | None = None
        self._end_session: asyncio.Event | None = None
        self._end_reason = ""
        self._interrupted: deque[str] = deque(maxlen=MAX_INTERRUPTED_TURNS)
        self._current_turn: str | None = None
        self._answered: deque[str] = deque(maxlen=1024)
        self._state_waiters: list[tuple[State, asyncio.Future[None]]] = []
        # Components, present while run() is inside its exit stack.
        self.capture: Capture | None = None
        self.player: Player | None = None
        self.tokens: TokenProvider | None = None
        self.tools: ToolRegistry | None = None
        self.gpio: GpioBackend | None = None
        self._preroll = PrerollBuffer(cfg.wake.preroll_ms, cfg.audio.frame_ms)
        self._vad: VoiceDetector | None = None
        self.echo: EchoPath | None = None  # echo cancellation of the capture path (None: none runs)
        self._barge_vad: VoiceDetector | None = None  # session.barge_in local/both: the VAD during playback
        self._barge_armed = False  # _barge_vad has seen frames of the current stretch of playback
        self._gate = WakeGate(cfg.wake.cooldown_ms / 1000.0, clock)
        self._connect_backoff = Backoff(1.0, 2.0, 60.0)
        self._sounds: dict[str, bytes] = {}

    # ------------------------------------------------------------------ public control

    @property
    def state(self) -> State:
        """Current conversation state."""
        return self.sm.state

    def stop(self) -> None:
        """Shut down: end the session politely, close the devices, return from run()."""
        self._stop.set()
        self.end_session("shutdown")

    def trigger(self, reason: str = "manual") -> bool:
        """Start a session now (any wake mode); False when one is already running."""
        if self.sm.state is not State.LISTENING or self.capture is None:
            return False
        self._gate.clear()
        return self._begin_wake(reason)

    def end_session(self, reason: str) -> bool:
        """End the running session (button, tool, shutdown); False when there is none."""
        if self._end_session is None or self._end_session.is_set():
            return False
        self._end_reason = reason
        self._end_session.set()
        return True

    def request_reload(self) -> bool:
        """SIGHUP: re-read the config; keep the old one (and say why) when the new one is invalid."""
        self.notifier.reloading()
        if self.cfg.path is None:
            log.error("reload: the daemon was started without a config file; nothing to reload")
            self.notifier.ready_after_reload()
            return False
        try:
            new = load_config(self.cfg.path)
            new_key = read_api_key(new.vatel)
            check_duplex(new)
        except ConfigError as exc:
            self._set_error(f"reload refused: {exc.problems[0]}")
            log.error("reload refused, keeping the running config:\n%s", exc)
            self.notifier.ready_after_reload()
            return False
        register_secret(new_key)
        self._api_key = new_key
        self._reload_cfg = new
        self._restart.set()
        log.info("reload: new config accepted; applying it %s", "now" if self.state is State.LISTENING else
                 "when the session ends")
        return True

    def set_volume(self, level: int) -> None:
        """Agent audio volume 0..100 (100 = the configured audio.volume)."""
        if self.player is not None:
            self.player.set_volume(self.cfg.audio.volume * max(0, min(100, level)) / 100.0)

    async def wait_state(self, state: State, timeout: float) -> None:
        """Wait until the state machine enters `state` (tests, demo)."""
        if self.sm.state is state:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._state_waiters.append((state, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._state_waiters.remove((state, fut))

    def status(self) -> dict[str, Any]:
        """Everything `vatel-edge status` shows (control.DaemonStatus as a dict)."""
        cap = self.capture.stats if self.capture is not None else {}
        now = self._clock()
        return DaemonStatus(
            state=self.sm.state.value,
            uptime_s=round(now - self.started_at, 1),
            wake_mode=self.cfg.wake.mode,
            session_id=self.session_id,
            session_age_s=round(now - self._session_started_at, 1) if self._end_session is not None else None,
            token_status=self.tokens.status if self.tokens is not None else "stopped",
            counters=StatusCounters(
                wakes=self.counters.wakes,
                sessions=self.counters.sessions,
                sessions_failed=self.counters.token_failures + self.counters.connection_failures,
                interruptions=self.counters.interruptions,
                tool_calls=dict(self.counters.tool_calls),
                capture_overruns=int(cap.get("overruns", 0)),
                capture_dropped=int(cap.get("dropped", 0)),
                token_failures=self.counters.token_failures,
                connection_failures=self.counters.connection_failures,
                bad_frames=self.counters.bad_frames,
                late_chunks_dropped=self.counters.late_chunks_dropped,
            ),
            last_error=self.last_error,
            last_error_at=self._last_error_at,
        ).to_dict()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 triggers a session."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGUSR1, lambda: self.trigger("SIGUSR1"))

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Run until stop(); a valid SIGHUP reload rebuilds the components between sessions."""
        try:
            while True:
                await self._run_once()
                if self._stop.is_set() or self._reload_cfg is None:
                    break
                self._apply_reload(self._reload_cfg)
        finally:
            if self.sm.can(Event.STOP):
                self.sm.fire(Event.STOP, "shutdown")
            self.notifier.stopping()
            if self.sm.can(Event.STOPPED):
                self.sm.fire(Event.STOPPED)
            set_daemon_log_context(state=None, session_id=None, turn_id=None)

    def _apply_reload(self, new: Config) -> None:
        self.cfg = new
        self._reload_cfg = None
        self._restart.clear()
        self._preroll = PrerollBuffer(new.wake.preroll_ms, new.audio.frame_ms)
        self._gate = WakeGate(new.wake.cooldown_ms / 1000.0, self._clock)
        log.info("reload: applied config %s", new.path)

    async def _run_once(self) -> None:
        cfg = self.cfg
        check_duplex(cfg)  # ConfigError at start: a named echo engine missing, or local barge-in without one
        async with AsyncExitStack() as stack:
            self.gpio = make_gpio_backend(cfg.gpio.backend)
            stack.callback(self._forget_components)
            stack.callback(self.gpio.close)
            self.tools = await stack.enter_async_context(
                ToolRegistry(cfg.tools, self.gpio, max_concurrency=cfg.session.max_tool_concurrency)
            )
            self.tokens = await stack.enter_async_context(TokenProvider(cfg.vatel, self._api_key))
            self.echo = open_echo_path(cfg.audio)
            stack.callback(self._close_echo)  # after the player's writer thread has stopped
            self.player = await stack.enter_async_context(Player(cfg.audio))
            if self.echo is not None:
                self.player.on_written = self.echo.on_written
                self.player.on_dropped = self.echo.on_dropped
            self.capture = await stack.enter_async_context(Capture(cfg.audio))
            self._vad = VoiceDetector(cfg.wake) if cfg.wake.mode == "vad" else None
            local = cfg.session.barge_in in ("local", "both") and self.echo is not None
            barge_wake = dataclasses.replace(
                cfg.wake,
                min_speech_ms=cfg.session.barge_in_min_speech_ms,
                window_ms=max(cfg.wake.window_ms, cfg.session.barge_in_min_speech_ms),
            )
            self._barge_vad = VoiceDetector(barge_wake) if local else None
            self._log_duplex()
            self._load_sounds()
            await stack.enter_async_context(ControlServer(cfg.control.socket_path, self._control))
            watch: ButtonWatch | None = None
            if cfg.wake.mode == "button":
                # Requested before READY: a missing chip or line is a start-up error naming both.
                w = cfg.wake
                watch = await stack.enter_async_context(
                    self.gpio.watch_button(w.button_chip, w.button_line, active_low=w.button_active_low,
                                           debounce_ms=w.debounce_ms)
                )
            await stack.enter_async_context(
                Watchdog(self.notifier, lambda: self.capture.last_frame_at if self.capture else None,
                         max_frame_age_s=max(2.0, 10 * cfg.audio.frame_ms / 1000.0))
            )
            tasks = _TaskSet()
            stack.push_async_callback(tasks.cancel_all)
            tasks.spawn(self._pump(), "capture pump")
            await self._wait_first_frame()
            if self.sm.state is State.STARTING:
                self.sm.fire(Event.STARTED)
                self.notifier.ready()
            else:  # components rebuilt after a reload
                self.notifier.ready_after_reload()
                self._listen_quietly()
            if cfg.wake.mode == "always":
                tasks.spawn(self._always_loop(), "always-on wake")
            if watch is not None:
                tasks.spawn(self._button_loop(watch), "button wake")
            await self._serve(tasks)

    def _forget_components(self) -> None:
        self.capture = self.player = None
        self.tokens = None
        self.tools = None
        self.gpio = None

    def _close_echo(self) -> None:
        echo, self.echo = self.echo, None
        if echo is not None:
            echo.close()

    def _log_duplex(self) -> None:
        """Say once at start how the microphone is treated while the agent speaks, and who barges in."""
        engine = self.echo.name if self.echo is not None else "none"
        policy = self.cfg.audio.mic_during_playback
        if policy == "auto":
            mic = "muted" if self.echo is None else "streamed once the canceller has converged (muted before)"
        else:
            mic = "muted" if policy == "mute" else "streamed"
        if self.echo is None and self.cfg.audio.echo_cancel == "auto":
            log.warning("no echo canceller: the microphone is %s while the agent speaks", mic)
        log.info("echo cancellation: %s; microphone %s during agent speech; barge-in by %s", engine, mic,
                 "the server" if self._barge_vad is None else "the local VAD and the server")

    async def _wait_first_frame(self) -> None:
        assert self.capture is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_frame.wait(), READY_WAIT_S)
        if not self._first_frame.is_set():
            self._set_error("microphone not delivering audio yet")
            log.warning("no capture frames after %.0f s; ready anyway, still retrying the microphone",
                        READY_WAIT_S)

    async def _serve(self, tasks: _TaskSet) -> None:
        """Wait for wakes and run one session at a time until stop or reload."""
        stop = asyncio.ensure_future(self._stop.wait())
        restart = asyncio.ensure_future(self._restart.wait())
        try:
            while not self._stop.is_set() and not self._restart.is_set():
                wake = asyncio.ensure_future(self._wakes.get())
                done, _ = await asyncio.wait({wake, stop, restart}, return_when=asyncio.FIRST_COMPLETED)
                if wake not in done:
                    await cancel_and_wait(wake)
                    break
                await self._session(wake.result())
        finally:
            await cancel_and_wait(stop, restart)

    async def _pump(self) -> None:
        """The only reader of the microphone: echo cancellation first, then pre-roll and wake while listening,
        session audio (and the local barge-in VAD) after."""
        assert self.capture is not None
        capture = self.capture
        while True:
            frame = await capture.read()
            self._first_frame.set()
            if self.echo is not None:
                frame = self.echo.process(frame)
            held = self._session_audio
            if held is not None:
                if self._barge_vad is not None:
                    self._local_barge_in(frame.pcm)
                held.put(frame)
                continue
            self._preroll.append(frame)
            if frame.wake and self.sm.state is State.LISTENING:
                self._begin_wake("voice")  # the capture thread's VAD fired on this frame

    def _listen_quietly(self) -> None:
        """LISTENING: the capture thread keeps the pre-roll and runs the wake VAD itself, waking the event
        loop only when it fires (or when another trigger ends quiet listening); see Capture.listen."""
        capture = self.capture
        if capture is None or capture.listening:
            return
        if self._vad is not None:
            self._vad.reset()  # safe: the capture thread only uses the VAD once the listener is set
        self._preroll.take()  # the capture ring is the pre-roll from now on
        keep = -(-self.cfg.wake.preroll_ms // self.cfg.audio.frame_ms)
        capture.listen(self._wake_in_capture_thread, keep_frames=keep)

    def _wake_in_capture_thread(self, frame: CaptureFrame) -> bool:
        """Runs in the capture thread while listening: the wake VAD (vad mode) behind the wake gate."""
        vad = self._vad
        return vad is not None and vad.process(frame.pcm).triggered and self._gate.open()

    def _local_barge_in(self, pcm: bytes) -> None:
        """session.barge_in local/both: voice on the echo-cancelled mic while the agent plays cuts playback.

        Debounced by session.barge_in_min_speech_ms of voiced audio; armed only once the echo canceller has
        converged, and counted afresh for every stretch of playback."""
        assert self._barge_vad is not None
        playing = self.player is not None and self.player.playing
        cut = self._current_turn is not None and self._current_turn in self._interrupted  # its tail may still sound
        if not playing or cut or self.echo is None or not self.echo.converged:
            if self._barge_armed:
                self._barge_vad.reset()
                self._barge_armed = False
            return
        self._barge_armed = True
        if self._barge_vad.process(pcm).triggered:
            self._barge_vad.reset()
            self._barge_armed = False
            self.barge_in("local vad")

    def _begin_wake(self, reason: str) -> bool:
        """The trigger point: the pre-roll becomes the head of the session's audio, now."""
        if self.sm.state is not State.LISTENING or self._wakes.full():
            return False
        max_frames = int(MAX_HELD_AUDIO_S * 1000 / self.cfg.audio.frame_ms)
        self._session_audio = SessionAudio(self._preroll.take(), max_frames)
        self.sm.fire(Event.WAKE, reason)
        self.counters.wakes += 1
        self._emit("wake", reason)
        self._wakes.put_nowait(reason)
        return True

    async def _always_loop(self) -> None:
        """Kiosk mode: open a session whenever none runs, with backoff when the service is unreachable."""
        while True:
            if self.sm.state is State.LISTENING and self._gate.open():
                self._begin_wake("always-on")
            await asyncio.sleep(max(0.05, self._gate.remaining()))

    async def _button_loop(self, watch: ButtonWatch) -> None:
        """Button mode: a press starts a session, a second press ends it."""
        async for _press in watch:
            if self.sm.state is State.LISTENING:
                self.trigger("button")
            else:
                self.end_session("button")

    # ------------------------------------------------------------------ one session

    async def _session(self, reason: str) -> None:
        audio = self._session_audio
        assert audio is not None and self.tokens is not None
        self._end_session = asyncio.Event()
        self._end_reason = ""
        self.session_id = None
        self._answered.clear()  # toolCallIds are unique within a session; another session may reuse one
        try:
            session = await self._connect()
            if session is None:
                return
            self._connect_backoff.reset()
            self.sm.fire(Event.CONNECTED)
            self.counters.sessions += 1
            self._play_sound("wake")
            async with session:
                await self._converse(session, audio)
            outcome = session.outcome
            self._emit("session_closed", self._end_reason or (str(outcome) if outcome else "closed"))
            if self.sm.can(Event.SESSION_END):
                self.sm.fire(Event.SESSION_END, self._end_reason)
            await self._finish_session()
        finally:
            audio.close()
            self._session_audio = None
            self._end_session = None
            self.session_id = None
            set_daemon_log_context(session_id=None, turn_id=None)

    async def _connect(self) -> VatelSession | None:
        assert self.tokens is not None
        try:
            token = await self.tokens.get()
            register_secret(token.value)
            session = await VatelSession.connect(
                self.cfg.vatel.ws_base, token.value, open_timeout=self.cfg.vatel.connect_timeout_s,
                close_timeout=self.cfg.session.close_timeout_s,
            )
        except (TokenError, SessionError) as exc:
            if isinstance(exc, TokenError):
                self.counters.token_failures += 1
            else:
                self.counters.connection_failures += 1
            delay = self._connect_backoff.next_delay()
            self._set_error(f"could not open a session: {exc}")
            if self._connect_backoff.attempts == 1:
                log.error("could not open a session: %s (retrying wakes after %.0f s)", exc, delay)
            self._gate.block_for(delay)
            self.sm.fire(Event.CONNECT_FAILED, exc.__class__.__name__)
            # After the transition (which says "listening"): why the last wake failed, and when it retries.
            provider = self.tokens.status
            if isinstance(exc, TokenError) and provider != "ready":
                self.notifier.status(provider if provider.startswith("offline") else f"offline: {provider}")
            else:
                self.notifier.status(f"offline: {exc}; retrying in {max(1, round(delay))} s")
            self._emit("error", str(exc))
            self._play_sound("error")
            return None
        return session

    async def _converse(self, session: VatelSession, audio: SessionAudio) -> None:
        assert self._end_session is not None
        tasks = _TaskSet()
        self._last_activity = self._clock()
        self._session_started_at = self._clock()
        self._tool_tasks = _TaskSet()
        try:
            receiver = tasks.spawn(self._receive(session), "session receiver")
            tasks.spawn(self._send_audio(session, audio), "input_audio sender")
            tasks.spawn(self._supervise(), "session supervisor")
            ender = tasks.spawn(self._end_session.wait(), "session end")
            await asyncio.wait({receiver, ender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await tasks.cancel_all()
            if self.tools is not None:
                await self.tools.drain(timeout=self.cfg.session.close_timeout_s)
            await self._tool_tasks.cancel_all()

    async def _finish_session(self) -> None:
        """ENDING: let the agent's last words play out (bounded), play the end sound, then LISTENING.

        Going back to LISTENING while the agent still talks would let the wake trigger hear the
        device's own voice, so the tail plays first; a shutdown cuts it instead.
        """
        player = self.player
        if (
            player is not None
            and player.playing
            and (self._stop.is_set() or not await player.wait_idle(timeout=FINAL_AUDIO_MAX_S))
        ):
            player.interrupt()
        self._play_sound("end")
        self._gate.session_ended()
        self.sm.fire(Event.ENDED)

    async def _send_audio(self, session: VatelSession, audio: SessionAudio) -> None:
        """Drain the held audio into input_audio, in capture order; mute it while the agent speaks if told."""
        silence = bytes(VATEL_FORMAT.nbytes(self.cfg.audio.frame_ms))
        while True:
            frame = await audio.get()
            pcm = frame.pcm
            if self.player is not None and self.player.playing and self._mute_during_playback():
                pcm = silence[: len(pcm)]
            try:
                await session.send_input_audio(pcm)
            except SessionError as exc:
                # The socket is gone: the receiver ends too and records the session's real outcome.
                log.info("input_audio stopped: %s", exc)
                return

    def _mute_during_playback(self) -> bool:
        """audio.mic_during_playback: auto streams only while an echo canceller is running and has converged
        (its first ~2 s of agent audio leak echo the server would take for the user)."""
        policy = self.cfg.audio.mic_during_playback
        if policy == "auto":
            return self.echo is None or not self.echo.converged
        return policy == "mute"

    async def _receive(self, session: VatelSession) -> None:
        async for event in session.events():
            try:
                self._on_server_event(session, event)
            except VatelEdgeError as exc:
                self.counters.bad_frames += 1
                log.warning("could not handle %s: %s", event.type, exc)
        self.counters.bad_frames += session.stats.bad_frames
        outcome = session.outcome
        if outcome is not None and not self._end_reason:
            self._end_reason = str(outcome)

    def _on_server_event(self, session: VatelSession, event: protocol.ServerEvent) -> None:
        now = self._clock()
        if isinstance(event, protocol.ResponseAudio):
            if event.turn_id in self._interrupted:
                self.counters.late_chunks_dropped += 1
                return
            assert self.player is not None
            if event.turn_id != self._current_turn:
                set_daemon_log_context(turn_id=event.turn_id)
            self._current_turn = event.turn_id
            self.player.feed(event.turn_id, event.audio, event.is_final)
            self._last_activity = now
            self.sm.fire_if(Event.AGENT_AUDIO, f"turn {event.turn_id}")
            return
        self._emit(event.type, protocol.describe(event))
        if isinstance(event, protocol.SessionStarted):
            self.session_id = event.session_id
            set_daemon_log_context(session_id=event.session_id)
            self.notifier.status(f"in session {event.session_id}")
        elif isinstance(event, protocol.Interruption):
            # Every barge_in mode honours the server; local/both only add the local VAD (which may have cut
            # this turn already: then the server's interruption has nothing left to stop).
            playing = self.player is not None and self.player.playing
            if not playing and self._current_turn is not None and self._current_turn in self._interrupted:
                log.info("server interruption: turn %s was already cut locally", self._current_turn)
            else:
                self.barge_in("server interruption")
        elif isinstance(event, protocol.ToolCall):
            self._start_tool_call(session, event)
        elif isinstance(event, protocol.SessionEnded):
            self.end_session("session_ended by server")
        elif isinstance(event, (protocol.SpeechStarted, protocol.InputAudioTranscript, protocol.SpeechStopped)):
            self._last_activity = now

    def barge_in(self, source: str) -> None:
        """The user interrupted: cut playback now, ignore the turn's late chunks, cancel what should stop."""
        turn = self._current_turn
        report = self.player.interrupt() if self.player is not None else None
        if turn is not None:
            self._interrupted.append(turn)
        cancelled = self.tools.cancel_interruptible() if self.tools is not None else 0
        self.counters.interruptions += 1
        self.sm.fire_if(Event.BARGE_IN, source)
        heard = ""
        if report is not None:
            heard = f", {report.heard_ms / 1000:.2f} s of it heard"
        self._emit("barge_in", f"{source}: turn {turn} cut{heard}; {cancelled} tool action(s) cancelled")

    def _start_tool_call(self, session: VatelSession, call: protocol.ToolCall) -> None:
        if call.tool_call_id in self._answered:
            log.warning("duplicate toolCallId %s ignored (already answered or running)", call.tool_call_id)
            return
        self._answered.append(call.tool_call_id)
        self._tool_tasks.spawn(self._answer_tool_call(session, call), f"tool {call.tool_name}")

    async def _answer_tool_call(self, session: VatelSession, call: protocol.ToolCall) -> None:
        assert self.tools is not None
        ctx = _ToolContext(self, self.session_id)
        with log_context(tool=call.tool_name, tool_call_id=call.tool_call_id):
            output = await self.tools.call(call, ctx)
            outcome = "error" if output.startswith("error:") else "ok"
            self.counters.tool_calls[outcome] += 1
            self._emit("tool_call_output", f"{call.tool_name} id={call.tool_call_id} -> {output}")
            try:
                await session.send_tool_call_output(call.tool_call_id, output)
            except SessionError as exc:
                log.warning("could not answer tool call %s: %s", call.tool_call_id, exc)

    async def _supervise(self) -> None:
        """Idle and max-duration timeouts; the end of agent speech."""
        s = self.cfg.session
        while True:
            await asyncio.sleep(SUPERVISE_PERIOD_S)
            now = self._clock()
            playing = self.player is not None and self.player.playing
            if playing:
                self._last_activity = now
            elif self.sm.state is State.AGENT_SPEAKING:
                self.sm.fire(Event.AGENT_DONE)
                self._last_activity = now
            if now - self._last_activity > s.idle_timeout_s:
                self.end_session(f"idle for {s.idle_timeout_s:.0f} s")
            elif now - self._session_started_at > s.max_duration_s:
                self.end_session(f"max duration {s.max_duration_s:.0f} s reached")

    # ------------------------------------------------------------------ helpers

    def _on_transition(self, tr: Transition) -> None:
        set_daemon_log_context(state=tr.new.value)
        if tr.new is State.LISTENING:
            self._listen_quietly()
        elif tr.old is State.LISTENING and self.capture is not None:
            self.capture.listen(None)  # the ring (pre-roll) follows in order, into the session's audio
        if tr.new is State.LISTENING:
            offline = self.tokens.status if self.tokens is not None else "ready"
            self.notifier.status("listening" if offline == "ready" else f"listening; {offline}")
        elif tr.new is State.CONNECTING:
            self.notifier.status("connecting")
        for want, fut in list(self._state_waiters):
            if want is tr.new and not fut.done():
                fut.set_result(None)
        self._emit("state", f"{tr.old.value} -> {tr.new.value} ({tr.event.value})")

    def _set_error(self, text: str) -> None:
        self.last_error = text
        self._last_error_at = time.time()

    def _emit(self, kind: str, text: str) -> None:
        if self._on_event is not None:
            self._on_event(kind, text)

    def _load_sounds(self) -> None:
        fb = self.cfg.feedback
        self._sounds = {}
        for name, path in (("wake", fb.wake_sound), ("end", fb.end_sound), ("error", fb.error_sound)):
            if not path:
                continue
            try:
                self._sounds[name] = load_wav(path)
            except (OSError, VatelEdgeError) as exc:
                log.warning("feedback.%s_sound: cannot load %s: %s", name, path, exc)

    def _play_sound(self, name: str) -> None:
        pcm = self._sounds.get(name)
        if pcm is not None and self.player is not None:
            self.player.play_sound(pcm)

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "trigger":
            started = self.trigger("control socket")
            return {"ok": True, "started": started, "state": self.state.value}
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "end_session":
            return {"ok": True, "ended": self.end_session("control socket")}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


class _TaskSet:
    """Owned tasks: each is logged if it dies, and cancel_all() awaits every cancel."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s died: %s", task.get_name(), exc, exc_info=exc)

    async def cancel_all(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()


@contextlib.asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[asyncio.Task[None]]:
    """Run `daemon` in a task for the body of the block, then stop it and await the task."""
    task = asyncio.get_running_loop().create_task(daemon.run(), name="vatel-edge daemon")
    try:
        yield task
    finally:
        daemon.stop()
        await asyncio.wait_for(task, timeout=10)
