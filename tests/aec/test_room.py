"""The echo path end to end: the real daemon in a PulseAudio room with an acoustic echo, against the simulator.

The daemon plays the agent's answer (shipped espeak WAV, 10 s) into null sink `spk`; a module-loopback
(50 ms, -6 dB) carries `spk.monitor` into null sink `mic`, which the daemon captures. What the server receives
(the simulator's input_audio) is compared between echo cancellation off and on. Each scenario runs once per
module (~15 s of real time each) and the tests read its figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.pulse import PulseServer
from vatel_edge.audio.aec import available_engines
from vatel_edge.devkit import aec_room as room
from vatel_edge.devkit.fixtures import shipped_speech

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif("webrtc" not in available_engines(), reason="webrtc engine not installed (pywebrtc-audio)"),
]

ROOM_DELAY_MS = 50
ROOM_GAIN_DB = -6.0
USER_WAV = "user_interrupt.wav"
BARGE_IN_SPEECH_MS = 90  # wake.min_speech_ms: the local barge-in debounce used here (3 VAD frames)


class Runs:
    """Scenarios run on demand, once each, in the shared PulseAudio server."""

    def __init__(self, pulse: PulseServer, workdir: Path) -> None:
        self.pulse = pulse
        self.workdir = workdir
        self._done: dict[str, room.EchoRun] = {}

    def get(self, name: str, sc: room.EchoScenario) -> room.EchoRun:
        if name not in self._done:
            with room.LoopbackRoom(self.pulse, delay_ms=ROOM_DELAY_MS, gain_db=ROOM_GAIN_DB):
                self._done[name] = asyncio.run(room.run_echo_session(self.pulse, self.workdir, sc))
        return self._done[name]

    def off(self) -> room.EchoRun:
        return self.get("off", room.EchoScenario(echo_cancel="off", mic_during_playback="stream"))

    def webrtc(self) -> room.EchoRun:
        return self.get("webrtc", room.EchoScenario(echo_cancel="webrtc", barge_in="local",
                                                    min_speech_ms=BARGE_IN_SPEECH_MS))

    def double_talk(self) -> room.EchoRun:
        return self.get("double talk", room.EchoScenario(echo_cancel="webrtc", mic_during_playback="auto",
                                                         barge_in="local", user_wav=USER_WAV,
                                                         min_speech_ms=BARGE_IN_SPEECH_MS))


@pytest.fixture(scope="module")
def runs(pulse: PulseServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    yield Runs(pulse, tmp_path_factory.mktemp("echo-room"))


def _turn(run: room.EchoRun) -> np.ndarray:
    return run.sent[run.turn_pos : run.turn_pos + run.turn_samples]


def test_without_cancellation_the_server_hears_the_agent_as_speech(runs: Runs) -> None:
    """echo_cancel = off, mic streamed: the agent's own voice reaches the server and passes the voice rule
    (this is the self-interruption the echo canceller exists to prevent)."""
    run = runs.off()
    voiced = room.vad_frames(_turn(run))
    assert voiced.mean() > 0.5
    assert room.wake_rule_fires(voiced)
    assert 10 * np.log10(room.power(run.sent[room.echo_window(run)])) > 55  # the echo is loud in the sent audio


def test_webrtc_removes_at_least_20_db_of_echo_from_the_sent_audio(runs: Runs) -> None:
    """After 2 s of convergence the echo energy the server receives is >= 20 dB below the uncancelled run's,
    and >= 25 dB in the median second. Seen on this rig: 26-45 dB over the window in 35 runs here, 23.6 dB
    in one CI run; module-loopback keeps re-adjusting its latency (the echo delay drifts ~0.04 ms/s and turns,
    aec_room.echo_delay_track), and the worst seconds follow those turns (26-35 dB)."""
    off, on = runs.off(), runs.webrtc()
    assert on.engine == "webrtc" and off.engine is None
    p_off = room.power(off.sent[room.echo_window(off)])
    sent = on.sent[room.echo_window(on)]
    w = room.FMT.samples(1000)
    seconds = [10 * np.log10(p_off / max(room.power(sent[k : k + w]), 1e-3)) for k in range(0, sent.size - w + 1, w)]
    erle = 10 * np.log10(p_off / max(room.power(sent), 1e-3))
    print(f"echo reduction {erle:.1f} dB; per second {[round(x) for x in seconds]}; "
          f"echo delay track {room.echo_delay_track(on)} samples; player {on.player_stats}")
    assert erle >= 20.0, f"echo reduced by {erle:.1f} dB"
    assert np.median(seconds) >= 25.0, seconds
    assert on.echo_stats["cancelled"] > 0


def test_webrtc_echo_only_speech_is_not_speech_to_the_server_and_never_self_interrupts(runs: Runs) -> None:
    """With the canceller (mic streamed), over what the server receives after the 2 s convergence: webrtcvad
    behind the daemon's -45 dBFS gate flags < 2 % of frames, bare webrtcvad < 10 % (> 50 % without
    cancellation), and local barge-in never cuts the agent's own voice. Not claimed: that the gated voice
    rule never fires on the sent audio (one CI run had a short leak after an echo path change, see above);
    the daemon's own barge-in drops such a leak (EchoPath.echo_likeness)."""
    run = runs.webrtc()
    sent = run.sent[room.echo_window(run)]
    gated = room.vad_frames(sent, min_level_dbfs=-45.0)
    print(f"gated voiced frames {int(gated.sum())}/{gated.size}; voice rule at {BARGE_IN_SPEECH_MS} ms fires: "
          f"{room.wake_rule_fires(gated, min_speech_ms=BARGE_IN_SPEECH_MS)}; echo stats {run.echo_stats}")
    assert gated.mean() < 0.02
    assert room.vad_frames(sent).mean() < 0.10
    assert run.barge_ins() == []


def test_auto_policy_mutes_the_mic_until_the_canceller_has_converged(runs: Runs) -> None:
    """mic_during_playback = auto: the first agent audio of the daemon's life (the canceller still finding the
    echo path) is sent as silence; once converged the mic streams (the user's voice gets through, below). The
    earliest convergence is a quiet residual after ECHO_LEAD_S + QUIET_RUN_S (1.2 s) of agent speech; in this
    delay-line room AEC3 is that quiet within ~1.5 s, so the checked stretch ends at 1.1 s."""
    run = runs.double_talk()
    first = run.sent[run.turn_pos + room.FMT.samples(300) : run.turn_pos + room.FMT.samples(1100)]
    assert first.size and not first.any()
    assert room.power(run.sent[run.turn_pos : run.turn_pos + run.turn_samples]) > 0


def test_double_talk_reaches_the_server_and_local_barge_in_stops_playback_within_300_ms(runs: Runs) -> None:
    """The user talking over the agent is in the sent audio (located, voiced like the user alone), and with
    session.barge_in = local the speaker stops within 300 ms of the user's onset (measured in the room
    microphone's samples: the echo's end minus the room's delay)."""
    run = runs.double_talk()
    user = np.frombuffer(room.scaled(shipped_speech(USER_WAV), run.scenario.user_gain_db), dtype="<i2")
    pos = room.locate(run.sent, user)
    sent_user = run.sent[pos : pos + user.size]
    assert room.vad_frames(sent_user).mean() >= 0.7 * room.vad_frames(user).mean()
    cuts = run.barge_ins()
    assert len(cuts) == 1 and cuts[0][1].startswith("local vad")
    dt = room.double_talk(run.mic, user)
    stop_ms = dt.stop_after_onset_ms(ROOM_DELAY_MS)
    assert stop_ms is not None, "the agent's echo never stopped"
    assert stop_ms <= 300.0, f"playback stopped {stop_ms:.0f} ms after the user's onset"
