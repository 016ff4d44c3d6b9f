"""Set keys of one table in a TOML file by editing its text: comments, order and every other key stay as written.

Only simple cases are edited (a `[table]` header and `key = value` lines, the value on one line); anything else
(a dotted `audio.key`, an inline table, a multi-line value) raises ConfigError saying to edit by hand. The edit
is verified by parsing both texts: the result must equal the original with exactly the new values.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vatel_edge.errors import ConfigError

Value = str | int | float | bool

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_\-\.\"' ]+?)\s*\]\s*(#.*)?$")
_ARRAY_HEADER = re.compile(r"^\s*\[\[")
_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z0-9_\-]+)(?P<eq>\s*=\s*)(?P<rest>.*)$")


def toml_value(value: Value) -> str:
    """`value` as a TOML literal (basic strings escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c >= " " or c == "\t" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def _split_value(rest: str) -> tuple[str, str] | None:
    """(value text, what follows it: spaces and a comment) of a one-line value; None if it continues."""
    s = rest
    if s.startswith('"""') or s.startswith("'''") or s.startswith("[") or s.startswith("{"):
        return None
    if s.startswith('"'):
        i = 1
        while i < len(s):
            if s[i] == "\\":
                i += 2
                continue
            if s[i] == '"':
                return s[: i + 1], s[i + 1 :]
            i += 1
        return None
    if s.startswith("'"):
        j = s.find("'", 1)
        return (s[: j + 1], s[j + 1 :]) if j > 0 else None
    m = re.match(r"[^\s#]+", s)
    if m is None:
        return None
    return m.group(0), s[m.end() :]


def _table_span(lines: list[str], table: str) -> tuple[int, int] | None:
    """(header line, end) of `[table]`: the lines after the header up to the next header."""
    start = None
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m is not None or _ARRAY_HEADER.match(line):
            if start is not None:
                return start, i
            if m is not None and m.group(1).strip() == table:
                start = i
    return (start, len(lines)) if start is not None else None


def set_keys(text: str, table: str, values: Mapping[str, Value]) -> str:
    """`text` with `table.key = value` for each item: replaced in place (keeping a trailing comment), added after
    the table's last key when missing, the table appended at the end when missing. ConfigError when the file is
    not valid TOML or the table is written in a form this editor does not change."""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot edit: the file is not valid TOML ({exc})") from None
    current = before.get(table)
    if current is not None and not isinstance(current, dict):
        raise ConfigError(f"cannot edit: {table} is not a table")
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    span = _table_span(lines, table)
    if span is None and current is not None:
        raise ConfigError(f"cannot edit: [{table}] is written as dotted keys or an inline table; edit it by hand")
    missing: dict[str, Value] = {}
    if span is not None:
        start, end = span
        for key, value in values.items():
            for i in range(start + 1, end):
                m = _KEY_LINE.match(lines[i])
                if m is None or m.group("key") != key:
                    continue
                parts = _split_value(m.group("rest"))
                if parts is None:
                    raise ConfigError(f"cannot edit: {table}.{key} spans several lines; edit it by hand")
                lines[i] = f"{m.group('indent')}{key}{m.group('eq')}{toml_value(value)}{parts[1]}"
                break
            else:
                missing[key] = value
        if missing:
            last = start  # after the last key line of the table (comments and blank lines before the next stay put)
            for i in range(start + 1, end):
                if _KEY_LINE.match(lines[i]):
                    last = i
            lines[last + 1 : last + 1] = [f"{key} = {toml_value(value)}" for key, value in missing.items()]
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", f"[{table}]", *(f"{key} = {toml_value(value)}" for key, value in values.items())]
    result = newline.join(lines) + (newline if text.endswith(("\n", "\r")) or span is None or not text else "")
    _verify(before, result, table, values)
    return result


def _verify(before: dict[str, Any], result: str, table: str, values: Mapping[str, Value]) -> None:
    try:
        after = tomllib.loads(result)
    except tomllib.TOMLDecodeError as exc:  # a bug here, never the user's doing: refuse to write
        raise ConfigError(f"cannot edit: the edited file would not parse ({exc}); edit it by hand") from None
    expected = dict(before)
    expected[table] = {**before.get(table, {}), **values}
    if after != expected:
        raise ConfigError("cannot edit: the edit would change more than the device keys; edit the file by hand")


def unified_diff(old: str, new: str, path: str) -> str:
    """What the edit changes, as a unified diff."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=path, tofile=f"{path} (new)"))


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` by `text` in one rename, keeping its mode (and owner, when we may set it)."""
    st = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0:
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
