"""With no sound card: `vatel-edge devices` says so and what to check (exit 0: it lists); mic-test and
speaker-test exit 1 naming the device and ALSA's error in words, at once (no background retries, no silent 0).

Two real no-device cases, as subprocesses: an asoundrc that defines no PCM at all (ALSA_CONFIG_PATH), and
this machine's own ALSA configuration when the kernel has no sound card (skipped where it has one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vatel_edge.audio.alsa import sound_cards

pytestmark = pytest.mark.timeout(60)
NO_CARD = "no sound card found"


def vatel_edge(*args: str, asoundrc: Path | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the command with the given ALSA configuration (None: the system's); no config file (defaults)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ALSA_CONFIG_PATH", "VATEL_EDGE_CONFIG", "XDG_RUNTIME_DIR")}
    # no sound server either: the suite's private PulseAudio server (PULSE_SERVER, set by the `pulse` fixture
    # of earlier tests) would otherwise answer for ALSA's default through the pulse plugin
    env["PULSE_SERVER"] = "unix:/nonexistent/vatel-edge-no-sound-server"
    if asoundrc is not None:
        env["ALSA_CONFIG_PATH"] = str(asoundrc)
    return subprocess.run(
        [sys.executable, "-m", "vatel_edge.cli", *args],
        env=env, capture_output=True, text=True, timeout=50, check=False,
    )


@pytest.fixture
def no_pcm(tmp_path: Path) -> Path:
    path = tmp_path / "empty.asoundrc"
    path.write_text("# an ALSA configuration with no PCM devices\n")
    return path


def test_devices_with_no_pcm_says_so(no_pcm: Path, tmp_path: Path) -> None:
    proc = vatel_edge("devices", asoundrc=no_pcm, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    if not sound_cards():
        assert lines[0].startswith(f"{NO_CARD}: ALSA lists no cards; check that the USB microphone")
        assert "arecord -l" in lines[0]
    assert "no ALSA PCM devices found" in lines
    assert lines[-2:] == ["no PCM device opens for capture", "no PCM device opens for playback"]


@pytest.mark.parametrize(("command", "direction"), [("mic-test", "capture"), ("speaker-test", "playback")])
def test_tests_of_a_missing_device_exit_1_with_the_reason(
    no_pcm: Path, tmp_path: Path, command: str, direction: str
) -> None:
    """The error names the direction and device, ALSA's error, its meaning, and (no card) what to check."""
    args = ("--seconds", "20") if command == "mic-test" else ()
    proc = vatel_edge(command, "--config", str(tmp_path / "absent.toml"), *args, asoundrc=no_pcm, tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr.splitlines()[-1]
    assert message.startswith(f"vatel-edge: cannot open {direction} device 'default': No such file or directory")
    assert "(ALSA has no device of that name, or its card is not there)" in message
    if not sound_cards():
        assert f"; {NO_CARD}: check that the USB microphone or speaker is plugged in" in message
    assert "dBFS" not in proc.stdout


@pytest.mark.skipif(bool(sound_cards()), reason="this machine has a sound card")
def test_the_systems_own_alsa_configuration_without_a_card(tmp_path: Path) -> None:
    """The real no-card case: the default configuration, `default` and every plugin PCM fail (`null` does not
    count), so devices says there is no card and nothing opens; mic-test and speaker-test fail at once."""
    proc = vatel_edge("devices", asoundrc=None, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"{NO_CARD}: ALSA lists no cards")
    assert proc.stdout.endswith("no PCM device opens for capture\nno PCM device opens for playback\n")
    for command in (("mic-test", "--seconds", "20"), ("speaker-test",)):
        proc = vatel_edge(*command, "--config", str(tmp_path / "absent.toml"), asoundrc=None, tmp_path=tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert NO_CARD in proc.stderr.splitlines()[-1]
