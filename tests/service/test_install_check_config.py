"""`vatel-edge check-config` on a tree made by `scripts/install.sh --root DIR`, outside the unit.

The installer puts the key in DIR/etc/vatel-edge/org_api_key and the unit loads it with LoadCredential=; with
no $CREDENTIALS_DIRECTORY and no ORG_API_KEY, check-config (given `--root DIR`, where it reads the installed
unit) must find that file through the unit, as the service will get it, and never print the key.
The installs are `--no-venv` (a few seconds each): check-config runs from this checkout's venv.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

import vatel_edge.audio.wakeword  # noqa: F401  (check-config's lazy import, loaded before the child drops to nobody)
from tests.support.install import ok, run_install
from vatel_edge.cli import check_config_command

KEY = "sk-org-91c3e5a7b2d4-CHECKCONFIG-6f8e0a"
PLACEHOLDER = "3c90c3cc-0d44-4b50-8888-8dd25736052a"  # config/vatel-edge.toml's agent_id

pytestmark = pytest.mark.timeout(300)


def clean_env() -> dict[str, str]:
    """Outside the unit: no key in the environment, no credentials directory."""
    return {k: v for k, v in os.environ.items() if k not in ("ORG_API_KEY", "CREDENTIALS_DIRECTORY",
                                                             "VATEL_EDGE_CONFIG")}


def check_config(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "vatel_edge.cli", "check-config", "--root", str(root),
         "--config", str(root / "etc/vatel-edge/config.toml"), *extra],
        capture_output=True, text=True, env=clean_env(), cwd="/", timeout=60, check=False,
    )
    assert KEY not in result.stdout + result.stderr
    return result


@pytest.fixture
def root() -> Iterator[Path]:
    """A temporary root traversable by group root (0750), so a non-root member of that group can be tried."""
    with tempfile.TemporaryDirectory(prefix="vatel-check-") as tmp:
        os.chmod(tmp, 0o750)
        yield Path(tmp) / "root"


def test_check_config_finds_the_installed_credential(root: Path) -> None:
    """Exit 0 with the installed config and key; the example's placeholder agent is a warning, not a failure."""
    ok(run_install(root, "--no-venv", key=KEY))
    result = check_config(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"OK: {root}/etc/vatel-edge/config.toml\n")
    assert f"warning: vatel.agent_id is still the example's placeholder {PLACEHOLDER}" in result.stdout
    assert result.stderr == ""


def test_without_root_the_unit_of_this_machine_is_used_not_the_tree(root: Path) -> None:
    """The credential comes from DIR's unit only when asked (`--root DIR`): with `--root /` (no unit here) the
    same files fail with the missing environment variable."""
    ok(run_install(root, "--no-venv", key=KEY))
    if Path("/etc/systemd/system/vatel-edge.service").exists():
        pytest.skip("vatel-edge is installed on this machine")
    result = check_config(root, "--root", "/")
    assert result.returncode == 2
    assert "environment variable ORG_API_KEY is not set" in result.stderr


def test_an_install_without_a_key_names_the_missing_credential_file(root: Path) -> None:
    """Installed without a key: check-config says the unit's credential file is missing (the service cannot start)."""
    ok(run_install(root, "--no-venv"))
    result = check_config(root)
    assert result.returncode == 2
    assert (f"the service's credential org_api_key (LoadCredential=): {root}/etc/vatel-edge/org_api_key "
            "does not exist") in result.stderr, result.stderr


def test_a_key_the_user_may_not_read_says_run_with_sudo(root: Path) -> None:
    """Run as a user who can read the config (group member) but not the root-only key: one problem telling
    to run with sudo, no key. Under --root the installer's chown to root:vatel-edge is recorded, not run, so
    group root (gid 0) stands in for vatel-edge; the check runs in a child that dropped to uid nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    ok(run_install(root, "--no-venv", key=KEY))
    assert (root / "etc/vatel-edge/org_api_key").stat().st_mode & 0o077 == 0
    nobody = 65534
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody with group 0, run the check in-process, report, exit
        code = 99
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(nobody, nobody, nobody)
            out, err = io.StringIO(), io.StringIO()
            code = check_config_command(str(root / "etc/vatel-edge/config.toml"), out, err,
                                        environ={}, root=str(root))
            os.write(write_fd, (out.getvalue() + "\0" + err.getvalue()).encode())
        except BaseException:  # shown by the parent's assertion
            os.write(write_fd, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    out, _, err = data.partition("\0")
    assert KEY not in data
    assert os.waitstatus_to_exitcode(status) == 2, data
    assert out == ""
    assert err.splitlines()[0] == (
        f"the service's credential org_api_key (LoadCredential=): {root}/etc/vatel-edge/org_api_key exists but "
        "this user may not read it; the service reads it as root: run with sudo")
