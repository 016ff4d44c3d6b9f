"""Suite-wide fixtures: the one test asoundrc (installed before any alsaaudio use) and PulseAudio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.asound import install_alsa_config
from tests.pulse import PulseServer

install_alsa_config()


@pytest.fixture(scope="session")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """A private PulseAudio server with 24 kHz mono null sinks `mic` and `spk` (test_mic / test_spk)."""
    server = PulseServer.start(tmp_path_factory.mktemp("pulse"))
    try:
        yield server
    finally:
        server.stop()
