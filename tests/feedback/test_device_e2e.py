"""The device feedback in the real daemon on the real-time test devices against the simulator, GPIO on the
recording fake: LED lines through a whole session and an offline period, the state hook through a session
and hanging, the mute switch (nothing sent while muted, the hardware wins, read before READY), the volume and
talk buttons, and the volume kept across a restart."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import daemon_config
from tests.support.daemon import hold_open, quick_end
from tests.support.events import Events
from tests.support.notify import NotifyListener
from tests.support.pulse import PulseServer
from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.control import control_request
from vatel_edge.daemon import Daemon, running
from vatel_edge.devkit.fixtures import shipped_speech, steady_tone
from vatel_edge.devkit.simulator import SimSession, Simulator
from vatel_edge.gpio import FakeGpio
from vatel_edge.state import State

pytestmark = pytest.mark.timeout(120)
FMT = VATEL_FORMAT
CHIP = "/dev/gpiochip0"
LEDS = {"listening": "5:on", "connecting": "6:blink:200", "in_session": "12:on", "agent_speaking": "13:on",
        "muted": "19:on", "offline": "26:blink:200"}
LED_NAMES = {5: "listening", 6: "connecting", 12: "in_session", 13: "agent_speaking", 19: "muted", 26: "offline"}


def shown(gpio: FakeGpio) -> list[str]:
    """The LED states the recorded line changes went through, in order: after each set, the one LED lit (moments
    with none lit, a blink's dark half or between two sets of one change, are skipped), repeats collapsed."""
    lit: set[int] = set()
    out: list[str] = []
    for r in gpio.records:
        if r.op != "set" or r.offset not in LED_NAMES:
            continue
        (lit.add if r.value else lit.discard)(r.offset)
        if len(lit) == 1:
            name = LED_NAMES[next(iter(lit))]
            if not out or out[-1] != name:
                out.append(name)
    return out


def fake(daemon: Daemon) -> FakeGpio:
    assert isinstance(daemon.gpio, FakeGpio)
    return daemon.gpio


async def until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def speak_then_cut(s: SimSession) -> None:
    """A session with an agent turn that the server interrupts (barge-in), then the end."""
    await s.wait_audio(200)
    turn = asyncio.create_task(s.send_turn(f"t-{s.id}", steady_tone(3000), realtime=True))  # ids never repeat
    await s.wait_seconds(1.0)
    turn.cancel()
    await s.interrupt()
    await s.wait_seconds(0.5)
    await s.end_session()


async def test_led_lines_follow_a_whole_session_and_an_offline_period(pulse: PulseServer, tmp_path: Path) -> None:
    """wake, connect, agent speaking, barge-in, end; then a refused connection (offline) and a good session."""
    async with Simulator(script=speak_then_cut) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual"}, feedback={"leds": LEDS})
        events = Events()
        daemon = Daemon(cfg, api_key=sim.api_key, on_event=events)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert daemon.trigger("test")
            await (await sim.next_session(timeout=20)).wait_closed(timeout=30)
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert "barge_in" in events.kinds()
            sim.faults.reject_handshake(503)
            assert daemon.trigger("test")
            await until(lambda: shown(fake(daemon))[-1:] == ["offline"])
            await asyncio.sleep(0.5)
            assert shown(fake(daemon))[-1] == "offline", "offline did not last until the next session"
            assert daemon.trigger("test")
            await (await sim.next_session(timeout=20)).wait_closed(timeout=30)
            await daemon.wait_state(State.LISTENING, timeout=20)
            await asyncio.sleep(0.2)
            gpio = fake(daemon)
            session = ["connecting", "in_session", "agent_speaking", "in_session", "listening"]
            assert shown(gpio) == ["listening", *session, "connecting", "offline", *session], " ".join(shown(gpio))
        assert gpio.requested() == set() and not any(gpio.level(CHIP, n) for n in LED_NAMES)  # all off after stop


async def test_the_state_hook_sees_a_session_in_order_and_a_hanging_hook_changes_nothing(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """A recording hook: a consistent chain off -> listening -> ... -> listening -> off. A hanging hook: killed
    at its timeout, while the session runs as usual and the daemon stops in time."""
    calls = tmp_path / "calls.txt"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\necho "$VATEL_OLD_STATE $1" >> {calls}\n')
    script.chmod(0o755)
    async with Simulator(script=speak_then_cut) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual"},
                            feedback={"hooks": {"command": [str(script), "{new}"]}})
        daemon = Daemon(cfg, api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert daemon.trigger("test")
            await (await sim.next_session(timeout=20)).wait_closed(timeout=30)
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert daemon.runtime is not None and daemon.runtime.feedback is not None
            hook = daemon.runtime.feedback.hook
            await until(lambda: not hook.busy)
    rows = [line.split() for line in calls.read_text().splitlines()]
    assert rows[0] == ["off", "listening"] and rows[-1] == ["listening", "off"]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(rows)), f"broken chain {rows}"
    seen = [new for _, new in rows]
    expected = iter(["listening", "connecting", "in_session", "agent_speaking", "in_session", "listening", "off"])
    assert all(state in expected for state in seen), f"out of order: {seen}"  # a subsequence: some may be skipped
    assert "agent_speaking" in seen

    async with Simulator(script=quick_end) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual"},
                            feedback={"hooks": {"command": ["sleep", "30"], "timeout_s": 0.5}})
        daemon = Daemon(cfg, api_key=sim.api_key)
        async with running(daemon, stop_timeout=5.0):
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert daemon.runtime is not None and daemon.runtime.feedback is not None
            hook = daemon.runtime.feedback.hook
            assert hook.busy
            assert daemon.trigger("test")
            session = await sim.next_session(timeout=20)
            await session.wait_closed(timeout=20)
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert session.audio_ms() >= 100
            await until(lambda: hook.timeouts >= 1 and not hook.busy)  # killed; the states it missed ended where it was
            assert daemon.state is State.LISTENING


async def test_the_mute_switch_wins_and_nothing_is_sent_while_it_is_at_mute(
    pulse: PulseServer, tmp_path: Path
) -> None:
    """Switch to mute: muted by "switch", the mute LED, `unmute` refused, speech and trigger open nothing. Switch
    back: unmuted, a session opens again."""
    speech = shipped_speech("user_request.wav")
    async with Simulator(script=hold_open) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, feedback={"leds": LEDS},
                            privacy={"mute_switch_line": "22", "mute_switch_active_low": False})
        sock = cfg.control.socket_path
        daemon = Daemon(cfg, api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert not daemon.muted
            gpio = fake(daemon)
            gpio.set_level(CHIP, 22, True)
            await until(lambda: daemon.muted, timeout=2)
            assert (await control_request(sock, {"cmd": "status"}))["status"]["mute_source"] == "switch"
            await until(lambda: shown(gpio)[-1:] == ["muted"], timeout=2)
            assert await control_request(sock, {"cmd": "unmute"}) == {"ok": False, "muted": True, "source": "switch"}
            feed = pulse.feed_mic(speech + bytes(FMT.nbytes(300)) + speech + bytes(FMT.nbytes(500)))
            assert (await control_request(sock, {"cmd": "trigger"}))["started"] is False
            await asyncio.to_thread(feed.wait, 20)
            await asyncio.sleep(0.5)
            assert sim.sessions == [] and daemon.counters.wakes == 0
            gpio.set_level(CHIP, 22, False)
            await until(lambda: not daemon.muted, timeout=2)
            pulse.feed_mic(bytes(FMT.nbytes(300)) + speech + bytes(FMT.nbytes(800)))
            assert await sim.next_session(timeout=20) is not None
    assert shown(gpio)[:3] == ["listening", "muted", "listening"]


async def test_a_daemon_started_with_the_switch_at_mute_never_listens_unmuted(
    pulse: PulseServer, tmp_path: Path, notify: NotifyListener
) -> None:
    """The switch is read before READY: the first STATUS says muted, no LED ever showed listening, speech wakes
    nothing. (The fake's lines read low: active-low, that is the mute position.)"""
    async with Simulator(script=hold_open) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, feedback={"leds": LEDS},
                            privacy={"mute_switch_line": "22"})
        daemon = Daemon(cfg, api_key=sim.api_key, notifier=notify.notifier())
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            await notify.wait_for("READY=1", timeout=5)
            assert daemon.muted and daemon.status()["mute_source"] == "switch"
            pulse.feed_mic(shipped_speech("user_request.wav") + bytes(FMT.nbytes(800)))
            await asyncio.sleep(3.0)
            assert sim.sessions == []
            gpio = fake(daemon)
    statuses = notify.statuses()
    assert statuses and statuses[0].startswith("muted"), statuses
    assert not any(s.startswith("listening") for s in statuses)
    assert shown(gpio) == ["muted"]


async def test_volume_buttons_and_the_volume_kept_across_a_restart(pulse: PulseServer, tmp_path: Path) -> None:
    """Two presses of volume down: 80, in the state file; a new daemon on the same directory plays at 80."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    buttons = {"volume_up_line": "20", "volume_down_line": "21", "debounce_ms": 50}
    async with Simulator(script=hold_open) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual"}, buttons=buttons,
                            state={"directory": str(state_dir)}, audio={"volume": 0.5})
        events = Events()
        daemon = Daemon(cfg, api_key=sim.api_key, on_event=events)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            for line in (21, 21, 20, 21):
                assert fake(daemon).press(CHIP, line) == 1
                await asyncio.sleep(0.12)  # beyond the debounce
            await until(lambda: (state_dir / "state.json").exists()
                        and json.loads((state_dir / "state.json").read_text()) == {"volume": 80})
            assert daemon.player is not None and daemon.player._gain == pytest.approx(0.4)  # 0.5 * 80 %
        assert events.of("volume") == ["volume 90", "volume 80", "volume 90", "volume 80"]
        daemon = Daemon(cfg, api_key=sim.api_key)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            assert daemon.player is not None and daemon.player._gain == pytest.approx(0.4)


async def test_the_talk_button_starts_a_session_cuts_the_agent_and_ends_it(pulse: PulseServer, tmp_path: Path) -> None:
    """Press: a session; press while the agent speaks: a barge-in by the button; press again: the session ends."""
    speaking = asyncio.Event()

    async def script(s: SimSession) -> None:
        await s.wait_audio(200)
        turn = asyncio.create_task(s.send_turn("t1", steady_tone(5000), realtime=True))
        speaking.set()
        await s.wait_closed(timeout=30)
        turn.cancel()

    async with Simulator(script=script) as sim:
        cfg = daemon_config(tmp_path, sim.base_url, sim.agent_id, wake={"mode": "manual"},
                            buttons={"talk_line": "16"})
        events = Events()
        daemon = Daemon(cfg, api_key=sim.api_key, on_event=events)
        async with running(daemon):
            await daemon.wait_state(State.LISTENING, timeout=20)
            fake(daemon).press(CHIP, 16)
            session = await sim.next_session(timeout=20)
            await daemon.wait_state(State.AGENT_SPEAKING, timeout=20)
            fake(daemon).press(CHIP, 16)
            await daemon.wait_state(State.IN_SESSION, timeout=5)
            assert any("talk button" in t for t in events.of("barge_in")), events.rows
            await asyncio.sleep(0.1)
            fake(daemon).press(CHIP, 16)
            await session.wait_closed(timeout=10)
            await daemon.wait_state(State.LISTENING, timeout=20)
    assert ("session_closed", "talk button") in events.rows, events.rows
    assert events.of("wake") == ["talk button"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
