"""The offline reverberant room (vatel_edge/devkit/room.py): its impulse responses decay with the RT60 it was
built for, the echo and the user come in at the levels the geometry gives, the loudspeaker clips softly, and
the block-by-block room (what the real-time room runs) produces exactly the offline rendering."""

from __future__ import annotations

import numpy as np
import pytest

from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.devkit import room
from vatel_edge.devkit.aec_lab import dbfs, speech_like

pytest.importorskip("pyroomacoustics")

FMT = VATEL_FORMAT
SPEED_OF_SOUND = 343.0  # pyroomacoustics' default


def _pcm(x: np.ndarray, level_dbfs: float) -> bytes:
    x = x * 10 ** ((level_dbfs - dbfs(x)) / 20)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


AGENT = _pcm(speech_like(4.0, FMT.rate, seed=0), -20.0)
USER = _pcm(speech_like(2.0, FMT.rate, seed=1, f0=200.0), -24.0)


@pytest.mark.parametrize("rt60", [0.25, 0.4, 0.6])
def test_both_impulse_responses_decay_with_the_rt60_they_were_built_for(rt60: float) -> None:
    """The Schroeder T20 after the direct sound, of the loudspeaker's and of the user's response, is within 15 %
    of the setup's RT60 (the image-source model with Sabine's absorption)."""
    response = room.room_response(room.RoomSetup(rt60_s=rt60))
    for h, direct in ((response.speaker, response.speaker_direct), (response.user, response.user_direct)):
        assert room.rt60_estimate(h, direct=direct) == pytest.approx(rt60, rel=0.15)


@pytest.mark.parametrize("distance", [1.0, 2.0, 3.0])
def test_direct_sounds_arrive_after_the_geometric_delays(distance: float) -> None:
    """The loudspeaker 15 cm away and the user 1-3 m away arrive after their distance / c (plus pyroomacoustics'
    40 sample filter delay) with gain 1/r (0.6-1.05 of it on the nearest tap: a fractional delay spreads the
    impulse), and next to nothing (< 3 % of it) comes earlier."""
    response = room.room_response(room.RoomSetup(user_distance_m=distance))
    paths = ((response.speaker, response.speaker_delay, 0.15), (response.user, response.user_delay, distance))
    for h, delay, r in paths:
        assert delay == pytest.approx(40 + r / SPEED_OF_SOUND * FMT.rate, abs=0.01)
        k = round(delay)
        assert 0.6 <= np.abs(h[k - 1 : k + 2]).max() * r <= 1.05
        assert np.abs(h[: k - 41]).max(initial=0.0) * r < 0.03


def test_the_echo_is_louder_than_the_user_by_what_the_paths_and_levels_say() -> None:
    """Agent at -20 dBFS, user's speech at -24 dBFS, user 2 m away: at the microphone the echo is > 10 dB above
    the user, and the difference is what the two paths' energy gains predict (within 2 dB: the clipping
    compresses the echo a little)."""
    parts = room.render_parts(AGENT, USER, FMT.samples(1000))
    span = slice(FMT.samples(1000), FMT.samples(3000))
    echo_over_user = dbfs(parts.echo[span]) - dbfs(parts.user[span])
    r = parts.response
    predicted = (dbfs(np.frombuffer(AGENT, "<i2")[span]) + r.echo_gain_db()) - (-24.0 + r.user_gain_db())
    assert echo_over_user > 10.0
    assert echo_over_user == pytest.approx(predicted, abs=2.0)
    assert dbfs(parts.noise) == pytest.approx(-65.0, abs=0.5)


def test_a_near_loud_user_over_a_quiet_agent_is_louder_than_the_echo() -> None:
    """Configured the other way (user 1 m away at -20 dBFS, the agent at -45 dBFS) the user dominates."""
    quiet_agent = _pcm(speech_like(4.0, FMT.rate, seed=0), -45.0)
    loud_user = _pcm(speech_like(2.0, FMT.rate, seed=1, f0=200.0), -20.0)
    parts = room.render_parts(quiet_agent, loud_user, FMT.samples(1000), setup=room.RoomSetup(user_distance_m=1.0))
    span = slice(FMT.samples(1000), FMT.samples(3000))
    assert dbfs(parts.user[span]) > dbfs(parts.echo[span]) + 6.0


def test_the_user_is_in_the_microphone_from_its_offset_and_the_parts_add_up() -> None:
    """render(): nothing of the user before user_offset plus its direct delay; mic = echo + user + noise
    (quantised); the output is as long as the longer input."""
    offset = FMT.samples(2500)
    parts = room.render_parts(AGENT, USER, offset)
    assert parts.mic.size == offset + len(USER) // 2
    assert not parts.user[:offset].any()
    direct = offset + parts.response.user_direct
    assert np.abs(parts.user[offset : direct - 41]).max() < 1e-6
    assert np.abs(parts.user[direct : direct + FMT.samples(1000)]).max() > 100.0
    assert np.abs(parts.mic - (parts.echo + parts.user + parts.noise)).max() <= 0.5
    assert room.render(AGENT, USER, offset) == parts.mic.astype("<i2").tobytes()


def test_the_loudspeaker_is_linear_when_quiet_and_distorts_when_loud() -> None:
    """soft_clip: a -40 dBFS sine comes out within 0.1 % of itself with its third harmonic below -70 dB; a
    full-scale one is compressed to tanh(2)/2 of full scale with a third harmonic above -25 dB."""
    n = FMT.samples(100)
    t = np.arange(n) / FMT.rate
    sine = np.sin(2 * np.pi * 1000 * t)

    def third_harmonic_db(y: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(y))
        return float(20 * np.log10(spectrum[300] / spectrum[100]))  # 10 Hz bins: 3 kHz vs 1 kHz

    quiet = 327.68 * sine
    assert np.abs(room.soft_clip(quiet, 2.0) - quiet).max() < 0.001 * 327.68
    assert third_harmonic_db(room.soft_clip(quiet, 2.0)) < -70.0
    loud = room.soft_clip(32767.0 * sine, 2.0)
    assert loud.max() == pytest.approx(32768 * np.tanh(2 * 32767 / 32768) / 2, rel=1e-3)
    assert third_harmonic_db(loud) > -25.0
    assert np.array_equal(room.soft_clip(quiet, 0.0), quiet)


def test_the_block_room_produces_the_offline_rendering() -> None:
    """RoomStream fed the played signal in 10 ms blocks, with the user said at the same offset, gives
    render()'s samples (to one LSB of rounding): the real-time room is the offline room."""
    offset = FMT.samples(1230)
    expected = room.render_parts(AGENT, USER, offset).mic
    stream = room.RoomStream()
    said = stream.say(USER, offset)
    assert said.start == offset and said.direct_delay == stream.response.user_direct
    played = np.zeros(-(-expected.size // stream.block) * stream.block, dtype=np.int16)
    agent = np.frombuffer(AGENT, dtype="<i2")
    played[: agent.size] = agent
    out = np.concatenate([stream.process(played[i : i + stream.block]) for i in range(0, played.size, stream.block)])
    assert np.abs(out[: expected.size].astype(np.int32) - expected.astype(np.int32)).max() <= 1
    assert stream.position == played.size


def test_speech_said_for_a_past_position_starts_at_the_next_block() -> None:
    """RoomStream.say(at=None or a sample already produced) starts at the next block; the record keeps it."""
    stream = room.RoomStream()
    for _ in range(3):
        stream.process(np.zeros(stream.block, dtype=np.int16))
    assert stream.say(USER, 10).start == 3 * stream.block
    assert stream.say(USER).start == 3 * stream.block
    assert [s.start for s in stream.speech] == [3 * stream.block, 3 * stream.block]


def test_block_convolver_equals_full_convolution() -> None:
    """BlockConvolver's blocks are the full linear convolution's samples, for a response longer than a block
    and one shorter."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(24 * 50)
    for taps in (1000, 17):
        h = rng.standard_normal(taps)
        conv = room.BlockConvolver(h, 24)
        got = np.concatenate([conv.process(x[i : i + 24]) for i in range(0, x.size, 24)])
        assert np.allclose(got, np.convolve(x, h)[: x.size], atol=1e-9)


def test_a_user_outside_the_room_is_refused() -> None:
    """RoomSetup.positions() raises ValueError when the user (or the device) would stand outside the room."""
    with pytest.raises(ValueError, match="user"):
        room.RoomSetup(user_distance_m=6.0).positions()
    with pytest.raises(ValueError):
        room.RoomSetup(user_distance_m=0.2).positions()


def test_click_helpers_find_each_click() -> None:
    """click_train places one-sample clicks exactly; click_positions finds them all."""
    clicks = np.frombuffer(room.click_train(5, 250, lead_ms=100), dtype="<i2")
    assert room.click_positions(clicks) == [FMT.samples(100) + k * FMT.samples(250) for k in range(5)]


def test_latency_guard_drops_only_a_backlog_that_stays() -> None:
    """LatencyGuard: a backlog under the threshold, or over it for less than persist_s (being caught up), keeps
    every block; one that stays over it for persist_s drops blocks until it is gone."""
    guard = room.LatencyGuard(threshold_s=0.015, persist_s=0.1)
    assert guard.keep(0.010, 0.0)
    assert guard.keep(0.080, 1.00) and guard.keep(0.040, 1.05)  # catching up
    assert guard.keep(0.005, 1.06)  # caught up: the clock starts again next time
    assert guard.keep(0.060, 2.00) and guard.keep(0.060, 2.09)
    assert not guard.keep(0.060, 2.10) and not guard.keep(0.030, 2.11)
    assert guard.keep(0.010, 2.12)
