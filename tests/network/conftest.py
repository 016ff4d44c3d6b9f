"""Fixtures for the network tests: a simulator on loopback and a config pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from vatel_edge.config import VatelConfig
from vatel_edge.devkit.simulator import Simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(api_key="sk_test_SECRETKEY_0123456789") as s:
        yield s


@pytest.fixture
def cfg(sim: Simulator) -> VatelConfig:
    return VatelConfig(agent_id=sim.agent_id, base_url=sim.base_url, http_timeout_s=5.0)
