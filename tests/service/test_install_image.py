"""An image build, `scripts/install.sh --root DIR`, checked as the device will run it once DIR is `/`.

SLOW: the `image` fixture is one real install from the checkout with every dependency and user-facing extra
(pip, from the package index or its cache: ~20 s warm, a few minutes cold), shared by this module's tests.
The tree is then used with the installed venv's own interpreter, both where it was built (the interpreter
called by its path in DIR) and at its final path (/opt of a private mount namespace bound to DIR/opt, as
root; nothing on this machine is touched).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.install import REPO, ok, run_install

KEY = "sk-org-4f2a9c1e7b3d-IMAGETEST-0e9d8c"
FINAL_VENV = "/opt/vatel-edge/venv"
NOT_USER_FACING = {"dev"}  # extras of pyproject.toml the device does not get
TIMEOUT = 900

pytestmark = pytest.mark.timeout(TIMEOUT)

# Run by the installed venv's interpreter: the package, the echo path the daemon opens for the installed
# configuration, and each engine by name, one 20 ms frame each (sizes derived from the Vatel format).
PROBE = r"""
import json, sys, time
import numpy as np
import vatel_edge, vatel_edge.cli
from vatel_edge.audio.aec import available_engines, make_echo_canceller
from vatel_edge.audio.aec_path import check_duplex, open_echo_path
from vatel_edge.audio.capture import CaptureFrame
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.config import load_config

cfg = load_config(sys.argv[1])
frame_ms = cfg.audio.frame_ms
n = VATEL_FORMAT.samples(frame_ms)
t = np.arange(n) / VATEL_FORMAT.rate
ref = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
mic = (3000 * np.sin(2 * np.pi * 440 * t + 1.0)).astype("<i2").tobytes()
out = {"prefix": sys.prefix, "package": vatel_edge.__file__, "available": available_engines(),
       "daemon_picks": check_duplex(cfg), "frame_bytes": len(mic), "engines": {}}
path = open_echo_path(cfg.audio)
now = time.monotonic()
path.on_written(ref * 10, now - 0.1)  # 200 ms of speaker output around the capture frame
processed = path.process(CaptureFrame(mic, now, 0))
out["path"] = {"name": path.name, "stats": path.stats, "bytes": len(processed.pcm)}
path.close()
for kind in ("webrtc", "speex", "dtln"):
    engine = make_echo_canceller(kind, frame_ms)
    result = engine.process(mic, ref)
    engine.close()
    out["engines"][kind] = {"name": engine.name, "module": sys.modules[type(engine).__module__].__file__,
                            "bytes": len(result)}
import pywebrtc_audio
from vatel_edge.audio import aec_dtln
out["pywebrtc_audio"] = pywebrtc_audio.__file__
out["dtln_models"] = str(aec_dtln.model_dir())
out["libspeexdsp"] = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libspeexdsp" in line})
print(json.dumps(out))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """A device-like environment: no PYTHONPATH or venv of the test run leaks into the installed venv."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **extra}


def run_probe(python: str, config: Path, *prefix: str) -> dict[str, object]:
    result = subprocess.run(
        [*prefix, python, "-c", PROBE, str(config)],
        capture_output=True, text=True, env=clean_env(), cwd="/", timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return data


def user_facing_extras() -> dict[str, list[str]]:
    """pyproject.toml's extras that the device must have -> their requirement names."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {
        name: [re.match(r"[A-Za-z0-9._-]+", req).group(0) for req in reqs]  # type: ignore[union-attr]
        for name, reqs in extras.items() if name not in NOT_USER_FACING
    }


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """SLOW: one full image build (dependencies and extras) into a temporary root, shared by the module."""
    root = tmp_path_factory.mktemp("image") / "root"
    result = ok(run_install(root, "--no-start", "--python", sys.executable, key=KEY))
    return root, result


# --------------------------------------------------------------------------- with the image (slow)


def test_every_user_facing_extra_is_installed(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """Each extra of pyproject.toml except dev, and each of its requirements, is in the installed venv."""
    root, result = image
    extras = user_facing_extras()
    assert "aec" in extras
    installed = re.search(rf"with the extras (.+) into {FINAL_VENV}$", result.stdout, re.M)
    assert installed is not None
    assert sorted(installed.group(1).split()) == sorted(extras)
    names = [req for reqs in extras.values() for req in reqs]
    probe = subprocess.run(
        [str(root / FINAL_VENV.lstrip("/") / "bin/python"), "-c",
         "import sys, importlib.metadata as m; print([m.version(n) for n in sys.argv[1:]])", *names],
        capture_output=True, text=True, env=clean_env(), cwd="/", timeout=120, check=False,
    )
    assert probe.returncode == 0, probe.stderr  # PackageNotFoundError names the missing one


def test_echo_engines_run_in_the_installed_venv(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """With the installed venv's interpreter (called in the build tree): the package imports from the venv,
    the daemon's echo path for the installed config picks webrtc and cancels a 20 ms frame, and webrtc, speex
    (libspeexdsp.so.1 from the system) and dtln (the models the installer fetched into the venv) each
    process one frame."""
    root, _ = image
    venv = root / FINAL_VENV.lstrip("/")
    out = run_probe(str(venv / "bin/python"), root / "etc/vatel-edge/config.toml")
    assert out["prefix"] == str(venv)
    assert str(out["package"]).startswith(str(venv) + "/")
    check_engines(out, str(venv))


def check_engines(out: dict[str, object], venv: str) -> None:
    assert out["available"] == ["webrtc", "speex"]
    assert out["daemon_picks"] == "webrtc"
    frame = out["frame_bytes"]
    assert frame == 2 * 24000 * 20 // 1000
    stats = {"frames": 1, "cancelled": 1, "bypassed": 0, "failures": 0, "barge_in_vetoes": 0, "recoveries": 0}
    assert out["path"] == {"name": "webrtc", "stats": stats, "bytes": frame}
    engines = out["engines"]
    assert isinstance(engines, dict)
    for kind in ("webrtc", "speex", "dtln"):
        assert engines[kind]["name"] == kind
        assert engines[kind]["bytes"] == frame
        assert engines[kind]["module"].startswith(venv + "/")
    assert str(out["pywebrtc_audio"]).startswith(venv + "/")
    assert out["dtln_models"] == venv + "/share/vatel-edge/dtln-aec"  # fetched by the installer, checked by hash
    libs = out["libspeexdsp"]
    assert isinstance(libs, list)
    assert len(libs) == 1
    assert libs[0].startswith("/usr/lib/") or libs[0].startswith("/lib/")


def test_no_file_in_the_tree_names_the_build_root(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """No file under DIR (scripts, activate, pyvenv.cfg, *.pth, .pyc, RECORD, unit, config, the actions log)
    and no symlink names DIR; the scripts in bin/ and pyvenv.cfg name the final venv path instead."""
    root, _ = image
    needle = str(root).encode()
    naming_root = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                if needle in os.fsencode(os.readlink(p)):
                    naming_root.append(str(p))
            elif p.is_file() and needle in p.read_bytes():
                naming_root.append(str(p))
    assert naming_root == []
    venv = root / FINAL_VENV.lstrip("/")
    assert len(list(venv.rglob("*.pyc"))) > 1000  # compiled (read-only on the device), for the final path
    shebangs = {
        p.name: p.read_bytes().split(b"\n", 1)[0].decode()
        for p in (venv / "bin").iterdir() if not p.is_symlink() and p.read_bytes().startswith(b"#!")
    }
    assert shebangs["vatel-edge"] == f"#!{FINAL_VENV}/bin/python"
    assert {"pip", "vatel-edge"} <= shebangs.keys()
    for script, shebang in shebangs.items():
        interpreter = shebang.removeprefix("#!")
        assert interpreter.startswith(f"{FINAL_VENV}/bin/python"), script
        assert (root / interpreter.lstrip("/")).exists(), script
    assert f'VIRTUAL_ENV="{FINAL_VENV}"' in (venv / "bin/activate").read_text()
    cfg = (venv / "pyvenv.cfg").read_text()
    assert cfg.splitlines()[-1].endswith(f"-m venv {FINAL_VENV}")


def test_unit_link_and_config_name_the_final_paths(image: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """The unit's ExecStart= and LoadCredential=, the /usr/local/bin link and the config name paths that
    exist in the tree at their final place."""
    root, _ = image
    unit = (root / "etc/systemd/system/vatel-edge.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+) run --config (\S+)$", unit, re.M)
    assert exec_start is not None
    assert exec_start.group(1) == f"{FINAL_VENV}/bin/vatel-edge"
    credential = re.search(r"^LoadCredential=org_api_key:(\S+)$", unit, re.M)
    assert credential is not None
    link = root / "usr/local/bin/vatel-edge"
    assert os.readlink(link) == exec_start.group(1)
    for final in (exec_start.group(1), exec_start.group(2), credential.group(1)):
        assert (root / final.lstrip("/")).is_file(), final
    config = (root / exec_start.group(2).lstrip("/")).read_text()
    assert str(root) not in config


def final_layout_prefix(root: Path) -> list[str]:
    """argv prefix that runs a command in a private mount namespace where DIR/opt is /opt and DIR itself is
    hidden (an empty tmpfs over it), so that anything still pointing into DIR fails."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    base = os.path.realpath(root / FINAL_VENV.lstrip("/") / "bin/python")
    if base.startswith("/opt/"):
        pytest.skip(f"the venv's base interpreter {base} lives in /opt, which the namespace replaces")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0/opt" /opt && mount -t tmpfs -o ro vatel-hidden "$0" && exec "$@"', str(root)]


def test_the_tree_runs_at_its_final_path(
    image: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """With DIR/opt at /opt and DIR hidden: the console script (by its shebang, clean environment) runs,
    check-config accepts the installed config and key, `activate` selects the venv, and the echo engines
    run from /opt."""
    root, _ = image
    prefix = final_layout_prefix(root)
    etc = tmp_path / "etc"  # the installed config and key, where the namespace still shows them
    shutil.copytree(root / "etc/vatel-edge", etc)

    def final(*argv: str, **env: str) -> str:
        result = subprocess.run([*prefix, *argv], capture_output=True, text=True, env=clean_env(**env),
                                cwd="/", timeout=120, check=False)
        assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
        return result.stdout

    assert final(f"{FINAL_VENV}/bin/vatel-edge", "--version").strip() == "vatel-edge 0.1.0"
    checked = final(f"{FINAL_VENV}/bin/vatel-edge", "check-config", "--config", str(etc / "config.toml"),
                    CREDENTIALS_DIRECTORY=str(etc))
    assert checked.startswith("OK: ")
    assert KEY not in checked
    which = final("sh", "-c", f'. {FINAL_VENV}/bin/activate && command -v python && echo "$VIRTUAL_ENV"')
    assert which.split() == [f"{FINAL_VENV}/bin/python", FINAL_VENV]
    out = run_probe(f"{FINAL_VENV}/bin/python", etc / "config.toml", *prefix)
    assert out["prefix"] == FINAL_VENV
    assert str(out["package"]).startswith(FINAL_VENV + "/")
    check_engines(out, FINAL_VENV)


# --------------------------------------------------------------------------- extras list (a venv without dependencies)


def test_an_extra_pyproject_declares_later_is_installed_too(tmp_path: Path) -> None:
    """Every extra pyproject.toml declares is installed, also one added later (the wakeword extra is
    added to the copy when the checkout does not declare it yet): no edit of the installer needed."""
    checkout = tmp_path / "checkout"
    for part in ("scripts", "vatel_edge", "config", "systemd"):
        shutil.copytree(REPO / part, checkout / part, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (REPO / "pyproject.toml").read_text()
    if not re.search(r"^wakeword\s*=", pyproject, re.M):
        pyproject = pyproject.replace(
            "[project.optional-dependencies]\n", '[project.optional-dependencies]\nwakeword = ["pymicro-wakeword>=2"]\n'
        )
    (checkout / "pyproject.toml").write_text(pyproject)
    root = tmp_path / "root"
    result = ok(run_install(root, "--no-deps", "--no-start", "--python", sys.executable,
                            script=checkout / "scripts/install.sh"))
    line = re.search(rf"with the extras (.+) into {re.escape(FINAL_VENV)}", result.stdout)
    assert line is not None and {"aec", "wakeword"} <= set(line.group(1).split()), result.stdout
    venv_python = root / FINAL_VENV.lstrip("/") / "bin/python"
    provides = subprocess.run(
        [str(venv_python), "-c",
         "import importlib.metadata as m; print(m.metadata('vatel-edge').get_all('Provides-Extra'))"],
        capture_output=True, text=True, env=clean_env(), cwd="/", timeout=120, check=True,
    )
    assert "wakeword" in provides.stdout


# --------------------------------------------------------------------------- an OS tree (fast, no venv)


def dpkg_tree(root: Path, arch: str, packages: list[str]) -> None:
    """A Debian root's dpkg database (status file) with libc6 of `arch` and `packages` installed."""
    stanzas = [
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\n"
        f"Maintainer: Test <test@example.invalid>\nArchitecture: {arch}\nVersion: 1.0\nDescription: {name}\n"
        for name in ["libc6", *packages]
    ]
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("\n".join(stanzas))


def actions(root: Path) -> list[list[str]]:
    """install-actions.log, each line split as the shell would."""
    return [shlex.split(line) for line in (root / "install-actions.log").read_text().splitlines()]


def host_arch() -> str:
    if shutil.which("dpkg") is None:
        pytest.skip("no dpkg here")
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def test_an_os_tree_gets_its_own_groups_and_a_warning_for_missing_runtime_packages(tmp_path: Path) -> None:
    """--root on an OS tree: groups come from DIR/etc/group (not this machine's), and the Debian packages
    vatel-edge loads at run time (libspeexdsp1, libasound2, alsa-utils) are looked up in DIR's dpkg database."""
    root = tmp_path / "root"
    dpkg_tree(root, host_arch(), ["alsa-utils"])
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text("root:x:0:\naudio:x:29:\ngpio:x:993:\n")
    result = ok(run_install(root, "--no-venv", "--no-start"))
    assert f"warning: {root} lacks the Debian packages libasound2 libspeexdsp1, which" in result.stdout
    assert ["usermod", "--append", "--groups", "audio,gpio", "vatel-edge"] in actions(root)
    assert not (root / "etc/systemd/system/vatel-edge.service.d").exists()  # the tree has a gpio group

    (root / "etc/group").write_text("root:x:0:\naudio:x:29:\n")
    dpkg_tree(tmp_path / "full", host_arch(), ["libasound2", "libspeexdsp1", "alsa-utils"])
    shutil.rmtree(root / "var")
    shutil.move(tmp_path / "full/var", root / "var")
    result = ok(run_install(root, "--no-venv", "--no-start"))
    assert "lacks the Debian packages" not in result.stdout
    assert ["usermod", "--append", "--groups", "audio", "vatel-edge"] in actions(root)
    assert (root / "etc/systemd/system/vatel-edge.service.d/10-groups.conf").exists()


def test_a_tree_of_another_architecture_is_refused(tmp_path: Path) -> None:
    """A venv built here for an arm64 image would hold this machine's wheels: refused before any venv."""
    other = "amd64" if host_arch() == "arm64" else "arm64"  # not a 32-bit one: refused for that first
    root = tmp_path / "root"
    dpkg_tree(root, other, ["libasound2", "libspeexdsp1", "alsa-utils"])
    result = run_install(root, "--no-start", "--python", sys.executable)
    assert result.returncode == 2
    assert f"is built for {other} and this machine is {host_arch()}" in result.stderr
    assert "run the installer inside it" in result.stderr
    assert not (root / "opt").exists()
