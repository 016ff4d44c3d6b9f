"""Playback through real alsa-lib: file devices (byte-exact), a 48 kHz stereo-only device, PulseAudio (real time)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio import counting_pcm, level_db, tone
from tests.support.pulse import PulseServer
from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.audio.playback import Player
from vatel_edge.config import AudioConfig

pytestmark = pytest.mark.timeout(60)
PERIOD = VATEL_FORMAT.samples(20)


def file_cfg(out: Path, device: str = "fplay", **kw: object) -> AudioConfig:
    return AudioConfig(playback_device=f"{device}:OUT={out}", **kw)  # type: ignore[arg-type]


async def test_final_turn_is_played_byte_exact_and_padded_to_a_period(tmp_path: Path) -> None:
    """Chunks of one turn reach the device unchanged and in order; the tail is padded with silence only."""
    out = tmp_path / "out.raw"
    pcm = counting_pcm(PERIOD * 10 + 123, start=1)
    written: list[bytes] = []
    async with Player(file_cfg(out)) as player:
        player.on_written = lambda data, t: written.append(data)
        for i in range(0, len(pcm), 1000):
            player.feed("t1", pcm[i : i + 1000], is_final=i + 1000 >= len(pcm))
        assert player.playing
        assert await player.wait_idle(10)
        assert not player.playing
    data = out.read_bytes()
    assert data[: len(pcm)] == pcm
    assert len(data) % (PERIOD * 2) == 0 and set(data[len(pcm) :]) <= {0}
    assert b"".join(written)[: len(pcm)] == pcm
    assert player.stats["turns"] == 1 and player.stats["periods"] == 11 and player.stats["underruns"] == 0


async def test_prebuffer_holds_a_turn_until_enough_audio_is_queued(tmp_path: Path) -> None:
    """Nothing of a turn is written before prebuffer_ms is queued (or the turn is final)."""
    out = tmp_path / "out.raw"
    written: list[bytes] = []
    async with Player(file_cfg(out, prebuffer_ms=100)) as player:
        player.on_written = lambda data, t: written.append(data)
        player.feed("t1", counting_pcm(VATEL_FORMAT.samples(60)), is_final=False)
        await asyncio.sleep(0.3)
        assert written == []
        assert player.playing  # queued agent audio counts as playing
        player.feed("t1", counting_pcm(VATEL_FORMAT.samples(60), VATEL_FORMAT.samples(60)), is_final=False)
        for _ in range(100):
            if written:
                break
            await asyncio.sleep(0.02)
        assert written, "the prebuffer was reached but nothing was written"
        player.interrupt()


async def test_starved_open_turn_writes_silence_not_underruns(tmp_path: Path) -> None:
    """While a turn is open but no audio arrives, silence periods go to the device, then the turn resumes."""
    out = tmp_path / "out.raw"
    first, second = counting_pcm(PERIOD * 4, 1), counting_pcm(PERIOD * 2, 5000)
    async with Player(file_cfg(out, prebuffer_ms=0)) as player:
        player.feed("t1", first, is_final=False)
        await asyncio.sleep(0.3)
        player.feed("t1", second, is_final=True)
        assert await player.wait_idle(10)
    data = out.read_bytes()
    assert data.startswith(first)
    gap = data[len(first) : data.index(second)]
    assert len(gap) >= PERIOD * 2 and set(gap) == {0}
    assert player.stats["underruns"] == 0


async def test_48k_stereo_only_speaker_gets_resampled_audio(tmp_path: Path) -> None:
    """On a device that refuses 24 kHz mono the turn is resampled to 48 kHz and duplicated on both channels."""
    out = tmp_path / "out.raw"
    x = tone(1000, 24000, 24000)
    async with Player(file_cfg(out, device="f48play")) as player:
        player.feed("t1", x.astype("<i2").tobytes(), is_final=True)
        assert await player.wait_idle(10)
        assert player.negotiated is not None and "48000 Hz, 2 ch" in player.negotiated
    y = np.frombuffer(out.read_bytes(), dtype="<i2").reshape(-1, 2)
    native = AudioFormat(48000, 2)
    assert len(y) >= native.samples(1000)
    assert np.array_equal(y[:, 0], y[:, 1])
    assert abs(level_db(y[: native.samples(1000), 0], 1000, 48000)) < 0.5


async def test_volume_gain_saturates_instead_of_wrapping(tmp_path: Path) -> None:
    """set_volume(4) on loud audio clips at the int16 limits; quiet samples are scaled exactly."""
    out = tmp_path / "out.raw"
    x = np.array([100, -100, 20000, -20000, 8191, -8192] * PERIOD, dtype=np.int16)
    async with Player(file_cfg(out)) as player:
        player.set_volume(4.0)
        player.feed("t1", x.astype("<i2").tobytes(), is_final=True)
        assert await player.wait_idle(10)
    y = np.frombuffer(out.read_bytes(), dtype="<i2")[: len(x)]
    assert y[:6].tolist() == [400, -400, 32767, -32768, 32764, -32768]
    with pytest.raises(ValueError):
        player.set_volume(-1)


async def test_interrupt_discards_the_turn_ignores_late_chunks_and_the_next_turn_plays(tmp_path: Path) -> None:
    """After interrupt(): queued audio of the turn is gone, late chunks are dropped, the next turn plays whole."""
    out = tmp_path / "out.raw"
    late = counting_pcm(PERIOD * 3, 30000)
    nxt = tone(1000, 24000, PERIOD * 5).astype("<i2").tobytes()
    async with Player(file_cfg(out, prebuffer_ms=1000)) as player:
        player.feed("a", counting_pcm(PERIOD * 10, 1), is_final=False)  # held by the prebuffer
        report = player.interrupt()
        assert report.turn_id == "a" and report.heard_samples == 0 and report.discarded_samples == PERIOD * 10
        assert not player.playing
        player.feed("a", late, is_final=True)
        player.feed("b", nxt, is_final=True)
        assert await player.wait_idle(10)
    data = out.read_bytes()
    assert data.startswith(nxt)
    assert late[:64] not in data
    assert player.stats["late_chunks_dropped"] == 1 and player.stats["interruptions"] == 1
    assert player.interrupt().turn_id is None  # nothing to interrupt: a no-op


async def test_feedback_sound_queues_behind_the_agent_turn(tmp_path: Path) -> None:
    """play_sound() during a turn plays after the turn's audio, and a barge-in does not discard it."""
    out = tmp_path / "out.raw"
    turn, sound = counting_pcm(PERIOD * 3, 1), counting_pcm(PERIOD * 2, 20000)
    async with Player(file_cfg(out)) as player:
        player.feed("t1", turn, is_final=True)
        player.play_sound(sound)
        assert await player.wait_idle(10)
    data = out.read_bytes()
    assert data.index(turn) < data.index(sound)


async def test_player_survives_a_speaker_that_is_down_then_comes_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the PulseAudio server down the speaker fails to open and is retried; once it is up, turns play."""
    root = tmp_path / "late-pulse"
    monkeypatch.setenv("PULSE_SERVER", f"unix:{root}/rt/pa.sock")
    cfg = AudioConfig(playback_device="test_spk")
    async with Player(cfg, retry_base_s=0.05, retry_max_s=0.2) as player:
        await asyncio.sleep(0.5)
        assert player.negotiated is None
        server = await asyncio.to_thread(PulseServer.start, root)
        try:
            rec = server.record_spk()
            for _ in range(200):
                if player.negotiated is not None:
                    break
                await asyncio.sleep(0.05)
            assert player.negotiated is not None, "the speaker was not reopened"
            player.feed("t1", tone(1000, 24000, VATEL_FORMAT.samples(600)).astype("<i2").tobytes(), is_final=True)
            assert await player.wait_idle(10)
            await asyncio.sleep(0.3)
            r = np.frombuffer(rec.stop(), dtype="<i2")
        finally:
            server.stop()
    heard = r[int(np.argmax(np.abs(r) > 0)) :]
    assert len(heard) >= VATEL_FORMAT.samples(400)
    assert abs(level_db(heard[: VATEL_FORMAT.samples(400)], 1000, 24000)) < 1.0


def positions(recording: bytes) -> np.ndarray:
    """Decode counting_pcm positions (start 1, < 65536) present in a recording; silence (0) excluded."""
    r = np.frombuffer(recording, dtype="<i2").view(np.uint16).astype(np.int64)
    # a position is genuine when its neighbour continues the ramp (the tone of turn b never does)
    ok = np.zeros(len(r), dtype=bool)
    ok[1:] |= r[1:] == r[:-1] + 1
    ok[:-1] |= r[1:] == r[:-1] + 1
    return r[ok & (r > 0)]


@pytest.mark.timeout(90)
async def test_realtime_barge_in_stops_within_a_period_and_late_chunks_never_play(pulse: PulseServer) -> None:
    """On PulseAudio: after interrupt() at most one period (+80 ms PulseAudio margin) more of the turn reaches
    the sink, none of its late chunks ever does, and the next turn plays normally."""
    cfg = AudioConfig(playback_device="test_spk", playback_period_ms=20, playback_buffer_ms=400, prebuffer_ms=60)
    margin = VATEL_FORMAT.samples(20 + 80)
    rec = pulse.record_spk()
    try:
        await asyncio.sleep(0.3)
        async with Player(cfg) as player:
            turn_a = counting_pcm(VATEL_FORMAT.samples(2000), 1)
            for i in range(0, len(turn_a), 4800):
                player.feed("a", turn_a[i : i + 4800], is_final=False)
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            report = player.interrupt()
            elapsed = time.monotonic() - t0
            player.feed("a", counting_pcm(VATEL_FORMAT.samples(500), 50000), is_final=True)
            await asyncio.sleep(0.3)
            turn_b = tone(1000, 24000, VATEL_FORMAT.samples(500)).astype("<i2").tobytes()
            player.feed("b", turn_b, is_final=True)
            assert await player.wait_idle(10)
            await asyncio.sleep(0.3)
        recording = rec.stop()
    finally:
        rec.proc.kill()
    assert elapsed < 0.5  # returns at once (generous bound for a loaded machine; typical: microseconds)
    pos = positions(recording)
    assert len(pos) > VATEL_FORMAT.samples(500), "turn a was not heard before the interrupt"
    last_heard = int(pos.max())
    assert last_heard < 50000, "a late chunk of the interrupted turn reached the sink"
    # how far past the reported 'heard' point the sink went (the device had ~400 ms queued at the time)
    assert last_heard - report.heard_samples <= margin, (last_heard, report)
    # the device held more than the margin when it was dropped, so "not dropped" would have failed above
    assert report.in_device_samples > 2 * margin, report
    r = np.frombuffer(recording, dtype="<i2")
    end_of_a = int(np.nonzero(r.view(np.uint16) == last_heard)[0][-1])
    after = r[end_of_a + 1 :]
    turn_b_heard = after[int(np.argmax(np.abs(after) > 0)) :][: VATEL_FORMAT.samples(400)]
    assert len(turn_b_heard) == VATEL_FORMAT.samples(400), "the next turn was not heard"
    assert abs(level_db(turn_b_heard, 1000, 24000)) < 1.0
    print(f"barge-in: sink played {1000 * (last_heard - report.heard_samples) / VATEL_FORMAT.rate:.1f} ms past the "
          f"reported point; {1000 * report.in_device_samples / VATEL_FORMAT.rate:.0f} ms dropped from the device")
    assert player.stats["turns"] == 2 and player.stats["late_chunks_dropped"] == 1
