"""scripts/install.sh run with --root into a temporary tree: files, modes, idempotence, key hygiene, uninstall."""

from __future__ import annotations

import grp
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.install import REPO, SCRIPT, ok
from tests.support.install import run_install as _run_install

KEY = "sk-org-7d1e0c2b9a8f-INSTALLTEST-5a4b3c"
TIMEOUT = 600

pytestmark = pytest.mark.timeout(TIMEOUT)


def run_install(root: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return _run_install(root, *args, timeout=TIMEOUT, **kw)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def snapshot(root: Path, skip: str | None = None) -> dict[str, tuple[int, str]]:
    """path -> (mode, sha256) for every file and directory under root (optionally skipping one subtree)."""
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if skip and (rel == skip or rel.startswith(skip + "/")):
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
        out[rel] = (mode(p), digest)
    return out


def has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def all_text(root: Path, result: subprocess.CompletedProcess[str], *, except_key_file: bool = True) -> str:
    """stdout, stderr and every file under root except the key file itself."""
    parts = [result.stdout, result.stderr]
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and not (except_key_file and p.name == "org_api_key"):
            parts.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


# --------------------------------------------------------------------------- full install (with a venv)


def test_full_install_then_rerun_changes_nothing(tmp_path: Path) -> None:
    """A full install creates the venv with vatel-edge, config, key, unit; a second run changes no file."""
    root = tmp_path / "root"
    had_build_dir = (REPO / "build").exists()
    first = ok(run_install(root, "--no-deps", "--python", sys.executable, key=KEY))

    venv = root / "opt/vatel-edge/venv"
    assert os.access(venv / "bin/vatel-edge", os.X_OK)  # the unit's ExecStart
    assert os.readlink(root / "usr/local/bin/vatel-edge") == "/opt/vatel-edge/venv/bin/vatel-edge"
    probe = subprocess.run(
        [str(venv / "bin/python"), "-c", "import vatel_edge.control as c; print(c.__file__)"],
        capture_output=True, text=True, timeout=120, check=True, cwd="/",
    )
    assert probe.stdout.strip().startswith(str(venv))
    assert had_build_dir or not (REPO / "build").exists()  # built from a staged copy, not in the checkout

    etc = root / "etc/vatel-edge"
    assert mode(etc) == 0o750
    assert (etc / "config.toml").read_bytes() == (REPO / "config/vatel-edge.toml").read_bytes()
    assert mode(etc / "config.toml") == 0o640
    assert (etc / "org_api_key").read_text() == KEY + "\n"
    assert mode(etc / "org_api_key") == 0o600
    unit = root / "etc/systemd/system/vatel-edge.service"
    assert unit.read_bytes() == (REPO / "systemd/vatel-edge.service").read_bytes()
    assert mode(unit) == 0o644
    assert KEY not in all_text(root, first)

    before = snapshot(root, skip="opt/vatel-edge/venv")
    second = ok(run_install(root, "--no-deps", "--python", sys.executable, key=KEY))
    assert snapshot(root, skip="opt/vatel-edge/venv") == before
    for what in ("config.toml (existing configuration kept)", "org_api_key", "vatel-edge.service"):
        assert any(line.startswith("install: unchanged:") and what in line for line in second.stdout.splitlines())
    subprocess.run([str(venv / "bin/python"), "-c", "import vatel_edge"], timeout=120, check=True, cwd="/")


# --------------------------------------------------------------------------- without a venv (fast)


def test_rerun_keeps_an_edited_config(tmp_path: Path) -> None:
    """An existing /etc/vatel-edge/config.toml is never overwritten; its mode is kept at 0640."""
    root = tmp_path / "root"
    ok(run_install(root, "--no-venv", key=KEY))
    config = root / "etc/vatel-edge/config.toml"
    config.write_text("# edited by the owner\n")
    config.chmod(0o644)
    ok(run_install(root, "--no-venv", key=KEY))
    assert config.read_text() == "# edited by the owner\n"
    assert mode(config) == 0o640


def test_key_from_file_is_stripped_and_replaced_when_changed(tmp_path: Path) -> None:
    """--key-file: surrounding whitespace is stripped; a different key later replaces it, mode stays 0600."""
    root = tmp_path / "root"
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n\n")
    ok(run_install(root, "--no-venv", "--key-file", str(key_file)))
    stored = root / "etc/vatel-edge/org_api_key"
    assert stored.read_text() == KEY + "\n"
    ok(run_install(root, "--no-venv", key=KEY + "-rotated"))
    assert stored.read_text() == KEY + "-rotated\n"
    assert mode(stored) == 0o600
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".org_api_key")]  # no temp files


def test_empty_key_file_is_refused(tmp_path: Path) -> None:
    """An empty --key-file is an error."""
    key_file = tmp_path / "key"
    key_file.write_text("\n")
    result = run_install(tmp_path / "root", "--no-venv", "--key-file", str(key_file))
    assert result.returncode != 0
    assert "is empty" in result.stderr


def test_key_on_command_line_is_refused_without_echo(tmp_path: Path) -> None:
    """--key VALUE is refused, and VALUE is not printed."""
    result = run_install(tmp_path / "root", "--no-venv", "--key", KEY)
    assert result.returncode == 2
    assert "not accepted on the command line" in result.stderr
    assert KEY not in result.stdout + result.stderr
    result = run_install(tmp_path / "root", "--no-venv", f"--key={KEY}")
    assert result.returncode == 2
    assert KEY not in result.stdout + result.stderr


def test_key_is_in_no_process_argv(tmp_path: Path) -> None:
    """Every command the installer executes is logged by a PATH shim; the key is in none of their argv."""
    real_path = os.environ["PATH"]
    shim_dir, log = tmp_path / "shims", tmp_path / "argv.log"
    shim_dir.mkdir()
    shim = tmp_path / "shim.sh"
    shim.write_text(
        "#!/bin/sh\n"
        'name=${0##*/}\n'
        '{ printf "%s" "$name"; for a in "$@"; do printf " %s" "$a"; done; printf "\\n"; } >> "$SHIM_LOG"\n'
        'PATH="$SHIM_REAL_PATH"; export PATH\n'
        'exec "$name" "$@"\n'
    )
    shim.chmod(0o755)
    for d in real_path.split(":"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = shim_dir / name
            if not target.exists() and "/" not in name and os.access(os.path.join(d, name), os.X_OK):
                target.symlink_to(shim)
    root = tmp_path / "root"
    result = ok(
        run_install(
            root, "--no-venv", key=KEY, path=f"{shim_dir}:{real_path}",
            extra_env={"SHIM_LOG": str(log), "SHIM_REAL_PATH": real_path},
        )
    )
    argv_log = log.read_text()
    assert "install -m 0644" in argv_log  # the shims did see the installer's commands
    assert "mktemp" in argv_log
    assert KEY not in argv_log
    assert KEY not in all_text(root, result)
    assert (root / "etc/vatel-edge/org_api_key").read_text() == KEY + "\n"


def test_without_a_key_the_service_is_enabled_not_started(tmp_path: Path) -> None:
    """No key given and none installed: no key file, `enable` without --now, and a hint how to add one."""
    root = tmp_path / "root"
    result = ok(run_install(root, "--no-venv"))
    assert not (root / "etc/vatel-edge/org_api_key").exists()
    actions = (root / "install-actions.log").read_text().splitlines()
    assert "systemctl enable vatel-edge.service" in actions
    assert not any("--now" in a for a in actions)
    assert "no key installed" in result.stdout


def test_privileged_steps_are_recorded_not_run(tmp_path: Path) -> None:
    """Under --root, useradd/usermod/chown/systemctl are recorded in install-actions.log in order, with the
    paths they take once the tree is / (so the log can be replayed on the device)."""
    root = tmp_path / "root"
    ok(run_install(root, "--no-venv", key=KEY))
    actions = (root / "install-actions.log").read_text().splitlines()
    useradd = next(a for a in actions if a.startswith("useradd "))
    for flag in ("--system", "--user-group", "--no-create-home", "--shell /usr/sbin/nologin"):
        assert flag in useradd
    assert useradd.rstrip().endswith(" vatel-edge")
    groups = [g for g in ("audio", "gpio") if has_group(g)]
    if groups:  # printf %q may write the comma as \,
        assert ["usermod", "--append", "--groups", ",".join(groups), "vatel-edge"] in map(shlex.split, actions)
    assert "chown root:vatel-edge /etc/vatel-edge/config.toml" in actions
    assert "chown root:root /etc/vatel-edge/org_api_key" in actions
    assert not any(str(root) in a for a in actions)
    assert actions.index("systemctl daemon-reload") < actions.index("systemctl enable --now vatel-edge.service")
    assert not any("apt-get" in a for a in actions)


def test_groups_dropin_matches_this_system(tmp_path: Path) -> None:
    """Without a gpio group, a drop-in resets SupplementaryGroups= to audio; with one, no drop-in."""
    root = tmp_path / "root"
    ok(run_install(root, "--no-venv", key=KEY))
    dropin = root / "etc/systemd/system/vatel-edge.service.d/10-groups.conf"
    if has_group("gpio"):
        assert not dropin.exists()
    else:
        assert dropin.read_text().splitlines()[1:] == ["[Service]", "SupplementaryGroups=", "SupplementaryGroups=audio"]


def test_uninstall_keeps_config_and_purge_removes_it(tmp_path: Path) -> None:
    """--uninstall removes unit, drop-ins, /opt/vatel-edge and the user, keeps /etc/vatel-edge; --purge removes it."""
    root = tmp_path / "root"
    ok(run_install(root, "--no-venv", key=KEY))
    (root / "opt/vatel-edge/venv/bin").mkdir(parents=True)  # stands in for a venv
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/vatel-edge").symlink_to("/opt/vatel-edge/venv/bin/vatel-edge")
    result = ok(run_install(root, "--uninstall"))
    assert not (root / "etc/systemd/system/vatel-edge.service").exists()
    assert not (root / "etc/systemd/system/vatel-edge.service.d").exists()
    assert not (root / "opt/vatel-edge").exists()
    assert not (root / "usr/local/bin/vatel-edge").is_symlink()
    assert (root / "etc/vatel-edge/config.toml").exists()
    assert (root / "etc/vatel-edge/org_api_key").exists()
    actions = (root / "install-actions.log").read_text().splitlines()
    assert "systemctl disable --now vatel-edge.service" in actions
    assert "userdel vatel-edge" in actions
    assert "kept /etc/vatel-edge" in result.stdout
    ok(run_install(root, "--uninstall", "--purge"))
    assert not (root / "etc/vatel-edge").exists()


def test_purge_alone_and_unknown_options_are_refused(tmp_path: Path) -> None:
    """--purge without --uninstall and unknown options exit with status 2 and a message."""
    assert run_install(tmp_path / "r", "--purge").returncode == 2
    result = run_install(tmp_path / "r", "--frobnicate")
    assert result.returncode == 2
    assert "unknown option: --frobnicate" in result.stderr


def test_help_describes_the_options() -> None:
    """--help lists every option the installer accepts."""
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=True)
    for option in ("--key-file", "--no-apt", "--no-venv", "--no-deps", "--root", "--uninstall", "--purge"):
        assert option in result.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean() -> None:
    """shellcheck finds nothing in the installer."""
    subprocess.run(["shellcheck", str(SCRIPT)], timeout=120, check=True)
