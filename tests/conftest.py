"""Suite-wide fixtures: the one test asoundrc (installed before any alsaaudio use), PulseAudio, sd_notify."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401  (see below)
import pytest

from tests.asound import install_alsa_config
from tests.support.notify import NotifyListener
from tests.support.pulse import PulseServer

install_alsa_config()
# hypothesis is imported here, at collection, and not first by its plugin's end-of-session summary: on
# CPython 3.11.7 that late import (pytest rewrites and parses it) failed with "SystemError: AST constructor
# recursion depth mismatch" after tests/reliability/test_faults_core.py run on its own, so a passing subset exited
# with a traceback (pytest-dev/pytest#10874 has the same error).


_servers: list[PulseServer] = []


@pytest.fixture(scope="session")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """A private PulseAudio server with 24 kHz mono null sinks `mic` and `spk` (test_mic / test_spk)."""
    server = PulseServer.start(tmp_path_factory.mktemp("pulse"))
    _servers.append(server)
    try:
        yield server
    finally:
        _servers.remove(server)
        server.stop()


@pytest.fixture(autouse=True)
def _pulse_helpers_stopped(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used the shared PulseAudio server: no feed it started may play into the next test
    (several tests left a pacat feeding `mic` running). What was left is printed and stopped."""
    yield
    if "pulse" in request.fixturenames:
        left = request.getfixturevalue("pulse").reset(everything=False)
        if left:
            print(f"\n{request.node.nodeid} left in the PulseAudio server: {left}")


@pytest.fixture(scope="module", autouse=True)
def _pulse_left_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test module (its module-scoped rooms closed): no loopback, extra sink or open stream stays
    in the shared PulseAudio server."""
    yield
    for server in _servers:
        left = server.reset()
        if left:
            print(f"\n{request.node.nodeid} left in the PulseAudio server: {left}")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    """A bound sd_notify socket standing in for systemd's (NOTIFY_SOCKET = notify.path)."""
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()
