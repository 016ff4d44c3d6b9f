"""The reliability suite's pytest set-up (the soak marker). Its helpers (the daemon on the real-time test
devices in manual wake mode, short timeouts, log counting and secret scanning) are in tests/support/, the
sd_notify listener fixture `notify` in tests/conftest.py.

Every daemon here runs in-process on `test_mic`/`test_spk` (the session-scoped PulseAudio server of
tests/conftest.py) against a local `Simulator`; wakes come from `daemon.trigger()`, so no speech is needed.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: the short CI soak (bench/soak as a subprocess); -m 'not soak' skips it")

