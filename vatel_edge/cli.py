"""`vatel-edge` command line: run the daemon, set up and debug a device, talk to a running daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from vatel_edge import __version__
from vatel_edge.config import DEFAULT_CONFIG_PATH, Config, check_config, load_config, read_api_key
from vatel_edge.errors import ConfigError, ControlError, VatelEdgeError

CONFIG_ENV = "VATEL_EDGE_CONFIG"
#: Exit status for an invalid configuration (EX_CONFIG); the unit's RestartPreventExitStatus.
EXIT_CONFIG = 78


def _default_config() -> str:
    return os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_PATH)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help=f"config file (default ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="vatel-edge", description="Always-on voice agent for small devices.")
    parser.add_argument("--version", action="version", version=f"vatel-edge {__version__}")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                        help="override [log] level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon")
    _add_config(p)
    p = sub.add_parser("check-config", help="validate a config file and the API key")
    _add_config(p)
    p.add_argument("--root", default="/", help="tree whose installed unit gives the key (an image; default /)")
    p = sub.add_parser("simulate", help="run the local Vatel API simulator (loopback only)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--agent-id", default=None)
    p = sub.add_parser("devices", help="list ALSA devices and the formats they open at")
    p = sub.add_parser("mic-test", help="live level meter with the VAD decision (and wake-word probability) per frame")
    _add_config(p)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--device", default=None, help="ALSA capture device (default: from the config)")
    p = sub.add_parser("wakeword-test", help="run the wake-word detector over WAV files and print its detections")
    _add_config(p)
    p.add_argument("files", nargs="+", metavar="FILE.wav")
    p.add_argument("--wake-word", action="append", default=[], metavar="NAME_OR_JSON",
                   help="instead of wake.wake_words (repeatable)")
    p.add_argument("--cutoff", type=float, default=None, help="instead of wake.wake_word_cutoff (0..1)")
    p = sub.add_parser("speaker-test", help="play a chime through the speaker")
    _add_config(p)
    p.add_argument("--device", default=None, help="ALSA playback device (default: from the config)")
    p = sub.add_parser("doctor", help="self-test after install: devices, microphones, echo, key, API, service")
    _add_config(p)
    p.add_argument("--write", action="store_true",
                   help="put the chosen devices into the config file (asks first unless --non-interactive)")
    p.add_argument("--non-interactive", action="store_true", help="no prompts (scripts); with --write: write")
    p.add_argument("--seconds", type=float, default=4.0, help="how long each microphone records speech")
    p.add_argument("--mic", action="append", default=[], metavar="NAME",
                   help="test only this ALSA capture device (repeatable; default: every candidate)")
    p.add_argument("--speaker", default=None, metavar="NAME", help="ALSA playback device (default: from the config)")
    p = sub.add_parser("trigger", help="start a session in the running daemon")
    _add_config(p)
    p = sub.add_parser("status", help="state and counters of the running daemon")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("events", help="follow the running daemon's state changes and events as JSON lines")
    _add_config(p)
    p = sub.add_parser("record", help="record the next SECONDS in the running daemon ([debug] record_sessions)")
    _add_config(p)
    p.add_argument("--seconds", type=float, default=30.0, help="how long (a session then running is recorded whole)")
    p = sub.add_parser("mute", help="privacy mute: no wake, no session, no microphone audio leaves the device")
    _add_config(p)
    p = sub.add_parser("unmute", help="lift a software mute (not one of the hardware mute switch)")
    _add_config(p)
    p = sub.add_parser("tool", help="run one configured tool exactly as the agent would")
    _add_config(p)
    p.add_argument("name")
    p.add_argument("assignments", nargs="*", metavar="key=value")
    p = sub.add_parser("demo", help="the whole product end to end on this machine, no hardware needed")
    p.add_argument("--live", action="store_true", help="use the real Vatel API (ORG_API_KEY and --agent-id)")
    p.add_argument("--agent-id", default=None)
    p.add_argument("--out", default=None, help="directory for the demo's files (default: a temporary one)")
    p = sub.add_parser("report", help="turn a session recording into one self-contained HTML page")
    p.add_argument("dir", help="the recording's directory")
    p.add_argument("--out", default=None, help="HTML file to write (default: DIR/report.html)")
    return parser


def _config_path(args: argparse.Namespace) -> str:
    return str(getattr(args, "config", None) or _default_config())


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _load_or_defaults(args: argparse.Namespace) -> Config:
    """The config when there is one; defaults for the device set-up commands otherwise."""
    path = _config_path(args)
    if os.path.exists(path):
        return load_config(path)
    from vatel_edge.config import VatelConfig

    return Config(vatel=VatelConfig(agent_id="00000000-0000-0000-0000-000000000000"))


def _socket_path(args: argparse.Namespace) -> str:
    path = _config_path(args)
    if os.path.exists(path):
        return load_config(path).control.socket_path
    from vatel_edge.config import ControlConfig

    return ControlConfig().socket_path


def check_config_command(
    path: str, out: TextIO, err: TextIO, *, environ: Mapping[str, str] | None = None, root: str = "/"
) -> int:
    """`vatel-edge check-config`: 0 valid (summary on `out`), 2 invalid, 1 file missing or unreadable.

    Problems go to `err`, one per line; an unavailable API key is one of them (the key is never printed).
    """
    check = check_config(path, environ=environ, root=root)
    if not check.readable:
        for problem in check.problems:
            print(problem, file=err)
        return 1
    cfg = check.config
    if check.problems or cfg is None:
        n = len(check.problems)
        for problem in check.problems:
            print(problem, file=err)
        print(f"INVALID: {path} ({n} problem{'s' if n != 1 else ''})", file=err)
        return 2
    print(f"OK: {path}", file=out)
    print(f"  agent:    {cfg.vatel.agent_id}", file=out)
    print(f"  base_url: {cfg.vatel.base_url}", file=out)
    print(f"  wake:     {cfg.wake.mode}", file=out)
    print(f"  devices:  capture={cfg.audio.capture_device} playback={cfg.audio.playback_device}", file=out)
    print(f"  tools:    {len(cfg.tools)}", file=out)
    print("".join(f"warning: {w}\n" for w in check.warnings), end="", file=out)
    return 0


async def _cmd_run(args: argparse.Namespace) -> int:
    from vatel_edge.daemon import Daemon
    from vatel_edge.journal import setup_logging
    from vatel_edge.notify import Notifier

    cfg = _load(args)
    setup_logging(args.log_level or cfg.log.level)
    api_key = read_api_key(cfg.vatel)
    # unset_environment: tool processes must not inherit NOTIFY_SOCKET.
    daemon = Daemon(cfg, api_key=api_key, notifier=Notifier(unset_environment=True))
    daemon.install_signal_handlers()
    await daemon.run()
    return 0


async def _cmd_simulate(args: argparse.Namespace) -> int:
    from vatel_edge.devkit.simulator import run_simulator_command

    return await run_simulator_command(args.host, args.port, None, args.agent_id, sys.stdout)


async def _cmd_devices(args: argparse.Namespace) -> int:
    from vatel_edge.audio.setup_tools import devices_command

    return await devices_command(sys.stdout)


async def _cmd_mic_test(args: argparse.Namespace) -> int:
    import dataclasses

    from vatel_edge.audio.setup_tools import mic_test
    from vatel_edge.audio.vad import VadParams, VoiceDetector
    from vatel_edge.audio.wake_tools import wake_word_meter

    cfg = _load_or_defaults(args)
    audio = cfg.audio if args.device is None else dataclasses.replace(cfg.audio, capture_device=args.device)
    await mic_test(audio, args.seconds, sys.stdout, VoiceDetector(VadParams.from_wake(cfg.wake)),
                   wake_word_meter(cfg))
    return 0


async def _cmd_wakeword_test(args: argparse.Namespace) -> int:
    from vatel_edge.audio.wake_tools import wakeword_test

    return wakeword_test(_load_or_defaults(args), args.files, sys.stdout, wake_words=args.wake_word,
                         cutoff=args.cutoff)


async def _cmd_speaker_test(args: argparse.Namespace) -> int:
    import dataclasses

    from vatel_edge.audio.setup_tools import speaker_test

    cfg = _load_or_defaults(args)
    audio = cfg.audio if args.device is None else dataclasses.replace(cfg.audio, playback_device=args.device)
    await speaker_test(audio)
    return 0


async def _cmd_doctor(args: argparse.Namespace) -> int:
    from vatel_edge.doctor import DoctorOptions, run_doctor

    opts = DoctorOptions(_config_path(args), write=args.write, interactive=not args.non_interactive,
                         seconds=args.seconds, mics=tuple(args.mic), speaker=args.speaker)
    return await run_doctor(opts, sys.stdout)


async def _cmd_trigger(args: argparse.Namespace) -> int:
    from vatel_edge.control import control_request

    reply = await control_request(_socket_path(args), {"cmd": "trigger"})
    if reply.get("started"):
        print("session starting")
        return 0
    print(f"no session started (daemon is {reply.get('state', 'busy')})")
    return 1


async def _cmd_status(args: argparse.Namespace) -> int:
    from vatel_edge.control import control_request
    from vatel_edge.status import format_status

    reply = await control_request(_socket_path(args), {"cmd": "status"})
    status: dict[str, Any] = reply.get("status", {})
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    return 0


async def _cmd_events(args: argparse.Namespace) -> int:
    from vatel_edge.control import event_stream

    async for event in event_stream(_socket_path(args)):
        sys.stdout.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    print("vatel-edge: the daemon closed the event stream (stopped or reloaded)", file=sys.stderr)
    return 1


async def _cmd_record(args: argparse.Namespace) -> int:
    from vatel_edge.recording import record_command

    return await record_command(_socket_path(args), args.seconds)


async def _cmd_mute(args: argparse.Namespace) -> int:
    from vatel_edge.control import control_request

    muted = args.command == "mute"
    reply = await control_request(_socket_path(args), {"cmd": args.command})
    if "muted" not in reply:
        print(f"vatel-edge: {reply.get('error', 'no answer')}", file=sys.stderr)
        return 1
    if reply.get("ok"):
        print("muted" if muted else "unmuted")
        return 0
    print("still muted: the hardware mute switch is at mute (it wins over software)", file=sys.stderr)
    return 1


async def _cmd_tool(args: argparse.Namespace) -> int:
    from vatel_edge.tools.cli import run_tool_command

    return await run_tool_command(_load(args), args.name, list(args.assignments), sys.stdout)


async def _cmd_demo(args: argparse.Namespace) -> int:
    from vatel_edge.devkit.demo import run_demo

    return await run_demo(live=args.live, agent_id=args.agent_id, out_dir=args.out, out=sys.stdout)


async def _cmd_report(args: argparse.Namespace) -> int:
    from vatel_edge.report import report_command

    return report_command(args.dir, args.out, sys.stdout)


COMMANDS = {
    "run": _cmd_run,
    "simulate": _cmd_simulate,
    "devices": _cmd_devices,
    "mic-test": _cmd_mic_test,
    "wakeword-test": _cmd_wakeword_test,
    "speaker-test": _cmd_speaker_test,
    "doctor": _cmd_doctor,
    "trigger": _cmd_trigger,
    "status": _cmd_status,
    "events": _cmd_events,
    "record": _cmd_record,
    "mute": _cmd_mute,
    "unmute": _cmd_mute,
    "tool": _cmd_tool,
    "demo": _cmd_demo,
    "report": _cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vatel-edge` command."""
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config_command(_config_path(args), sys.stdout, sys.stderr, root=args.root)
    if args.command not in ("run",):
        import logging

        logging.basicConfig(level=(args.log_level or "warning").upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"vatel-edge: invalid configuration ({_config_path(args)}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG if args.command == "run" else 2
    except ControlError as exc:
        print(f"vatel-edge: {exc}", file=sys.stderr)
        return 1
    except VatelEdgeError as exc:
        print(f"vatel-edge: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
