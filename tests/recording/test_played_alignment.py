"""played.wav is at the time it was heard: in a room (a PulseAudio loopback from the speaker sink into the
microphone sink, 40 ms requested; measured 29-33 ms here) the agent's voice is in mic.wav one room delay after it
is in played.wav, window after window. Placed at the time it was written instead, it would be about the player's
device delay (up to audio.playback_buffer_ms, 120 ms) later still."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.support.pulse import PulseServer
from tests.support.recording import live, read_wav, recording_config, timeline, wait_complete
from vatel_edge.audio.aec import available_engines
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.devkit.aec_room import LoopbackRoom
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(120)
FMT = VATEL_FORMAT


async def test_played_audio_is_heard_in_the_mic_one_room_delay_later(pulse: PulseServer, tmp_path: Path) -> None:
    """Each 250 ms window of the agent's voice in played.wav, from 1.5 s into it (the loopback settling first),
    is found in mic.wav (correlation > 0.9 for most of them) at one lag between 0 and 80 ms: the room's delay,
    not more, and never before it was played. mic.wav is the raw microphone, so the echo is there although a
    canceller runs (when one is installed: then the timeline's erle has its reduction while the agent spoke)."""
    agent = shipped_speech("agent_answer.wav")[: FMT.nbytes(4500)]

    async def script(s: SimSession) -> None:
        await s.wait_audio(500, timeout=10)
        await s.send_turn("t1", agent, realtime=True)
        await asyncio.sleep(1.0)
        await s.end_session()

    engines = available_engines()
    audio = {"echo_cancel": engines[0]} if engines else {}
    with LoopbackRoom(pulse, delay_ms=40, gain_db=-6.0):
        async with Simulator(script=script) as sim, live(recording_config(tmp_path, sim, 1, audio=audio), sim) as (
            daemon, _
        ):
            await asyncio.sleep(1.0)
            assert daemon.trigger("test")
            await asyncio.sleep(0.2)
            await daemon.wait_state(State.LISTENING, timeout=20)
            done = await wait_complete(tmp_path, 1)
    erle = timeline(done[0])["erle"]
    if engines:  # the canceller ran on the echo: its reduction over time is in the timeline while the agent spoke
        assert len(erle) >= 4 and all(isinstance(db, float) for _, db in erle), erle
        turn = [e["t"] for e in timeline(done[0])["events"] if e["kind"] in ("agent_turn_start", "agent_turn_end")]
        assert all(turn[0] <= t <= turn[-1] + 0.5 for t, _ in erle), (erle, turn)
    mic = read_wav(done[0] / "mic.wav").astype(np.float64)
    played = read_wav(done[0] / "played.wav").astype(np.float64)
    loud = np.flatnonzero(np.abs(played) > 300)
    lo, hi = loud[0], loud[-1]
    lags, corrs = [], []
    win = FMT.samples(250)
    # module-loopback settles in its first ~1.5 s of carrying audio (one CI run: lags 25-38 ms at correlation
    # 0.44-0.89 there, then 34 ms at 0.9999); the windows after it are the room's steady delay
    for start in range(lo + FMT.samples(1500), hi - win, win):
        a = played[start : start + win]
        if np.abs(a).max() < 1000:
            continue
        b = mic[start - FMT.samples(100) : start + win + FMT.samples(400)]
        n = 1 << int(np.ceil(np.log2(a.size + b.size)))
        xc = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[: b.size - a.size + 1]
        k = int(np.argmax(xc))
        seg = b[k : k + a.size]
        lags.append(k - FMT.samples(100))
        corrs.append(float(np.dot(a, seg) / (np.linalg.norm(a) * np.linalg.norm(seg) + 1e-9)))
    good = [lag for lag, c in zip(lags, corrs, strict=True) if c > 0.9]
    shown = [round(1000 * x / FMT.rate, 1) for x in lags]
    assert len(good) >= len(lags) / 2, f"the agent's voice is not in mic.wav as played: lags {shown} ms, corr {corrs}"
    median = float(np.median(good))
    assert 0 <= median <= FMT.samples(80), f"lags {shown} ms"
    assert sum(abs(g - median) <= FMT.samples(6) for g in good) >= len(good) * 0.75, f"lags {shown} ms"
