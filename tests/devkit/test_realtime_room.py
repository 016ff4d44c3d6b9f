"""The real-time room on the suite's PulseAudio server: what is played into `spk` comes back into the
microphone (`mic.monitor`) through the room with a bounded delay that stays the same to the sample, and the
user's speech is in the microphone where the room recorded it.

One run per module (about 8 s of real time): a click train is played into `spk` with pacat while a recorder
captures `mic.monitor` (as a daemon would), then the user says "Front right" (alsa-utils; a speech-like
stand-in without the package), then everything is read back.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from tests.support.pulse import PulseServer
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.devkit import room, speech
from vatel_edge.devkit.aec_lab import speech_like
from vatel_edge.devkit.sandbox import RAW_ARGS

pytest.importorskip("pyroomacoustics")
pytestmark = pytest.mark.timeout(60)

FMT = VATEL_FORMAT
CLICKS = 16
PERIOD_MS = 250


@dataclass
class Run:
    played: np.ndarray  # what the room read from spk.monitor
    written: np.ndarray  # what it wrote into the mic sink
    heard: np.ndarray  # what a client capturing mic.monitor got
    heard_clock: room.SourceRecorder
    status: room.RoomStatus
    said: room.UserSpeech
    response: room.RoomResponse
    offset: int  # index in `heard` of mic-stream sample 0 (the clicks' echo located in the recording)
    played_clicks: list[int]  # sample index of each click in `played`
    heard_clicks: list[int]  # ... of its direct sound in `heard`
    touched: list[bool]  # per click: its 50 ms in `heard` differ from the room's output (a dropout hit it)
    click_times: list[tuple[float, float]]  # (reached the room, reached the capturing client) per click


def _user_speech() -> bytes:
    if speech.speech_available("front_right"):
        return speech.human_speech("front_right")
    x = speech_like(1.5, FMT.rate, seed=2, f0=190.0)
    return np.clip(np.rint(x * 3000 / max(1e-9, float(np.abs(x).max()))), -32768, 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def run(pulse: PulseServer) -> Iterator[Run]:
    clicks = pulse.root / "room-clicks.raw"
    clicks.write_bytes(room.click_train(CLICKS, PERIOD_MS, lead_ms=500))  # a new stream's first ~100 ms may be lost
    with room.RealTimeRoom(pulse) as rt, room.SourceRecorder(pulse) as recorder:
        time.sleep(0.5)
        # the player's own buffer is generous: its underruns would move the clicks, not what is measured here
        player = subprocess.run(["pacat", "--playback", "-d", "spk", "--latency-msec=60", *RAW_ARGS, str(clicks)],
                                env=pulse.env, timeout=30, check=True)
        assert player.returncode == 0
        said = rt.say(_user_speech(), at_s=rt.position / FMT.rate + 0.3)
        deadline = time.monotonic() + 10
        while rt.position < said.end + FMT.samples(300) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the last blocks through the mic sink into the recorder
        played, written, heard = rt.played(), rt.written(), recorder.samples()
        n = room.click_positions(played)
        # where the room's output of the click train is in the recording, then each click's direct sound there
        begin, end = n[0] - FMT.samples(50), n[-1] + FMT.samples(PERIOD_MS)
        offset = _locate(heard, written[begin:end]) - begin
        # each click's 50 ms of room output found again near where the offset puts it (a local correlation, so
        # that an underrun next to a click does not move it); m: the click's direct sound in the recording
        span, slack = FMT.samples(50), FMT.samples(2)
        m = [k + offset - slack + _locate(heard[k + offset - slack : k + offset + span + slack], written[k : k + span])
             + rt.response.speaker_direct for k in n]
        touched = [bool(np.any(heard[k + offset : k + offset + span] != written[k : k + span])) for k in n]
        click_times = [(rt.stream_time(a), recorder.time_of(b)) for a, b in zip(n, m, strict=True)]
        status = rt.status()
        yield Run(played, written, heard, recorder, status, said, rt.response, offset, n, m, touched, click_times)


def _locate(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index where `needle` best matches in `haystack` (FFT cross-correlation)."""
    h, k = haystack.astype(np.float64), needle.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(h.size + k.size)))
    c = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(k, size)), size)[: h.size - k.size + 1]
    return int(np.argmax(c))


def test_every_click_played_comes_back_through_the_room_with_one_constant_delay(run: Run) -> None:
    """All clicks played into spk reach the room and, through it, a client capturing mic.monitor; the delay
    from spk.monitor to mic.monitor is 5-100 ms and the same for every click to the sample (its timestamps: to
    1 ms). A click whose 50 ms a dropout of the mic sink hit (the next test: those are exact zeros) has lost part
    of its sound, so its local correlation says nothing about the delay; it is left out and counted. (CI saw two
    such clicks 4 samples off, at the ends of the +-2 sample search, on 2026-12-01.)"""
    n, m = run.played_clicks, run.heard_clicks
    assert len(n) == CLICKS and len(m) == CLICKS
    lags = np.array(m) - np.array(n)
    clean = ~np.array(run.touched)
    print(f"click lags {lags.tolist()}; {int(np.count_nonzero(~clean))} of {CLICKS} clicks hit by a dropout")
    assert np.count_nonzero(clean) >= 4, run.touched
    # aligned at the offset found over the whole train, an intact click is sample-exact there: one delay
    assert np.all(lags[clean] == run.offset + run.response.speaker_direct), lags
    delays = np.array([heard - reached for (reached, heard), ok in zip(run.click_times, clean, strict=True) if ok])
    assert delays.min() > 0.005 and delays.max() < 0.100, delays
    assert delays.max() - delays.min() < 0.001, delays
    assert run.status.dropped == ()


def test_the_microphone_carries_what_the_room_wrote(run: Run) -> None:
    """Aligned on the clicks, mic.monitor holds the room's output sample for sample in 80 % of its 10 ms blocks
    (from 0.5 s into the recording to its end: clicks, reverberation, speech, noise). The rest are underruns of
    the mic sink when the room's process was held up more than its 20 ms of buffer (seen here: 0-2 blocks a run
    on a loaded machine in an earlier session; on 2026-12-01 on a quiet machine 0-23 of ~777 in most runs and 91
    in one); where they differ they hold exact zeros (some only 0.5 ms), and the delay after them is unchanged:
    the room drops audio, it never distorts or shifts it."""
    off, block = run.offset, FMT.samples(10)
    start = max(FMT.samples(500) - off, 0)
    count = (min(run.written.size, run.heard.size - off) - start) // block
    assert count > 500
    written = run.written[start : start + count * block].astype(np.int32).reshape(count, block)
    heard = run.heard[start + off : start + off + count * block].astype(np.int32).reshape(count, block)
    differ = np.flatnonzero(np.any(written != heard, axis=1))
    print(f"{differ.size} of {count} 10 ms blocks differ (underruns of the mic sink)")
    assert differ.size <= 0.2 * count, f"{differ.size} of {count} blocks differ: {differ[:20]}"
    # they are dropouts, nothing else: every sample that differs is an exact zero (underrun silence, which can
    # be as short as 0.5 ms and straddle two blocks)
    wrong = [(int(i), int(np.count_nonzero((written[i] != heard[i]) & (heard[i] != 0)))) for i in differ]
    assert all(n == 0 for _, n in wrong), [w for w in wrong if w[1]][:5]


def test_the_users_speech_is_in_the_microphone_where_the_room_recorded_it(run: Run) -> None:
    """The user's part of the microphone (room + mic gain) is found in mic.monitor exactly at its recorded
    mic-stream start (aligned by the first click), and the clean speech's voiced start (loud_onset) arrives there
    after the direct delay, well over the room's noise. (Its soft /f/ lead-in, -48 dBFS in the clip, reaches the
    mic 2 m away near the -65 dBFS noise: the kind of start a gate misses.)"""
    said = run.said
    off = run.offset
    expected = said.start + off
    window = run.heard[expected - FMT.samples(100) : expected + said.at_mic.size + FMT.samples(100)]
    found = _locate(window, said.at_mic) + expected - FMT.samples(100)
    assert found == expected
    onset = expected + said.direct_delay + speech.loud_onset(said.clean)
    seg = run.heard[onset : onset + FMT.samples(50)].astype(np.float64)
    quiet = run.heard[expected - FMT.samples(200) : expected - FMT.samples(100)].astype(np.float64)
    assert 10 * np.log10(np.mean(seg**2) / max(np.mean(quiet**2), 1e-9)) > 15.0
