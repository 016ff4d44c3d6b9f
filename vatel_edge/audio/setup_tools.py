"""Tools for setting up a device: list the PCMs, a live microphone level meter, a speaker chime."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

import numpy as np

from vatel_edge.audio.alsa import AlsaPcm, Direction, pcm_names
from vatel_edge.audio.capture import Capture
from vatel_edge.audio.format import VATEL_FORMAT, level_dbfs
from vatel_edge.audio.playback import Player
from vatel_edge.config import AudioConfig
from vatel_edge.errors import AudioDeviceError

if TYPE_CHECKING:
    from vatel_edge.audio.wakeword import GatedWakeWord

PROBE_PERIOD_MS = 20


@dataclass(frozen=True)
class DeviceInfo:
    """One ALSA PCM and how it opens in each direction."""

    name: str
    capture: str | None  # "24000 Hz 1 ch", "native 48000 Hz 2 ch (resampled)", "error: ..."; None = not listed
    playback: str | None


def _probe(name: str, direction: Direction) -> str:
    try:
        pcm = AlsaPcm(name, direction, period_ms=PROBE_PERIOD_MS, periods=4)
    except AudioDeviceError as exc:
        return f"error: {exc}"
    try:
        native = pcm.native
        if native == VATEL_FORMAT:
            return f"{native.rate} Hz {native.channels} ch"
        return f"native {native.rate} Hz {native.channels} ch (resampled)"
    finally:
        pcm.close()


def list_devices(extra: Iterable[str] = ()) -> list[DeviceInfo]:
    """Every PCM alsa-lib lists (plus `extra` names), probed for capture and playback."""
    capture = pcm_names("capture")
    playback = pcm_names("playback")
    names = list(dict.fromkeys([*capture, *playback, *extra]))
    extra_set = set(extra)
    return [
        DeviceInfo(
            name,
            _probe(name, "capture") if name in capture or name in extra_set else None,
            _probe(name, "playback") if name in playback or name in extra_set else None,
        )
        for name in names
    ]


def format_devices(devices: Iterable[DeviceInfo]) -> str:
    """A readable table of list_devices()."""
    lines = []
    for d in devices:
        lines.append(d.name)
        lines.append(f"    capture:  {d.capture or '-'}")
        lines.append(f"    playback: {d.playback or '-'}")
    return "\n".join(lines) + ("\n" if lines else "no ALSA PCM devices found\n")


def _meter(dbfs: float, width: int = 40) -> str:
    filled = max(0, min(width, round((dbfs + 60) / 60 * width)))
    return "#" * filled + "." * (width - filled)


async def mic_test(
    cfg: AudioConfig,
    seconds: float,
    out: TextIO,
    vad: Callable[[bytes], tuple[bool, float]] | None = None,
    wake_word: GatedWakeWord | None = None,
) -> int:
    """Print one level line per captured frame (dBFS, meter, VAD decision, and with `wake_word` the wake-word
    probability, which is 0 while the VAD hears no voice) for `seconds`; frames seen."""
    frames = 0
    async with Capture(cfg) as capture:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(capture.read(), timeout=left)
            except TimeoutError:
                break
            frames += 1
            if wake_word is not None:
                voiced, level, r = wake_word.process(frame.pcm)
                decision = (" voice" if voiced else " -    ") + f" wake word {r.probability:4.2f}"
                decision += f" WAKE: {r.word}" if r.word else ""
            elif vad is not None:
                voiced, level = vad(frame.pcm)
                decision = " voice" if voiced else " -"
            else:
                level, decision = level_dbfs(frame.pcm), ""
            out.write(f"{frame.seq:6d} {level:6.1f} dBFS |{_meter(level)}|{decision}\n")
            out.flush()
        if capture.negotiated:
            out.write(f"device: {capture.negotiated}\n")
    return frames


def chime(notes: Iterable[float] = (659.25, 880.0), note_ms: float = 180.0, fade_ms: float = 15.0) -> bytes:
    """A short chime: sine notes with raised-cosine fade in/out, PCM16 LE mono 24 kHz."""
    n = VATEL_FORMAT.samples(note_ms)
    fade = VATEL_FORMAT.samples(fade_ms)
    t = np.arange(n) / VATEL_FORMAT.rate
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, fade))
    env[:fade] = ramp
    env[-fade:] = ramp[::-1]
    parts = [0.3 * 32767 * np.sin(2 * math.pi * f * t) * env for f in notes]
    return np.rint(np.concatenate(parts)).astype("<i2").tobytes()


async def speaker_test(cfg: AudioConfig, timeout: float = 10.0) -> bool:
    """Play the chime through the configured speaker; True when it played out within `timeout`."""
    async with Player(cfg) as player:
        player.play_sound(chime())
        await asyncio.sleep(0)
        return await player.wait_idle(timeout)
