"""The `vatel-edge` commands people run while setting up a device, as subprocesses on the test devices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.asound import install_alsa_config

pytestmark = pytest.mark.timeout(60)
AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


def _run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALSA_CONFIG_PATH": str(install_alsa_config()), **(env_extra or {})}
    env.pop("VATEL_EDGE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "vatel_edge.cli", *args], env=env, capture_output=True, text=True, timeout=50
    )


def test_devices_lists_the_test_pcms_and_what_they_open_at() -> None:
    proc = _run("devices")
    assert proc.returncode == 0, proc.stderr
    assert "test_mic" in proc.stdout and "test_spk" in proc.stdout


def test_mic_test_prints_a_level_and_vad_line_per_frame(tmp_path: Path) -> None:
    rate = 24_000
    t = np.arange(rate) / rate
    loud = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    source = tmp_path / "in.raw"
    source.write_bytes(bytes(rate) + loud * 3)  # 0.5 s silence, then a loud tone (longer than the test reads)
    # The file device is not paced, and after the file it reads silence as fast as it can (~12000 frames/s
    # here): with the default capture queue (100 frames) a consumer that started ~10 ms late (a loaded CI
    # run) saw the oldest frames dropped, the silence among them. The largest queue gives it ~0.8 s.
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[vatel]\nagent_id = "{AGENT}"\n[audio]\ncapture_buffer_frames = 10000\n', encoding="utf-8")
    proc = _run("mic-test", "--config", str(cfg), "--device", f"fcap:IN={source}", "--seconds", "1.0")
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines() if "dBFS" in line]
    assert len(lines) >= 10
    # each frame's level is the source's at that frame's seq (a queue overflow drops the oldest frames and
    # leaves a gap in seq): digital silence for the first 0.5 s (25 frames of 20 ms), then the tone, 8000 peak
    # = 5657 RMS = -15.3 dBFS
    for seq, level in ((int(f[0]), float(f[1])) for f in lines):
        if seq < 25:
            assert level == -96.0, (seq, level)
        elif seq < 175:
            assert -16.0 < level < -14.5, (seq, level)
    assert any(float(f[1]) == -96.0 for f in lines) and any(-16.0 < float(f[1]) < -14.5 for f in lines)
    assert "voice" in proc.stdout


def test_speaker_test_plays_a_chime_into_the_device(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    proc = _run("speaker-test", "--config", str(tmp_path / "absent.toml"), "--device", f"fplay:OUT={out}")
    assert proc.returncode == 0, proc.stderr
    played = np.frombuffer(out.read_bytes(), dtype="<i2")
    assert played.size > 0 and int(np.abs(played).max()) > 1000


def test_check_config_and_tool_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[vatel]\nagent_id = "{AGENT}"\n[gpio]\nbackend = "fake"\n'
        f'[tools.greet]\naction = "shell"\n'
        f'argv = ["{sys.executable}", "-c", "import sys; print(sys.argv[1])", "{{name}}"]\n'
        '[tools.greet.args.name]\ntype = "string"\n',
        encoding="utf-8",
    )
    ok = _run("check-config", "--config", str(cfg), env_extra={"ORG_API_KEY": "k" * 32})
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stdout + ok.stderr
    assert "k" * 32 not in ok.stdout + ok.stderr
    tool = _run("tool", "--config", str(cfg), "greet", "name=; rm -rf /")
    assert tool.returncode == 0 and tool.stdout.strip() == "; rm -rf /", tool.stdout + tool.stderr
    bad = _run("tool", "--config", str(cfg), "greet")
    assert bad.returncode == 1 and bad.stdout.startswith("error:")
