"""Log records in tests: counting mentions per logger, the full text, and scans for leaked secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest

from vatel_edge.devkit.simulator import Simulator


def records_at_least(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= level]


def count_mentions(caplog: pytest.LogCaptureFixture, needle: str, level: int = logging.WARNING) -> dict[str, int]:
    """Per logger: how many records at `level` or above mention `needle` (message or exception text)."""
    out: dict[str, int] = {}
    for r in records_at_least(caplog, level):
        if r.name.startswith("vatel_edge.devkit.simulator"):
            continue  # the simulator's own account of the fault is not the daemon's
        text = r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        if needle.lower() in text.lower():
            out[r.name] = out.get(r.name, 0) + 1
    return out


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record, fully formatted (message, exception, stack), for secret scans."""
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = []
    for r in caplog.records:
        parts.append(fmt.format(r))
        parts.append(repr(r.args))
        parts.append(repr(getattr(r, "vatel", "")))
    return "\n".join(parts)


def sim_secrets(sim: Simulator) -> list[str]:
    """The API key and every token the simulator issued (the values that must never leak)."""
    return [sim.api_key, *sim.issued]


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[str], where: str) -> None:
    blob = "\n".join(texts)
    for secret in secrets:
        assert secret, "empty secret in the scan list"
        assert secret not in blob, f"a secret ({len(secret)} chars) leaked into {where}"
        # also its tail: the JWT signature part alone is as good as the token for nobody, but a key's tail is
        tail = secret[-16:]
        assert tail not in blob, f"the tail of a secret leaked into {where}"
