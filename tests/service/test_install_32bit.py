"""scripts/install.sh refuses 32-bit ARM (armv6l/armv7l/armv8l kernels, armhf/armel userlands) with the reason.

The machine is faked the way the script sees it: `uname` and `dpkg` shims first in PATH (every other call and
option goes to the real commands); an image's architecture is its dpkg database's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.install import ok, run_install

pytestmark = pytest.mark.timeout(120)
REASON = ("is not supported: PyPI has no 32-bit ARM wheels for numpy, webrtcvad-wheels, pywebrtc-audio, "
          "pyalsaaudio, systemd-python and gpiod")


def shims(tmp_path: Path, machine: str, dpkg_arch: str | None = None) -> str:
    """A PATH whose `uname -m` says `machine` and whose `dpkg --print-architecture` says `dpkg_arch`."""
    bin_dir = tmp_path / "shims"
    bin_dir.mkdir()
    real_uname = shutil.which("uname") or "/bin/uname"
    (bin_dir / "uname").write_text(
        f'#!/bin/sh\nif [ "$1" = -m ]; then echo {machine}; else exec {real_uname} "$@"; fi\n')
    if dpkg_arch is not None:
        real_dpkg = shutil.which("dpkg")
        if real_dpkg is None:
            pytest.skip("no dpkg here")
        (bin_dir / "dpkg").write_text(
            f'#!/bin/sh\nif [ "$1" = --print-architecture ]; then echo {dpkg_arch}; else exec {real_dpkg} "$@"; fi\n')
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize(("machine", "dpkg_arch"), [
    ("armv7l", None),  # 32-bit kernel and userland
    ("armv6l", None),  # Pi Zero / 1
    ("aarch64", "armhf"),  # 32-bit Raspberry Pi OS on its default 64-bit kernel
])
def test_32bit_arm_is_refused_before_anything_is_installed(tmp_path: Path, machine: str, dpkg_arch: str | None) -> None:
    root = tmp_path / "root"
    result = run_install(root, "--no-venv", path=shims(tmp_path, machine, dpkg_arch))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "install: error: 32-bit ARM" in result.stderr
    assert REASON in result.stderr
    assert "use 64-bit Raspberry Pi OS (arm64)" in result.stderr
    assert not (root / "etc").exists() and not (root / "opt").exists()


def test_an_armhf_image_is_refused(tmp_path: Path) -> None:
    """--root on a 32-bit image (its dpkg database says armhf), whatever this machine is."""
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: libc6\nStatus: install ok installed\nArchitecture: armhf\nVersion: 1.0\nDescription: libc6\n")
    result = run_install(root, "--no-venv")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "dpkg architecture armhf) " + REASON in result.stderr
    assert not (root / "etc").exists()


def test_64bit_arm_installs_and_32bit_can_still_uninstall(tmp_path: Path) -> None:
    """The check refuses no 64-bit ARM machine; --uninstall works on any machine (nothing to build)."""
    root = tmp_path / "root"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ok(run_install(root, "--no-venv", path=shims(tmp_path / "a", "aarch64", "arm64")))
    assert (root / "etc/vatel-edge/config.toml").exists()
    result = ok(run_install(root, "--uninstall", path=shims(tmp_path / "b", "armv7l")))
    assert not (root / "etc/systemd/system/vatel-edge.service").exists(), result.stdout
