"""Component lifecycle: an async context manager whose exit is its idempotent `aclose()`, and the awaited
cancellation of owned tasks (STYLE.md: every task has an owner, every cancel is awaited)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any


class AsyncClosing:
    """Mixin: `async with component:` ends with `await component.aclose()` (which must be idempotent)."""

    async def aclose(self) -> None:  # pragma: no cover - every component defines it
        raise NotImplementedError

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the owned tasks and wait until every one has ended.

    Their outcome is consumed here: a task's own failure is logged by whoever watches it. If the caller is
    itself cancelled meanwhile, that cancellation propagates (unlike a bare suppress(CancelledError)).
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)
