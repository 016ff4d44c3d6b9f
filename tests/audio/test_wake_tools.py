"""The wake-word tuning tools: `vatel-edge wakeword-test` and the wake-word column of `vatel-edge mic-test`."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pulse import PulseServer
from vatel_edge.audio.setup_tools import mic_test
from vatel_edge.audio.wake_tools import wake_word_meter
from vatel_edge.audio.wakeword import wakeword_installed
from vatel_edge.audio.wav import save_wav
from vatel_edge.config import AudioConfig, Config, VatelConfig, WakeConfig
from vatel_edge.devkit import wake_lab as lab

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not wakeword_installed(), reason="the wakeword extra (pymicro-wakeword) is not installed"),
    pytest.mark.skipif(not lab.espeak_available(), reason="espeak-ng is not installed"),
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vatel_edge.cli", *args], capture_output=True, text=True,
                          timeout=100, env={**os.environ, "VATEL_EDGE_CONFIG": "/nonexistent/config.toml"})


def test_wakeword_test_prints_each_detection_with_its_time(tmp_path: Path) -> None:
    """Two files: the one with "okay nabu" (at 1 s) and "alexa" (later) lists okay nabu near the end of the
    word, and with --wake-word alexa --wake-word okay_nabu both in order; the one without says so with its
    highest probability; an unreadable file is reported and makes the exit status 1."""
    head = lab.silence(1000) + lab.say("okay nabu, turn on the light")
    save_wav(tmp_path / "words.wav", head + lab.silence(1000) + lab.say("alexa") + lab.silence(800))
    save_wav(tmp_path / "plain.wav", lab.say("nothing to see here") + lab.silence(500))
    proc = _run("wakeword-test", str(tmp_path / "words.wav"), str(tmp_path / "plain.wav"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("wake words: Okay Nabu (cutoff 0.85)")
    m = re.fullmatch(rf"{tmp_path}/words.wav: +([0-9.]+) s  Okay Nabu  \(probability 0\.\d\d\)", lines[1])
    assert m and 1.5 <= float(m.group(1)) <= 2.8, lines
    assert re.fullmatch(rf"{tmp_path}/plain.wav: no wake word in [0-9.]+ s \(highest probability 0\.\d\d at "
                        r"[0-9.]+ s\)", lines[2]), lines
    proc = _run("wakeword-test", "--wake-word", "alexa", "--wake-word", "okay_nabu", str(tmp_path / "words.wav"),
                str(tmp_path / "absent.wav"))
    assert proc.returncode == 1
    words = re.findall(r"s  (Okay Nabu|Alexa)  \(", proc.stdout)
    assert words == ["Okay Nabu", "Alexa"], proc.stdout
    assert f"{tmp_path}/absent.wav: cannot read WAV" in proc.stdout


def test_wakeword_test_names_a_bad_wake_word() -> None:
    """An unknown name is the config error of wake.wake_words, exit status 2."""
    proc = _run("wakeword-test", "--wake-word", "okay_nabo", "x.wav")
    assert proc.returncode == 2
    assert "wake.wake_words[0]: 'okay_nabo' is neither a built-in wake word" in proc.stderr


async def test_mic_test_shows_the_wake_word_probability(pulse: PulseServer) -> None:
    """mic-test on the real-time test microphone in wakeword mode: each line carries the wake-word probability
    (0 in silence, where the models do not even run), and the frame the wake word fired on is marked; in vad
    mode there is no wake-word column."""
    cfg = Config(vatel=VatelConfig(agent_id="00000000-0000-0000-0000-000000000000"),
                 audio=AudioConfig(capture_device="test_mic"), wake=WakeConfig(mode="wakeword"))
    assert wake_word_meter(dataclasses.replace(cfg, wake=WakeConfig(mode="vad"))) is None  # vad mode: no column
    meter = wake_word_meter(cfg)
    assert meter is not None
    out = io.StringIO()
    test = asyncio.create_task(mic_test(cfg.audio, 4.0, out, None, meter))
    await asyncio.sleep(1.0)  # the capture stream is open: what is fed now is heard
    feeding = pulse.feed_mic(lab.say("okay nabu") + lab.silence(1500))
    try:
        await test
    finally:
        feeding.wait(timeout=10)
    lines = [line for line in out.getvalue().splitlines() if "dBFS" in line]
    assert lines and all("wake word" in line for line in lines)
    probs = [float(line.split("wake word")[1].split()[0]) for line in lines]
    assert probs[0] == 0.0
    assert any("WAKE: Okay Nabu" in line for line in lines), out.getvalue()
