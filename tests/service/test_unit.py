"""systemd/vatel-edge.service: systemd-analyze verify is clean and the security exposure stays <= 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "vatel-edge.service"
EXEC_START = "ExecStart=/opt/vatel-edge/venv/bin/vatel-edge run --config /etc/vatel-edge/config.toml"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (package systemd)"
)


def unit_settings() -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (systemd allows repeated keys)."""
    out, section = [], ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(key: str) -> list[str]:
    return [v for _, k, v in unit_settings() if k == key]


def verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart= pointing at /bin/true (the venv exists only on an installed device)."""
    text = UNIT.read_text()
    assert EXEC_START in text
    copy = tmp_path / "vatel-edge.service"
    copy.write_text(text.replace("ExecStart=/opt/vatel-edge/venv/bin/vatel-edge", "ExecStart=/bin/true"))
    return copy


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120, check=False)


@needs_analyze
def test_verify_reports_nothing_for_our_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` exits 0 and prints no error or warning about vatel-edge.service."""
    result = run("verify", str(verifiable_copy(tmp_path)))
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "vatel-edge" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []


@needs_analyze
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The verify check can fail: a misspelt setting in a copy is reported."""
    copy = verifiable_copy(tmp_path)
    copy.write_text(copy.read_text().replace("KillMode=mixed", "KillMod=mixed"))
    result = run("verify", str(copy))
    assert "KillMod" in result.stdout + result.stderr


@needs_analyze
def test_security_exposure_at_most_2(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates the unit's overall exposure 2.0 or lower."""
    result = run("security", "--offline=true", "--no-pager", str(verifiable_copy(tmp_path)))
    match = re.search(r"Overall exposure level for vatel-edge\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_service_essentials() -> None:
    """Type=notify with watchdog, restart policy, stop behaviour, user, credential and runtime directory."""
    settings = {(s, k): v for s, k, v in unit_settings()}
    expected = {
        ("Service", "Type"): "notify",
        ("Service", "NotifyAccess"): "main",
        ("Service", "WatchdogSec"): "30s",
        ("Service", "Restart"): "on-failure",
        ("Service", "KillMode"): "mixed",
        ("Service", "TimeoutStopSec"): "10",
        ("Service", "User"): "vatel-edge",
        ("Service", "Group"): "vatel-edge",
        ("Service", "SupplementaryGroups"): "audio gpio",
        ("Service", "LoadCredential"): "org_api_key:/etc/vatel-edge/org_api_key",
        ("Service", "RuntimeDirectory"): "vatel-edge",
        ("Service", "ExecReload"): "/bin/kill -HUP $MAINPID",
        ("Service", "ExecStart"): EXEC_START.partition("=")[2],
        ("Unit", "Wants"): "network-online.target",
        ("Install", "WantedBy"): "multi-user.target",
    }
    for key, value in expected.items():
        assert settings.get(key) == value, key
    assert "network-online.target" in settings[("Unit", "After")]
    assert "sound.target" in settings[("Unit", "After")]
    assert ("Service", "RestartSec") in settings
    assert ("Unit", "StartLimitBurst") in settings


def test_devices_are_limited_to_alsa_and_gpiochip() -> None:
    """Only ALSA and gpiochip devices are allowed, under a closed device policy, with no capabilities."""
    assert values("DevicePolicy") == ["closed"]
    assert sorted(values("DeviceAllow")) == ["char-alsa rw", "char-gpiochip rw"]
    assert values("CapabilityBoundingSet") == [""]
    assert values("ProtectSystem") == ["strict"]
    assert values("RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
