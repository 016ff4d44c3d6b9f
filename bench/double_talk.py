#!/usr/bin/env python3
"""Echo engines and microphone policies in the reverberant room with a non-linear loudspeaker, offline.

    .venv/bin/python bench/double_talk.py [--seconds 10]

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
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webrtcvad

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vatel_edge.audio.aec import EchoCanceller, measure_latency
from vatel_edge.audio.aec_path import EchoPath
from vatel_edge.audio.aec_speex import SpeexEchoCanceller
from vatel_edge.audio.aec_webrtc import WebRtcEchoCanceller
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT as FMT
from vatel_edge.audio.resample import Resampler
from vatel_edge.audio.vad import VadParams, VoiceDetector
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
    return {
        "webrtc (AEC3, the binding's only setting)": lambda: WebRtcEchoCanceller(FMT, FRAME_MS),
        "speex (suppress -40/-15 dB, default)": lambda: SpeexEchoCanceller(FMT, FRAME_MS),
        "speex (suppress -60/-30 dB)": lambda: SpeexEchoCanceller(FMT, FRAME_MS, echo_suppress_db=-60,
                                                                  echo_suppress_active_db=-30),
    }


def run(name: str, make: Callable[[], EchoCanceller], policy: str, user_at_ms: int, seconds: float,
        echo_path: bool = True) -> Row:
    agent = np.frombuffer(shipped_speech("agent_answer.wav"), dtype="<i2").astype(np.float64)
    agent = np.tile(agent, 3)[: FMT.samples(seconds * 1000)]
    agent *= 10 ** (-26 / 20) / (np.sqrt(np.mean(agent**2)) / 32768)
    agent_pcm = np.clip(agent, -32768, 32767).astype(np.int16)
    user = np.frombuffer(human_speech("dashwood"), dtype="<i2")
    off = FMT.samples(user_at_ms)
    # No echo path (a headset, a well-isolated speaker): the microphone hears the user and the room only.
    heard = agent_pcm if echo_path else np.zeros_like(agent_pcm)
    scene = render_parts(heard, user, off, setup=RoomSetup(user_distance_m=1.5))
    engine: EchoCanceller = make()
    latency = measure_latency(engine, FRAME_MS)
    path = EchoPath(engine, frame_ms=FRAME_MS, latency=latency)
    gate = VoiceDetector(VadParams(min_speech_ms=120, window_ms=240))
    t0, ahead = 100.0, 10
    for k in range(ahead):
        path.on_written(agent_pcm[k * N : (k + 1) * N].tobytes(), t0 + k * FRAME_MS / 1000)
    sent: list[np.ndarray] = []
    last_voice = -10**9
    converged_at: float | None = None
    for k in range(scene.mic.size // N):
        j = k + ahead
        if (j + 1) * N <= agent_pcm.size:
            path.on_written(agent_pcm[j * N : (j + 1) * N].tobytes(), t0 + j * FRAME_MS / 1000)
        out = path.process(CaptureFrame(scene.mic[k * N : (k + 1) * N].tobytes(), t0 + (k + 1) * FRAME_MS / 1000, k))
        if path.converged and converged_at is None:
            converged_at = k * FRAME_MS / 1000
        if gate.process(out.pcm).triggered:
            last_voice = k
        playing = k * N < agent_pcm.size
        if policy == "mute-until-converged":
            mute = playing and not path.converged
        elif policy == "voice-gate":
            mute = playing and not path.converged and (k - last_voice) * FRAME_MS > 300
        else:
            mute = False
        sent.append(np.zeros(N) if mute else np.frombuffer(out.pcm, dtype="<i2").astype(np.float64))
    y = np.concatenate(sent)
    block = FMT.samples(100)
    ok = total = ok_first = first = 0
    for s in range(off, off + user.size - block, block):
        ref = scene.user[s : s + block]
        if np.sqrt(np.mean(ref**2)) < 32768 * 10 ** (-45 / 20):
            continue
        got = y[s + latency : s + latency + block]
        c = float(np.corrcoef(got, ref)[0, 1]) if got.any() else 0.0
        total += 1
        ok += c >= 0.5
        if s < off + FMT.samples(2500):
            first += 1
            ok_first += c >= 0.5
    vad = webrtcvad.Vad(2)
    speech = frames = 0
    quiet_user = list(range(0, off - block, N)) + list(range(off + user.size + block, agent_pcm.size - N, N))
    for s in quiet_user:
        if np.sqrt(np.mean(scene.echo[s : s + N] ** 2)) < 32768 * 10 ** (-50 / 20):
            continue
        fr = y[s + latency : s + latency + N]
        level = 20 * np.log10(np.sqrt(np.mean(fr**2)) / 32768 + 1e-9)
        down = Resampler(FMT.rate, 8000).process(fr.astype(np.int16))
        frames += 1
        speech += bool(level >= -45 and vad.is_speech(down[:160].astype("<i2").tobytes(), 8000))
    erle = path.erle_db
    return Row(name, policy, echo_path, user_at_ms, ok, total, ok_first, first, speech, frames,
               None if erle is None else round(erle, 1), converged_at)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print("| engine | echo path | policy | user from | user blocks reaching the server | in its first 2.5 s | "
          "echo-only frames VAD calls speech | echo reduction | converged at |")
    print("|---|---|---|---|---|---|---|---|---|")
    cases = [(name, make, policy, user_at, True) for name, make in engines().items() for policy in POLICIES
             for user_at in (0, 3000)]
    webrtc = next(iter(engines().items()))
    cases += [(*webrtc, policy, 0, False) for policy in ("mute-until-converged", "stream")]
    for name, make, policy, user_at, echo_path in cases:
        r = run(name, make, policy, user_at, args.seconds, echo_path)
        conv = f"{r.converged_s:.2f} s" if r.converged_s is not None else "never"
        print(f"| {r.engine} | {'yes' if r.echo_path else 'none'} | {r.policy} | {r.user_at_ms} ms | "
              f"{r.user_ok}/{r.user_blocks} ({100 * r.user_ok / max(1, r.user_blocks):.0f} %) | "
              f"{r.user_ok_first}/{r.user_first} | "
              f"{r.echo_speech}/{r.echo_frames} ({100 * r.echo_speech / max(1, r.echo_frames):.1f} %) | "
              f"{r.erle_db} dB | {conv} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
