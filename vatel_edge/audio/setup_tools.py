"""Tools for setting up a device: list the PCMs, a live microphone level meter, a speaker chime."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

import numpy as np

from vatel_edge.audio.alsa import AlsaPcm, Direction, pcm_names, sound_cards
from vatel_edge.audio.capture import Capture
from vatel_edge.audio.format import VATEL_FORMAT, level_dbfs
from vatel_edge.audio.playback import Player
from vatel_edge.config import AudioConfig
from vatel_edge.errors import AudioDeviceError

if TYPE_CHECKING:
    from vatel_edge.audio.wakeword import GatedWakeWord

PROBE_PERIOD_MS = 20
#: What to check when the kernel has no sound card at all.
NO_CARD_HINT = (
    "check that the USB microphone or speaker is plugged in (lsusb), that a HAT's dtoverlay= line is in "
    "/boot/firmware/config.txt (then reboot), and what `arecord -l` and `aplay -l` show"
)


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


#: alsa-lib's open errors (strerror text) in words.
ALSA_ERRORS = {
    "No such file or directory": "ALSA has no device of that name, or its card is not there",
    "Device or resource busy": "another program has the device open; stop it, or use a dsnoop/dmix device",
    "Permission denied": "this user may not open /dev/snd: add it to the group audio",
    "Connection refused": "the sound server (PulseAudio/PipeWire) this device goes through is not running",
}


async def devices_command(out: TextIO) -> int:
    """`vatel-edge devices`: the sound cards (or plainly that there is none), then every PCM and how it opens.

    It lists and explains; exit status 0 also when nothing opens (`mic-test`/`speaker-test` check one device).
    """
    cards = await asyncio.to_thread(sound_cards)
    devices = await asyncio.to_thread(list_devices)
    if cards:
        out.write(f"sound cards: {', '.join(cards)}\n")
    else:
        out.write(f"no sound card found: ALSA lists no cards; {NO_CARD_HINT}\n")
    out.write(format_devices(devices))
    missing = [  # `null` opens without any hardware: it is no microphone or speaker
        direction for direction in ("capture", "playback")
        if not any(d.name != "null" and _opens(getattr(d, direction)) for d in devices)
    ]
    for direction in missing:
        out.write(f"no PCM device opens for {direction}\n")
    return 0


def _opens(probe: str | None) -> bool:
    return probe is not None and not probe.startswith("error:")


def require_device(name: str, direction: Direction) -> None:
    """Open and close `name` once, so a set-up command fails at once with why (the daemon retries instead).

    Raises AudioDeviceError naming the device and ALSA's error, and what to check next.
    """
    try:
        AlsaPcm(name, direction, period_ms=PROBE_PERIOD_MS, periods=4).close()
    except AudioDeviceError as exc:
        meaning = next((words for error, words in ALSA_ERRORS.items() if error in str(exc)), None)
        hint = (f"no sound card found: {NO_CARD_HINT}" if not sound_cards()
                else f"`vatel-edge devices` lists the {direction} devices that open")
        raise AudioDeviceError(f"{exc}" + (f" ({meaning})" if meaning else "") + f"; {hint}") from None


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
    probability, which is 0 while the VAD hears no voice) for `seconds`; frames seen.

    Raises AudioDeviceError when the device does not open, or delivers no frame in `seconds`.
    """
    await asyncio.to_thread(require_device, cfg.capture_device, "capture")
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
    if frames == 0:
        raise AudioDeviceError(f"capture device {cfg.capture_device!r} delivered no audio in {seconds:g} s")
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
    """Play the chime through the configured speaker; True when it played out within `timeout`.

    Raises AudioDeviceError when the device does not open or the chime did not play out in `timeout`.
    """
    await asyncio.to_thread(require_device, cfg.playback_device, "playback")
    async with Player(cfg) as player:
        player.play_sound(chime())
        await asyncio.sleep(0)
        if not await player.wait_idle(timeout):
            raise AudioDeviceError(f"playback device {cfg.playback_device!r} did not play the chime in {timeout:g} s")
        return True
