"""A real-time room for the echo path: the daemon on PulseAudio null sinks with an acoustic echo (tests, bench).

The daemon plays into null sink `spk`; a `module-loopback` from `spk.monitor` into null sink `mic`, with a
latency and an attenuation, is the speaker-to-microphone path; the "user" is played into `mic` with pacat;
the daemon captures `mic.monitor`. The local simulator records what the daemon sends (input_audio).

    with LoopbackRoom(pulse, delay_ms=50, gain_db=-6):
        run = await run_echo_session(pulse, workdir, EchoScenario(echo_cancel="webrtc"))

`EchoRun` keeps the figures shared by tests/aec/test_room.py and bench/echo_room.py. Lab code: not used by
the daemon itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import webrtcvad

from vatel_edge.audio.format import VATEL_FORMAT, power_of_dbfs
from vatel_edge.audio.resample import Resampler
from vatel_edge.config import config_from_dict
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.sandbox import PulseServer
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.state import State

log = logging.getLogger(__name__)

FMT = VATEL_FORMAT
Pcm = npt.NDArray[np.int16]


def scaled(pcm: bytes, gain_db: float) -> bytes:
    """`pcm` with `gain_db` applied (clipped)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) * 10 ** (gain_db / 20)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


ROOM_DEVICES = 'pcm.test_mic { type pulse; device "mic.monitor" }\npcm.test_spk { type pulse; device "spk" }\n'


def install_room_devices(workdir: Path) -> Path:
    """For a bench outside pytest: ALSA names test_mic / test_spk (as in the test asoundrc) on the private
    PulseAudio server's null sinks; set before alsa-lib is first used. Returns the asoundrc written."""
    asoundrc = workdir / "asoundrc"
    asoundrc.write_text(ROOM_DEVICES, encoding="utf-8")
    os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{asoundrc}"
    return asoundrc


class LoopbackRoom:
    """Context manager: a `module-loopback` spk.monitor -> mic with `delay_ms` latency and `gain_db` volume.

    Unloads the module on exit (the PulseAudio server is shared by a whole test session)."""

    def __init__(self, pulse: PulseServer, *, delay_ms: int = 50, gain_db: float = -6.0) -> None:
        self.pulse = pulse
        self.delay_ms = delay_ms
        self.gain_db = gain_db
        self.module: str | None = None

    def __enter__(self) -> LoopbackRoom:
        out = self.pulse.pactl(
            "load-module", "module-loopback", "source=spk.monitor", "sink=mic", f"latency_msec={self.delay_ms}",
            "source_dont_move=true", "sink_dont_move=true",
        )
        self.module = out.stdout.strip()
        try:
            inputs = json.loads(self.pulse.pactl("-f", "json", "list", "sink-inputs").stdout)
            index = next(str(i["index"]) for i in inputs if str(i.get("owner_module")) == self.module)
            self.pulse.pactl("set-sink-input-volume", index, f"{self.gain_db}dB")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Unload the loopback; idempotent."""
        module, self.module = self.module, None
        if module is not None:
            self.pulse.pactl("unload-module", module, check=False)


@dataclass(frozen=True)
class EchoScenario:
    """One session: the agent says `agent` (once) while the room echoes it; optionally the user talks over it."""

    echo_cancel: str = "auto"
    mic_during_playback: str = "stream"
    barge_in: str = "server"
    agent_wav: str = "agent_answer.wav"
    user_wav: str | None = None
    user_at_s: float = 4.0  # after the turn starts
    user_gain_db: float = -6.0
    min_speech_ms: int = 240
    settle_s: float = 1.5  # room and session running before the agent speaks
    tail_s: float = 1.5  # session kept open after the turn


@dataclass
class EchoRun:
    """What one scenario produced."""

    scenario: EchoScenario
    engine: str | None
    sent: Pcm  # everything the server received (input_audio), 24 kHz
    sent_times: list[float]  # monotonic arrival time of each input_audio message, in order
    sent_sizes: list[int]  # samples per input_audio message
    turn_pos: int  # sample index in `sent` when the agent's turn started streaming
    turn_samples: int  # length of the agent's turn
    mic: Pcm  # the room microphone (mic.monitor) recorded by parec during the run
    user_fed_at: float | None  # monotonic time pacat started feeding the user
    events: list[tuple[float, str, str]] = field(default_factory=list)
    echo_stats: dict[str, int] = field(default_factory=dict)
    echo_delay_s: float | None = None
    erle_estimate_db: float | None = None
    player_stats: dict[str, int] = field(default_factory=dict)  # the daemon's Player.stats after the run
    capture_stats: dict[str, Any] = field(default_factory=dict)  # its capture counters (overruns, ...)

    def barge_ins(self) -> list[tuple[float, str]]:
        return [(t, text) for t, kind, text in self.events if kind == "barge_in"]

    def sent_time_of(self, sample: int) -> float:
        """Arrival time of the input_audio message carrying sample `sample` of `sent`."""
        edges = np.cumsum(self.sent_sizes)
        k = int(np.searchsorted(edges, sample, side="right"))
        return self.sent_times[min(k, len(self.sent_times) - 1)]


async def run_echo_session(pulse: PulseServer, workdir: Path, sc: EchoScenario, *, timeout_s: float = 60.0) -> EchoRun:
    """Run the daemon (manual wake) through one agent turn in the room that is loaded now."""
    agent = shipped_speech(sc.agent_wav)
    turn_samples = len(agent) // FMT.bytes_per_frame
    turn_pos: list[int] = []
    user_fed: list[float] = []

    async def script(s: SimSession) -> None:
        await s.wait_audio(sc.settle_s * 1000, timeout=20)
        turn_pos.append(len(s.input_audio) // FMT.bytes_per_frame)
        turn = asyncio.create_task(s.send_turn("t1", agent, realtime=True))
        if sc.user_wav is not None:
            await asyncio.sleep(sc.user_at_s)
            user_fed.append(time.monotonic())
            pulse.feed_mic(scaled(shipped_speech(sc.user_wav), sc.user_gain_db))
        await turn
        await s.wait_seconds(sc.tail_s + 0.5)
        await s.end_session()

    events: list[tuple[float, str, str]] = []
    rec = _record_mic(pulse, workdir / "room-mic.raw")
    try:
        async with Simulator(script=script) as sim:
            cfg = config_from_dict({
                "vatel": {"agent_id": sim.agent_id, "base_url": sim.base_url},
                "audio": {"capture_device": "test_mic", "playback_device": "test_spk",
                          "echo_cancel": sc.echo_cancel, "mic_during_playback": sc.mic_during_playback},
                "wake": {"mode": "manual", "min_speech_ms": sc.min_speech_ms},
                "session": {"idle_timeout_s": 60.0, "barge_in": sc.barge_in,
                            "barge_in_min_speech_ms": sc.min_speech_ms},
                "control": {"socket_path": str(workdir / "control.sock")},
                "gpio": {"backend": "fake"},
            })
            daemon = Daemon(cfg, api_key=sim.api_key,
                            on_event=lambda kind, text: events.append((time.monotonic(), kind, text)))
            async with running(daemon):
                await daemon.wait_state(State.LISTENING, timeout=20)
                if not daemon.trigger("echo room"):
                    raise RuntimeError("the daemon did not accept the trigger")
                session = await sim.next_session(timeout=20)
                await session.wait_closed(timeout=timeout_s)
                echo = daemon.echo
                stats = dict(echo.stats) if echo is not None else {}
                delay = echo.reference.delay_s if echo is not None else None
                erle = echo.erle_db if echo is not None else None
                engine = echo.name if echo is not None else None
                status = daemon.status()
    finally:
        mic = np.frombuffer(rec.stop(), dtype="<i2").astype(np.int16)
    sizes = [int(m.summary.split()[0]) // FMT.bytes_per_frame for m in session.messages
             if m.direction == "in" and m.type == "input_audio"]
    times = [m.t for m in session.messages if m.direction == "in" and m.type == "input_audio"]
    if not turn_pos:
        raise RuntimeError("the agent's turn never started")
    return EchoRun(
        scenario=sc, engine=engine, sent=np.frombuffer(bytes(session.input_audio), dtype="<i2").astype(np.int16),
        sent_times=times, sent_sizes=sizes, turn_pos=turn_pos[0], turn_samples=turn_samples, mic=mic,
        user_fed_at=user_fed[0] if user_fed else None, events=events, echo_stats=stats, echo_delay_s=delay,
        erle_estimate_db=erle, player_stats=dict(status.get("player", {})),
        capture_stats={k: v for k, v in status.get("counters", {}).items() if "capture" in k or "overrun" in k},
    )


def _record_mic(pulse: PulseServer, path: Path) -> Any:
    """parec on mic.monitor (the room microphone) until .stop()."""
    import subprocess

    from vatel_edge.devkit.sandbox import RAW_ARGS, Recording

    with open(path, "wb") as sink_file:
        proc = subprocess.Popen(
            ["parec", "-d", "mic.monitor", "--latency-msec=10", *RAW_ARGS],
            env=pulse.env, stdin=subprocess.DEVNULL, stdout=sink_file, stderr=subprocess.DEVNULL,
        )
    return Recording(proc, path)


# ------------------------------------------------------------------------------------------------------------
# figures


def power(x: Pcm) -> float:
    """Mean square (PCM16 units)."""
    return float(np.mean(x.astype(np.float64) ** 2)) if x.size else 0.0


def echo_window(run: EchoRun, *, skip_s: float = 2.0, end_margin_s: float = 0.7) -> slice:
    """Samples of `sent` inside the agent's turn after `skip_s` (convergence), ending `end_margin_s` early."""
    start = run.turn_pos + FMT.samples(skip_s * 1000)
    end = run.turn_pos + run.turn_samples - FMT.samples(end_margin_s * 1000)
    return slice(start, min(end, run.sent.size))


def vad_frames(x24: Pcm, *, aggressiveness: int = 2, frame_ms: int = 30,
               min_level_dbfs: float | None = None) -> npt.NDArray[np.bool_]:
    """webrtcvad's decision per `frame_ms` of a 24 kHz signal (resampled to 16 kHz), optionally behind the
    daemon's energy gate (frames quieter than `min_level_dbfs` are never speech, as in wake.min_level_dbfs)."""
    vad = webrtcvad.Vad(aggressiveness)
    x = Resampler(FMT.rate, 16_000).process(x24.astype(np.int16))
    n = 16 * frame_ms
    gate = None if min_level_dbfs is None else power_of_dbfs(min_level_dbfs)
    flags = []
    for i in range(x.size // n):
        chunk = x[i * n : (i + 1) * n]
        loud = gate is None or float(np.mean(chunk.astype(np.float64) ** 2)) >= gate
        flags.append(loud and vad.is_speech(chunk.astype("<i2").tobytes(), 16_000))
    return np.array(flags, dtype=bool)


def wake_rule_fires(voiced: npt.NDArray[np.bool_], *, frame_ms: int = 30, min_speech_ms: int = 240,
                    window_ms: int = 480) -> bool:
    """Would `min_speech_ms` of voiced frames within `window_ms` (the wake / local barge-in rule) fire?"""
    need = -(-min_speech_ms // frame_ms)
    w = max(1, window_ms // frame_ms)
    counts = np.convolve(voiced.astype(int), np.ones(w, dtype=int))[: voiced.size]
    return bool(np.any(counts >= need))


def echo_delay_track(run: EchoRun, *, window_s: float = 1.0) -> list[int]:
    """Where each `window_s` of the agent's turn sounds in the room microphone, relative to the first window
    (samples): all zero while the echo path stays put; a step is the room rig (module-loopback re-adjusting
    its latency) or the daemon's playback (an underrun) moving the echo against the reference."""
    agent = np.frombuffer(shipped_speech(run.scenario.agent_wav), dtype="<i2")
    head = agent[: FMT.samples(3000)]
    if run.mic.size < head.size:
        return []
    base = locate(run.mic, head)
    w, slack = FMT.samples(window_s * 1000), FMT.samples(100)
    track = []
    for k in range(0, agent.size - w + 1, w):
        lo, hi = max(0, base + k - slack), min(run.mic.size, base + k + w + slack)
        if hi - lo < w + slack or power(agent[k : k + w]) < 1e4:
            continue
        track.append(lo + locate(run.mic[lo:hi], agent[k : k + w]) - (base + k))
    return [t - track[0] for t in track] if track else []


def locate(haystack: Pcm, needle: Pcm) -> int:
    """Sample index where `needle` best matches inside `haystack` (FFT cross-correlation)."""
    h = haystack.astype(np.float64)
    k = needle.astype(np.float64)
    if h.size < k.size:
        raise ValueError("haystack shorter than needle")
    n = 1 << int(np.ceil(np.log2(h.size + k.size)))
    c = np.fft.irfft(np.fft.rfft(h, n) * np.conj(np.fft.rfft(k, n)), n)[: h.size - k.size + 1]
    return int(np.argmax(c))


@dataclass(frozen=True)
class DoubleTalk:
    """Where, in the room microphone's recording, the user started and the echo of the agent stopped."""

    onset: int  # sample of the user's first loud sample
    echo_end: int | None  # sample after the last echo block (None: the echo never stopped in the recording)

    def stop_after_onset_ms(self, room_delay_ms: float) -> float | None:
        """When the speaker stopped, relative to the user's onset: echo end minus the speaker->mic delay."""
        if self.echo_end is None:
            return None
        return FMT.duration_ms((self.echo_end - self.onset) * FMT.bytes_per_frame) - room_delay_ms


def double_talk(mic: Pcm, user: Pcm, *, loud: int = 300, block_ms: float = 5.0, echo_dbfs: float = -60.0,
                horizon_s: float = 3.0) -> DoubleTalk:
    """Find the user in the room recording (pacat mixes it in sample-exact) and subtract it: what is left is
    the echo, whose end (the last block above `echo_dbfs` within `horizon_s` of the onset) marks when the
    speaker stopped plus the room's delay."""
    pos = locate(mic, user)
    residual = mic.astype(np.float64)
    residual[pos : pos + user.size] -= user.astype(np.float64)[: max(0, mic.size - pos)]
    onset = pos + int(np.flatnonzero(np.abs(user) > loud)[0])
    b = FMT.samples(block_ms)
    stop = min(residual.size, onset + FMT.samples(horizon_s * 1000))
    seg = residual[onset:stop]
    blocks = seg[: seg.size // b * b].reshape(-1, b)
    level = np.sqrt(np.mean(blocks**2, axis=1))
    loud_blocks = np.flatnonzero(level > 32768 * 10 ** (echo_dbfs / 20))
    echo_end = None if loud_blocks.size and loud_blocks[-1] == level.size - 1 else (
        onset + (int(loud_blocks[-1]) + 1) * b if loud_blocks.size else onset)
    return DoubleTalk(onset, echo_end)
