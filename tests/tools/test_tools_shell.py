"""Shell actions end to end through the registry, with real subprocesses (scripts written into tmp_path)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import (
    RecordingContext,
    alive,
    make_call,
    toml_str,
    tools_from_toml,
    wait_dead,
    wait_for_file,
    write_py_script,
    write_script,
)
from vatel_edge.gpio import FakeGpio
from vatel_edge.tools.registry import ToolRegistry

pytestmark = pytest.mark.timeout(60)


def registry_for(toml: str, env: dict[str, str], *, max_concurrency: int = 4) -> ToolRegistry:
    return ToolRegistry(tools_from_toml(toml), FakeGpio(), max_concurrency=max_concurrency, environ=env)


async def run_one(toml: str, env: dict[str, str], ctx: RecordingContext, name: str, **values: Any) -> str:
    async with registry_for(toml, env) as reg:
        return await reg.call(make_call(name, **values), ctx)


# ----------------------------------------------------------------------------- outputs


async def test_exit_zero_answers_trimmed_stdout(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """A tool that exits 0 answers its stdout without surrounding whitespace."""
    script = write_script(tmp_path / "hello.sh", 'printf "\\n  playing %s  \\n\\n" "$1"\n')
    toml = f'[tools.t]\naction = "shell"\nargv = [{toml_str(script)}, "{{station}}"]\nargs.station = {{}}\n'
    assert await run_one(toml, clean_env, ctx, "t", station="bbc") == "playing bbc"


async def test_exit_zero_without_output_answers_success(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """An empty stdout answers "success", as the reference client does."""
    toml = '[tools.t]\naction = "shell"\nargv = ["/bin/true"]\n'
    assert await run_one(toml, clean_env, ctx, "t") == "success"


async def test_nonzero_exit_answers_exit_code_and_stderr_tail(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """A failing tool answers "error: exit N: <stderr>" (stdout is not the error text)."""
    script = write_script(tmp_path / "fail.sh", "echo some output\necho 'radio: no such station' >&2\nexit 3\n")
    toml = f'[tools.t]\naction = "shell"\nargv = [{toml_str(script)}]\n'
    assert await run_one(toml, clean_env, ctx, "t") == "error: exit 3: radio: no such station"


async def test_program_that_cannot_be_started_answers_an_error(
    clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """A missing program is an error output naming the program, not an exception."""
    toml = '[tools.t]\naction = "shell"\nargv = ["/nonexistent/radio", "--x"]\n'
    out = await run_one(toml, clean_env, ctx, "t")
    assert out == "error: cannot run /nonexistent/radio (cwd /): No such file or directory"


async def test_minimal_environment_and_arguments_as_json_on_stdin(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """The process sees PATH, LANG, VATEL_* and env_pass names only; stdin carries the validated argument map."""
    script = write_py_script(
        tmp_path / "env.py",
        """
        import json, os, sys
        print(json.dumps({"env": dict(os.environ), "stdin": sys.stdin.read(), "cwd": os.getcwd()}))
        """,
    )
    env = {**clean_env, "SECRET_TOKEN": "s3cr3t", "PASS_ME": "yes", "HOME": "/root"}
    toml = f"""
    [tools.t]
    action = "shell"
    argv = [{toml_str(script)}]
    env_pass = ["PASS_ME", "NOT_SET"]
    max_output_bytes = 65536
    args.level = {{type = "integer", required = false, default = 5}}
    args.on = {{type = "boolean"}}
    """
    out = json.loads(await run_one(toml, env, ctx, "t", on="true", extra="ignored"))
    seen_env = {k: v for k, v in out["env"].items() if k not in ("PWD", "SHLVL", "_", "LC_CTYPE")}
    assert seen_env == {
        "PATH": clean_env["PATH"],
        "LANG": "C.UTF-8",
        "VATEL_TOOL_NAME": "t",
        "VATEL_TOOL_CALL_ID": "call-1",
        "VATEL_SESSION_ID": "sess-1",
        "PASS_ME": "yes",
    }
    assert json.loads(out["stdin"]) == {"level": 5, "on": True}
    assert out["cwd"] == "/"


# ----------------------------------------------------------------------------- injection corpus

CORPUS = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "' \" '\"",
    "line1\nline2\r\n",
    "../../etc/passwd",
    "--help",
    "-rf",
    "*",
    "$HOME ${PATH} %s {station}",
    "a | b && c > /tmp/x",
    "emoji 🎵 ünïcödé 中文",
    "",
    " leading and trailing ",
    "x" * 100_000,
]


@pytest.mark.parametrize("value", CORPUS, ids=[f"v{i}" for i in range(len(CORPUS))])
async def test_hostile_values_reach_argv_literally(
    value: str, tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """Shell metacharacters, quotes, newlines, traversal, leading dashes and huge values are plain argv text."""
    record = tmp_path / "argv.json"
    script = write_py_script(
        tmp_path / "echo_argv.py",
        """
        import json, sys
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(sys.argv[2:], f)
        """,
    )
    toml = f"""
    [tools.t]
    action = "shell"
    argv = [{toml_str(script)}, {toml_str(record)}, "{{v}}", "--opt={{v}}", "fixed"]
    args.v = {{}}
    """
    out = await run_one(toml, clean_env, ctx, "t", v=value)
    assert out == "success"
    assert json.loads(record.read_text(encoding="utf-8")) == [value, f"--opt={value}", "fixed"]


async def test_nul_in_a_value_is_rejected_without_running_anything(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """A NUL character cannot be put into argv: the call answers an error and the program never runs."""
    marker = tmp_path / "ran"
    script = write_script(tmp_path / "t.sh", f"touch {marker}\n")
    toml = f'[tools.t]\naction = "shell"\nargv = [{toml_str(script)}, "{{v}}"]\nargs.v = {{}}\n'
    out = await run_one(toml, clean_env, ctx, "t", v="a\x00b")
    assert out == "error: argument v: contains a NUL character"
    assert not marker.exists()


async def test_invalid_arguments_answer_an_error_without_running_anything(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """Missing, mistyped, out-of-range or non-matching arguments never start the process."""
    marker = tmp_path / "ran"
    script = write_script(tmp_path / "t.sh", f"touch {marker}\n")
    toml = f"""
    [tools.t]
    action = "shell"
    argv = [{toml_str(script)}, "{{station}}", "{{level}}"]
    args.station = {{type = "enum", choices = ["bbc", "npr"]}}
    args.level = {{type = "integer", min = 0, max = 10}}
    """
    async with registry_for(toml, clean_env) as reg:
        outs = [
            await reg.call(make_call("t", level=3), ctx),
            await reg.call(make_call("t", station="cnn", level=3), ctx),
            await reg.call(make_call("t", station="bbc", level="loud"), ctx),
            await reg.call(make_call("t", station="bbc", level=11), ctx),
        ]
    assert outs == [
        "error: missing required argument station",
        "error: argument station: expected one of bbc, npr; got 'cnn'",
        "error: argument level: expected an integer, got 'loud'",
        "error: argument level: 11 is above the maximum 10",
    ]
    assert not marker.exists()


# ----------------------------------------------------------------------------- caps and timeouts


async def test_stdout_flood_is_read_to_the_end_and_capped(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """20 MB on stdout neither blocks the tool nor grows memory: the answer keeps max_output_bytes of it."""
    script = write_script(tmp_path / "flood.sh", "head -c 20000000 /dev/zero | tr '\\0' 'y'\necho\n")
    toml = f'[tools.t]\naction = "shell"\nargv = [{toml_str(script)}]\nmax_output_bytes = 4096\ntimeout_s = 50\n'
    out = await run_one(toml, clean_env, ctx, "t")
    assert out == "y" * 4096 + " [output truncated]"


async def test_stderr_flood_keeps_the_tail(tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext) -> None:
    """A failing tool that floods stderr answers the last max_output_bytes of it."""
    script = write_script(
        tmp_path / "flood.sh", "head -c 5000000 /dev/zero | tr '\\0' 'e' >&2\necho ' LAST WORDS' >&2\nexit 2\n"
    )
    toml = f'[tools.t]\naction = "shell"\nargv = [{toml_str(script)}]\nmax_output_bytes = 1024\ntimeout_s = 50\n'
    out = await run_one(toml, clean_env, ctx, "t")
    assert out.startswith("error: exit 2: eee")
    assert out.endswith("e LAST WORDS")
    assert len(out) <= len("error: exit 2: ") + 1024


async def test_endless_flood_times_out_and_is_killed(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """`yes` forever: the call answers a timeout and the process is gone afterwards."""
    pidfile = tmp_path / "pid"
    script = write_script(tmp_path / "yes.sh", f"echo $$ > {pidfile}\nexec yes\n")
    toml = f'[tools.t]\naction = "shell"\nargv = [{toml_str(script)}]\ntimeout_s = 2\nkill_grace_s = 0.5\n'
    out = await run_one(toml, clean_env, ctx, "t")
    assert out == "error: timed out after 2 s"
    pid = int((await wait_for_file(pidfile))[0])
    assert await wait_dead([pid]) == []


async def test_timeout_kills_a_group_that_ignores_sigterm(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """A script and its child both ignoring SIGTERM get SIGKILL after the grace period; nothing is left running."""
    pidfile = tmp_path / "pids"
    script = write_script(
        tmp_path / "stubborn.sh", f"trap '' TERM\nsleep 60 &\necho \"$$ $!\" > {pidfile}\nwait\nsleep 60\n"
    )
    toml = f'[tools.t]\naction = "shell"\nargv = [{toml_str(script)}]\ntimeout_s = 3\nkill_grace_s = 0.5\n'
    async with registry_for(toml, clean_env) as reg:
        task = asyncio.create_task(reg.call(make_call("t"), ctx))
        pids = [int(p) for p in (await wait_for_file(pidfile))[0].split()]
        assert all(alive(p) for p in pids)
        assert await task == "error: timed out after 3 s"
    assert await wait_dead(pids) == []


async def test_timeout_kills_children_that_outlive_the_main_process(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """The main process dies on SIGTERM, its child ignores it: the group SIGKILL still reaches the child."""
    pidfile = tmp_path / "pids"
    script = write_script(
        tmp_path / "orphan.sh", f"(trap '' TERM; sleep 60) &\necho \"$$ $!\" > {pidfile}\nwait\n"
    )
    toml = f'[tools.t]\naction = "shell"\nargv = [{toml_str(script)}]\ntimeout_s = 3\nkill_grace_s = 0.5\n'
    async with registry_for(toml, clean_env) as reg:
        task = asyncio.create_task(reg.call(make_call("t"), ctx))
        pids = [int(p) for p in (await wait_for_file(pidfile))[0].split()]
        assert await task == "error: timed out after 3 s"
    assert await wait_dead(pids) == []


# ----------------------------------------------------------------------------- cancel, drain, shutdown, limits


def sleeper_toml(tmp_path: Path, name: str, *, cancel: bool, timeout_s: float = 30) -> tuple[str, Path]:
    """A tool that writes its pid and its child's pid, then sleeps until killed."""
    pidfile = tmp_path / f"{name}.pids"
    script = write_script(tmp_path / f"{name}.sh", f"sleep 60 &\necho \"$$ $!\" > {pidfile}\nwait\n")
    toml = (
        f'[tools.{name}]\naction = "shell"\nargv = [{toml_str(script)}]\ntimeout_s = {timeout_s}\n'
        f"cancel_on_interruption = {'true' if cancel else 'false'}\nkill_grace_s = 1\n"
    )
    return toml, pidfile


def gated_toml(tmp_path: Path, name: str, gate: Path, started: Path) -> str:
    """A tool that logs its start, waits for `gate` to exist, then answers "done"."""
    script = write_script(
        tmp_path / f"{name}.sh",
        f'echo "start $$" >> {started}\nwhile [ ! -e {gate} ]; do sleep 0.02; done\necho done\n',
    )
    return f'[tools.{name}]\naction = "shell"\nargv = [{toml_str(script)}]\ntimeout_s = 30\n'


async def test_barge_in_cancels_interruptible_actions_only(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """cancel_interruptible stops tools with cancel_on_interruption (their group is killed) and leaves others."""
    toml_a, pids_a = sleeper_toml(tmp_path, "music", cancel=True)
    gate, started = tmp_path / "gate", tmp_path / "started"
    toml = toml_a + gated_toml(tmp_path, "lights", gate, started)
    async with registry_for(toml, clean_env) as reg:
        music = asyncio.create_task(reg.call(make_call("music", "c1"), ctx))
        lights = asyncio.create_task(reg.call(make_call("lights", "c2"), ctx))
        pids = [int(p) for p in (await wait_for_file(pids_a))[0].split()]
        await wait_for_file(started)
        assert reg.cancel_interruptible() == 1
        assert await music == "error: cancelled (user interrupted)"
        assert await wait_dead(pids) == []
        assert not lights.done()
        gate.touch()
        assert await lights == "done"
        assert reg.cancel_interruptible() == 0


async def test_drain_lets_actions_finish_then_cancels_the_rest(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """At session end, a finishing action answers normally; one still running after the timeout is cancelled."""
    toml_a, pids_a = sleeper_toml(tmp_path, "slow", cancel=False)
    gate, started = tmp_path / "gate", tmp_path / "started"
    toml = toml_a + gated_toml(tmp_path, "quick", gate, started)
    async with registry_for(toml, clean_env) as reg:
        slow = asyncio.create_task(reg.call(make_call("slow", "c1"), ctx))
        quick = asyncio.create_task(reg.call(make_call("quick", "c2"), ctx))
        pids = [int(p) for p in (await wait_for_file(pids_a))[0].split()]
        await wait_for_file(started)
        gate.touch()
        await reg.drain(timeout=3.0)
        assert await quick == "done"
        assert await slow == "error: cancelled (session ended)"
        assert reg.running == 0
        assert await wait_dead(pids) == []


async def test_registry_exit_kills_running_actions(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """Leaving the registry cancels running actions, kills their process groups and answers their callers."""
    toml, pidfile = sleeper_toml(tmp_path, "long", cancel=False)
    async with registry_for(toml, clean_env) as reg:
        task = asyncio.create_task(reg.call(make_call("long"), ctx))
        pids = [int(p) for p in (await wait_for_file(pidfile))[0].split()]
    assert await task == "error: cancelled (shutting down)"
    assert await wait_dead(pids) == []


async def test_cancelled_caller_leaves_the_action_owned_by_the_registry(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """Cancelling the caller does not orphan the action: it keeps running until the registry stops it."""
    toml, pidfile = sleeper_toml(tmp_path, "long", cancel=False)
    async with registry_for(toml, clean_env) as reg:
        task = asyncio.create_task(reg.call(make_call("long"), ctx))
        pids = [int(p) for p in (await wait_for_file(pidfile))[0].split()]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reg.running == 1
        assert all(alive(p) for p in pids)
    assert reg.running == 0
    assert await wait_dead(pids) == []


async def test_concurrency_limit_holds_extra_calls_back(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """With max_concurrency = 2, a third call only starts when a slot frees; all three answer."""
    gate, started = tmp_path / "gate", tmp_path / "started"
    toml = gated_toml(tmp_path, "t", gate, started)
    async with registry_for(toml, clean_env, max_concurrency=2) as reg:
        tasks = [asyncio.create_task(reg.call(make_call("t", f"c{i}"), ctx)) for i in range(3)]
        await wait_for_file(started, lines=2)
        await asyncio.sleep(0.5)  # a broken limit would start the third one meanwhile
        assert len(started.read_text().splitlines()) == 2
        assert reg.running == 3
        gate.touch()
        assert await asyncio.gather(*tasks) == ["done", "done", "done"]
    assert len(started.read_text().splitlines()) == 3


async def test_waiting_for_a_slot_counts_against_the_time_limit(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """A call that cannot get a slot within its timeout answers an error saying so."""
    toml_a, pids_a = sleeper_toml(tmp_path, "hog", cancel=False)
    toml = toml_a + '[tools.quick]\naction = "shell"\nargv = ["/bin/true"]\ntimeout_s = 0.5\n'
    async with registry_for(toml, clean_env, max_concurrency=1) as reg:
        hog = asyncio.create_task(reg.call(make_call("hog", "c1"), ctx))
        await wait_for_file(pids_a)
        out = await reg.call(make_call("quick", "c2"), ctx)
        assert out == "error: timed out after 0.5 s waiting for a free slot (1 tool actions running)"
        assert not hog.done()
    assert await hog == "error: cancelled (shutting down)"


async def test_calls_after_exit_answer_an_error(
    tmp_path: Path, clean_env: dict[str, str], ctx: RecordingContext
) -> None:
    """A call to a closed registry is answered (with an error), never raised."""
    reg = registry_for('[tools.t]\naction = "shell"\nargv = ["/bin/true"]\n', clean_env)
    async with reg:
        assert await reg.call(make_call("t"), ctx) == "success"
    assert await reg.call(make_call("t"), ctx) == "error: tools are not available right now"
    await reg.aclose()  # idempotent
