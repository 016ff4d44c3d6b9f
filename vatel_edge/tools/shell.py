"""Shell actions: run a fixed argv (never through a shell) with the validated arguments.

Each placeholder becomes part of exactly one argv element, so `; rm -rf /`, `$(id)`, quotes and newlines
are plain text. The process gets a minimal environment, the argument map as JSON on stdin, and its own
process group, which is sent SIGTERM and then SIGKILL when the action is cancelled or times out.
stdout and stderr are read to the end but only `max_output_bytes` of each is kept (head of stdout,
tail of stderr), so a flooding tool can neither block nor eat memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

from vatel_edge.config.tools import ShellSpec
from vatel_edge.tools.args import render_text

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: After the main process exits, how long to wait for its pipes to close (a background child may hold them).
PIPE_DRAIN_S = 0.5
#: After SIGKILL, how long to wait for the main process to be reaped.
REAP_S = 2.0
TRUNCATED = " [output truncated]"


def tool_env(
    tool_name: str,
    call_id: str,
    session_id: str | None,
    env_pass: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The minimal environment of a tool process: PATH, LANG, VATEL_* and the env_pass names that are set."""
    source = os.environ if environ is None else environ
    env = {
        "PATH": source.get("PATH") or DEFAULT_PATH,
        "LANG": source.get("LANG") or "C.UTF-8",
        "VATEL_TOOL_NAME": tool_name,
        "VATEL_TOOL_CALL_ID": call_id,
        "VATEL_SESSION_ID": session_id or "",
    }
    for name in env_pass:
        if name in source:
            env[name] = source[name]
    return env


class _Collector(asyncio.SubprocessProtocol):
    """Keeps the head of stdout and the tail of stderr, each at most `cap` bytes; discards the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdout_dropped = 0
        self.exited = asyncio.Event()
        self.finished = asyncio.Event()  # exited and every pipe closed

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd == 1:
            room = max(0, self.cap - len(self.stdout))
            self.stdout += data[:room]
            self.stdout_dropped += len(data) - min(room, len(data))
        elif fd == 2:
            self.stderr += data
            if len(self.stderr) > self.cap:
                del self.stderr[: len(self.stderr) - self.cap]

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.finished.set()


def _killpg(pgid: int, sig: signal.Signals) -> bool:
    """Signal a whole process group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        log.warning("cannot signal process group %d: %s", pgid, exc.strerror)
        return False
    return True


async def _terminate_group(pgid: int, collector: _Collector, grace_s: float) -> None:
    """SIGTERM the group, give the main process `grace_s` to exit, then SIGKILL whatever is left of the group."""
    try:
        if _killpg(pgid, signal.SIGTERM):
            try:
                await asyncio.wait_for(collector.exited.wait(), grace_s)
            except TimeoutError:
                log.info("process group %d ignored SIGTERM for %.1f s; killing it", pgid, grace_s)
    finally:
        _killpg(pgid, signal.SIGKILL)  # also reaches children that outlived the main process
    try:
        await asyncio.wait_for(collector.exited.wait(), REAP_S)
    except TimeoutError:
        log.warning("process group %d: main process not reaped %.1f s after SIGKILL", pgid, REAP_S)


def _text(data: bytes | bytearray, *, tail: bool = False) -> str:
    text = bytes(data).decode("utf-8", errors="replace")
    if tail:
        text = text.lstrip("\ufffd")  # the cut may split a character
    return text.strip()


def shell_output(returncode: int, collector: _Collector) -> str:
    """The tool_call_output for a finished process."""
    if returncode == 0:
        out = _text(collector.stdout) or "success"
        return out + TRUNCATED if collector.stdout_dropped else out
    detail = _text(collector.stderr, tail=True)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        head = f"error: killed by {name}"
    else:
        head = f"error: exit {returncode}"
    return f"{head}: {detail}" if detail else head


async def run_shell(
    tool_name: str,
    spec: ShellSpec,
    values: Mapping[str, Any],
    *,
    call_id: str,
    session_id: str | None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Run the tool's argv with `values` filled in; the output string (never raises except CancelledError)."""
    argv = [template.render(values, render_text) for template in spec.argv]
    if any("\x00" in item for item in argv):
        return "error: an argument contains a NUL character"
    env = tool_env(tool_name, call_id, session_id, spec.env_pass, environ)
    payload = json.dumps(dict(values), ensure_ascii=False).encode("utf-8")
    loop = asyncio.get_running_loop()
    collector = _Collector(spec.max_output_bytes)
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: collector,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        # argv[0] and cwd come from the config; the agent's values are not repeated here.
        reason = exc.strerror or exc.__class__.__name__
        return f"error: cannot run {argv[0]} (cwd {spec.cwd}): {reason}"
    pgid = transport.get_pid()
    log.debug("tool %s: started pid %d (%d argv elements)", tool_name, pgid, len(argv))
    try:
        stdin = transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.write(payload)  # type: ignore[attr-defined]
            stdin.close()
        try:
            await collector.exited.wait()
        except asyncio.CancelledError:
            log.info("tool %s: stopping process group %d", tool_name, pgid)
            await _terminate_group(pgid, collector, spec.kill_grace_s)
            raise
        try:
            await asyncio.wait_for(collector.finished.wait(), PIPE_DRAIN_S)
        except TimeoutError:
            log.debug("tool %s: output pipes still open after exit (a background process holds them)", tool_name)
        returncode = transport.get_returncode()
    finally:
        transport.close()
    if returncode is None:  # pragma: no cover - exited is only set once the return code is known
        return "error: process state unknown"
    return shell_output(returncode, collector)
