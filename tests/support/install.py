"""Running scripts/install.sh into a temporary root, as the install tests do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install.sh"
BASH = shutil.which("bash") or "/bin/bash"  # absolute: a PATH shim must not wrap the installer's own shell


def run_install(
    root: Path,
    *args: str,
    key: str | None = None,
    path: str | None = None,
    extra_env: dict[str, str] | None = None,
    script: Path = SCRIPT,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """`install.sh --root ROOT ARGS...` with ORG_API_KEY = `key` (never the caller's), optionally another PATH."""
    env = {k: v for k, v in os.environ.items() if k != "ORG_API_KEY"}
    if key is not None:
        env["ORG_API_KEY"] = key
    if path is not None:
        env["PATH"] = path
    env.update(extra_env or {})
    return subprocess.run(
        [BASH, str(script), "--root", str(root), *args],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """`result`, after asserting it succeeded (its output in the message otherwise)."""
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result
