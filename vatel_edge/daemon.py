"""The long-running loop: listen locally, wake, run a Vatel session with full-duplex audio, listen again.

The daemon assembles and supervises: `runtime.open_runtime` opens the components, the microphone path
(mic_path.py) routes every capture frame, a wake starts a session, `live_session.LiveSession` performs
it, and `conversation.Conversation` decides what its events mean. Every transition goes through the
state machine (state.py). Errors of the network, the server, tools and devices are contained below it:
they end a session or get retried, never the daemon. A failure of the microphone path itself (a bug) ends
`run()` with DaemonFailure, so that systemd restarts a daemon that can no longer hear.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from vatel_edge.audio.aec_path import EchoKeeper, EchoPath
from vatel_edge.audio.capture import Capture
from vatel_edge.audio.playback import Player
from vatel_edge.config import Config, load_config, read_api_key
from vatel_edge.conversation import Conversation, Limits
from vatel_edge.errors import ConfigError, DaemonFailure
from vatel_edge.events import EventHub
from vatel_edge.gpio import GpioBackend
from vatel_edge.journal import register_secret, set_daemon_log_context
from vatel_edge.lifecycle import TaskSet, cancel_and_wait, running, wait_for_state
from vatel_edge.live_session import Connector, DaemonToolContext, EventSink, LiveSession, SessionParts
from vatel_edge.notify import Notifier
from vatel_edge.runtime import Runtime, RuntimePart, check_runnable, open_runtime
from vatel_edge.state import Event, State, StateMachine, Transition
from vatel_edge.status import Counters, DaemonStatus
from vatel_edge.token import TokenProvider
from vatel_edge.tools.registry import ToolRegistry
from vatel_edge.wake import always_on, button_presses

log = logging.getLogger(__name__)
__all__ = ["Daemon", "running"]

#: Wait this long for the first capture frame before declaring READY anyway (and saying why).
READY_WAIT_S = 10.0


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
        self.events = EventHub()  # state changes and timeline events, for local subscribers
        self.started_at = clock()
        self.last_error: str | None = None
        self._last_error_at: float | None = None
        self.runtime: Runtime | None = None  # while run() is inside open_runtime
        self._conversation: Conversation | None = None  # from the wake to the end of the session
        self._live: LiveSession | None = None  # while the session's socket is open
        self._stop = asyncio.Event()
        self._reload_cfg: Config | None = None
        self._restart = asyncio.Event()
        self._wakes: asyncio.Queue[str] = asyncio.Queue(maxsize=1)  # overflow: a second wake is ignored
        self._mute_source: str | None = None  # "software" or "switch" while muted (kept across reloads)
        self._echo = EchoKeeper()  # the canceller, and what it learned, across reloads
        self._connector = Connector(self.counters, self.notifier, self.sm, self._emit, self._set_error)
        self._tool_context = functools.partial(DaemonToolContext, set_volume=self.set_volume,
                                               end_session=self.end_session, device_status=self.status)

    # The runtime's components, None while not running (tests and the demo look at them).
    capture: RuntimePart[Capture] = RuntimePart("capture")
    player: RuntimePart[Player] = RuntimePart("player")
    tokens: RuntimePart[TokenProvider] = RuntimePart("tokens")
    tools: RuntimePart[ToolRegistry] = RuntimePart("tools")
    gpio: RuntimePart[GpioBackend] = RuntimePart("gpio")
    echo: RuntimePart[EchoPath] = RuntimePart("echo")

    @property
    def session_id(self) -> str | None:
        """The running session's id, once the server named it."""
        return self._conversation.session_id if self._conversation else None

    @property
    def state(self) -> State:
        """Current conversation state."""
        return self.sm.state

    def stop(self) -> None:
        """Shut down: end the session politely, close the devices, return from run()."""
        self._stop.set()
        self.end_session("shutdown")

    @property
    def muted(self) -> bool:
        """Privacy mute: no wake fires, no session runs, no microphone audio leaves the device."""
        return self._mute_source is not None

    def set_muted(self, muted: bool, source: str = "software") -> bool:
        """Mute or unmute; False when refused (software cannot unmute what the hardware switch muted)."""
        if not muted and self._mute_source == "switch" and source != "switch":
            return False
        self._mute_source = source if muted else None
        if self.runtime is not None:
            self.runtime.mic.muted = muted
        if muted:
            self.end_session("muted")
        self.notifier.status("muted" if muted else self.state.value)
        self._emit("mute", f"{'muted' if muted else 'unmuted'} ({source})", muted=muted, source=source)
        return True

    def trigger(self, reason: str = "manual") -> bool:
        """Start a session now (any wake mode); False when one is already running or the daemon is muted."""
        if self.sm.state is not State.LISTENING or self.runtime is None or self.muted:
            return False
        self.runtime.gate.clear()
        return self._begin_wake(reason)

    def end_session(self, reason: str) -> bool:
        """End the running session (button, tool, shutdown); False when there is none."""
        conv = self._conversation
        if conv is None or conv.ended:
            return False
        if self._live is not None:
            return self._live.end(reason)
        conv.end(reason)  # still connecting: the session ends as soon as it is open
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
            check_runnable(new)  # refused before the running runtime closes: engine, wake-word models, MQTT password
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
        """Agent audio volume 0..100 (100 = the configured audio.volume); feedback/ keeps it across restarts."""
        if self.runtime is not None:
            level = max(0, min(100, level))
            self.runtime.player.set_volume(self.cfg.audio.volume * level / 100.0)
            self._emit("volume", f"volume {level}", level=level)

    async def wait_state(self, state: State, timeout: float) -> None:
        """Wait until the state machine enters `state` (tests, demo)."""
        await wait_for_state(self.sm, state, timeout)

    def status(self) -> dict[str, Any]:
        """Everything `vatel-edge status` shows (status.DaemonStatus as a dict)."""
        rt, conv, now = self.runtime, self._conversation, self._clock()
        return DaemonStatus.of(
            self.sm.state.value, now - self.started_at, self.cfg.wake.mode, self.session_id,
            now - conv.started_at if conv is not None else None, self.counters, rt.stats() if rt else None,
            self.last_error, self._last_error_at, muted=self.muted, mute_source=self._mute_source,
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
        """Run until stop(); a valid SIGHUP reload rebuilds the runtime between sessions.

        Raises DaemonFailure when the microphone path failed (the daemon cannot hear any more)."""
        try:
            while True:
                await self._run_once()
                if self._stop.is_set() or self._reload_cfg is None:
                    break
                self.cfg, self._reload_cfg = self._reload_cfg, None
                self._restart.clear()
                log.info("reload: applied config %s", self.cfg.path)
        finally:
            self.sm.fire_if(Event.STOP, "shutdown")
            self.notifier.stopping()
            self.sm.fire_if(Event.STOPPED)
            set_daemon_log_context(state=None, session_id=None, turn_id=None)
            self._echo.close()

    async def _run_once(self) -> None:
        check_runnable(self.cfg)  # ConfigError at start: a missing echo engine or model, an unreadable password
        try:
            async with open_runtime(self.cfg, api_key=self._api_key, notifier=self.notifier, control=self._control,
                                    clock=self._clock, daemon=self, echo_keeper=self._echo) as rt:
                self.runtime = rt
                tasks = TaskSet()
                try:
                    await self._serve(rt, tasks)
                finally:
                    await tasks.cancel_all()
        finally:
            self.runtime = None

    async def _serve(self, rt: Runtime, tasks: TaskSet) -> None:
        """Start listening and the wake loops; run one session at a time until stop, reload or a path failure."""
        rt.mic.on_wake, rt.mic.muted, rt.tokens.on_status = self._begin_wake, self.muted, self._say_listening
        failed: asyncio.Future[Any] = rt.mic.failed
        if self.sm.state is State.STARTING:
            if not await rt.mic.wait_first_frame(READY_WAIT_S):
                self._set_error("microphone not delivering audio yet")
                log.warning("no capture frames after %.0f s; ready anyway, still retrying the microphone",
                            READY_WAIT_S)
            self.sm.fire(Event.STARTED)
            self.notifier.ready()
        else:  # the runtime was rebuilt after a reload: the microphone was heard before
            self.notifier.ready_after_reload()
            rt.mic.listen()
        listening = lambda: self.sm.state is State.LISTENING  # noqa: E731
        if self.cfg.wake.mode == "always":
            tasks.spawn(always_on(rt.gate, listening, self._begin_wake), "always-on wake")
        if rt.button is not None:
            tasks.spawn(button_presses(rt.button, listening, self.trigger, self.end_session), "button wake")
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        restart: asyncio.Future[Any] = asyncio.ensure_future(self._restart.wait())
        try:
            while not self._stop.is_set() and not self._restart.is_set():
                wake: asyncio.Future[Any] = asyncio.ensure_future(self._wakes.get())
                await asyncio.wait({wake, stop, restart, failed}, return_when=asyncio.FIRST_COMPLETED)
                if not wake.done():
                    await cancel_and_wait(wake)
                    break
                wake.result()
                session = asyncio.ensure_future(self._session(rt))
                await asyncio.wait({session, failed}, return_when=asyncio.FIRST_COMPLETED)
                if not session.done():
                    self.end_session("the microphone path failed")
                    await session
                session.result()
        finally:
            await cancel_and_wait(stop, restart)
        if failed.done():
            raise DaemonFailure(f"the microphone path failed ({failed.exception()}); exiting so that the service "
                                "restarts")

    # ------------------------------------------------------------------ one session

    def _begin_wake(self, reason: str) -> bool:
        """The trigger point: the pre-roll becomes the head of the session's audio, now."""
        rt = self.runtime
        if rt is None or self.sm.state is not State.LISTENING or self._wakes.full() or self.muted:
            return False
        rt.mic.begin_session()
        s = self.cfg.session
        self._conversation = Conversation(Limits(s.idle_timeout_s, s.max_duration_s),
                                          mic_policy=self.cfg.audio.mic_during_playback, counters=self.counters,
                                          clock=self._clock)
        self.sm.fire(Event.WAKE, reason)
        self.counters.wakes += 1
        self._emit("wake", reason, reason=reason)
        self._wakes.put_nowait(reason)
        return True

    async def _session(self, rt: Runtime) -> None:
        """From CONNECTING to LISTENING again: open the session, converse, let the agent finish."""
        conv, audio = self._conversation, rt.mic.session_audio
        assert conv is not None and audio is not None
        try:
            session = await self._connector.open(self.cfg, rt.tokens, rt.gate, rt.sounds)
            if session is not None:
                self.counters.sessions += 1
                parts = SessionParts(rt.player, rt.tools, rt.echo, rt.sounds, rt.gate, self.sm, self.notifier,
                                     self._emit, self._tool_context, self.cfg.audio.frame_ms,
                                     self.cfg.session.close_timeout_s, rt.recorder.on_sent)
                self._live = rt.mic.barge_in_target = LiveSession(session, conv, audio, parts)
                await self._live.run(stopping=self._stop.is_set)
        finally:
            rt.mic.end_session()
            self._live = self._conversation = None
            set_daemon_log_context(session_id=None, turn_id=None)

    # ------------------------------------------------------------------ helpers

    def _on_transition(self, tr: Transition) -> None:
        set_daemon_log_context(state=tr.new.value)
        rt = self.runtime
        if rt is not None and tr.new is State.LISTENING:
            rt.mic.listen()
        elif rt is not None and tr.old is State.LISTENING and tr.event is not Event.WAKE:
            rt.mic.stop_listening()
        if tr.new is State.LISTENING:
            self._say_listening()
        elif tr.new is State.CONNECTING:
            self.notifier.status("connecting")
        self._emit("state", f"{tr.old.value} -> {tr.new.value} ({tr.event.value})", old=tr.old.value,
                   new=tr.new.value, event=tr.event.value)

    def _say_listening(self, *_: object) -> None:
        """sd_notify STATUS while LISTENING (also when the token provider's state changes): its trouble, if any."""
        offline = self.runtime.tokens.status if self.runtime is not None else "ready"
        if self.sm.state is State.LISTENING:
            text = "muted" if self.muted else "listening"
            self.notifier.status(text if offline == "ready" else f"{text}; {offline}")

    def _set_error(self, text: str) -> None:
        self.last_error, self._last_error_at = text, time.time()

    def _emit(self, kind: str, text: str, **fields: Any) -> None:
        self.events.publish(kind, text, **fields)
        if self._on_event is not None:
            self._on_event(kind, text)

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "trigger":
            started = self.trigger("control socket")
            return {"ok": True, "started": started, "state": self.state.value}
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "end_session":
            return {"ok": True, "ended": self.end_session("control socket")}
        if cmd in ("mute", "unmute"):
            return {"ok": self.set_muted(cmd == "mute"), "muted": self.muted, "source": self._mute_source}
        return {"ok": False, "error": f"unknown command {cmd!r}"}
