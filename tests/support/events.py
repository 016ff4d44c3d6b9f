"""The daemon's event log: an `on_event` sink that keeps every (kind, text) in order."""

from __future__ import annotations


class Events:
    """The daemon's event stream (on_event sink), for assertions on what happened and in which order."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []

    def __call__(self, kind: str, text: str) -> None:
        self.rows.append((kind, text))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.rows]

    def of(self, kind: str) -> list[str]:
        return [t for k, t in self.rows if k == kind]
