"""State hooks: [feedback.hooks] command run on each visible state change, for hardware vatel-edge does not
drive itself (APA102/ReSpeaker LED rings, displays).

The command runs through the shell tools' runner (tools/shell.py: argv without a shell, minimal environment,
its own process group, killed on timeout, output capped), with VATEL_OLD_STATE and VATEL_NEW_STATE in its
environment, {old} and {new} replaced in its argv and {"old": ..., "new": ...} on stdin.

Queue policy: at most one run at a time and at most one state waiting; a newer state replaces the waiting
one (the hook always ends at the latest state, and its `old` is the state it was last shown). `notify` never
blocks. A slow, hanging or failing hook is logged once per burst (until it is idle again).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from vatel_edge.config.schema import HooksConfig
from vatel_edge.config.tools import DEFAULT_KILL_GRACE_S, DEFAULT_MAX_OUTPUT_BYTES, ShellSpec, Template
from vatel_edge.feedback.visible import Visible
from vatel_edge.lifecycle import AsyncClosing, cancel_and_wait
from vatel_edge.tools.shell import run_shell

log = logging.getLogger(__name__)

HOOK_NAME = "feedback.hooks"
ENV_OLD, ENV_NEW = "VATEL_OLD_STATE", "VATEL_NEW_STATE"
#: On shutdown the hook is shown "off" once more, within this bound (inside systemd's stop timeout).
FINAL_RUN_S = 2.0


class StateHook(AsyncClosing):
    """The configured hook; `notify(new)` on each visible state change (see the module docstring)."""

    def __init__(self, cfg: HooksConfig, initial: Visible = Visible.OFF,
                 environ: Mapping[str, str] | None = None) -> None:
        self._cfg = cfg
        self._spec = ShellSpec(
            argv=tuple(Template.parse(a) for a in cfg.command), cwd=cfg.cwd, env_pass=(ENV_OLD, ENV_NEW),
            max_output_bytes=DEFAULT_MAX_OUTPUT_BYTES, kill_grace_s=min(DEFAULT_KILL_GRACE_S, 1.0),
        )
        self._environ = os.environ if environ is None else environ
        self._shown = initial  # the state the hook was last handed (the next run's `old`)
        self._pending: Visible | None = None
        self._task: asyncio.Task[None] | None = None
        self._warned = False  # logged in this burst already
        self.runs = 0
        self.replaced = 0
        self.timeouts = 0
        self.failures = 0

    async def __aenter__(self) -> StateHook:
        return self

    @property
    def enabled(self) -> bool:
        """Whether a command is configured."""
        return bool(self._cfg.command)

    @property
    def busy(self) -> bool:
        """A run is in progress (or states are waiting)."""
        return self._task is not None and not self._task.done()

    def notify(self, new: Visible) -> None:
        """The visible state changed to `new`: run the hook now, or queue `new` behind the running one."""
        if not self.enabled or (new is self._shown and not self.busy):
            return
        if self.busy:
            if self._pending is not None:
                self.replaced += 1
                self._warn("still running; newer states replace the waiting one (the hook sees the latest)")
            self._pending = new
            return
        self._task = asyncio.get_running_loop().create_task(self._drain(new), name="state hook")

    async def _drain(self, new: Visible | None) -> None:
        while new is not None:
            if new is not self._shown:  # e.g. A -> B running, B -> C -> B since: nothing to show
                await self.run_once(new, self._cfg.timeout_s)
            new, self._pending = self._pending, None
        self._warned = False  # idle again: the burst is over

    async def run_once(self, new: Visible, timeout_s: float) -> str | None:
        """Run the hook for the change to `new` (bounded by `timeout_s`); its output, None when it timed out."""
        old, self._shown = self._shown, new
        self.runs += 1
        values = {"old": old.value, "new": new.value}
        environ = {"PATH": self._environ.get("PATH", ""), "LANG": self._environ.get("LANG", ""),
                   ENV_OLD: old.value, ENV_NEW: new.value}
        try:
            async with asyncio.timeout(timeout_s):
                output = await run_shell(HOOK_NAME, self._spec, values, call_id=f"hook-{self.runs}", session_id=None,
                                         environ=environ)
        except TimeoutError:
            self.timeouts += 1
            self._warn(f"{old.value} -> {new.value}: no exit within {timeout_s:g} s; its process group was killed")
            return None
        if output.startswith("error:"):
            self.failures += 1
            self._warn(f"{old.value} -> {new.value}: {output[:200]}")
        else:
            log.debug("state hook %s -> %s: done", old.value, new.value)
        return output

    def _warn(self, text: str) -> None:
        if self._warned:
            log.debug("state hook: %s", text)
            return
        self._warned = True
        log.warning("state hook: %s", text)

    async def aclose(self) -> None:
        """Stop a run in progress (its process group is killed), then show "off" once, bounded (idempotent)."""
        task, self._task = self._task, None
        self._pending = None
        await cancel_and_wait(task)
        if self.enabled and self._shown is not Visible.OFF:
            await self.run_once(Visible.OFF, min(FINAL_RUN_S, self._cfg.timeout_s))
