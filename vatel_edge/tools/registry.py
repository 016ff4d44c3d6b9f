"""The tool registry: answers each tool_call with exactly one output string.

Each action runs in an inner task owned by the registry, under one global concurrency limit and the
tool's time limit (`timeout_s` covers waiting for a free slot and running). Cancelling that task on
barge-in (`cancel_interruptible`) or at session end (`drain`) never cancels the caller. GPIO lines are
requested on enter and held until exit, so output values persist between calls; only lines named in
the config are ever requested.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from vatel_edge.config.tools import BuiltinSpec, GpioSpec, HttpSpec, Placeholder, ShellSpec, ToolSpec
from vatel_edge.errors import ToolError
from vatel_edge.gpio import GpioBackend, InputLine, OutputLine
from vatel_edge.lifecycle import AsyncClosing
from vatel_edge.protocol import ToolCall
from vatel_edge.tools.args import ArgumentError, render_text, validate_arguments
from vatel_edge.tools.builtin import ToolContext, run_builtin
from vatel_edge.tools.http import make_client, missing_header_env, plain_http_host, run_http
from vatel_edge.tools.shell import run_shell

log = logging.getLogger(__name__)

LineKey = tuple[str, int | str]


@dataclass
class _Running:
    """An action in flight; `reason` is set when the registry cancels it."""

    spec: ToolSpec
    call_id: str
    reason: str | None = None


def _seconds(x: float) -> str:
    return render_text(round(x, 3))


class ToolRegistry(AsyncClosing):
    """Runs configured tools for tool_call messages (async context manager)."""

    def __init__(
        self,
        specs: Mapping[str, ToolSpec],
        gpio: GpioBackend,
        *,
        max_concurrency: int,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._specs = dict(specs)
        self._gpio = gpio
        self._max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._environ = environ
        self._outputs: dict[LineKey, OutputLine] = {}
        self._inputs: dict[LineKey, InputLine] = {}
        self._line_locks: dict[LineKey, asyncio.Lock] = {}
        self._running: dict[asyncio.Task[str], _Running] = {}
        self._client: httpx.AsyncClient | None = None
        self._state = "new"  # new -> open -> closed

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> ToolRegistry:
        if self._state != "new":
            raise ToolError("a ToolRegistry can be entered once")
        try:
            await asyncio.to_thread(self._open_lines)
        except BaseException:
            await asyncio.to_thread(self._release_lines)
            self._state = "closed"
            raise
        self._line_locks = {key: asyncio.Lock() for key in [*self._outputs, *self._inputs]}
        if any(isinstance(s.params, HttpSpec) for s in self._specs.values()):
            self._client = make_client()
        for spec in self._specs.values():
            if isinstance(spec.params, HttpSpec):
                for header, env in missing_header_env(spec.params, self._environ):
                    log.warning(
                        "tools.%s.headers_env.%s: environment variable %s is not set; calls will answer an error",
                        spec.name, header, env,
                    )
                host = plain_http_host(spec.params)
                if spec.params.headers_env and host is not None:
                    log.warning(
                        "tools.%s: headers_env values go over plain http to %s; prefer https off this machine",
                        spec.name, host,
                    )
        self._state = "open"
        log.info("tools ready: %s", ", ".join(sorted(self._specs)) or "(none)")
        return self


    async def aclose(self) -> None:
        """Cancel running actions (their process groups are killed), release GPIO lines, close HTTP. Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        pending = self._cancel_where(lambda r: True, "shutting down")
        if pending:
            await asyncio.wait(pending)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        await asyncio.to_thread(self._release_lines)

    def _open_lines(self) -> None:
        for spec in self._specs.values():
            params = spec.params
            if not isinstance(params, GpioSpec):
                continue
            key = params.line_key
            if key in self._outputs or key in self._inputs:
                continue  # shared with another tool; config/tools.py checked that the settings agree
            owner = f"tool {spec.name!r}"  # the first tool on a shared line holds it for all of them
            try:
                if params.is_output:
                    self._outputs[key] = self._gpio.open_output(
                        params.chip, params.line, active_low=params.active_low, owner=owner
                    )
                else:
                    self._inputs[key] = self._gpio.open_input(
                        params.chip, params.line, active_low=params.active_low, owner=owner, bias=params.bias
                    )
            except ToolError as exc:
                raise ToolError(f"tools.{spec.name}: {exc}") from None

    def _release_lines(self) -> None:
        on_exit = {
            s.params.line_key: s.params.on_exit for s in self._specs.values() if isinstance(s.params, GpioSpec)
        }
        outputs, self._outputs = self._outputs, {}
        inputs, self._inputs = self._inputs, {}
        for key, out in outputs.items():
            try:
                out.release(set_inactive=on_exit.get(key, "inactive") == "inactive")
            except (OSError, ToolError) as exc:
                log.warning("releasing GPIO %s line %s failed: %s", key[0], key[1], exc)
        for key, inp in inputs.items():
            try:
                inp.release()
            except (OSError, ToolError) as exc:
                log.warning("releasing GPIO %s line %s failed: %s", key[0], key[1], exc)

    # ------------------------------------------------------------------ calls

    @property
    def running(self) -> int:
        """Actions in flight (waiting for a slot or running)."""
        return sum(1 for t in self._running if not t.done())

    async def call(self, call: ToolCall, ctx: ToolContext) -> str:
        """Run one tool call; its output string. Never raises (except when the caller itself is cancelled)."""
        name = call.tool_name
        spec = self._specs.get(name)
        if spec is None:
            log.warning("unknown tool %r (call %s)", name, call.tool_call_id)
            return f"error: unknown tool {name}"
        if self._state != "open":
            log.warning("tool %s called while the registry is %s", name, self._state)
            return "error: tools are not available right now"
        try:
            values = validate_arguments(spec.args, call.arguments)
        except ArgumentError as exc:
            log.info("tool %s (call %s): %s", name, call.tool_call_id, exc)
            return f"error: {exc}"
        started = time.monotonic()
        task = asyncio.create_task(self._run(spec, values, call, ctx), name=f"tool {name} {call.tool_call_id}")
        running = _Running(spec, call.tool_call_id)
        self._running[task] = running
        task.add_done_callback(self._forget)
        # Wait without propagating our own cancellation into the action: the registry owns the task.
        await asyncio.wait({task})
        # _run catches everything but CancelledError
        output = f"error: cancelled ({running.reason or 'cancelled'})" if task.cancelled() else task.result()
        log.info(
            "tool %s (call %s) answered %s in %d ms",
            name, call.tool_call_id, "an error" if output.startswith("error:") else "ok",
            (time.monotonic() - started) * 1000,
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("tool %s output: %.200s", name, output)
        return output

    def _forget(self, task: asyncio.Task[str]) -> None:
        self._running.pop(task, None)

    async def _run(self, spec: ToolSpec, values: dict[str, Any], call: ToolCall, ctx: ToolContext) -> str:
        """The inner task: slot, time limit, action; every failure becomes an output string."""
        phase = ["waiting for a free slot"]

        async def limited() -> str:
            async with self._slots:
                phase[0] = "running"
                return await self._action(spec, values, call, ctx)

        try:
            return await asyncio.wait_for(limited(), spec.timeout_s)
        except TimeoutError:
            if phase[0] == "running":
                log.warning("tool %s (call %s) timed out after %s s", spec.name, call.tool_call_id, spec.timeout_s)
                return f"error: timed out after {_seconds(spec.timeout_s)} s"
            log.warning("tool %s: no free slot within %s s", spec.name, spec.timeout_s)
            return (
                f"error: timed out after {_seconds(spec.timeout_s)} s waiting for a free slot "
                f"({self._max_concurrency} tool actions running)"
            )
        except ToolError as exc:
            log.warning("tool %s (call %s) failed: %s", spec.name, call.tool_call_id, exc)
            return f"error: {exc}"
        except Exception:
            log.exception("tool %s (call %s) crashed", spec.name, call.tool_call_id)
            return f"error: internal error in tool {spec.name}"

    async def _action(self, spec: ToolSpec, values: dict[str, Any], call: ToolCall, ctx: ToolContext) -> str:
        params = spec.params
        if isinstance(params, GpioSpec):
            return await self._gpio_action(params, values)
        if isinstance(params, ShellSpec):
            return await run_shell(
                spec.name, params, values,
                call_id=call.tool_call_id, session_id=ctx.session_id, environ=self._environ,
            )
        if isinstance(params, HttpSpec):
            if self._client is None:
                raise ToolError("HTTP client is not open")
            return await run_http(
                spec.name, params, values, self._client, timeout_s=spec.timeout_s, environ=self._environ
            )
        if isinstance(params, BuiltinSpec):
            return run_builtin(params, values, ctx)
        raise ToolError(f"unknown action {spec.action}")  # pragma: no cover - config/tools.py only builds the four

    async def _gpio_action(self, params: GpioSpec, values: Mapping[str, Any]) -> str:
        try:
            return await self._gpio_line_action(params, values)
        except OSError as exc:
            raise ToolError(f"GPIO chip {params.chip!r} line {params.line!r}: {exc.strerror or exc}") from None

    async def _gpio_line_action(self, params: GpioSpec, values: Mapping[str, Any]) -> str:
        key = params.line_key
        async with self._line_locks[key]:
            if params.mode == "read":
                active = await asyncio.to_thread(self._inputs[key].get)
                if params.states is not None:
                    return params.states[1] if active else params.states[0]
                return "1" if active else "0"
            out = self._outputs[key]
            if params.mode == "set":
                value = params.value
                active = bool(values[value.name]) if isinstance(value, Placeholder) else bool(value)
                await asyncio.to_thread(out.set, active)
                return "ok"
            pulse_ms = params.pulse_ms or 0
            await asyncio.to_thread(out.set, True)
            try:
                await asyncio.sleep(pulse_ms / 1000)
            finally:
                out.set(False)  # synchronous (a quick ioctl) so a cancelled pulse still ends inactive
            return "ok"

    # ------------------------------------------------------------------ barge-in and session end

    def _cancel_where(self, pick: Callable[[_Running], bool], reason: str) -> set[asyncio.Task[str]]:
        cancelled: set[asyncio.Task[str]] = set()
        for task, running in list(self._running.items()):
            if task.done() or not pick(running):
                continue
            if running.reason is None:
                running.reason = reason
            task.cancel()
            cancelled.add(task)
        return cancelled

    def cancel_interruptible(self) -> int:
        """Barge-in: cancel running actions of tools with cancel_on_interruption; how many were cancelled."""
        cancelled = self._cancel_where(lambda r: r.spec.cancel_on_interruption, "user interrupted")
        if cancelled:
            log.info("barge-in: cancelled %d tool action(s)", len(cancelled))
        return len(cancelled)

    async def drain(self, timeout: float) -> None:
        """Session end: let running actions finish for up to `timeout` s, then cancel the rest and wait for them."""
        pending = {t for t in self._running if not t.done()}
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=timeout)
        if still:
            ids = {t: self._running[t] for t in still if t in self._running}
            log.info(
                "session end: cancelling %d tool action(s) still running after %s s: %s",
                len(still), _seconds(timeout), ", ".join(sorted(r.spec.name for r in ids.values())),
            )
            for task in still:
                running = self._running.get(task)
                if running is not None and running.reason is None:
                    running.reason = "session ended"
                task.cancel()
            await asyncio.wait(still)


__all__ = ["ToolContext", "ToolRegistry"]
