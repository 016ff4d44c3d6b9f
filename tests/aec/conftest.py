"""Fixtures of the echo-cancellation tests: the agent's and the user's speech (helpers in tests/support/aec.py)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.aec import RATE
from vatel_edge.devkit import aec_lab


@pytest.fixture(scope="session")
def agent_speech() -> npt.NDArray[np.float64]:
    return aec_lab.agent_speech(RATE)


@pytest.fixture(scope="session")
def user_speech() -> npt.NDArray[np.float64]:
    return aec_lab.user_speech(RATE)
