"""Component lifecycle: an async context manager whose exit is its idempotent `aclose()`, and the awaited
cancellation of owned tasks (STYLE.md: every task has an owner, every cancel is awaited)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from types import TracebackType
from typing import Any, Protocol

from vatel_edge.state import State, StateMachine, Transition

log = logging.getLogger(__name__)


class AsyncClosing:
    """Mixin: `async with component:` ends with `await component.aclose()` (which must be idempotent)."""

    async def aclose(self) -> None:  # pragma: no cover - every component defines it
        raise NotImplementedError

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel the owned tasks and wait until every one has ended.

    Their outcome is consumed here: a task's own failure is logged by whoever watches it. If the caller is
    itself cancelled meanwhile, that cancellation propagates (unlike a bare suppress(CancelledError)).
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)


class TaskSet:
    """Owned tasks: each is logged if it dies, and `cancel_all()` awaits every cancel."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as an owned task called `name`."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s died: %s", task.get_name(), exc, exc_info=exc)

    async def cancel_all(self) -> None:
        """Cancel every owned task and wait until each has ended."""
        tasks = list(self._tasks)
        self._tasks.clear()
        await cancel_and_wait(*tasks)


class Runnable(Protocol):
    """A long-running component: `await run()` until `stop()`."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@contextlib.asynccontextmanager
async def running(component: Runnable, stop_timeout: float = 10.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run `component` in a task for the body of the block, then stop it and await the task."""
    task = asyncio.get_running_loop().create_task(component.run(), name=f"{type(component).__name__} run")
    try:
        yield task
    finally:
        component.stop()
        await asyncio.wait_for(task, timeout=stop_timeout)


async def wait_for_state(sm: StateMachine, state: State, timeout: float) -> None:
    """Wait until `sm` enters `state` (at once when it is there); TimeoutError after `timeout` seconds."""
    if sm.state is state:
        return
    entered = asyncio.get_running_loop().create_future()

    def listener(tr: Transition) -> None:
        if tr.new is state and not entered.done():
            entered.set_result(None)

    sm.add_listener(listener)
    try:
        await asyncio.wait_for(entered, timeout)
    finally:
        sm.remove_listener(listener)
