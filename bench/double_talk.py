#!/usr/bin/env python3
"""Echo engines and microphone policies in the reverberant room with a non-linear loudspeaker, offline.

    .venv/bin/python bench/double_talk.py [--seconds 10] [--first-turn | --primed | --legacy]

The scene (vatel_edge/devkit/room.py: pyroomacoustics shoebox, RT60 0.4 s, loudspeaker 15 cm from the
microphone with tanh soft clipping, the user 1.5 m away, noise -65 dBFS) plays agent speech at -26 dBFS
from the first moment of the daemon's life (a fresh engine: the first agent turn after start) while the
user (recorded human speech, devkit/speech.py "dashwood") talks over it from `user_at` ms. Each capture
frame goes through the daemon's real `EchoPath` (reference timeline, engine, measured latency) and a
microphone policy decides what would be sent:

* mute-until-converged: today's `mic_during_playback = "auto"` (silence while playing until converged);
* stream: the engine's output always;
* voice-gate: before convergence, stream while a VAD on the engine's output has heard >= 120 ms of voice
  in the last 300 ms (the user), silence otherwise; after convergence, stream.

Figures per row: user 100 ms blocks that reach the server (correlation >= 0.5 with the clean user speech
at the microphone, echo-free, at the stream's lag), echo-only frames that webrtcvad calls speech in what is
sent (>= -45 dBFS), the echo reduction after convergence, and when the path declared convergence.
The room and the user are rendered offline; the engine runs in process (no sound server, no timing
jitter): an upper bound for what the daemon reaches on real-time devices.

`--primed`: the first turn with a fresh engine that has been fed, before it, a clip of an earlier agent turn
in the same room (the raw microphone and the reference frames as the engine saw them), the way a daemon
could carry what AEC3 learned across a restart without playing a sound; the clip's microphone shifted by a
few samples stands for a device whose playback-to-capture delay changed between runs.

The main table includes DTLN-aec (`audio.echo_cancel = "dtln"`) when its interpreter and models are installed.

`--legacy`: the main table for the legacy WebRTC AEC (AEC2) at each suppression level next to AEC3
(bench/aec_legacy.py compiles its shim; needs g++ and libwebrtc-audio-processing-dev).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vatel_edge.audio import aec_dtln
from vatel_edge.audio.aec import EchoCanceller, measure_latency
from vatel_edge.audio.aec_path import CONVERGE_S, QUARTILE_FRAMES, EchoPath
from vatel_edge.audio.aec_speex import SpeexEchoCanceller
from vatel_edge.audio.aec_webrtc import WebRtcEchoCanceller
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT as FMT
from vatel_edge.audio.vad import VadParams, VoiceDetector
from vatel_edge.devkit.aec_lab import score_double_talk
from vatel_edge.devkit.fixtures import shipped_speech
from vatel_edge.devkit.room import RoomSetup, render_parts
from vatel_edge.devkit.speech import human_speech

FRAME_MS = 20
N = FMT.samples(FRAME_MS)
POLICIES = ("mute-until-converged", "stream", "voice-gate")


@dataclass
class Row:
    engine: str
    policy: str
    echo_path: bool
    user_at_ms: int
    user_ok: int
    user_blocks: int
    user_ok_first: int
    user_first: int
    echo_speech: int
    echo_frames: int
    erle_db: float | None
    converged_s: float | None


def engines() -> dict[str, Callable[[], EchoCanceller]]:
    found: dict[str, Callable[[], EchoCanceller]] = {
        "webrtc (AEC3, the binding's only setting)": lambda: WebRtcEchoCanceller(FMT, FRAME_MS),
        "speex (suppress -40/-15 dB, default)": lambda: SpeexEchoCanceller(FMT, FRAME_MS),
        "speex (suppress -60/-30 dB)": lambda: SpeexEchoCanceller(FMT, FRAME_MS, echo_suppress_db=-60,
                                                                  echo_suppress_active_db=-30),
    }
    if aec_dtln.available():
        found["dtln (DTLN-aec 128)"] = lambda: aec_dtln.DtlnEchoCanceller(FMT, FRAME_MS)
    return found


def run(name: str, make: Callable[[], EchoCanceller], policy: str, user_at_ms: int, seconds: float,
        echo_path: bool = True, lead: np.ndarray | None = None, likeness_below: float | None = None,
        prime: tuple[np.ndarray, np.ndarray] | None = None, quartile: bool = True) -> Row:
    """One row. `lead`: a sound played before the agent's turn (then 1 s of silence), for the canceller to
    learn on; `likeness_below`: also count the canceller converged once, after CONVERGE_S of reference
    audio, two checks 0.5 s apart found its output unlike the reference (echo_likeness below this) during
    agent speech; `quartile`: the path's QUARTILE_FRAMES rule on (False: the smoothed echo reduction only,
    as before 2026-12-03). Times and figures are counted from the start of the agent's turn."""
    agent = np.frombuffer(shipped_speech("agent_answer.wav"), dtype="<i2").astype(np.float64)
    agent = np.tile(agent, 3)[: FMT.samples(seconds * 1000)]
    agent *= 10 ** (-26 / 20) / (np.sqrt(np.mean(agent**2)) / 32768)
    agent_pcm = np.clip(agent, -32768, 32767).astype(np.int16)
    if lead is not None:
        pad = np.concatenate([lead, np.zeros(FMT.samples(1000), np.int16)])
        agent_pcm = np.concatenate([pad[: pad.size // N * N], agent_pcm])
    turn = agent_pcm.size - FMT.samples(seconds * 1000)  # where the agent's turn starts
    user = np.frombuffer(human_speech("dashwood"), dtype="<i2")
    off = turn + FMT.samples(user_at_ms)
    # No echo path (a headset, a well-isolated speaker): the microphone hears the user and the room only.
    heard = agent_pcm if echo_path else np.zeros_like(agent_pcm)
    scene = render_parts(heard, user, off, setup=RoomSetup(user_distance_m=1.5))
    engine: EchoCanceller = make()
    latency = measure_latency(engine, FRAME_MS)
    if prime is not None:
        for k in range(prime[0].size // N):
            engine.process(prime[0][k * N : (k + 1) * N].tobytes(), prime[1][k * N : (k + 1) * N].tobytes())
    path = EchoPath(engine, frame_ms=FRAME_MS, latency=latency, quartile_frames=QUARTILE_FRAMES if quartile else 0)
    if prime is not None:
        path._converged = True  # the lab's variant of the latch (not in the daemon: docs/ECHO.md)
    gate = VoiceDetector(VadParams(min_speech_ms=120, window_ms=240))
    t0, ahead = 100.0, 10
    for k in range(ahead):
        path.on_written(agent_pcm[k * N : (k + 1) * N].tobytes(), t0 + k * FRAME_MS / 1000)
    sent: list[np.ndarray] = []
    last_voice = -10**9
    converged_at: float | None = None
    unlike = 0
    for k in range(scene.mic.size // N):
        j = k + ahead
        if (j + 1) * N <= agent_pcm.size:
            path.on_written(agent_pcm[j * N : (j + 1) * N].tobytes(), t0 + j * FRAME_MS / 1000)
        out = path.process(CaptureFrame(scene.mic[k * N : (k + 1) * N].tobytes(), t0 + (k + 1) * FRAME_MS / 1000, k))
        if (likeness_below is not None and not path.converged and path._far_s >= CONVERGE_S and k % 25 == 0
                and turn <= k * N < agent_pcm.size):
            unlike = unlike + 1 if path.echo_likeness() < likeness_below else 0
            if unlike >= 2:
                path._converged = True  # the lab's variant of the latch (not in the daemon: docs/ECHO.md)
        if path.converged and converged_at is None:
            converged_at = (k * N - turn) / FMT.rate
        if gate.process(out.pcm).triggered:
            last_voice = k
        playing = turn <= k * N < agent_pcm.size
        if policy == "mute-until-converged":
            mute = playing and not path.converged
        elif policy == "voice-gate":
            mute = playing and not path.converged and (k - last_voice) * FRAME_MS > 300
        else:
            mute = False
        sent.append(np.zeros(N) if mute else np.frombuffer(out.pcm, dtype="<i2").astype(np.float64))
    y = np.concatenate(sent)
    block = FMT.samples(100)
    quiet_user = list(range(turn, off - block, N)) + list(range(off + user.size + block, agent_pcm.size - N, N))
    score = score_double_talk(y, scene.user, scene.echo, user_span=(off, off + user.size), echo_only=quiet_user,
                              latency=latency, rate=FMT.rate)
    erle = path.erle_db
    return Row(name, policy, echo_path, user_at_ms, score.user_ok, score.user_blocks, score.user_ok_first,
               score.user_first, score.echo_voiced, score.echo_frames, None if erle is None else round(erle, 1),
               converged_at)


def lead_sound(kind: str, seconds: float, level_dbfs: float) -> np.ndarray:
    """A sound to play before the first turn: a log sweep 100 Hz-10 kHz, pink-ish noise or agent speech,
    20 ms fades, at `level_dbfs` RMS."""
    n = FMT.samples(seconds * 1000)
    if kind == "sweep":
        t = np.arange(n) / FMT.rate
        k = np.log(10_000 / 100)
        x = np.sin(2 * np.pi * 100 * seconds / k * (np.exp(t / seconds * k) - 1))
    elif kind == "noise":
        spectrum = np.fft.rfft(np.random.default_rng(1).standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / FMT.rate)
        spectrum[1:] /= np.sqrt(f[1:] / 100)
        spectrum[0] = 0
        x = np.fft.irfft(spectrum, n)
    else:
        speech = np.frombuffer(shipped_speech("agent_answer.wav"), dtype="<i2").astype(np.float64)
        x = speech[FMT.samples(3000) : FMT.samples(3000) + n]
    x = x * np.minimum(1, np.minimum(np.arange(n), n - 1 - np.arange(n)) / FMT.samples(20))
    x *= 10 ** (level_dbfs / 20) / (np.sqrt(np.mean(x**2)) / 32768)
    return np.clip(x, -32768, 32767).astype(np.int16)


def first_turn(seconds: float) -> None:
    """The first agent turn after start with AEC3 and mute-until-converged, and ways tried to shorten its
    muted stretch: a sound played before it, convergence rules on echo_likeness and (shipped 2026-12-03) on the
    upper quartile of the per-frame echo reduction."""
    print("| before the turn | convergence | user from | converged at (turn s) | user blocks reaching the server "
          "| echo-only frames VAD calls speech |")
    print("|---|---|---|---|---|---|")
    name, make = next(iter(engines().items()))
    leads = [("nothing", None), ("sweep 0.5 s -26 dBFS", ("sweep", 0.5, -26.0)),
             ("sweep 2 s -36 dBFS", ("sweep", 2.0, -36.0)), ("noise 1 s -26 dBFS", ("noise", 1.0, -26.0)),
             ("agent speech 1 s -26 dBFS", ("speech", 1.0, -26.0))]
    for label, spec in leads:
        rules: list[tuple[str, dict[str, Any]]] = [("today (smoothed or upper quartile)", {})]
        if spec is None:
            rules += [("smoothed only (before 2026-12-03)", {"quartile": False}),
                      ("smoothed only + likeness < 0.08", {"quartile": False, "likeness_below": 0.08})]
        for rule, kwargs in rules:
            for user_at in (0, 3000):
                lead = lead_sound(*spec) if spec is not None else None
                r = run(name, make, "mute-until-converged", user_at, seconds, lead=lead, **kwargs)
                conv = f"{r.converged_s:.2f}" if r.converged_s is not None else "never"
                print(f"| {label} | {rule} | {user_at} ms | {conv} | "
                      f"{r.user_ok}/{r.user_blocks} | {r.echo_speech}/{r.echo_frames} |", flush=True)


def priming_clip(seconds: float, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """An earlier agent turn in the same room, no user: (microphone, reference), `seconds` of agent speech
    from 3 s into agent_answer.wav (other words than the turn's start; `lead_sound`'s, with its 20 ms
    fades), the microphone moved `shift` samples later (negative: earlier) against the reference."""
    ref = lead_sound("speech", seconds, -26.0)
    ref = ref[: ref.size // N * N]
    mic = render_parts(ref, b"", 0, setup=RoomSetup(user_distance_m=1.5, seed=7)).mic[: ref.size]
    if shift > 0:
        mic = np.concatenate([np.zeros(shift, np.int16), mic])[: ref.size]
    elif shift < 0:
        mic = np.concatenate([mic[-shift:], np.zeros(-shift, np.int16)])
    return mic, ref


def primed(seconds: float) -> None:
    """The first turn with AEC3 primed on a 4 s clip of an earlier turn and streamed from its first frame,
    next to today's fresh engine muted until it converged."""
    print("| engine before the turn | clip's mic shifted | user from | policy | user blocks reaching the server | "
          "in its first 2.5 s | echo-only frames VAD calls speech | echo reduction |")
    print("|---|---|---|---|---|---|---|---|")
    name, make = next(iter(engines().items()))
    cases: list[tuple[str, int | None, str]] = [("fresh", None, "mute-until-converged")]
    cases += [("primed, 4 s clip", shift, "stream") for shift in (0, 48, 120, 240, -48)]
    for label, shift, policy in cases:
        for user_at in (0, 3000):
            clip = priming_clip(4.0, shift) if shift is not None else None
            r = run(name, make, policy, user_at, seconds, prime=clip)
            moved = "-" if shift is None else f"{shift} samples ({1000 * shift / FMT.rate:.0f} ms)"
            print(f"| {label} | {moved} | {user_at} ms | {policy} | {r.user_ok}/{r.user_blocks} | "
                  f"{r.user_ok_first}/{r.user_first} | {r.echo_speech}/{r.echo_frames} "
                  f"({100 * r.echo_speech / max(1, r.echo_frames):.1f} %) | {r.erle_db} dB |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--first-turn", action="store_true",
                        help="only the first-turn table: sounds before the turn, a convergence rule")
    parser.add_argument("--primed", action="store_true",
                        help="only the first-turn table with the engine primed on a clip of an earlier turn")
    parser.add_argument("--legacy", action="store_true",
                        help="the main table for the legacy WebRTC AEC's suppression levels next to AEC3")
    args = parser.parse_args()
    if args.first_turn:
        first_turn(args.seconds)
        return 0
    if args.primed:
        primed(args.seconds)
        return 0
    if args.legacy:
        from aec_legacy import legacy_engines  # bench/aec_legacy.py (the script's directory is on sys.path)

        with tempfile.TemporaryDirectory() as tmp:
            table(legacy_engines(Path(tmp)) | dict([next(iter(engines().items()))]), args.seconds, no_echo=False)
        return 0
    table(engines(), args.seconds, no_echo=True)
    return 0


def table(engs: dict[str, Callable[[], EchoCanceller]], seconds: float, *, no_echo: bool) -> None:
    """The main table: each engine x policy x user onset; `no_echo`: also AEC3 with no echo path."""
    print("| engine | echo path | policy | user from | user blocks reaching the server | in its first 2.5 s | "
          "echo-only frames VAD calls speech | echo reduction | converged at |")
    print("|---|---|---|---|---|---|---|---|---|")
    cases = [(name, make, policy, user_at, True) for name, make in engs.items() for policy in POLICIES
             for user_at in (0, 3000)]
    if no_echo:
        webrtc = next(iter(engines().items()))
        cases += [(*webrtc, policy, 0, False) for policy in ("mute-until-converged", "stream")]
    for name, make, policy, user_at, echo_path in cases:
        r = run(name, make, policy, user_at, seconds, echo_path)
        conv = f"{r.converged_s:.2f} s" if r.converged_s is not None else "never"
        print(f"| {r.engine} | {'yes' if r.echo_path else 'none'} | {r.policy} | {r.user_at_ms} ms | "
              f"{r.user_ok}/{r.user_blocks} ({100 * r.user_ok / max(1, r.user_blocks):.0f} %) | "
              f"{r.user_ok_first}/{r.user_first} | "
              f"{r.echo_speech}/{r.echo_frames} ({100 * r.echo_speech / max(1, r.echo_frames):.1f} %) | "
              f"{r.erle_db} dB | {conv} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
