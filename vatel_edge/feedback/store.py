"""What survives a restart: the volume, in `state.json` of the state directory ([state] directory, else
systemd's $STATE_DIRECTORY, else nowhere).

The file is replaced atomically (written aside, then renamed). An unreadable or broken file means the defaults;
a directory that cannot be written is logged once and the value is kept in memory only. Mute is not kept here:
a restart starts unmuted unless the hardware switch is at mute (README, "Feedback, LEDs and privacy").
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
DEFAULT_VOLUME = 100


def state_directory(configured: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The directory to keep state in: the configured one, else the first of $STATE_DIRECTORY, else None."""
    if configured:
        return Path(configured)
    env = (os.environ if environ is None else environ).get("STATE_DIRECTORY", "")
    first = env.split(":")[0]
    return Path(first) if first else None


class StateStore:
    """The persisted device settings of one state directory (None: nothing persists)."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / STATE_FILE if directory is not None else None
        self._values: dict[str, object] = self._read()
        self._write_failed = False

    def _read(self) -> dict[str, object]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("state file %s unreadable (%s); using the defaults", self.path, exc.__class__.__name__)
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def volume(self) -> int:
        """The last volume set (0..100), DEFAULT_VOLUME when none was kept."""
        value = self._values.get("volume")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
            return value
        return DEFAULT_VOLUME

    def set_volume(self, level: int) -> None:
        """Keep `level` (written at once; blocking file I/O: call it off the event loop)."""
        if self._values.get("volume") == level:
            return
        self._values["volume"] = level
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{STATE_FILE}.tmp")
        try:
            tmp.write_text(json.dumps(self._values, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._write_failed:
                log.warning("cannot keep the volume in %s: %s (it will not survive a restart)", self.path,
                            exc.strerror or exc)
            self._write_failed = True
            return
        self._write_failed = False
