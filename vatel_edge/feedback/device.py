"""`DeviceFeedback`: the runtime component that shows the daemon's state and reads the device's own controls.

Entered by runtime.open_runtime after the tools (so a line both use is refused with both names) and before
the daemon is READY: it reads the mute switch first (a daemon started with the switch at mute never listens
unmuted), restores the kept volume, lights the LEDs for the current state, then follows the daemon's event
hub: every visible state change goes to the LEDs and the hook, every volume change to the state file. The
switch is polled, the buttons are debounced watches (gpio/); all of it runs in owned tasks on the event loop
and never waits for a hook or the disk on the audio path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, Protocol

from vatel_edge.audio.mic import BargeInTarget
from vatel_edge.config import Config
from vatel_edge.config.feedback import MUTE_SWITCH_OWNER
from vatel_edge.events import EventHub, Subscription
from vatel_edge.feedback.controls import SWITCH_POLL_S, SwitchPosition, talk_action, volume_after
from vatel_edge.feedback.hooks import StateHook
from vatel_edge.feedback.leds import StateLeds
from vatel_edge.feedback.store import StateStore, state_directory
from vatel_edge.feedback.visible import FeedbackModel, Visible
from vatel_edge.gpio import ButtonWatch, GpioBackend, InputLine
from vatel_edge.lifecycle import AsyncClosing, TaskSet
from vatel_edge.state import State

log = logging.getLogger(__name__)

#: How often the token provider's status is looked at (offline shows within this).
TOKEN_POLL_S = 0.5
TALK_REASON = "talk button"


class DaemonView(Protocol):
    """What the feedback needs of the daemon (daemon.Daemon; the same as the MQTT bridge's DaemonApi)."""

    events: EventHub

    @property
    def muted(self) -> bool: ...
    def set_muted(self, muted: bool, source: str = ...) -> bool: ...
    def trigger(self, reason: str = ...) -> bool: ...
    def end_session(self, reason: str) -> bool: ...
    def set_volume(self, level: int) -> None: ...
    def status(self) -> dict[str, Any]: ...  # "state", "muted", "mute_source", ...


def _state(daemon: DaemonView) -> State:
    return State(daemon.status()["state"])


class _Player(Protocol):
    def set_volume(self, gain: float) -> None: ...


class _Mic(Protocol):
    barge_in_target: BargeInTarget | None


class _Tokens(Protocol):
    status: str


class DeviceFeedback(AsyncClosing):
    """LEDs, the state hook, the mute switch, the buttons and the kept volume of one runtime."""

    def __init__(self, cfg: Config, daemon: DaemonView, gpio: GpioBackend, *, player: _Player, mic: _Mic,
                 tokens: _Tokens, environ: Mapping[str, str] | None = None) -> None:
        self._cfg = cfg
        self._daemon = daemon
        self._gpio = gpio
        self._player = player
        self._mic = mic
        self._tokens = tokens
        self._environ = environ
        self._stack = AsyncExitStack()
        self._tasks = TaskSet()
        self.store = StateStore(state_directory(cfg.state.directory, environ))
        self.volume = self.store.volume
        self.leds = StateLeds(cfg.feedback_leds, gpio)
        self.hook = StateHook(cfg.feedback_hooks, environ=environ)
        self.model = FeedbackModel(State.STARTING, muted=False)
        self._switch: InputLine | None = None

    async def __aenter__(self) -> DeviceFeedback:
        try:
            await self._enter()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _enter(self) -> None:
        cfg, daemon = self._cfg, self._daemon
        self._apply_volume(self.volume)
        self._stack.push_async_callback(self.hook.aclose)
        await self._stack.enter_async_context(self.leds)
        position = self._open_switch()
        watches = [(name, await self._stack.enter_async_context(w)) for name, w in self._button_watches()]
        sub = daemon.events.subscribe()  # before the snapshot below: nothing in between is missed
        self._stack.callback(sub.close)
        self.model = FeedbackModel(_state(daemon), muted=daemon.muted)
        self.model.token_status(self._tokens.status)
        await self._show(self.model.visible)
        self._tasks.spawn(self._follow(sub), "feedback events")
        self._tasks.spawn(self._poll_tokens(), "feedback token status")
        if position is not None:
            self._tasks.spawn(self._poll_switch(SwitchPosition(position)), "mute switch")
        for name, watch in watches:
            self._tasks.spawn(self._presses(name, watch), f"button {name}")
        if cfg.feedback_hooks.command:
            log.info("state hook: %s", cfg.feedback_hooks.command[0])

    # ------------------------------------------------------------------ volume

    def _apply_volume(self, level: int) -> None:
        """The kept volume on the (new) player; the daemon's set_volume is not reachable while opening."""
        self._player.set_volume(self._cfg.audio.volume * level / 100.0)
        if level != 100:
            log.info("volume %d (kept from before)", level)

    # ------------------------------------------------------------------ mute switch

    def _open_switch(self) -> bool | None:
        """Request the switch line and apply its position now; the position, None without a switch."""
        p = self._cfg.privacy
        if not p.mute_switch_line:
            return None
        line = self._gpio.open_input(p.mute_switch_chip, p.mute_switch_line, active_low=p.mute_switch_active_low,
                                     owner=MUTE_SWITCH_OWNER, bias=p.mute_switch_bias)
        self._switch = line
        self._stack.callback(line.release)
        position = line.get()
        by_switch = self._daemon.status().get("mute_source") == "switch"
        if position != by_switch:
            self._daemon.set_muted(position, source="switch")
        log.info("mute switch on %s line %s: %s", p.mute_switch_chip, p.mute_switch_line,
                 "at mute" if position else "not at mute")
        return position

    async def _poll_switch(self, position: SwitchPosition) -> None:
        assert self._switch is not None
        while True:
            await asyncio.sleep(SWITCH_POLL_S)
            changed = position.read(self._switch.get())
            if changed is not None:
                log.info("mute switch moved %s", "to mute" if changed else "off mute")
                self._daemon.set_muted(changed, source="switch")

    # ------------------------------------------------------------------ buttons

    def _button_watches(self) -> list[tuple[str, ButtonWatch]]:
        b = self._cfg.buttons
        out = []
        for name, line in (("volume_up", b.volume_up_line), ("volume_down", b.volume_down_line),
                           ("talk", b.talk_line)):
            if line:
                out.append((name, self._gpio.watch_button(b.chip, line, active_low=b.active_low,
                                                          debounce_ms=b.debounce_ms, owner=f"buttons.{name}")))
        return out

    async def _presses(self, name: str, watch: ButtonWatch) -> None:
        async for _press in watch:
            if name == "talk":
                self._talk()
            else:
                self.volume = volume_after(self.volume, self._cfg.buttons.volume_step, name == "volume_up")
                self._daemon.set_volume(self.volume)

    def _talk(self) -> None:
        target = self._mic.barge_in_target
        action = talk_action(_state(self._daemon), target is not None and target.accepts_local_barge_in())
        if action == "trigger":
            self._daemon.trigger(TALK_REASON)
        elif action == "cut" and target is not None:
            target.local_voice(TALK_REASON)
        elif action == "end":
            self._daemon.end_session(TALK_REASON)

    # ------------------------------------------------------------------ showing

    async def _show(self, visible: Visible) -> None:
        await self.leds.show(visible)
        self.hook.notify(visible)

    async def _follow(self, sub: Subscription) -> None:
        """Every daemon event: visible state changes to the LEDs and the hook, volume changes to the file."""
        while True:
            async for event in sub:
                if event.kind == "volume":
                    self.volume = int(event.fields["level"])
                    await asyncio.to_thread(self.store.set_volume, self.volume)
                changed = self.model.event(event.kind, event.fields)
                if changed is not None:
                    await self._show(changed)
            # Dropped by the hub (this loop fell far behind): take up again from the daemon's state now.
            log.warning("feedback fell behind the daemon's events; resynchronising")
            sub = self._daemon.events.subscribe()
            self._stack.callback(sub.close)
            self.model = FeedbackModel(_state(self._daemon), muted=self._daemon.muted)
            self.model.token_status(self._tokens.status)
            await self._show(self.model.visible)

    async def _poll_tokens(self) -> None:
        while True:
            await asyncio.sleep(TOKEN_POLL_S)
            changed = self.model.token_status(self._tokens.status)
            if changed is not None:
                await self._show(changed)

    async def aclose(self) -> None:
        """Stop following, show "off" through the hook, drive the LEDs off, release every line (idempotent)."""
        await self._tasks.cancel_all()
        await self._stack.aclose()
