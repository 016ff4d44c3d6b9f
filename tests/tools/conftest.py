"""Fixtures for the tool tests."""

from __future__ import annotations

import os

import pytest

from tests.support.tools import RecordingContext


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment handed to registries in tests (PATH and LANG only, plus what a test adds)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
