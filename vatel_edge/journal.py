"""Logging set-up: journald with structured VATEL_* fields under systemd, readable lines on stderr elsewhere.

Call `setup_logging(level)` once at start-up (the CLI does; library modules only use
`logging.getLogger(__name__)`). Calling it again replaces the handler it installed, never duplicates it.

Structured fields. Every record can carry the conversation fields below; under journald they become
`VATEL_*` fields (so `journalctl -u vatel-edge VATEL_SESSION_ID=...` selects one session), on stderr they
are appended compactly (`[state=in_session session=abc turn=t1]`):

    state -> VATEL_STATE        session_id -> VATEL_SESSION_ID    turn_id -> VATEL_TURN_ID
    event -> VATEL_EVENT        tool -> VATEL_TOOL                tool_call_id -> VATEL_TOOL_CALL_ID

They come from two places, merged per record (the explicit extra wins):

* the log context, a contextvar, so every line inside a session carries its id without passing it::

      with log_context(session_id=session.id, state="in_session"):
          log.info("session opened")            # VATEL_SESSION_ID, VATEL_STATE
          ...
      set_log_context(state="listening")        # change the current context in place (e.g. on a
                                                # state transition); a field set to None is removed

  asyncio tasks copy the context when they are created: a task started inside `log_context(...)`
  keeps those fields; a later `set_log_context` in the parent does not reach an existing task.
* a per-call extra: `log.info("tool done", extra={"vatel": {"tool": name, "tool_call_id": cid}})`.
  Other lower-case keys are allowed too (`{"outcome": "ok"}` -> VATEL_OUTCOME).

Secrets. The handler redacts, in the message, its arguments, exception text and fields: every value given
to `register_secret` (API key, session tokens; a bounded set), `token=`/`key=`-style query parameters,
`Bearer ...` credentials and Authorization/Cookie header values. WebSocket frame payloads logged by the
`websockets` library at debug level are elided (they would carry base64 audio). Callers still never log
secrets: this is defence in depth.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Final, TextIO
from urllib.parse import quote

SYSLOG_IDENTIFIER: Final = "vatel-edge"
JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
REDACTED: Final = "<redacted>"

# context key -> (journal field, short label on stderr)
LOG_FIELDS: Final[Mapping[str, tuple[str, str]]] = {
    "state": ("VATEL_STATE", "state"),
    "session_id": ("VATEL_SESSION_ID", "session"),
    "turn_id": ("VATEL_TURN_ID", "turn"),
    "event": ("VATEL_EVENT", "event"),
    "tool": ("VATEL_TOOL", "tool"),
    "tool_call_id": ("VATEL_TOOL_CALL_ID", "call"),
}
NOISY_LOGGERS: Final = ("websockets", "httpx", "httpcore")
LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
MAX_SECRETS: Final = 64
MIN_SECRET_LEN: Final = 8  # shorter values would redact ordinary words
_HANDLER_NAME: Final = "vatel-edge"
_EXTRA_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# --------------------------------------------------------------------------- log context


class _Unset(enum.Enum):
    UNSET = 0


_UNSET: Final = _Unset.UNSET
FieldValue = str | None | _Unset

_context: ContextVar[Mapping[str, str]] = ContextVar(
    "vatel_log_context", default=MappingProxyType({})
)


def _merged(
    base: Mapping[str, str],
    state: FieldValue,
    session_id: FieldValue,
    turn_id: FieldValue,
    event: FieldValue,
    tool: FieldValue,
    tool_call_id: FieldValue,
) -> dict[str, str]:
    out = dict(base)
    changes = {
        "state": state,
        "session_id": session_id,
        "turn_id": turn_id,
        "event": event,
        "tool": tool,
        "tool_call_id": tool_call_id,
    }
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif not isinstance(value, _Unset):
            out[key] = value
    return out


@contextlib.contextmanager
def log_context(
    *,
    state: FieldValue = _UNSET,
    session_id: FieldValue = _UNSET,
    turn_id: FieldValue = _UNSET,
    event: FieldValue = _UNSET,
    tool: FieldValue = _UNSET,
    tool_call_id: FieldValue = _UNSET,
) -> Iterator[None]:
    """Add (or with None remove) fields for every record logged inside the block; restored on exit."""
    token = _context.set(_merged(_context.get(), state, session_id, turn_id, event, tool, tool_call_id))
    try:
        yield
    finally:
        _context.reset(token)


def set_log_context(
    *,
    state: FieldValue = _UNSET,
    session_id: FieldValue = _UNSET,
    turn_id: FieldValue = _UNSET,
    event: FieldValue = _UNSET,
    tool: FieldValue = _UNSET,
    tool_call_id: FieldValue = _UNSET,
) -> None:
    """Change the current context in place (a field set to None is removed); lasts until changed again."""
    _context.set(_merged(_context.get(), state, session_id, turn_id, event, tool, tool_call_id))


_daemon_fields: dict[str, str] = {}


def set_daemon_log_context(**fields: str | None) -> None:
    """Process-wide fields (the daemon's state and session id), under any task's log_context.

    The daemon is one per process and its state is shared by all its tasks, which a ContextVar
    (copied into each task at creation) cannot express. A value of None removes the field.
    """
    for key, value in fields.items():
        if key not in LOG_FIELDS:
            raise ValueError(f"unknown log field {key!r}")
        if value is None:
            _daemon_fields.pop(key, None)
        else:
            _daemon_fields[key] = value


def current_log_context() -> dict[str, str]:
    """The fields the current context adds to every record."""
    return dict(_context.get())


def record_fields(record: logging.LogRecord) -> dict[str, str]:
    """The conversation fields of a record: the log context merged with `extra={"vatel": {...}}`."""
    fields = getattr(record, "vatel_fields", None)
    if isinstance(fields, dict):  # already resolved by the context filter
        return fields
    out = dict(_daemon_fields)
    out.update(_context.get())
    extra = getattr(record, "vatel", None)
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            if not isinstance(key, str) or not _EXTRA_KEY.match(key):
                continue
            if value is None:
                out.pop(key, None)
            else:
                out[key] = str(value)
    return out


def journal_field_name(key: str) -> str:
    """The journald field of a context key: known ones from LOG_FIELDS, others VATEL_<KEY>."""
    known = LOG_FIELDS.get(key)
    return known[0] if known else "VATEL_" + key.upper()


class ContextFilter(logging.Filter):
    """Resolves each record's conversation fields once (in the emitting task's context) as `vatel_fields`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.vatel_fields = record_fields(record)
        return True


# --------------------------------------------------------------------------- redaction


class SecretRegistry:
    """A bounded set of secret values to redact (oldest forgotten first); safe to use from any thread."""

    def __init__(self, max_secrets: int = MAX_SECRETS) -> None:
        self._max = max_secrets
        self._lock = threading.Lock()
        self._order: list[str] = []
        self._snapshot: tuple[str, ...] = ()  # longest first, read without the lock

    def add(self, value: str) -> None:
        """Remember a secret (and its URL-encoded form); values shorter than MIN_SECRET_LEN are ignored."""
        value = value.strip()
        if len(value) < MIN_SECRET_LEN:
            return
        forms = {value, quote(value, safe="")}
        with self._lock:
            for form in forms:
                if form in self._order:
                    self._order.remove(form)
                self._order.append(form)
            del self._order[: max(0, len(self._order) - self._max)]
            self._snapshot = tuple(sorted(self._order, key=len, reverse=True))

    def clear(self) -> None:
        """Forget every secret."""
        with self._lock:
            self._order.clear()
            self._snapshot = ()

    def __len__(self) -> int:
        return len(self._snapshot)

    def redact(self, text: str) -> str:
        """`text` with every registered secret replaced by <redacted>."""
        for secret in self._snapshot:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


SECRETS: Final = SecretRegistry()


def register_secret(value: str) -> None:
    """Redact `value` from every log line from now on (API key, session tokens)."""
    SECRETS.add(value)


_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:access_token|refresh_token|id_token|token|api_?key|key|secret|password)=)[^&\s#'\"]+"
)
_HEADER_SECRET = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|api-key|cookie|set-cookie)"
    r"([\"']?\s*[:=]\s*[\"']?)((?:bearer|basic|token|digest)\s+)?([^\s\"',;][^\r\n\"',]*)"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*")
_WS_FRAME = re.compile(r"^([<>] (?:TEXT|BINARY|CONT)) .* (\[[^\]]*\])$", re.DOTALL)


def _header_sub(m: re.Match[str]) -> str:
    scheme = m.group(3) or ""
    return f"{m.group(1)}{m.group(2)}{scheme}{REDACTED}"


def redact(text: str, secrets: SecretRegistry = SECRETS) -> str:
    """`text` with registered secrets, token query parameters, bearer credentials and auth headers redacted."""
    text = secrets.redact(text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _HEADER_SECRET.sub(_header_sub, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


class RedactionFilter(logging.Filter):
    """Rewrites a record in place so no handler sees a secret: message (args merged), exception, stack, fields."""

    def __init__(self, secrets: SecretRegistry = SECRETS) -> None:
        super().__init__()
        self._secrets = secrets
        self._exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):
            # A bad format string: keep the template only, never the arguments (they could hold secrets).
            message = f"{record.msg} (log arguments did not match the message)"
        if record.name.startswith("websockets"):
            message = _WS_FRAME.sub(r"\1 <payload elided> \2", message)
        record.msg = redact(message, self._secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        fields = getattr(record, "vatel_fields", None)
        if isinstance(fields, dict):
            record.vatel_fields = {k: redact(v, self._secrets) for k, v in fields.items()}
        return True


# --------------------------------------------------------------------------- journald


def journal_priority(levelno: int) -> int:
    """syslog priority of a logging level (debug 7, info 6, warning 4, error 3, critical 2)."""
    if levelno <= logging.DEBUG:
        return 7
    if levelno <= logging.INFO:
        return 6
    if levelno <= logging.WARNING:
        return 4
    if levelno <= logging.ERROR:
        return 3
    return 2


def journal_fields(record: logging.LogRecord, message: str) -> dict[str, str]:
    """The journald fields of a (filtered) record; `message` is its formatted text. Pure, for tests."""
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(journal_priority(record.levelno)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "LOGGER": record.name,
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName or "",
        "THREAD_NAME": record.threadName or "",
    }
    for key, value in record_fields(record).items():
        fields[journal_field_name(key)] = value
    return fields


JournalSender = Callable[..., object]


def _systemd_sendv() -> JournalSender:
    from systemd.journal import sendv  # imported on use: only needed under journald

    sender: JournalSender = sendv
    return sender


class JournalHandler(logging.Handler):
    """Sends records to journald natively (sd_journal_sendv) with the fields of `journal_fields`."""

    def __init__(self, sender: JournalSender | None = None) -> None:
        super().__init__()
        self._send = sender if sender is not None else _systemd_sendv()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = journal_fields(record, self.format(record))
            self._send(*(f"{name}={value}" for name, value in fields.items()))
        except (OSError, ValueError, TypeError, UnicodeError):
            self.handleError(record)


# --------------------------------------------------------------------------- stderr


def format_fields(fields: Mapping[str, str]) -> str:
    """' [state=listening session=abc]' for stderr lines, '' without fields."""
    if not fields:
        return ""
    parts = [f"{LOG_FIELDS[k][1] if k in LOG_FIELDS else k}={v}" for k, v in fields.items()]
    return " [" + " ".join(parts) + "]"


class StderrFormatter(logging.Formatter):
    """`2025-01-31 12:00:00.123 INFO    vatel_edge.daemon: message [session=abc turn=t1]` (+ traceback).

    With `syslog_prefix` (under systemd without systemd-python), lines start with `<priority>` instead of a
    timestamp so journald still files them at the right priority.
    """

    def __init__(self, *, syslog_prefix: bool = False) -> None:
        super().__init__()
        self._syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        suffix = format_fields(record_fields(record))
        if self._syslog_prefix:
            head = f"<{journal_priority(record.levelno)}>{record.name}: "
        else:
            ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            head = f"{ts}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        text = head + record.getMessage() + suffix
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        return text


# --------------------------------------------------------------------------- set-up


def journal_stream_matches(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when JOURNAL_STREAM names this stream's device:inode, i.e. systemd connected it to journald."""
    value = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def under_journald(stream: TextIO = sys.stderr, environ: Mapping[str, str] | None = None) -> bool:
    """Should we log to journald? Yes when systemd connected our stderr to the journal (JOURNAL_STREAM),
    or when the journal socket exists and stderr is not a terminal (a terminal gets readable lines)."""
    env = os.environ if environ is None else environ
    if journal_stream_matches(stream, env):
        return True
    if not _is_socket(JOURNAL_SOCKET):
        return False
    try:
        return not stream.isatty()
    except (ValueError, AttributeError):
        return True


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _remove_our_handlers(root: logging.Logger) -> None:
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
            handler.close()


def setup_logging(level: str, *, use_journal: bool | None = None, stream: TextIO = sys.stderr) -> logging.Handler:
    """Configure the root logger once for the daemon (idempotent): journald or stderr, context and redaction.

    `level` is a LogConfig level (debug, info, warning, error). `use_journal=None` detects journald.
    Returns the installed handler.
    """
    try:
        levelno = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}") from None
    root = logging.getLogger()
    _remove_our_handlers(root)
    journal = under_journald(stream) if use_journal is None else use_journal
    handler: logging.Handler
    fallback_reason = None
    if journal:
        try:
            handler = JournalHandler()
        except ImportError as exc:
            fallback_reason = f"systemd-python is not importable ({exc.__class__.__name__})"
            handler = logging.StreamHandler(stream)
            handler.setFormatter(StderrFormatter(syslog_prefix=True))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(StderrFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactionFilter())
    handler.set_name(_HANDLER_NAME)  # marks the handler setup_logging owns (replaced on the next call)
    root.addHandler(handler)
    root.setLevel(levelno)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if levelno <= logging.DEBUG else logging.WARNING)
    if fallback_reason:
        logging.getLogger(__name__).warning("logging to stderr instead of journald: %s", fallback_reason)
    return handler
