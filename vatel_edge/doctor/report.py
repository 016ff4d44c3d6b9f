"""The doctor's findings: one line per check (pass / warn / fail) and, for a warn or fail, what to do."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TextIO


class Status(Enum):
    """The outcome of one check; only FAIL makes the doctor exit non-zero."""

    OK = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    """One check's outcome: `topic` (devices, mic, echo, key, api, config, service, ...), a one-line
    summary, and for a warn or fail the fix (`todo`)."""

    status: Status
    topic: str
    text: str
    todo: str = ""

    def line(self) -> str:
        """The printed line: `pass  mic    ...  -> what to do`."""
        out = f"{self.status.value:<4}  {self.topic:<8} {self.text}"
        if self.todo and self.status is not Status.OK:
            out += f"\n{'':14}-> {self.todo}"
        return out


def ok(topic: str, text: str) -> Finding:
    return Finding(Status.OK, topic, text)


def warn(topic: str, text: str, todo: str) -> Finding:
    return Finding(Status.WARN, topic, text, todo)


def fail(topic: str, text: str, todo: str) -> Finding:
    return Finding(Status.FAIL, topic, text, todo)


class Report:
    """Findings in order, printed as they come (a newcomer sees progress), and the exit status."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.findings: list[Finding] = []

    def add(self, *findings: Finding) -> None:
        for f in findings:
            self.findings.append(f)
            self.out.write(f.line() + "\n")
        self.out.flush()

    def extend(self, findings: Iterable[Finding]) -> None:
        self.add(*findings)

    def say(self, text: str) -> None:
        """A line that is not a check (a prompt, a heading)."""
        self.out.write(text + "\n")
        self.out.flush()

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status is status)

    @property
    def exit_status(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.count(Status.FAIL) else 0

    def summary(self) -> str:
        return (f"{self.count(Status.OK)} passed, {self.count(Status.WARN)} warnings, "
                f"{self.count(Status.FAIL)} failed")
