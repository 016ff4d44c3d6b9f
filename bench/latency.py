"""Latency figures: wake (warm and cold token), first audio and barge-in, through real-time devices.

One `vatel-edge run` subprocess listens on demo_mic and plays on demo_spk. Each trial feeds an utterance
with pacat; the simulated agent waits for the end of it, streams a steady tone in real time, sends
`interruption` 1.2 s later, then ends the session.

Time base: CLOCK_MONOTONIC is system-wide, so the simulator's message log (`SimSession.messages[i].t`)
and two probes in this process share one clock. A probe reads the monitor of a sink through ALSA
(10 ms periods) and stamps every read; sample i of that monitor became available at a + i/rate, with
`a` the earliest stamp-minus-position within 1.5 s of the event (so PulseAudio's feed latency and the
pacat start-up are calibrated out in the same run, per trial). A null sink renders (and hands its
monitor) audio `configured latency` ahead of its real-time clock, so for the speaker that latency
(read with pactl, 10 ms here) is added: a sample "sounds" at its slot in the sink's real-time stream,
as it would leave a sound card's buffer. The mic probe also locates the utterance
(bit-exact copy: first sample above a threshold, checked sample by sample over 100 ms).

- wake: "end of the min_speech_ms window" is the sample at which VoiceDetector (the daemon's config)
  fires when run over the source alone in 1 ms steps; latency = first input_audio at the simulator minus
  the time that sample was available at the microphone. It includes the daemon's capture framing.
- cold token: the simulator's token endpoint answers the prefetcher with 429 Retry-After: 600, so at the
  wake there is no prefetched token and the daemon fetches one (one POST on loopback) before connecting.
- first audio: first response_audio sent -> first tone sample in spk.monitor.
- barge-in: interruption sent -> the sample after the last tone sample in spk.monitor.
Floors, same run: a bare websockets client connecting and sending one frame (warm: token in hand;
cold: POST for a token first), and a bare ALSA writer on demo_spk (first write -> sound; drop() -> silence).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.listening import daemon_config
from bench.measure import Figure, median, rounded
from bench.rig import FMT, BarePlayer, DaemonProc, Probe, Rig, first_loud
from bench.session_cost import BENCH
from vatel_edge.audio.vad import VadParams, VoiceDetector
from vatel_edge.config import AudioConfig, WakeConfig
from vatel_edge.devkit.fixtures import shipped_speech, steady_tone
from vatel_edge.devkit.simulator import SimSession, Simulator, TokenFault
from vatel_edge.devkit.simulator.script import wait_for_utterance

SPEECH_THRESHOLD = 300
TONE_THRESHOLD = 1000
TONE_MS = 3000.0
INTERRUPT_AFTER_S = 1.2
CHUNK_MS = 40.0
WAKE_GOAL_MS = 50.0


class ColdTokens(collections.deque[TokenFault]):
    """The simulator's token fault queue, rigged for cold-token trials.

    Off: every request is answered normally. On: requests are refused with 429 Retry-After: 600 (the
    prefetcher then sleeps), except one per `grant()` (the daemon's own fetch at the wake).
    """

    def __init__(self) -> None:
        super().__init__()
        self.on = False
        self.grants = 0

    def __len__(self) -> int:
        return 1  # always "has a fault": the simulator asks popleft() on every request

    def popleft(self) -> TokenFault:
        if not self.on:
            return TokenFault()
        if self.grants:
            self.grants -= 1
            return TokenFault()
        return TokenFault.http(429, "bench: no prefetch", retry_after="600")

    def grant(self) -> None:
        self.grants += 1


@dataclass
class Trial:
    """One wake-session."""

    kind: str  # warm | cold
    feed_at: float
    session: SimSession | None = None
    results: dict[str, Any] = field(default_factory=dict)


def trigger_sample(source: bytes, wake: WakeConfig) -> int | None:
    """Sample index (end) at which the wake rule fires on the source alone, in 1 ms steps."""
    det = VoiceDetector(VadParams.from_wake(wake))
    step = FMT.nbytes(1)
    for pos in range(0, len(source) - step + 1, step):
        if det.process(source[pos : pos + step]).triggered:
            return (pos + step) // FMT.bytes_per_frame
    return None


def agent(trials: list[Trial]) -> Any:
    """The simulated agent: wait for the utterance, stream a tone, interrupt it, end."""
    tone = steady_tone(TONE_MS)

    async def run(s: SimSession) -> None:
        await wait_for_utterance(s, speech_ms=300, silence_ms=500, timeout=20)
        turn = asyncio.create_task(s.send_turn(f"turn-{s.id}", tone, chunk_ms=CHUNK_MS, realtime=True))
        try:
            await asyncio.sleep(INTERRUPT_AFTER_S)
        finally:
            turn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await turn
        await s.interrupt()
        await s.wait_seconds(0.4)
        await s.end_session()

    return run


def _first(s: SimSession, direction: str, mtype: str) -> float | None:
    return next((m.t for m in s.messages if m.direction == direction and m.type == mtype), None)


def silence_after(x: np.ndarray, start: int, threshold: int, run: int) -> int | None:
    """Index where the first run of `run` quiet samples (|x| <= threshold) at or after `start` begins."""
    quiet = np.abs(x[start:].astype(np.int32)) <= threshold
    if quiet.size < run:
        return None
    counts = np.convolve(quiet.astype(np.int32), np.ones(run, dtype=np.int32), mode="valid")
    idx = np.flatnonzero(counts == run)
    return None if idx.size == 0 else start + int(idx[0])


def analyse(trial: Trial, source: bytes, trig: int, frame_ms: int, mic: Probe, spk: Probe,
            ahead: float) -> None:
    """Turn a trial's probe recordings and message log into latencies (ms)."""
    s = trial.session
    assert s is not None
    src = np.frombuffer(source, dtype="<i2")
    x = mic.samples()
    sent = np.frombuffer(bytes(s.input_audio), dtype="<i2")
    src_on = first_loud(src, 0, None, SPEECH_THRESHOLD)
    on = first_loud(x, mic.sample_at(trial.feed_at), None, SPEECH_THRESHOLD)
    sent_on = first_loud(sent, 0, None, SPEECH_THRESHOLD)
    r = trial.results
    if src_on is None or on is None or sent_on is None:
        r["error"] = "utterance not found in the mic probe or in the input_audio"
        return
    n = FMT.samples(100)
    mic_shift = on - src_on  # probe index = source index + mic_shift
    sent_shift = sent_on - src_on  # input_audio index = source index + sent_shift
    r["alignment_exact"] = bool(
        np.array_equal(x[on : on + n], src[src_on : src_on + n]) and np.array_equal(sent[sent_on : sent_on + n],
                                                                                  src[src_on : src_on + n]))
    # The end of the min_speech_ms window: where VoiceDetector fires on the source alone (1 ms steps), moved to
    # the end of the capture frame holding it (the input_audio is on the capture frames' grid: a session's
    # audio starts on a frame boundary), the earliest moment a detector working on whole frames could know.
    # (Until 2026-12-01 this was read off the pre-roll, which ended with the frame the VAD fired on; the
    # pre-roll now starts before the speech onset instead, so that reading put the window end at the onset.)
    n_frame = FMT.samples(frame_ms)
    trig_src = -(-(trig + sent_shift) // n_frame) * n_frame - sent_shift
    r["frame_rounding_ms"] = 1000 * (trig_src - trig) / FMT.rate
    t_window_end = mic.time_of(mic_shift + trig_src)
    t_input = _first(s, "in", "input_audio")
    if t_input is not None:
        r["wake_ms"] = 1000 * (t_input - t_window_end)
    y = spk.samples()
    t_resp = _first(s, "out", "response_audio")
    if t_resp is not None:
        i = first_loud(y, spk.sample_at(t_resp - 0.3), None, TONE_THRESHOLD)
        if i is not None:
            r["first_audio_ms"] = 1000 * (spk.time_of(i) + ahead - t_resp)
    t_int = _first(s, "out", "interruption")
    if t_int is not None:
        j = silence_after(y, spk.sample_at(t_int - 0.2), TONE_THRESHOLD, FMT.samples(10))
        if j is not None:
            r["barge_in_ms"] = 1000 * (spk.time_of(j) + ahead - t_int)


def dump(rig: Rig, trials: list[Trial], mic: Probe, spk: Probe, players: list[BarePlayer]) -> None:
    """Keep the raw material of the latency figures in the work directory (to re-check them by hand)."""
    out = rig.workdir / "latency"
    out.mkdir(exist_ok=True)
    for name, probe in (("mic", mic), ("spk", spk)):
        (out / f"{name}.raw").write_bytes(bytes(probe.pcm))
        (out / f"{name}-marks.json").write_text(json.dumps([[m.t, m.end] for m in probe.marks]))
    doc = {
        "trials": [{"kind": t.kind, "feed_at": t.feed_at,
                    "messages": _summary(t.session)} for t in trials],
        "players": [[p.first_write_at, p.dropped_at] for p in players],
    }
    (out / "timeline.json").write_text(json.dumps(doc, indent=1))


FLOOR_REPEAT = 2  # the bare client's first connection warms up its lazy imports; the last one counts


def _summary(s: SimSession | None) -> list[list[Any]]:
    """A session's message log without the stream of input_audio (the first one is kept)."""
    if s is None:
        return []
    first_input = next((m for m in s.messages if m.type == "input_audio"), None)
    return [[m.t, m.direction, m.type] for m in s.messages if m.type != "input_audio" or m is first_input]


def run_floor_client(rig: Rig, sim: Simulator, fetch: bool) -> float:
    """bench/ws_floor.py connect: the start time of its last attempt (the simulator stamps the arrival)."""
    env = {**rig.env, "BENCH_WS_BASE": sim.base_url.replace("http://", "ws://")}
    if fetch:
        env.update(BENCH_BASE_URL=sim.base_url, BENCH_API_KEY=sim.api_key, BENCH_AGENT_ID=sim.agent_id)
    else:
        env["BENCH_TOKEN"] = ",".join(sim.issue_token() for _ in range(FLOOR_REPEAT))
    args = [sys.executable, str(BENCH / "ws_floor.py"), "connect", "--repeat", str(FLOOR_REPEAT),
            *(["--fetch-token"] if fetch else [])]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["t0"][-1])


async def wake_floor(rig: Rig, sim: Simulator, tokens: ColdTokens, fetch: bool) -> float | None:
    """ms from a bare client's start to its first input_audio at the simulator."""
    if fetch:
        tokens.grants += FLOOR_REPEAT
    before = len(sim.sessions)
    t0 = await asyncio.to_thread(run_floor_client, rig, sim, fetch)
    tokens.grants = 0
    if len(sim.sessions) <= before:
        return None
    t = _first(sim.sessions[-1], "in", "input_audio")
    return None if t is None else 1000 * (t - t0)


async def latency(rig: Rig, warm: int, cold: int) -> tuple[list[Figure], float | None]:
    """Figures 4, 5, 6; and the start-up time of the daemon it started (alone)."""
    utterance = shipped_speech("user_request.wav")
    source = bytes(FMT.nbytes(300)) + utterance + bytes(FMT.nbytes(1200))
    trials = [Trial("warm", 0.0) for _ in range(warm)] + [Trial("cold", 0.0) for _ in range(cold)]
    tokens = ColdTokens()
    floors: dict[str, list[float]] = {"warm": [], "cold": [], "first": [], "barge": []}
    startup: float | None = None
    ahead = 0.0
    players: list[BarePlayer] = []
    async with Simulator(script=agent(trials)) as sim:
        sim.faults.token = tokens
        cfg = daemon_config(sim)
        wake = dataclasses.replace(WakeConfig(), preroll_ms=500, cooldown_ms=200)
        audio = AudioConfig()
        trig = trigger_sample(source, wake)
        if trig is None:
            raise RuntimeError("the wake rule never fires on the bench utterance")
        with Probe("demo_mic") as mic, Probe("bench_spkmon") as spk:
            d = DaemonProc(rig, "latency", cfg, sim.api_key)
            d.start()
            try:
                try:
                    startup = await d.wait_ready()
                except TimeoutError:
                    raise RuntimeError(f"daemon never sent READY=1:\n{d.log_tail()}") from None
                await d.wait_state("listening", timeout=10)
                await asyncio.sleep(0.5)
                configured: float | None = await asyncio.to_thread(rig.sink_configured_latency, "spk")
                ahead = configured or 0.0
                for i, trial in enumerate(trials):
                    last_warm = trial.kind == "warm" and (i + 1 == len(trials) or trials[i + 1].kind == "cold")
                    if last_warm:
                        tokens.on = True  # the prefetch after this wake is refused: no token for the next one
                    if trial.kind == "cold":
                        tokens.grant()  # the daemon's own fetch at the wake
                    trial.feed_at = time.monotonic()
                    feeder = rig.feed_mic(source)
                    trial.session = await sim.next_session(timeout=40)
                    await trial.session.wait_closed(timeout=30)
                    await d.wait_state("listening", timeout=15)
                    await asyncio.to_thread(feeder.wait, 10)
                    await asyncio.sleep(0.4)
                    if tokens.grants:  # the daemon did not use its grant (it had a token after all)
                        trial.results["note"] = "token grant unused"
                        tokens.grants = 0
                # Floors, same run, daemon idle.
                for _ in range(max(1, warm)):
                    f = await wake_floor(rig, sim, tokens, fetch=False)
                    if f is not None:
                        floors["warm"].append(f)
                for _ in range(max(1, cold)):
                    f = await wake_floor(rig, sim, tokens, fetch=True)
                    if f is not None:
                        floors["cold"].append(f)
                for _ in range(max(1, min(warm, 3))):
                    player = BarePlayer("demo_spk", audio.playback_period_ms, audio.playback_buffer_ms)
                    await asyncio.to_thread(player.play, steady_tone(1500), 1.0)
                    players.append(player)
                    await asyncio.sleep(0.5)
            finally:
                await d.stop()
            await asyncio.sleep(0.1)
        dump(rig, trials, mic, spk, players)
        for trial in trials:
            if trial.session is not None:
                analyse(trial, source, trig, audio.frame_ms, mic, spk, ahead)
        y = spk.samples()
        for player in players:
            assert player.first_write_at is not None and player.dropped_at is not None
            k = first_loud(y, spk.sample_at(player.first_write_at - 0.3), None, TONE_THRESHOLD)
            if k is not None:
                floors["first"].append(1000 * (spk.time_of(k) + ahead - player.first_write_at))
            j = silence_after(y, spk.sample_at(player.dropped_at - 0.2), TONE_THRESHOLD, FMT.samples(10))
            if j is not None:
                floors["barge"].append(1000 * (spk.time_of(j) + ahead - player.dropped_at))
    figs = figures(trials, floors, audio)
    for fig in figs:
        if fig.key in ("first_audio", "barge_in"):
            fig.extra["spk_render_ahead_ms"] = round(1000 * ahead, 1)
    return figs, startup


def figures(trials: list[Trial], floors: dict[str, list[float]], audio: AudioConfig) -> list[Figure]:
    """The latency figures from the analysed trials."""

    def pick(kind: str | None, key: str) -> list[float]:
        return [t.results[key] for t in trials if (kind is None or t.kind == kind) and key in t.results]

    exact = all(t.results.get("alignment_exact", False) for t in trials if t.session is not None)
    calib = "source, mic and input_audio bit-exact" if exact else "alignment NOT bit-exact (threshold onsets used)"
    out = []
    for kind in ("warm", "cold"):
        xs = pick(kind, "wake_ms")
        v = median(xs)
        fig = Figure(
            f"wake_latency_{kind}",
            f"Wake latency, {kind} token (window end -> first input_audio)",
            "ms", v, median(floors[kind]),
            "bare client: connect + 1 frame" + (" after a token POST" if kind == "cold" else ", token in hand"),
            goal=f"<= {WAKE_GOAL_MS:g} ms" if kind == "warm" else "",
            samples=[round(x, 1) for x in xs], floor_samples=rounded(floors[kind], 1),
            note=(f"median of {len(xs)}; {calib}; window end = the offline wake VAD's trigger, to the end of its "
                  "capture frame"),
            extra={"frame_rounding_ms": rounded(pick(kind, "frame_rounding_ms"), 1)},
        )
        if kind == "warm":
            fig.met = None if v is None else v <= WAKE_GOAL_MS
        out.append(fig)
    first_goal = audio.prebuffer_ms + audio.playback_period_ms + 10
    xs = pick(None, "first_audio_ms")
    v = median(xs)
    out.append(Figure(
        "first_audio", "First audio (first response_audio sent -> sound in the sink)", "ms", v,
        median(floors["first"]), "bare ALSA writer: first write -> sound",
        goal=f"<= prebuffer + period + 10 = {first_goal} ms", met=None if v is None else v <= first_goal,
        samples=rounded(xs, 1), floor_samples=rounded(floors["first"], 1),
        note=f"median of {len(xs)}; chunks of {CHUNK_MS:g} ms sent in real time, so the {audio.prebuffer_ms} ms "
             f"prebuffer fills with the 2nd chunk, {CHUNK_MS:g} ms after the 1st",
    ))
    barge_goal = audio.playback_period_ms + 10
    xs = pick(None, "barge_in_ms")
    v = median(xs)
    out.append(Figure(
        "barge_in", "Barge-in (interruption sent -> silence in the sink)", "ms", v,
        median(floors["barge"]), "bare ALSA writer: drop() -> silence",
        goal=f"<= period + 10 = {barge_goal} ms", met=None if v is None else v <= barge_goal,
        samples=rounded(xs, 1), floor_samples=rounded(floors["barge"], 1), note=f"median of {len(xs)}",
    ))
    return out
