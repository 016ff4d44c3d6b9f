"""The doctor's non-audio checks against real parts: the simulator's token endpoint over a real socket, a real
control socket, a closed port; systemd through its one narrow interface, answered by a fake."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

from tests.support.net import free_port
from vatel_edge.config import Config, config_from_dict
from vatel_edge.control import ControlServer
from vatel_edge.devkit.simulator import Simulator
from vatel_edge.doctor.report import Finding, Status
from vatel_edge.doctor.system import UnitState, check_host, check_key, control_findings, unit_findings, user_findings


def _cfg(base_url: str, agent_id: str) -> Config:
    return config_from_dict({"vatel": {"agent_id": agent_id, "base_url": base_url}})


def _statuses(findings: list[Finding]) -> list[tuple[str, Status]]:
    return [(f.topic, f.status) for f in findings]


async def test_key_check_passes_against_the_simulator() -> None:
    """Present key, reachable host, one token request accepted; neither the key nor the token is printed."""
    async with Simulator() as sim:
        findings = await check_key(_cfg(sim.base_url, sim.agent_id), environ={"ORG_API_KEY": sim.api_key})
        assert len(sim.token_requests) == 1
        issued = list(sim.issued)
    assert _statuses(findings) == [("key", Status.OK), ("api", Status.OK), ("key", Status.OK)]
    assert "the key is accepted" in findings[-1].text
    text = "\n".join(f.line() for f in findings)
    assert sim.api_key not in text
    assert issued and all(token not in text for token in issued)


async def test_a_401_names_the_key_as_the_problem_without_printing_it() -> None:
    wrong = "org_" + uuid.uuid4().hex
    async with Simulator() as sim:
        findings = await check_key(_cfg(sim.base_url, sim.agent_id), environ={"ORG_API_KEY": wrong})
    assert findings[-1].status is Status.FAIL
    assert "organization key was refused (HTTP 401)" in findings[-1].text
    assert "key is wrong" in findings[-1].todo
    assert wrong not in "\n".join(f.line() for f in findings)


async def test_a_404_names_the_agent_id() -> None:
    async with Simulator() as sim:
        findings = await check_key(_cfg(sim.base_url, str(uuid.uuid4())), environ={"ORG_API_KEY": sim.api_key})
    assert findings[-1].status is Status.FAIL
    assert "agent was not found (HTTP 404)" in findings[-1].text
    assert "vatel.agent_id" in findings[-1].todo


async def test_a_missing_key_fails_before_any_request() -> None:
    async with Simulator() as sim:
        findings = await check_key(_cfg(sim.base_url, sim.agent_id), environ={})
        assert sim.token_requests == []
    assert findings[0].status is Status.FAIL and "no organization key" in findings[0].text
    assert "ORG_API_KEY" in findings[0].text


async def test_unreachable_host_says_tcp_failed() -> None:
    finding = await check_host(f"http://127.0.0.1:{free_port()}")
    assert finding.status is Status.FAIL
    assert "TCP connection failed" in finding.text


async def test_tls_step_is_checked_and_named(tmp_path: Path) -> None:
    """A plain-HTTP server on an https URL: DNS and TCP work, the TLS handshake fails and is named."""
    async with Simulator() as sim:
        finding = await check_host(f"https://127.0.0.1:{sim.port}")
    assert finding.status is Status.FAIL
    assert "TLS handshake failed" in finding.text
    assert issubclass(ssl.SSLError, OSError)  # what check_host relies on to catch it


class _Systemd:
    def __init__(self, state: UnitState) -> None:
        self.state = state
        self.asked: list[str] = []

    def unit(self, name: str) -> UnitState:
        self.asked.append(name)
        return self.state


def test_unit_states_and_what_to_do() -> None:
    assert _statuses(unit_findings(UnitState(unknown="systemctl not found"))) == [("service", Status.WARN)]
    assert "cannot check" in unit_findings(UnitState(unknown="systemctl not found"))[0].text
    missing = unit_findings(UnitState(load="not-found"))
    assert _statuses(missing) == [("service", Status.FAIL)] and "install.sh" in missing[0].todo
    stopped = unit_findings(UnitState(load="loaded", enabled="disabled", active="inactive", sub="dead",
                                      result="success"))
    assert [f.status for f in stopped] == [Status.FAIL, Status.WARN]  # not enabled; stopped, not failed
    assert "enable --now" in stopped[0].todo and "systemctl start" in stopped[1].todo
    crashed = unit_findings(UnitState(load="loaded", enabled="enabled", active="inactive", sub="dead",
                                      result="exit-code"))
    assert [f.status for f in crashed] == [Status.FAIL] and "journalctl" in crashed[0].todo
    limit = unit_findings(UnitState(load="loaded", enabled="enabled", active="failed", sub="failed",
                                    result="start-limit-hit"))
    assert "reset-failed" in limit[-1].todo
    running = unit_findings(UnitState(load="loaded", enabled="enabled", active="active", sub="running"))
    assert _statuses(running) == [("service", Status.OK)]


async def test_run_doctor_asks_systemd_through_the_interface(tmp_path: Path) -> None:
    """The whole command with a fake systemd (and no microphone named that opens): the unit line comes from it."""
    import io

    from vatel_edge.doctor import DoctorOptions, run_doctor

    fake = _Systemd(UnitState(load="loaded", enabled="enabled", active="failed", sub="failed", result="watchdog"))
    out = io.StringIO()
    code = await run_doctor(DoctorOptions(str(tmp_path / "missing.toml"), interactive=False, mics=("no_such_pcm",),
                                          speaker="no_such_pcm"), out, systemd=fake, environ={})
    assert fake.asked == ["vatel-edge.service"]
    assert "microphone stalled (watchdog)" in out.getvalue()
    assert code == 1


async def test_control_socket_answers(tmp_path: Path) -> None:
    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "status": {"state": "listening"}}

    path = str(tmp_path / "control.sock")
    async with ControlServer(path, handler):
        findings = await control_findings(path, True)
    assert _statuses(findings) == [("control", Status.OK)] and "state listening" in findings[0].text
    gone = await control_findings(path, True)
    assert gone[0].status is Status.FAIL  # the unit says running, the socket is gone
    assert (await control_findings(path, None))[0].status is Status.WARN


def test_a_missing_service_user_fails() -> None:
    findings = user_findings(UnitState(), user="vatel-edge-no-such-user")
    assert _statuses(findings) == [("user", Status.FAIL)]
