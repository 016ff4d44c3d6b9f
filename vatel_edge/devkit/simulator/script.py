"""Session scripts: the default echo agent, step lists, and audio helpers for scripts.

A script is an async function given a `SimSession`; `steps(...)` turns a list of awaitable steps
(callables taking the session) into one, for tests that read best as a list.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat, level_dbfs
from vatel_edge.devkit.simulator.session import Script, SimSession

log = logging.getLogger(__name__)

Step = Callable[[SimSession], Awaitable[object]]


def tone(ms: float, *, freq: float = 440.0, level_dbfs: float = -12.0, fmt: AudioFormat = VATEL_FORMAT) -> bytes:
    """A sine tone as PCM16 LE mono (with 5 ms fades so it does not click)."""
    n = fmt.samples(ms)
    t = np.arange(n) / fmt.rate
    amp = 32767 * 10 ** (level_dbfs / 20)
    wave = amp * np.sin(2 * math.pi * freq * t)
    fade = min(n // 2, fmt.samples(5))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[n - fade :] *= ramp[::-1]
    return wave.astype("<i2").tobytes()


def steps(*items: Step) -> Script:
    """A script that runs the steps in order, e.g. steps(lambda s: s.wait_audio(200), end)."""

    async def run(session: SimSession) -> None:
        for item in items:
            await item(session)

    return run


async def end(session: SimSession) -> None:
    """Step: session_ended and a normal close."""
    await session.end_session()


async def wait_for_utterance(
    session: SimSession,
    *,
    speech_ms: float = 200.0,
    silence_ms: float = 600.0,
    threshold_dbfs: float = -40.0,
    frame_ms: float = 20.0,
    timeout: float = 30.0,
) -> float:
    """Wait until the user spoke (speech_ms above threshold) and then paused (silence_ms below).

    Returns the milliseconds of speech heard. Gives up after `timeout` s of audio, or when the
    client leaves (SimSessionClosed).
    """
    fmt = session.fmt
    step = fmt.nbytes(frame_ms)
    pos = 0
    speech = silence = 0.0
    while True:
        await session.wait_audio(fmt.duration_ms(pos + step), timeout=timeout)
        while pos + step <= len(session.input_audio):
            loud = level_dbfs(bytes(session.input_audio[pos : pos + step])) > threshold_dbfs
            pos += step
            if loud:
                speech += frame_ms
                silence = 0.0
            elif speech >= speech_ms:
                silence += frame_ms
            if speech >= speech_ms and silence >= silence_ms:
                return speech
        if fmt.duration_ms(pos) >= timeout * 1000:
            return speech


def echo_agent(
    *,
    speech_ms: float = 200.0,
    silence_ms: float = 600.0,
    reply_ms: float = 800.0,
    turns: int = 1,
    realtime: bool = True,
) -> Script:
    """The default agent: after some user speech and a pause, answer with a short tone and text, then end."""

    async def run(session: SimSession) -> None:
        for n in range(1, turns + 1):
            heard = await wait_for_utterance(session, speech_ms=speech_ms, silence_ms=silence_ms)
            await session.speech_started()
            await session.speech_stopped()
            await session.send_transcript(f"({heard / 1000:.1f} s of speech)", is_final=True)
            turn_id = f"turn-{n}"
            await session.send_turn(
                turn_id,
                tone(reply_ms, freq=440.0 + 110.0 * (n - 1)),
                text=f"I heard {heard / 1000:.1f} seconds of speech.",
                realtime=realtime,
            )
        # Let the client play the reply before ending (realtime pacing already took reply_ms).
        await session.wait_seconds(0.3)
        await session.end_session()

    return run


def scripted(items: Sequence[Step]) -> Script:
    """Same as steps(*items), for a list built elsewhere."""
    return steps(*items)
