"""Held session audio and the wake gate: contiguity, bounds and cooldown (pre-roll: tests/audio/test_mic_path.py)."""

from __future__ import annotations

import asyncio

from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.wake import SessionAudio, WakeGate


def _frame(seq: int) -> CaptureFrame:
    return CaptureFrame(pcm=seq.to_bytes(2, "little") * 4, t=float(seq), seq=seq)


async def test_session_audio_yields_preroll_then_live_frames_in_order() -> None:
    held = SessionAudio([_frame(1), _frame(2)], max_frames=10)
    held.put(_frame(3))
    got = [await held.get() for _ in range(3)]

    async def later() -> None:
        await asyncio.sleep(0.01)
        held.put(_frame(4))

    task = asyncio.create_task(later())
    got.append(await asyncio.wait_for(held.get(), 2))
    await task
    assert [f.seq for f in got] == [1, 2, 3, 4]


async def test_session_audio_overflow_drops_oldest_and_counts() -> None:
    held = SessionAudio([_frame(0)], max_frames=3)
    for i in range(1, 6):
        held.put(_frame(i))
    assert held.dropped == 3
    assert [(await held.get()).seq for _ in range(3)] == [3, 4, 5]


def test_closed_session_audio_accepts_nothing() -> None:
    held = SessionAudio([], max_frames=3)
    held.close()
    held.put(_frame(1))
    assert len(held) == 0


def test_wake_gate_cooldown_and_backoff() -> None:
    now = [100.0]
    gate = WakeGate(cooldown_s=1.0, clock=lambda: now[0])
    assert gate.open()
    gate.session_ended()
    assert not gate.open()
    now[0] += 1.01
    assert gate.open()
    gate.block_for(8)
    gate.block_for(2)  # a shorter block never shortens the longer one
    assert 7.9 < gate.remaining() <= 8
    gate.clear()
    assert gate.open()
