"""The test suite's ALSA configuration: one asoundrc with every test device, set up once per process.

Call `install_alsa_config()` before the first alsaaudio use (tests/conftest.py does it at import).
It compiles fixed_plugin.c (a null device that only accepts one rate/channel count) into a cache dir,
renders test.asoundrc with the plugin's path, and sets os.environ["ALSA_CONFIG_PATH"].
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ASOUND_DIR = Path(__file__).resolve().parent
TEMPLATE = ASOUND_DIR / "test.asoundrc"
PLUGIN_SOURCE = ASOUND_DIR / "fixed_plugin.c"
PLUGIN_PLACEHOLDER = "@FIXED_PLUGIN@"

_installed: Path | None = None


def _cache_dir() -> Path:
    digest = hashlib.sha256(PLUGIN_SOURCE.read_bytes() + TEMPLATE.read_bytes()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"vatel-edge-asound-{os.getuid()}-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def build_fixed_plugin(dest: Path) -> Path:
    """Compile the fixed-format test plugin (needs cc and libasound2-dev); returns the .so path."""
    lib = dest / "libasound_module_pcm_fixed.so"
    if lib.exists():
        return lib
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler: cannot build tests/asound/fixed_plugin.c")
    tmp = dest / f"build-{os.getpid()}.so"
    subprocess.run(
        [cc, "-O2", "-Wall", "-DPIC", "-shared", "-fPIC", "-o", str(tmp), str(PLUGIN_SOURCE), "-lasound"],
        check=True,
        timeout=120,
    )
    tmp.replace(lib)  # atomic: concurrent test processes may build at once
    return lib


def install_alsa_config() -> Path:
    """Render the test asoundrc and point ALSA_CONFIG_PATH at it (idempotent); returns its path."""
    global _installed
    if _installed is not None:
        return _installed
    dest = _cache_dir()
    lib = build_fixed_plugin(dest)
    conf = dest / "test.asoundrc"
    text = TEMPLATE.read_text().replace(PLUGIN_PLACEHOLDER, str(lib))
    if not conf.exists() or conf.read_text() != text:
        tmp = dest / f"test.asoundrc.{os.getpid()}"
        tmp.write_text(text)
        tmp.replace(conf)
    os.environ["ALSA_CONFIG_PATH"] = str(conf)
    _installed = conf
    return conf
