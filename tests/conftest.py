"""Suite-wide fixtures: the one test asoundrc (installed before any alsaaudio use), PulseAudio, sd_notify."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.asound import install_alsa_config
from tests.support.notify import NotifyListener
from tests.support.pulse import PulseServer

install_alsa_config()


@pytest.fixture(scope="session")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """A private PulseAudio server with 24 kHz mono null sinks `mic` and `spk` (test_mic / test_spk)."""
    server = PulseServer.start(tmp_path_factory.mktemp("pulse"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    """A bound sd_notify socket standing in for systemd's (NOTIFY_SOCKET = notify.path)."""
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()
