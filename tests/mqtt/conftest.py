"""Fixtures of the MQTT tests: a real Mosquitto broker per test (loopback, password file, ACL, TLS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mqtt import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker.create(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()
