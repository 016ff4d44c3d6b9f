"""The daemon's components, assembled once per configuration: `open_runtime(cfg, ...)` yields a `Runtime`.

The components are entered in dependency order on one AsyncExitStack and closed in reverse: GPIO, tools
(which request their output lines), the token provider, the echo path, the player, the microphone path and
the capture it is the sink of, the control socket, the wake button, the device feedback (LEDs, hook, mute
switch, buttons), the watchdog. Every field of the frozen
`Runtime` exists while the block runs; a SIGHUP reload closes the runtime and opens a new one between
sessions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from vatel_edge.audio.aec_path import EchoKeeper, EchoPath, check_duplex, open_echo_path
from vatel_edge.audio.capture import Capture
from vatel_edge.audio.mic import MicPath
from vatel_edge.audio.playback import Player
from vatel_edge.audio.vad import VadParams, VoiceDetector
from vatel_edge.audio.wakeword import open_wake_words, raise_wake_word_problems
from vatel_edge.audio.wav import load_wav
from vatel_edge.config import Config, read_mqtt_password
from vatel_edge.control import ControlHandler, ControlServer
from vatel_edge.errors import VatelEdgeError
from vatel_edge.feedback import DeviceFeedback
from vatel_edge.gpio import ButtonWatch, GpioBackend, make_gpio_backend
from vatel_edge.notify import Notifier, Watchdog
from vatel_edge.recording import Recorder, check_recordings
from vatel_edge.token import TokenProvider
from vatel_edge.tools.registry import ToolRegistry
from vatel_edge.wake import WakeGate

if TYPE_CHECKING:
    from vatel_edge.mqtt.model import DaemonApi

log = logging.getLogger(__name__)
T = TypeVar("T")


class Sounds:
    """The feedback sounds (feedback.wake_sound, end_sound, error_sound), played through the Player."""

    NAMES = ("wake", "end", "error")

    def __init__(self, cfg: Config, player: Player) -> None:
        self._player = player
        self._pcm: dict[str, bytes] = {}
        fb = cfg.feedback
        for name, path in zip(self.NAMES, (fb.wake_sound, fb.end_sound, fb.error_sound), strict=True):
            if not path:
                continue
            try:
                self._pcm[name] = load_wav(path)
            except (OSError, VatelEdgeError) as exc:
                log.warning("feedback.%s_sound: cannot load %s: %s", name, path, exc)

    def play(self, name: str) -> None:
        """Play the sound `name` if one is configured (never interrupted by barge-in)."""
        pcm = self._pcm.get(name)
        if pcm is not None:
            self._player.play_sound(pcm)


@dataclass(frozen=True)
class Runtime:
    """Everything the daemon runs with for one configuration."""

    cfg: Config
    gpio: GpioBackend
    tools: ToolRegistry
    tokens: TokenProvider
    echo: EchoPath | None  # None: no echo canceller runs (audio.echo_cancel off, or none installed)
    player: Player
    capture: Capture
    mic: MicPath
    sounds: Sounds
    watchdog: Watchdog
    button: ButtonWatch | None  # wake.mode = "button" only
    feedback: DeviceFeedback | None  # LEDs, hook, mute switch, buttons, kept volume (None: opened without a daemon)
    recorder: Recorder  # session recordings ([debug] record_sessions; off: it only answers `record`)

    def stats(self) -> dict[str, Any]:
        """The components' statistics for `vatel-edge status`: capture, player, echo, tokens, token_status."""
        e = self.echo
        echo = {"engine": "none"} if e is None else {
            "engine": e.name, "converged": e.converged, "erle_db": e.erle_db, **e.stats}
        return {"capture": self.capture.stats, "player": self.player.stats, "echo": echo, "tokens": self.tokens.stats,
                "token_status": self.tokens.status}

    @property
    def gate(self) -> WakeGate:
        """Whether an automatic wake may start a session now."""
        return self.mic.gate


def check_runnable(cfg: Config) -> None:
    """What would stop `open_runtime(cfg)` that can be checked before the running one closes (start, reload):
    the echo engine and local barge-in, the wake-word models, the MQTT password. ConfigError names the key."""
    check_duplex(cfg)
    raise_wake_word_problems(cfg)
    check_recordings(cfg)  # record_sessions > 0 without a usable state directory
    if cfg.mqtt.enabled:
        read_mqtt_password(cfg.mqtt)


@asynccontextmanager
async def open_runtime(
    cfg: Config,
    *,
    api_key: str,
    notifier: Notifier,
    control: ControlHandler,
    clock: Callable[[], float] = time.monotonic,
    daemon: DaemonApi | None = None,
    echo_keeper: EchoKeeper | None = None,
) -> AsyncIterator[Runtime]:
    """Open every component of `cfg` in order; close them in reverse when the block ends.

    With `echo_keeper` the echo path comes from it and outlives the block (the daemon keeps what the canceller
    learned across reloads); without, it is opened here and closed with the rest."""
    async with AsyncExitStack() as stack:
        gpio = make_gpio_backend(cfg.gpio.backend)
        stack.callback(gpio.close)
        tools = await stack.enter_async_context(
            ToolRegistry(cfg.tools, gpio, max_concurrency=cfg.session.max_tool_concurrency)
        )
        tokens = await stack.enter_async_context(TokenProvider(cfg.vatel, api_key))
        echo = echo_keeper.open(cfg.audio) if echo_keeper is not None else open_echo_path(cfg.audio)
        if echo is not None and echo_keeper is None:
            stack.callback(echo.close)  # after the player's writer thread has stopped
        player = await stack.enter_async_context(Player(cfg.audio))
        if echo is not None:
            player.on_written = echo.on_written
            player.on_dropped = echo.on_dropped
        capture = Capture(cfg.audio)
        w, s = cfg.wake, cfg.session
        local_barge_in = s.barge_in in ("local", "both") and echo is not None
        words = open_wake_words(cfg, canceller=echo is not None)  # ConfigError: no extra, a broken model
        stack.callback(words.close)
        mic = MicPath(
            capture, player, echo,
            frame_ms=cfg.audio.frame_ms,
            preroll_ms=w.preroll_ms,
            wake_vad=VoiceDetector(VadParams.from_wake(w)) if w.mode in ("vad", "wakeword") else None,
            barge_vad=VoiceDetector(VadParams.for_barge_in(w, s.barge_in_min_speech_ms)) if local_barge_in else None,
            gate=WakeGate(w.cooldown_ms / 1000.0, clock),
            wake_word=words.wake,
            barge_word=words.barge,
        )
        recorder = await stack.enter_async_context(  # its tap is the path's first stage; closed after the capture
            Recorder(cfg, mic, player, echo, daemon.events if daemon is not None else None))
        await stack.enter_async_context(capture)  # the microphone path is its sink from the first frame
        _log_duplex(cfg, echo, local_barge_in, words.barge is not None)
        sounds = Sounds(cfg, player)
        events = daemon.events if daemon is not None else None  # `vatel-edge events` streams the daemon's hub
        await stack.enter_async_context(ControlServer(cfg.control.socket_path, recorder.control(control),
                                                      events=events))
        button: ButtonWatch | None = None
        if w.mode == "button":
            # Requested before READY: a missing chip or line is a start-up error naming both.
            button = await stack.enter_async_context(
                gpio.watch_button(w.button_chip, w.button_line, active_low=w.button_active_low,
                                  debounce_ms=w.debounce_ms)
            )
        feedback: DeviceFeedback | None = None  # after the tools and the wake button (a shared line names both)
        if daemon is not None:  # before READY: the mute switch is read before the daemon listens
            feedback = await stack.enter_async_context(
                DeviceFeedback(cfg, daemon, gpio, player=player, mic=mic, tokens=tokens))
        # Pings stop when frames stop arriving, and when the microphone path that routes them failed.
        watchdog = await stack.enter_async_context(
            Watchdog(notifier, mic.last_frame_at, max_frame_age_s=max(2.0, 10 * cfg.audio.frame_ms / 1000.0))
        )
        if daemon is not None and (cfg.mqtt.enabled or cfg.metrics.textfile):
            from vatel_edge.mqtt import enter_fleet_links  # only when configured: aiomqtt, prometheus-client

            await enter_fleet_links(stack, cfg, daemon)  # MQTT bridge, metrics file (closed first)
        yield Runtime(cfg, gpio, tools, tokens, echo, player, capture, mic, sounds, watchdog, button, feedback,
                      recorder)


def _log_duplex(cfg: Config, echo: EchoPath | None, local_barge_in: bool, by_word: bool = False) -> None:
    """Say once at start how the microphone is treated while the agent speaks, and who barges in."""
    engine = echo.name if echo is not None else "none"
    policy = cfg.audio.mic_during_playback
    if policy == "auto":
        mic = "muted" if echo is None else "streamed once the canceller has converged (muted before)"
    else:
        mic = "muted" if policy == "mute" else "streamed"
    if echo is None and cfg.audio.echo_cancel == "auto":
        log.warning("no echo canceller: the microphone is %s while the agent speaks", mic)
    who = [*(["the local VAD"] if local_barge_in else []), *(["the wake word"] if by_word else []), "the server"]
    log.info("echo cancellation: %s; microphone %s during agent speech; barge-in by %s", engine, mic, ", ".join(who))


class RuntimePart(Generic[T]):
    """A read-only attribute for an owner with a `runtime`: its component `name`, or None while not running."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, owner: Any, owner_type: type | None = None) -> T | None:
        rt = owner.runtime
        return cast("T | None", getattr(rt, self._name)) if rt is not None else None
