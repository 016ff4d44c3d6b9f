"""`vatel-edge doctor`: every check in order, the chosen devices, and (with --write) the config edit."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vatel_edge.audio.setup_tools import list_devices
from vatel_edge.config import Config, VatelConfig, check_config
from vatel_edge.doctor import echo as echo_check
from vatel_edge.doctor import mics as mic_check
from vatel_edge.doctor import system
from vatel_edge.doctor.report import Report, fail, ok, warn
from vatel_edge.doctor.tomledit import Value, set_keys, unified_diff, write_atomically
from vatel_edge.errors import AudioDeviceError, ConfigError

DEFAULT_SECONDS = 4.0


@dataclass(frozen=True)
class DoctorOptions:
    """The command line."""

    config_path: str
    write: bool = False
    interactive: bool = True
    seconds: float = DEFAULT_SECONDS
    mics: tuple[str, ...] = ()  # only these microphones (default: every candidate ALSA lists)
    speaker: str | None = None  # instead of audio.playback_device


@dataclass(frozen=True)
class Chosen:
    """The devices the audio checks settled on."""

    capture_device: str | None = None
    capture_channel: int | None = None  # set for a multi-channel microphone
    playback_device: str | None = None


async def run_doctor(
    opts: DoctorOptions,
    out: TextIO,
    *,
    systemd: system.Systemd | None = None,
    environ: Mapping[str, str] | None = None,
    ask: Callable[[str], str] = input,
) -> int:
    """Run every check, print one line each, offer or do the config edit; 0 when nothing failed.

    `ask` prompts the user (interactive only); end of input counts as an empty answer (no, go on)."""
    ask = _tolerant(ask)
    report = Report(out)
    report.say(f"vatel-edge doctor: {opts.config_path}")
    check = check_config(opts.config_path, environ=environ)
    cfg = check.config
    key_problems: set[str] = set()
    if cfg is not None:
        try:
            system.read_key(cfg, opts.config_path, environ)
        except ConfigError as exc:
            key_problems = set(exc.problems)
    report.extend(system.config_findings(check, key_problems))
    if cfg is not None:
        report.extend(await system.check_key(cfg, config_path=opts.config_path, environ=environ))
    else:
        report.add(warn("key", "not checked: the config is invalid", "fix the config lines above first"))
        cfg = Config(vatel=VatelConfig(agent_id="00000000-0000-0000-0000-000000000000"))
    unit = (systemd or system.Systemctl()).unit(system.UNIT)
    report.extend(system.unit_findings(unit))
    running = None if unit.unknown is not None else unit.active == "active"
    report.extend(await system.control_findings(cfg.control.socket_path, running))
    report.extend(system.user_findings(unit))

    chosen = await _audio_checks(report, cfg, opts, ask)
    offer_write(report, opts, cfg, chosen, ask)
    report.say(report.summary())
    return report.exit_status


def _tolerant(ask: Callable[[str], str]) -> Callable[[str], str]:
    def prompt(text: str) -> str:
        try:
            return ask(text)
        except EOFError:
            return ""

    return prompt


async def _audio_checks(report: Report, cfg: Config, opts: DoctorOptions, ask: Callable[[str], str]) -> Chosen:
    devices = await asyncio.to_thread(list_devices, opts.mics + ((opts.speaker,) if opts.speaker else ()))
    report.extend(mic_check.device_findings(devices))
    real = [d for d in devices if d.name != "null"]  # opens everywhere and hears nothing
    opened = [d.name for d in real if d.capture is not None and not d.capture.startswith("error")]
    speakers = [d.name for d in real if d.playback is not None and not d.playback.startswith("error")]
    if not opened:
        return Chosen()  # the devices lines said so, with what to do
    names = [m for m in opts.mics if m in opened] if opts.mics else mic_check.candidates(opened)
    capture, channel = cfg.audio.capture_device, cfg.audio.capture_channel
    chosen = Chosen()
    if not names:
        report.add(fail("mic", f"none of {', '.join(opts.mics)} opens for capture", "see the devices lines above"))
    else:
        seconds = max(0.5, opts.seconds)
        prompt = f"say something now: recording {seconds:g} s from {', '.join(names)}"
        if opts.interactive:
            ask(f"Next: speak (count to five) for {seconds:g} s after you press Enter. Enter: ")
        report.say(prompt + " ...")
        recordings = await asyncio.to_thread(mic_check.record_all, names, seconds)
        levels = []
        for rec in recordings:
            measured = mic_check.measure_recording(rec)
            levels.extend(measured)
            report.extend(mic_check.mic_findings(rec, measured))
        best = mic_check.choose(levels)
        if best is None:
            report.add(fail("mic", "no microphone heard speech",
                            "speak closer and louder while it records; if a mic shows no level at all, it is muted "
                            "or dead (`alsamixer`, F4)"))
        else:
            label = best.device if best.channels == 1 else f"{best.device} channel {best.channel}"
            report.add(ok("mic", f"chosen: {label} (loudest speech, {best.speech_dbfs:.1f} dBFS)"))
            capture, channel = best.device, best.channel
            chosen = Chosen(capture, best.channel if best.channels > 1 else None)
    speaker = opts.speaker or cfg.audio.playback_device
    if not speakers:
        return chosen
    audio = dataclasses.replace(cfg.audio, capture_device=capture, capture_channel=channel, playback_device=speaker)
    if opts.interactive:
        ask("Next: a test chime plays for 5 s; keep quiet. Enter: ")
    report.say(f"echo check: a {echo_check.PROBE_S:g} s test chime on {speaker} while {capture} records ...")
    try:
        run = await echo_check.play_and_record(audio, channel, echo_check.probe(echo_check.PROBE_S))
    except AudioDeviceError as exc:
        report.add(fail("echo", f"cannot run the echo check: {exc}",
                        "choose working devices (--speaker NAME, --mic NAME; the devices lines above)"))
        return chosen
    report.extend(echo_check.echo_findings(run, cfg.audio.echo_cancel, cfg.audio.frame_ms))
    return dataclasses.replace(chosen, playback_device=speaker if opts.speaker else None)


def device_changes(cfg: Config, chosen: Chosen) -> dict[str, Value]:
    """The [audio] keys that would change to the chosen devices."""
    changes: dict[str, Value] = {}
    if chosen.capture_device is not None and chosen.capture_device != cfg.audio.capture_device:
        changes["capture_device"] = chosen.capture_device
    if chosen.capture_channel is not None and chosen.capture_channel != cfg.audio.capture_channel:
        changes["capture_channel"] = chosen.capture_channel
    if chosen.playback_device is not None and chosen.playback_device != cfg.audio.playback_device:
        changes["playback_device"] = chosen.playback_device
    return changes


def write_devices(path: Path, changes: Mapping[str, Value]) -> tuple[str, str]:
    """(old text, new text) of the config with `changes` under [audio] (nothing written)."""
    old = path.read_text(encoding="utf-8")
    return old, set_keys(old, "audio", changes)


def offer_write(report: Report, opts: DoctorOptions, cfg: Config, chosen: Chosen, ask: Callable[[str], str]) -> None:
    """The --write step: say what differs; with --write show the diff, then ask (interactive) or write."""
    changes = device_changes(cfg, chosen)
    if not changes:
        if chosen.capture_device is not None:
            report.add(ok("write", "the config already names the chosen devices"))
        return
    path = Path(opts.config_path)
    summary = ", ".join(f"audio.{k} = {v!r}" for k, v in changes.items())
    if not opts.write:
        report.add(warn("write", f"the config differs from the chosen devices: {summary}",
                        "save them with `vatel-edge doctor --write` (or edit [audio] by hand)"))
        return
    if not path.is_file():
        report.add(fail("write", f"{path} does not exist: nothing to edit", "install the config first"))
        return
    try:
        old, new = write_devices(path, changes)
    except (ConfigError, OSError) as exc:
        text = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
        report.add(fail("write", text, f"set {summary} by hand"))
        return
    report.say(unified_diff(old, new, str(path)).rstrip("\n"))
    if opts.interactive and ask(f"Write these changes to {path}? [y/N] ").strip().lower() not in ("y", "yes"):
        report.add(warn("write", "not written", f"set {summary} by hand, or answer y"))
        return
    try:
        write_atomically(path, new)
    except OSError as exc:
        report.add(fail("write", f"cannot write {path}: {exc.strerror or exc}",
                        "run as root (`sudo vatel-edge doctor --write`)" if not os.access(path, os.W_OK) else
                        "check the file system is writable"))
        return
    report.add(ok("write", f"{path}: {summary} (then `sudo systemctl restart vatel-edge`)"))

