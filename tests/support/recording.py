"""Session recordings in a test: a daemon recording into tmp_path/state, and reading what it wrote."""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.support.config import daemon_config
from tests.support.events import Events
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import Config
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.simulator import Simulator
from vatel_edge.state import State

FMT = VATEL_FORMAT
#: What one recording directory holds, exactly.
LAYOUT = {"mic.wav", "sent.wav", "played.wav", "timeline.json"}
Pcm = npt.NDArray[np.int16]


def recording_config(tmp_path: Path, sim: Simulator, keep: int, **overrides: Any) -> Config:
    """Manual wake, recordings on (`keep`) in tmp_path/state."""
    return daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual", "cooldown_ms": 0},
                         state={"directory": str(tmp_path / "state")},
                         debug={"record_sessions": keep, **overrides.pop("debug", {})}, **overrides)


@asynccontextmanager
async def live(cfg: Config, sim: Simulator) -> AsyncIterator[tuple[Daemon, Events]]:
    """A running daemon of `cfg` (LISTENING when the block starts) and its events."""
    events = Events()
    daemon = Daemon(cfg, api_key=sim.api_key, on_event=events)
    async with running(daemon):
        await daemon.wait_state(State.LISTENING, timeout=20)
        yield daemon, events


def recordings(tmp_path: Path) -> list[Path]:
    """The recording directories under tmp_path/state/recordings, oldest (lowest n) first."""
    root = tmp_path / "state" / "recordings"
    return sorted((p for p in root.iterdir()), key=lambda p: int(p.name.rsplit("-", 1)[1])) if root.exists() else []


async def wait_complete(tmp_path: Path, count: int, timeout: float = 10.0) -> list[Path]:
    """The recordings once at least `count` have their timeline.json (the writer thread writes it last)."""
    deadline = time.monotonic() + timeout
    while True:
        done = [p for p in recordings(tmp_path) if (p / "timeline.json").exists()]
        if len(done) >= count or time.monotonic() > deadline:
            return done
        await asyncio.sleep(0.1)


def read_wav(path: Path) -> Pcm:
    """The samples of a recording's WAV, checked to be 24 kHz mono PCM16."""
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (FMT.rate, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def timeline(rec: Path) -> dict[str, Any]:
    """A recording's timeline.json."""
    doc: dict[str, Any] = json.loads((rec / "timeline.json").read_text(encoding="utf-8"))
    return doc


