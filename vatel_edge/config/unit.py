"""The installed systemd unit as check-config needs it: which config it runs and which credential files it loads.

Outside the unit (`sudo vatel-edge check-config`) there is no $CREDENTIALS_DIRECTORY; the key the service gets
is the file the unit's LoadCredential= names. This reads the unit and its drop-ins (text only, no systemd
needed, so it also works on an image's tree under a root prefix).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

UNIT_NAME = "vatel-edge.service"
#: Where scripts/install.sh puts the unit (relative to the root).
UNIT_DIR = PurePosixPath("etc/systemd/system")
#: systemd's search path for a LoadCredential= without an absolute path (systemd.exec(5)).
CREDSTORE_DIRS = ("etc/credstore", "run/credstore", "usr/local/lib/credstore", "usr/lib/credstore")


@dataclass(frozen=True)
class InstalledUnit:
    """What the unit file says, with every path already under the root."""

    path: Path
    config: Path | None  # `--config` of ExecStart=
    credentials: dict[str, Path] = field(default_factory=dict)  # credential name -> file (LoadCredential=)


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _credential_file(root: Path, spec: str) -> tuple[str, Path]:
    """LoadCredential=ID[:PATH] -> (ID, file): an absolute PATH as is, else looked up in the credstores."""
    name, _, source = spec.partition(":")
    source = source or name
    if source.startswith("/"):
        return name, _under(root, source)
    stores = [root / d / source for d in CREDSTORE_DIRS]
    return name, next((p for p in stores if p.exists()), stores[0])


def _exec_config(root: Path, command: str) -> Path | None:
    """The `--config`/`-c` argument of an ExecStart= command line, under the root."""
    try:
        argv = shlex.split(command.lstrip("-@:+!"))
    except ValueError:
        return None
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return _under(root, arg.partition("=")[2])
        if arg in ("--config", "-c") and i + 1 < len(argv):
            return _under(root, argv[i + 1])
    return None


def read_installed_unit(root: Path = Path("/")) -> InstalledUnit | None:
    """ROOT/etc/systemd/system/vatel-edge.service and its drop-ins (in name order), or None when not installed.

    Only [Service] ExecStart= and LoadCredential= are read; an empty assignment resets, as in systemd.
    """
    unit = root / UNIT_DIR / UNIT_NAME
    dropins = sorted((root / UNIT_DIR / f"{UNIT_NAME}.d").glob("*.conf"))
    config: Path | None = None
    credentials: dict[str, Path] = {}
    found = False
    for path in (unit, *dropins):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        found = found or path == unit
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            key, sep, value = line.partition("=")
            if section != "[Service]" or not sep:
                continue
            key, value = key.strip(), value.strip()
            if key == "LoadCredential":
                if not value:
                    credentials.clear()
                else:
                    name, file = _credential_file(root, value)
                    credentials[name] = file
            elif key == "ExecStart" and value:
                config = _exec_config(root, value)
    if not found:
        return None
    return InstalledUnit(unit, config, credentials)
