"""`vatel-edge doctor` end to end on the test devices: the real command in a subprocess with its own asoundrc
(ALSA PCMs of type pulse on a private PulseAudio server's null sinks), real alsa-lib, the simulator on loopback.

- two candidate microphones (null sinks `mic` and `mic2`), recorded speech fed into `mic2` only: it picks
  doc_mic2, calls doc_mic1 silent, finds no echo path ("does not hear itself"), passes the key check, and
  --write puts doc_mic2 into the commented config and changes nothing else;
- the PulseAudio room (LoopbackRoom: spk.monitor looped into mic at -6 dB): it reports the echo, its level and
  delay, and the configured canceller's reduction;
- no sound card at all: a clear fail and a non-zero exit.

Each real-time run takes about 10 s (2 s of speech, the 4.5 s chime, device probing and start-up).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pulse import RATE, PulseServer
from vatel_edge.devkit.aec_room import LoopbackRoom
from vatel_edge.devkit.simulator import Simulator
from vatel_edge.devkit.speech import HUMAN_SPEECH, human_speech, speech_available

pytestmark = pytest.mark.timeout(90)

ASOUNDRC = """\
pcm.doc_mic1 { type pulse; device "mic.monitor"; hint { show on description "doctor test mic 1" } }
pcm.doc_mic2 { type pulse; device "mic2.monitor"; hint { show on description "doctor test mic 2" } }
pcm.doc_spk { type pulse; device "spk"; hint { show on description "doctor test speaker" } }
"""

CONFIG = """\
# kitchen satellite
[vatel]
agent_id = "{agent}"
base_url = "{base_url}"   # the simulator

[audio]
# the first mic I tried
capture_device = "doc_mic1"  # maybe wrong
playback_device = "doc_spk"
echo_cancel = "{echo_cancel}"

[control]
socket_path = "{socket}"
"""


@pytest.fixture
def mic2(pulse: PulseServer) -> Iterator[str]:
    """A second null sink `mic2` in the shared test server (unloaded afterwards)."""
    module = pulse.pactl("load-module", "module-null-sink", "sink_name=mic2", "format=s16le", f"rate={RATE}",
                         "channels=1").stdout.strip()
    try:
        yield "mic2"
    finally:
        pulse.pactl("unload-module", module, check=False)


def _speech() -> bytes:
    names = [n for n in HUMAN_SPEECH if speech_available(n)]
    if not names:
        pytest.skip("no recorded speech installed (pocketsphinx-testdata / alsa-utils)")
    return b"".join(human_speech(n) for n in names)[: 2 * RATE * 20]


async def _doctor(tmp_path: Path, pulse: PulseServer, args: list[str], *, api_key: str = "none",
                  feed: tuple[str, bytes] | None = None) -> tuple[int, str]:
    """Run `vatel-edge doctor ARGS` with the doctor asoundrc; feed `feed`'s PCM into its sink until the echo check
    starts (so the speech does not overlap the chime). Returns (exit status, stdout)."""
    rc = tmp_path / "doctor.asoundrc"
    rc.write_text(ASOUNDRC)
    env = {**pulse.env, "ALSA_CONFIG_PATH": str(rc), "ORG_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
    env.pop("CREDENTIALS_DIRECTORY", None)
    feeder = None
    if feed is not None:
        raw = tmp_path / "feed.raw"
        raw.write_bytes(feed[1])
        feeder = await asyncio.create_subprocess_exec(
            "pacat", "--playback", "-d", feed[0], "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1",
            str(raw), env=pulse.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vatel_edge.cli", "doctor", *args, env=env, cwd=os.getcwd(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(80):
            while line := (await proc.stdout.readline()).decode():
                lines.append(line)
                if line.startswith("echo check") and feeder is not None and feeder.returncode is None:
                    feeder.kill()
            code = await proc.wait()
    finally:
        for p in (proc, feeder):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
    return code, "".join(lines)


def _line(out: str, status: str, topic: str, contains: str) -> str:
    """The line of check `topic` with `status` ("pass", "warn", "fail"; "" = pass or warn) containing `contains`."""
    for line in out.splitlines():
        if any(line.startswith(f"{s:<4}  {topic:<8}") for s in ([status] if status else ["pass", "warn"])) \
                and contains in line:
            return line
    raise AssertionError(f"no {status} {topic} line with {contains!r} in:\n{out}")


async def test_two_microphones_it_picks_the_one_that_hears_speech_and_writes_it(
    tmp_path: Path, pulse: PulseServer, mic2: str
) -> None:
    speech = _speech()
    async with Simulator() as sim:
        cfg = tmp_path / "config.toml"
        text = CONFIG.format(agent=sim.agent_id, base_url=sim.base_url, echo_cancel="auto",
                             socket=tmp_path / "control.sock")
        cfg.write_text(text)
        code, out = await _doctor(tmp_path, pulse, ["--config", str(cfg), "--non-interactive", "--write",
                                                    "--seconds", "2"], api_key=sim.api_key, feed=(mic2, speech))
        assert len(sim.token_requests) == 1
    # both candidates recorded, the silent one called so, the speaking one chosen with its level
    assert "recording 2 s from doc_mic1, doc_mic2" in out
    _line(out, "warn", "mic", "doc_mic1: no speech")
    assert "silent" in _line(out, "warn", "mic", "doc_mic1")
    level = float(re.search(r"doc_mic2: speech (-?\d+\.\d) dBFS", out).group(1))  # type: ignore[union-attr]
    assert -45.0 < level < -3.0
    _line(out, "pass", "mic", "chosen: doc_mic2")
    # no loopback in the server: the chime is not heard
    _line(out, "warn", "echo", "the device does not hear itself")
    # the key check against the simulator
    _line(out, "pass", "key", "the key is accepted")
    assert sim.api_key not in out
    # --write: exactly the capture device line changed, its comment kept
    assert cfg.read_text() == text.replace('capture_device = "doc_mic1"  # maybe wrong',
                                           'capture_device = "doc_mic2"  # maybe wrong')
    assert '+capture_device = "doc_mic2"  # maybe wrong' in out
    _line(out, "pass", "write", "audio.capture_device = 'doc_mic2'")
    assert code == 1  # the service user and unit do not exist on this machine: the doctor says so and fails


async def test_room_reports_the_echo_its_delay_and_the_cancellers_reduction(tmp_path: Path, pulse: PulseServer) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(agent="5b0c5f57-1f9a-4d41-9d2c-8c3a1a6f0b11", base_url="http://127.0.0.1:9",
                                 echo_cancel="auto", socket=tmp_path / "control.sock"))
    with LoopbackRoom(pulse, delay_ms=50, gain_db=-6.0):
        await asyncio.to_thread(pulse.wait_sink_latency, "spk", 0.1)
        _, out = await _doctor(tmp_path, pulse, ["--config", str(cfg), "--non-interactive", "--seconds", "1",
                                                 "--mic", "doc_mic1"])
    heard = _line(out, "pass", "echo", "the microphone hears the speaker")
    relative = float(re.search(r"\(([-+]\d+\.\d) dB relative", heard).group(1))  # type: ignore[union-attr]
    assert -10.0 < relative < -2.0  # the loopback's -6 dB
    delay = float(re.search(r"delay (-?\d+) ms", heard).group(1))  # type: ignore[union-attr]
    assert -100 <= delay <= 300
    reduction = _line(out, "", "echo", "reduces the echo by")  # pass at >= 25 dB, else a warn
    erle = float(re.search(r"reduces the echo by (\d+\.\d) dB", reduction).group(1))  # type: ignore[union-attr]
    # measured here 28-58 dB (AEC3 in this room, 10 runs); without a working alignment it would be near 0
    assert erle >= 15.0


async def test_no_sound_card_is_a_clear_failure(tmp_path: Path, pulse: PulseServer) -> None:
    rc_empty = tmp_path / "empty.asoundrc"
    rc_empty.write_text("# no devices at all\n")
    env = {**pulse.env, "ALSA_CONFIG_PATH": str(rc_empty)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vatel_edge.cli", "doctor", "--config", str(tmp_path / "none.toml"), "--non-interactive",
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    out = stdout.decode()
    line = _line(out, "fail", "devices", "no sound card")
    assert line
    assert "arecord -l" in out
    assert "echo check" not in out  # nothing to play or record: no pile of follow-up failures
    assert proc.returncode == 1
