"""Local Vatel API simulator: token endpoint + voice WebSocket on one loopback port, scriptable.

`Simulator` for tests; `run_simulator_command` for `vatel-edge simulate` (the echo agent until
cancelled).
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from vatel_edge.devkit.simulator.messages import ClientMessageError, make_jwt, parse_client_message
from vatel_edge.devkit.simulator.script import echo_agent, end, steps, tone
from vatel_edge.devkit.simulator.server import (
    Faults,
    HandshakeFault,
    Simulator,
    TokenFault,
    TokenRequest,
    check_loopback,
)
from vatel_edge.devkit.simulator.session import MessageRecord, Script, SimSession, SimSessionClosed


async def run_simulator_command(host: str, port: int, api_key: str | None, agent_id: str | None, out: TextIO) -> int:
    """Run the echo-agent simulator until cancelled; print how to point vatel-edge at it. Exit code."""
    try:
        check_loopback(host)
    except ValueError as exc:
        print(f"vatel-edge simulate: {exc}", file=out)
        return 2
    sim = Simulator(host, port, api_key=api_key, agent_id=agent_id, script=echo_agent(turns=1))
    try:
        await sim.__aenter__()
    except OSError as exc:
        print(f"vatel-edge simulate: cannot listen on {host}:{port}: {exc.strerror or exc}", file=out)
        return 1
    try:
        print(f"Vatel API simulator listening on {sim.base_url}", file=out)
        print(f"  agent_id = {sim.agent_id}", file=out)
        print(f"  API key  = {sim.api_key}   (a local test key)", file=out)
        print("Point vatel-edge at it:", file=out)
        print(f'  [vatel]\n  base_url = "{sim.base_url}"\n  agent_id = "{sim.agent_id}"', file=out)
        print(f"  ORG_API_KEY={sim.api_key}", file=out)
        out.flush()
        await asyncio.Event().wait()  # until cancelled (Ctrl-C / SIGTERM in the CLI)
    finally:
        await sim.aclose()
    return 0


__all__ = [
    "ClientMessageError",
    "Faults",
    "HandshakeFault",
    "MessageRecord",
    "Script",
    "SimSession",
    "SimSessionClosed",
    "Simulator",
    "TokenFault",
    "TokenRequest",
    "echo_agent",
    "end",
    "make_jwt",
    "parse_client_message",
    "run_simulator_command",
    "steps",
    "tone",
]
