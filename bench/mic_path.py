#!/usr/bin/env python3
"""The microphone path's figures (issue 14), end to end in the real-time reverberant room.

    .venv/bin/python bench/mic_path.py [--wakes 21] [--barge-ins 6] [--echo-cancel auto[,speex,...]]
                                       [--json out.json]

The real daemon (in process) on a private PulseAudio server, `devkit.room.RealTimeRoom` between its speaker
and its microphone (pyroomacoustics shoebox, RT60 0.4 s, loudspeaker 15 cm from the mic with tanh soft
clipping, noise -65 dBFS), the user's recorded human speech (devkit/speech.py) 1-3 m away, the simulator as
the server. Every daemon runs the product's defaults (echo_cancel auto, mic_during_playback auto, wake.mode
vad, preroll_ms 1000) except where a row says otherwise. What the simulator received is compared with a
recording of the microphone (mic.monitor), never with the clean clip. Each row has a floor from the same run:

* pre-roll before the speech onset, over `--wakes` wakes (three daemons, the user at 1, 2 and 3 m): where the
  audio sent starts, before the first sound of the clip at the mic. Floor: the lead the same preroll_ms would
  give counted back from the trigger instead (the 2026-11-30 design), computed offline with the daemon's own
  wake VAD on the same recordings;
* stream continuity over a three-turn session with a barge-in and pauses (room_scene.three_turns): 20 ms
  blocks outside the canceller's stretches that are not the microphone at the session's one lag;
* per `--echo-cancel` value: the first agent turn after start with the user talking over it
  (room_scene.first_turn): the user's 100 ms blocks that reach the server (correlation >= 0.5 with the user's
  part of the mic). Floor: the same scene with no echo path (the user's rendering fed into the mic);
* ... and one session of 1 + `--barge-ins` agent turns (the shipped 10 s answer) with
  `session.barge_in = "local"`: nobody talks in the first, which gives the echo reduction after convergence
  (from 3 s into the turn: mic power over what was sent, where something was sent) and the echo-only frames a
  VAD calls speech in what was sent (webrtcvad, aggressiveness 2, 30 ms, behind a -45 dBFS gate; floor: the
  same on the uncancelled mic); in each later turn the user says a short clip 2.5 s in, and the local barge-in
  latency is the clip's first sound at the mic -> the end of the speaker's sound (floor: the daemon's barge-in
  VAD on the user's part of the mic alone, offline: the detector's own decision delay). A turn that stopped
  before the user spoke (or the first turn, if cut) is a self-interruption.

Prints a markdown table and a JSON document (per-wake and per-barge-in details). About 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vatel_edge.audio.vad import VadParams, VoiceDetector
from vatel_edge.config import Config, WakeConfig, config_from_dict
from vatel_edge.devkit import aec_room
from vatel_edge.devkit.aec_lab import dbfs as power_dbfs
from vatel_edge.devkit.fixtures import TEST_DEVICES, deep_merge, lab_config, shipped_speech
from vatel_edge.devkit.room import RoomSetup, UserSpeech
from vatel_edge.devkit.room_scene import (
    FRAME,
    Pcm,
    finish,
    first_turn,
    loud_stretches,
    room_daemon,
    session_lag,
    three_turns,
    wait_room,
)
from vatel_edge.devkit.sandbox import PulseServer
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.devkit.simulator.script import wait_for_utterance
from vatel_edge.devkit.speech import human_speech, speech_onset
from vatel_edge.state import State

FMT = aec_room.FMT
WAKE_CLIPS = ("front_right", "eight_of_spades", "seven_of_clubs", "front_center", "four_queen_of_clubs",
              "side_left", "ill_disposed")
BARGE_CLIPS = ("eight_of_spades", "front_right", "seven_of_clubs", "four_queen_of_clubs", "front_center",
               "side_left")
PRODUCT: dict[str, Any] = {"audio": {"echo_cancel": "auto", "mic_during_playback": "auto"}}


def config_for(work: Path, **sections: Any) -> Callable[[Simulator], Config]:
    """The product's defaults on the room's devices, `sections` merged over them."""
    def make(sim: Simulator) -> Config:
        raw = lab_config(sim.agent_id, sim.base_url, devices=TEST_DEVICES,
                         control={"socket_path": str(work / "control.sock")})
        return config_from_dict(deep_merge(deep_merge(raw, PRODUCT), sections))
    return make


def detector_delay(x: Pcm, onset: int, params: VadParams) -> int | None:
    """Samples from `onset` to the end of the 20 ms frame of `x` (fed from 1 s before it) on which a fresh
    VoiceDetector with `params` triggers; None if it never does."""
    vad = VoiceDetector(params)
    start = max(0, onset - FMT.samples(1000))
    start -= (start - onset) % FRAME  # frames on the same grid as the onset
    for i in range(max(0, start), x.size - FRAME, FRAME):
        if vad.process(x[i : i + FRAME].astype("<i2").tobytes()).triggered:
            return i + FRAME - onset
    return None


# ---------------------------------------------------------------------------------------------- pre-roll


async def _listen_then_end(s: SimSession) -> None:
    await wait_for_utterance(s, speech_ms=200, silence_ms=700)
    await s.end_session()


async def preroll(pulse: PulseServer, work: Path, wakes: int) -> dict[str, Any]:
    """Lead of the audio sent before the first sound at the mic, per wake; and the trigger-anchored floor."""
    wake = WakeConfig()
    rows: list[dict[str, Any]] = []
    distances = (1.0, 2.0, 3.0)
    per_room = -(-wakes // len(distances))
    for d_index, distance in enumerate(distances):
        said: list[tuple[str, UserSpeech]] = []
        sessions: list[SimSession] = []
        async with room_daemon(pulse, config_for(work), _listen_then_end,
                               setup=RoomSetup(user_distance_m=distance)) as (sim, daemon, rt, recorder, events):
            assert rt is not None
            for k in range(min(per_room, wakes - len(rows) - len(said))):
                clip = WAKE_CLIPS[(d_index * per_room + k) % len(WAKE_CLIPS)]
                # later than the pre-roll after LISTENING: the ring starts empty when listening starts
                said.append((clip, rt.say(human_speech(clip), at_s=rt.position / FMT.rate + 2.0)))
                sessions.append(await sim.next_session(timeout=20))
                await sessions[-1].wait_closed(timeout=30)
                await wait_room(rt, said[-1][1].end, timeout=10)
                await daemon.wait_state(State.LISTENING, timeout=10)
            rec = finish(sessions[0], rt, recorder, daemon, events)
        for (clip, utterance), session in zip(said, sessions, strict=True):
            received = np.frombuffer(bytes(session.input_audio), dtype="<i2")
            onset = rec.onset(utterance)
            lag = session_lag(received, rec.recorded)
            first = onset - lag
            exact = first >= 0 and bool(np.array_equal(received[first : first + FRAME],
                                                       rec.recorded[onset : onset + FRAME]))
            trig = detector_delay(rec.recorded, onset, VadParams.from_wake(wake))
            rows.append({"clip": clip, "distance_m": distance, "lead_ms": 1000.0 * first / FMT.rate,
                         "first_sound_exact": exact,
                         "trigger_after_onset_ms": None if trig is None else 1000.0 * trig / FMT.rate,
                         "trigger_anchored_lead_ms": None if trig is None
                         else wake.preroll_ms - 1000.0 * trig / FMT.rate})
            print(f"  wake {len(rows)}: {clip} at {distance} m: audio from {rows[-1]['lead_ms']:.0f} ms before the "
                  f"first sound (exact {exact}); trigger-anchored {rows[-1]['trigger_anchored_lead_ms']}",
                  file=sys.stderr, flush=True)
    leads = [r["lead_ms"] for r in rows]
    floor = [r["trigger_anchored_lead_ms"] for r in rows if r["trigger_anchored_lead_ms"] is not None]
    return {"wakes": rows, "min_ms": min(leads), "median_ms": float(np.median(leads)),
            "floor_min_ms": min(floor) if floor else None, "all_exact": all(r["first_sound_exact"] for r in rows),
            "preroll_ms": wake.preroll_ms}


# ---------------------------------------------------------------------------------------------- barge-in


async def echo_and_barge_ins(pulse: PulseServer, work: Path, barge_ins: int, engine: str) -> dict[str, Any]:
    """One session: an echo-only first turn, then `barge_ins` turns the user cuts."""
    answer = shipped_speech("agent_answer.wav")

    async def script(s: SimSession) -> None:
        await wait_for_utterance(s, speech_ms=200, silence_ms=700)  # the wake clip is over: turn 1 is echo only
        for k in range(1 + barge_ins):
            await s.send_turn(f"t{k + 1}", answer, realtime=True)
            await s.wait_seconds(1.5)
        await s.end_session()

    cfg = config_for(work, audio={"echo_cancel": engine}, session={"barge_in": "local", "idle_timeout_s": 30})
    clips: list[UserSpeech] = []
    async with room_daemon(pulse, cfg, script, setup=RoomSetup(user_distance_m=1.5)) as (
            sim, daemon, rt, recorder, events):
        assert rt is not None
        rt.say(human_speech("seven_of_clubs"), at_s=rt.position / FMT.rate + 0.5)
        session = await sim.next_session(timeout=20)
        await daemon.wait_state(State.AGENT_SPEAKING, timeout=20)
        await daemon.wait_state(State.IN_SESSION, timeout=20)  # the echo-only turn played out (or was cut)
        for k in range(barge_ins):
            await daemon.wait_state(State.AGENT_SPEAKING, timeout=20)
            clips.append(rt.say(human_speech(BARGE_CLIPS[k % len(BARGE_CLIPS)]), at_s=rt.position / FMT.rate + 2.5))
            await daemon.wait_state(State.IN_SESSION, timeout=20)
        await session.wait_closed(timeout=40)
        await daemon.wait_state(State.LISTENING, timeout=10)
        rec = finish(session, rt, recorder, daemon, events)
    lag = session_lag(rec.received, rec.recorded)
    turns = rec.playing()
    a, b = turns[0][0] + FMT.samples(3000), turns[0][1] - FMT.samples(300)
    b = max(a, b)  # a first turn cut before 3.3 s leaves no window (the figures below are then None)
    mic, sent = rec.recorded[a:b], rec.received[a - lag : b - lag]
    frames = sent.size // FRAME
    live = np.array([sent[i * FRAME : (i + 1) * FRAME].any() for i in range(frames)], dtype=bool)
    sent_live = sent[: frames * FRAME].reshape(frames, FRAME)[live].ravel()
    mic_live = mic[: frames * FRAME].reshape(frames, FRAME)[live].ravel()
    erle = power_dbfs(mic_live) - power_dbfs(sent_live) if sent_live.size else None
    voiced = aec_room.vad_frames(sent_live, min_level_dbfs=-45.0) if sent_live.size else np.zeros(0, bool)
    voiced_mic = aec_room.vad_frames(mic, min_level_dbfs=-45.0) if mic.size else np.zeros(0, bool)
    # the speaker's loud stretches (room-stream samples): one per turn, the first echo-only; a stretch shorter
    # than the answer was cut, by the user if it ends after the clip's first sound at the mic, else by itself
    stretches = loud_stretches(rec.played, threshold=16, gap=FMT.samples(900))
    full = FMT.samples(1000 * len(answer) / FMT.nbytes(1000)) - FMT.samples(500)
    self_cuts = int(bool(stretches) and stretches[0][1] - stretches[0][0] < full)
    latencies: list[float | None] = []  # None: the user's barge-in did not cut the turn
    floors: list[float] = []
    params = VadParams.for_barge_in(WakeConfig(), daemon.cfg.session.barge_in_min_speech_ms)
    outcomes: list[str] = []
    for said in clips:
        onset = said.start + said.direct_delay + speech_onset(said.clean)
        before = [(lo, hi) for lo, hi in stretches[1:] if lo <= onset]  # the turn the user spoke in
        if not before:
            outcomes.append(f"no turn before the clip at {onset / FMT.rate:.2f} s")
            continue
        lo, hi = before[-1]
        if hi <= onset:
            self_cuts += 1
            outcomes.append(f"turn at {lo / FMT.rate:.2f} s cut itself {(hi - lo) / FMT.rate:.2f} s in")
        elif hi - lo >= full:
            latencies.append(None)
            outcomes.append(f"turn at {lo / FMT.rate:.2f} s not cut")
        else:
            latencies.append(1000.0 * (hi - onset) / FMT.rate)
            outcomes.append(f"turn at {lo / FMT.rate:.2f} s cut {latencies[-1]:.0f} ms after the user's onset")
        alone = np.zeros(said.start + said.at_mic.size, dtype=np.float64)
        alone[said.start :] = said.at_mic
        delay = detector_delay(np.clip(np.rint(alone), -32768, 32767).astype(np.int16), onset, params)
        if delay is not None:
            floors.append(1000.0 * delay / FMT.rate)
    cut = [x for x in latencies if x is not None]
    return {
        "stretches": stretches, "outcomes": outcomes,
        "echo_window_s": (b - a) / FMT.rate, "muted_fraction": 1.0 - float(live.mean()) if live.size else 1.0,
        "erle_db": erle, "mic_dbfs": power_dbfs(mic) if mic.size else None,
        "sent_dbfs": power_dbfs(sent_live) if sent_live.size else None,
        "echo_vad_pct": 100.0 * float(voiced.mean()) if voiced.size else None,
        "mic_vad_pct": 100.0 * float(voiced_mic.mean()) if voiced_mic.size else None,
        "self_interruptions": self_cuts, "barge_ins": len(latencies), "cut": len(cut),
        "latencies_ms": latencies, "median_ms": float(np.median(cut)) if cut else None,
        "floor_ms": float(np.median(floors)) if floors else None, "floor_samples_ms": floors,
        "barge_in_events": [text for k, text in events if k == "barge_in"], "echo": rec.echo,
    }


# ---------------------------------------------------------------------------------------------- the table


def _fmt(x: float | None, unit: str, digits: int = 0) -> str:
    return "not measured" if x is None else f"{x:.{digits}f} {unit}".strip()


async def measure(pulse: PulseServer, work: Path, wakes: int, barge_ins: int, engines: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"engines": {}}
    if wakes:
        print("pre-roll ...", file=sys.stderr, flush=True)
        out["preroll"] = await preroll(pulse, work, wakes)
        print("three turns ...", file=sys.stderr, flush=True)
        t = await three_turns(pulse, config_for(work, audio={"mic_during_playback": "stream"},
                                                session={"idle_timeout_s": 30}))
        out["continuity"] = {"lag": t.lag, "outside_blocks": int(t.outside.size), "bad_blocks": int(t.bad.size),
                             "exact_between": t.exact_between, "turns": len(t.engine),
                             "user_blocks_ok": sum(c >= 0.5 for c in t.corr), "user_blocks": len(t.corr)}
    for engine in engines:
        r: dict[str, Any] = {}
        for echo in (True, False):
            print(f"{engine}: first turn, echo path {echo} ...", file=sys.stderr, flush=True)
            f = await first_turn(pulse, config_for(work, audio={"echo_cancel": engine},
                                                   session={"idle_timeout_s": 30}),
                                 echo=echo, setup=RoomSetup(user_distance_m=1.5))
            r["first_turn_echo" if echo else "first_turn_no_echo"] = {
                "deaf_ms": f.deaf_ms, "ok": sum(c >= 0.5 for c in f.during), "blocks": len(f.during),
                "pct": 100.0 * sum(c >= 0.5 for c in f.during) / max(1, len(f.during)), "echo": f.rec.echo,
                "room": f.rec.room, "capture": f.rec.capture}
        print(f"{engine}: echo-only turn and barge-ins ...", file=sys.stderr, flush=True)
        r["barge_in"] = await echo_and_barge_ins(pulse, work, barge_ins, engine)
        out["engines"][engine] = r
    return out


Row = tuple[str, str, str, str, bool, str]


def table(r: dict[str, Any]) -> str:
    rows: list[Row] = []
    if "preroll" in r:
        p, c = r["preroll"], r["continuity"]
        rows += [
            (f"Pre-roll before the speech onset, over {len(p['wakes'])} wakes at 1-3 m (min / median)",
             f"{p['min_ms']:.0f} / {p['median_ms']:.0f} ms",
             _fmt(p["floor_min_ms"], "ms") + " min, the same preroll_ms counted from the trigger",
             "min >= 250 ms", p["min_ms"] >= 250 and p["all_exact"],
             f"preroll_ms {p['preroll_ms']}; first sound sample-exact in every wake: {p['all_exact']}"),
            ("Stream continuity, 3-turn session with a barge-in and pauses",
             f"{c['bad_blocks']} of {c['outside_blocks']} blocks off the lag", "0",
             "one constant lag, 0 skipped or repeated", c["bad_blocks"] == 0 and min(c["exact_between"]) >= 5,
             f"lag {c['lag']} samples; exact 20 ms blocks before/between/after the turns {c['exact_between']}"),
        ]
    for engine, e in r["engines"].items():
        b, fe, fn = e["barge_in"], e["first_turn_echo"], e["first_turn_no_echo"]
        erle = b["erle_db"]
        rows += [
            (f"Echo reduction after convergence ({engine})", _fmt(erle, "dB", 1), "-", ">= 30 dB",
             erle is not None and erle >= 30,
             f"echo-only turn from 3 s on, {b['echo_window_s']:.1f} s, muted {100 * b['muted_fraction']:.0f} % of it; "
             f"mic {_fmt(b['mic_dbfs'], 'dBFS', 1)} (noise floor -65 dBFS)"),
            (f"Echo-only agent speech a VAD calls speech in what is sent ({engine})", _fmt(b["echo_vad_pct"], "%", 1),
             _fmt(b["mic_vad_pct"], "%", 1) + " (the uncancelled mic)", "< 3 %",
             b["echo_vad_pct"] is not None and b["echo_vad_pct"] < 3, "same window"),
            (f"User speech during the first agent turn after start reaching the server ({engine})",
             f"{fe['pct']:.0f} % ({fe['ok']}/{fe['blocks']})", f"{fn['pct']:.0f} % (no echo path)", ">= 90 %",
             fe["pct"] >= 90, f"muted for the first {fe['deaf_ms']:.0f} ms (no echo path: {fn['deaf_ms']:.0f} ms)"),
            (f"Local barge-in, user onset -> silence at the speaker, median ({engine})", _fmt(b["median_ms"], "ms"),
             _fmt(b["floor_ms"], "ms") + " (the barge-in VAD on the user alone)", "<= 250 ms",
             b["median_ms"] is not None and b["median_ms"] <= 250 and b["cut"] == b["barge_ins"]
             and b["self_interruptions"] == 0,
             f"{b['cut']} of {b['barge_ins']} barge-ins cut the turn; self-interruptions (a turn cut before the "
             f"user spoke): {b['self_interruptions']} of {len(b['stretches'])} turns"),
        ]
    lines = ["| figure | value | floor (same run) | goal | verdict | notes |", "|---|---|---|---|---|---|"]
    lines += [f"| {a} | {v} | {fl} | {g} | {'met' if ok else '**MISSED**'} | {n} |" for a, v, fl, g, ok, n in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wakes", type=int, default=21)
    ap.add_argument("--barge-ins", type=int, default=6)
    ap.add_argument("--echo-cancel", default="auto", help="comma-separated audio.echo_cancel values, each measured")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    for name in {*WAKE_CLIPS, *BARGE_CLIPS, "dashwood", "amiable_woman", "cold_hearted"}:
        human_speech(name)  # FileNotFoundError naming the Debian package, before any daemon starts
    work = Path(tempfile.mkdtemp(prefix="vatel-micpath-"))
    aec_room.install_room_devices(work)
    pulse = PulseServer.start(work / "pulse")
    start = time.monotonic()
    try:
        result = asyncio.run(measure(pulse, work, args.wakes, args.barge_ins, args.echo_cancel.split(",")))
    finally:
        pulse.stop()
    print(f"bench/mic_path.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{time.monotonic() - start:.0f} s")
    print()
    print(table(result))
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
