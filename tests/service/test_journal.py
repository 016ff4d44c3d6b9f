"""journal.py: journald field building, stderr format, log context, secret redaction, idempotent set-up."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
from collections.abc import Iterator

import pytest

from vatel_edge import journal
from vatel_edge.journal import (
    SECRETS,
    JournalHandler,
    current_log_context,
    journal_fields,
    journal_stream_matches,
    log_context,
    register_secret,
    set_log_context,
    setup_logging,
)

API_KEY = "sk-org-3f9a8b7c6d5e4f3a2b1c"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl"


@pytest.fixture(autouse=True)
def isolated_logging() -> Iterator[None]:
    """Restore the root logger, noisy loggers, secrets and log context after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in journal.NOISY_LOGGERS}
    token = journal._context.set(journal._context.get())
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)
    SECRETS.clear()
    journal._context.reset(token)


def stderr_logging(level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    setup_logging(level, use_journal=False, stream=stream)
    return stream


def make_record(msg: str = "hello", level: int = logging.INFO, **attrs: object) -> logging.LogRecord:
    record = logging.LogRecord("vatel_edge.daemon", level, "/x/daemon.py", 42, msg, None, None, func="run")
    for k, v in attrs.items():
        setattr(record, k, v)
    return record


# --------------------------------------------------------------------------- journald fields (pure)


def test_journal_fields_carry_identifier_priority_code_location_and_vatel_fields() -> None:
    """A record becomes MESSAGE, PRIORITY, SYSLOG_IDENTIFIER=vatel-edge, CODE_* and VATEL_* fields."""
    with log_context(session_id="sess-1", state="in_session"):
        record = make_record(level=logging.WARNING, vatel={"turn_id": "t1", "event": "response.done"})
        fields = journal_fields(record, "hello")
    assert fields["MESSAGE"] == "hello"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "vatel-edge"
    assert fields["LOGGER"] == "vatel_edge.daemon"
    assert (fields["CODE_FILE"], fields["CODE_LINE"], fields["CODE_FUNC"]) == ("/x/daemon.py", "42", "run")
    assert fields["VATEL_SESSION_ID"] == "sess-1"
    assert fields["VATEL_STATE"] == "in_session"
    assert fields["VATEL_TURN_ID"] == "t1"
    assert fields["VATEL_EVENT"] == "response.done"
    assert "VATEL_TOOL" not in fields


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.DEBUG, "7"), (logging.INFO, "6"), (logging.WARNING, "4"), (logging.ERROR, "3"), (logging.CRITICAL, "2")],
)
def test_journal_priorities_follow_syslog(level: int, priority: str) -> None:
    """Python levels map to syslog priorities (debug 7 ... critical 2)."""
    assert journal_fields(make_record(level=level), "m")["PRIORITY"] == priority


def test_tool_fields_and_extra_keys_become_vatel_fields() -> None:
    """tool/tool_call_id map to VATEL_TOOL/VATEL_TOOL_CALL_ID; other lower-case keys to VATEL_<KEY>; bad keys drop."""
    record = make_record(vatel={"tool": "lights", "tool_call_id": "c9", "outcome": "ok", "Bad-Key": "x"})
    fields = journal_fields(record, "m")
    assert fields["VATEL_TOOL"] == "lights"
    assert fields["VATEL_TOOL_CALL_ID"] == "c9"
    assert fields["VATEL_OUTCOME"] == "ok"
    assert not any("BAD" in k for k in fields)


def test_extra_overrides_context_and_none_removes_a_field() -> None:
    """An explicit extra wins over the context; an extra value None removes the context's field."""
    with log_context(session_id="s1", state="listening"):
        fields = journal_fields(make_record(vatel={"state": "connecting", "session_id": None}), "m")
    assert fields["VATEL_STATE"] == "connecting"
    assert "VATEL_SESSION_ID" not in fields


def test_journal_handler_sends_fields_as_assignments() -> None:
    """JournalHandler passes every field as NAME=value to its sender, after redaction."""
    sent: list[tuple[str, ...]] = []
    handler = JournalHandler(sender=lambda *a: sent.append(a))
    handler.addFilter(journal.ContextFilter())
    handler.addFilter(journal.RedactionFilter())
    register_secret(API_KEY)
    with log_context(session_id="s-42"):
        handler.handle(make_record("key is %s", args=(API_KEY,)))
    assert len(sent) == 1
    assignments = sent[0]
    assert "VATEL_SESSION_ID=s-42" in assignments
    assert "SYSLOG_IDENTIFIER=vatel-edge" in assignments
    assert "MESSAGE=key is <redacted>" in assignments
    assert not any(API_KEY in a for a in assignments)


def test_real_journal_handler_runs_without_error(capsys: pytest.CaptureFixture[str]) -> None:
    """setup_logging(use_journal=True) logs through systemd-python's sendv without a logging error."""
    handler = setup_logging("info", use_journal=True)
    assert isinstance(handler, JournalHandler)
    log = logging.getLogger("vatel_edge.test")
    with log_context(session_id="s1"):
        log.info("to the journal")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("with a traceback")
    assert "Logging error" not in capsys.readouterr().err


# --------------------------------------------------------------------------- stderr


def test_stderr_line_has_timestamp_level_logger_message_and_fields() -> None:
    """Elsewhere lines read 'YYYY-MM-DD HH:MM:SS.mmm LEVEL logger: message [session=.. turn=..]'."""
    stream = stderr_logging("info")
    with log_context(session_id="abc", turn_id="t1"):
        logging.getLogger("vatel_edge.session").info("opened %d", 3)
    line = stream.getvalue().strip()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO +vatel_edge\.session: opened 3 \[session=abc turn=t1\]", line
    ), line


def test_stderr_line_without_fields_has_no_brackets() -> None:
    """A record without conversation fields ends with its message."""
    stream = stderr_logging("info")
    logging.getLogger("vatel_edge.x").warning("plain")
    assert stream.getvalue().rstrip().endswith("WARNING vatel_edge.x: plain")


def test_level_filters_records() -> None:
    """At level warning, info records are dropped."""
    stream = stderr_logging("warning")
    logging.getLogger("vatel_edge.x").info("hidden")
    logging.getLogger("vatel_edge.x").error("shown")
    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()


def test_setup_is_idempotent() -> None:
    """Calling setup_logging twice leaves exactly one vatel-edge handler, and a line is written once."""
    stderr_logging("info")
    stream = stderr_logging("info")
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "vatel-edge"]
    assert len(ours) == 1
    logging.getLogger("vatel_edge.x").info("once")
    assert stream.getvalue().count("once") == 1


def test_unknown_level_is_refused() -> None:
    """An unknown level raises ValueError naming the choices."""
    with pytest.raises(ValueError, match="debug"):
        setup_logging("verbose", use_journal=False, stream=io.StringIO())


def test_noisy_loggers_quiet_unless_debug() -> None:
    """websockets/httpx/httpcore log at WARNING at level info, DEBUG at level debug."""
    stderr_logging("info")
    assert all(logging.getLogger(n).level == logging.WARNING for n in journal.NOISY_LOGGERS)
    stderr_logging("debug")
    assert all(logging.getLogger(n).level == logging.DEBUG for n in journal.NOISY_LOGGERS)


# --------------------------------------------------------------------------- log context


def test_log_context_nests_and_restores() -> None:
    """Nested contexts add fields; each exit restores the previous fields."""
    with log_context(session_id="s1", state="in_session"):
        with log_context(turn_id="t1", state="speaking"):
            assert current_log_context() == {"session_id": "s1", "state": "speaking", "turn_id": "t1"}
        assert current_log_context() == {"session_id": "s1", "state": "in_session"}
    assert current_log_context() == {}


def test_set_log_context_changes_and_removes_fields() -> None:
    """set_log_context sets fields in place; None removes one."""
    set_log_context(state="listening", session_id="s1")
    set_log_context(session_id=None)
    assert current_log_context() == {"state": "listening"}


async def test_task_created_in_context_keeps_its_fields() -> None:
    """A task started inside log_context logs with the session id even after the block ended."""
    stream = stderr_logging("info")
    go = asyncio.Event()

    async def worker() -> None:
        await go.wait()
        logging.getLogger("vatel_edge.tools").info("tool finished")

    with log_context(session_id="s-task"):
        task = asyncio.create_task(worker())
    go.set()
    await asyncio.wait_for(task, 5)
    assert "tool finished [session=s-task]" in stream.getvalue()


# --------------------------------------------------------------------------- redaction


def test_registered_secret_in_message_is_redacted() -> None:
    """A registered key written into the message text never reaches the output."""
    stream = stderr_logging("info")
    register_secret(API_KEY)
    logging.getLogger("vatel_edge.x").info(f"key={API_KEY}!")
    out = stream.getvalue()
    assert API_KEY not in out
    assert "<redacted>" in out


def test_registered_secret_in_args_is_redacted() -> None:
    """A registered token passed as a %-argument is redacted after formatting."""
    stream = stderr_logging("info")
    register_secret(TOKEN)
    logging.getLogger("vatel_edge.x").info("got %s and %r", TOKEN, {"t": TOKEN})
    assert TOKEN not in stream.getvalue()
    assert stream.getvalue().count("<redacted>") == 2


def test_registered_secret_in_exception_text_is_redacted() -> None:
    """A secret inside an exception message and traceback is redacted."""
    stream = stderr_logging("info")
    register_secret(API_KEY)
    try:
        raise RuntimeError(f"server rejected {API_KEY}")
    except RuntimeError:
        logging.getLogger("vatel_edge.x").exception("request failed")
    out = stream.getvalue()
    assert "RuntimeError: server rejected <redacted>" in out
    assert API_KEY not in out


def test_secret_in_context_field_is_redacted() -> None:
    """Even a field value holding a secret is redacted."""
    stream = stderr_logging("info")
    register_secret(TOKEN)
    logging.getLogger("vatel_edge.x").info("m", extra={"vatel": {"event": TOKEN}})
    assert TOKEN not in stream.getvalue()


def test_token_query_parameter_is_redacted_without_registration() -> None:
    """?token=... in a URL is redacted by pattern, even for a value never registered (httpx at debug)."""
    stream = stderr_logging("debug")
    logging.getLogger("httpx").debug("HTTP Request: GET wss://api.vatel.ai/v1/connection?token=abc.def.ghi&x=1")
    out = stream.getvalue()
    assert "abc.def.ghi" not in out
    assert "?token=<redacted>&x=1" in out


def test_bearer_and_authorization_header_are_redacted() -> None:
    """Bearer credentials and Authorization/X-Api-Key header values are redacted (websockets at debug)."""
    stream = stderr_logging("debug")
    ws = logging.getLogger("websockets.client")
    ws.debug("> %s: %s", "Authorization", "Bearer s3cr3t-value")
    ws.debug("> X-Api-Key: plainkey123")
    logging.getLogger("httpx").debug("headers %s", {"authorization": "Basic dXNlcjpwYXNz"})
    out = stream.getvalue()
    for secret in ("s3cr3t-value", "plainkey123", "dXNlcjpwYXNz"):
        assert secret not in out
    assert "Authorization: Bearer <redacted>" in out


def test_websocket_frame_payloads_are_elided() -> None:
    """A websockets frame log line keeps opcode and length but not the payload (audio)."""
    stream = stderr_logging("debug")
    logging.getLogger("websockets.client").debug(
        "> %s", "TEXT '{\"type\":\"input_audio\",\"audio\":\"AAAABBBBCCCC...\"}' [1234 bytes]"
    )
    out = stream.getvalue()
    assert "AAAABBBB" not in out
    assert "> TEXT <payload elided> [1234 bytes]" in out


def test_bad_log_arguments_do_not_leak() -> None:
    """A format/argument mismatch logs the template only, never the arguments, and raises nothing."""
    stream = io.StringIO()
    handler = setup_logging("info", use_journal=False, stream=stream)
    # Handled directly: pytest's own capture handler on the root logger would raise on the mismatch first.
    handler.handle(make_record("one %s %s", args=("unregistered-secret-value",)))
    out = stream.getvalue()
    assert "unregistered-secret-value" not in out
    assert "one %s %s" in out


def test_secret_registry_is_bounded_and_ignores_short_values() -> None:
    """The registry keeps at most MAX_SECRETS values (oldest dropped) and ignores very short ones."""
    registry = journal.SecretRegistry(max_secrets=3)
    registry.add("abc")
    assert len(registry) == 0
    for i in range(5):
        registry.add(f"secret-value-{i}")
    assert len(registry) == 3
    assert registry.redact("secret-value-0 secret-value-4") == "secret-value-0 <redacted>"


# --------------------------------------------------------------------------- detection


def test_journal_stream_detection_compares_device_and_inode(tmp_path: os.PathLike[str]) -> None:
    """JOURNAL_STREAM selects journald only when it names our stderr's device:inode."""
    with open(os.path.join(tmp_path, "err"), "w") as stream:
        st = os.fstat(stream.fileno())
        assert journal_stream_matches(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journal_stream_matches(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not journal_stream_matches(stream, {})
