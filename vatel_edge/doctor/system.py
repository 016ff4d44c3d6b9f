"""The checks that are not audio: the organization key and the API (DNS, TCP, TLS, one session token), the systemd
unit, the control socket, and whether the service user may open the sound devices.

systemd is reached through one narrow interface (`Systemd`, answered by `systemctl show`), so tests give it
answers; everything else is real (sockets, the token endpoint, /etc/group, /dev/snd).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from vatel_edge.config import Config, read_api_key
from vatel_edge.config.check import ConfigCheck
from vatel_edge.config.unit import read_installed_unit
from vatel_edge.doctor.report import Finding, fail, ok, warn
from vatel_edge.errors import ConfigError, ControlError, TokenError

UNIT = "vatel-edge.service"
SERVICE_USER = "vatel-edge"
AUDIO_GROUP = "audio"
INSTALLED_KEY = Path("/etc/vatel-edge/org_api_key")
NET_TIMEOUT_S = 5.0


# ----------------------------------------------------------------------------------------------------- the key


def unit_credentials(config_path: str | None, environ: Mapping[str, str] | None) -> dict[str, Path] | None:
    """The installed unit's credential files (LoadCredential=) when `config_path` is the config it runs and we are
    outside it: where the service gets its key (as check-config looks it up, config/check.py)."""
    env = os.environ if environ is None else environ
    if config_path is None or env.get("CREDENTIALS_DIRECTORY"):
        return None
    unit = read_installed_unit()
    if unit is None or unit.config is None:
        return None
    try:
        same = unit.config.samefile(config_path)
    except OSError:
        same = unit.config.resolve() == Path(config_path).resolve()
    return unit.credentials if same else None


def read_key(cfg: Config, config_path: str | None, environ: Mapping[str, str] | None) -> str:
    """The organization key as the service will get it; ConfigError saying why there is none (never the key)."""
    return read_api_key(cfg.vatel, environ, unit_credentials=unit_credentials(config_path, environ))


def _key_findings(cfg: Config, config_path: str | None,
                  environ: Mapping[str, str] | None) -> tuple[list[Finding], str | None]:
    try:
        key = read_key(cfg, config_path, environ)
    except ConfigError as exc:
        todo = ("the installed key is readable by root only: run `sudo vatel-edge doctor`"
                if INSTALLED_KEY.exists() and not os.access(INSTALLED_KEY, os.R_OK) else
                f"install it (`sudo scripts/install.sh --key-file FILE`), set vatel.api_key_file, or export "
                f"{cfg.vatel.api_key_env}")
        return [fail("key", f"no organization key: {'; '.join(exc.problems)}", todo)], None
    return [ok("key", "organization key present (not shown)")], key


async def check_host(base_url: str, timeout: float = NET_TIMEOUT_S) -> Finding:
    """DNS, TCP and (for https) TLS to vatel.base_url, saying which step failed."""
    url = urlsplit(base_url)
    host = url.hostname or ""
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError) as exc:
        return fail("api", f"{host}: DNS lookup failed ({exc.__class__.__name__}: {exc})",
                    "check the network (Wi-Fi up? `ping 1.1.1.1`), /etc/resolv.conf, and vatel.base_url")
    address = str(infos[0][4][0])
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, TimeoutError) as exc:
        return fail("api", f"{host} ({address}) port {port}: TCP connection failed "
                           f"({exc.__class__.__name__}{': ' + str(exc) if str(exc) else ''})",
                    "a firewall or proxy blocks outgoing connections, or the host is down")
    writer.close()
    await writer.wait_closed()
    if not tls:
        return ok("api", f"{host} ({address}) port {port} reachable (plain HTTP: only the simulator should use it)")
    try:
        ctx = ssl.create_default_context()
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port, ssl=ctx, server_hostname=host), timeout)
    except (OSError, TimeoutError) as exc:
        hint = ("the system clock is wrong (a Pi without RTC before NTP: `timedatectl`), or a proxy intercepts TLS"
                if isinstance(exc, ssl.SSLCertVerificationError) else
                "a proxy or captive portal interferes; check `curl -v " + base_url + "`")
        return fail("api", f"{host} port {port}: TLS handshake failed ({exc.__class__.__name__}: {exc})", hint)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):  # a server may drop a silent connection: the handshake counted
        await writer.wait_closed()
    return ok("api", f"{host} ({address}) port {port}: DNS, TCP and TLS fine")


_STATUS_TODO = {
    401: ("the organization key was refused (HTTP 401)",
          "the key is wrong, revoked, or not an organization API key (an agent id or a session token?); check it "
          "has no quotes or spaces, and re-install it: `sudo scripts/install.sh --key-file FILE`"),
    403: ("the key may not use this agent (HTTP 403)",
          "vatel.agent_id belongs to another organization than the key, or the key lacks the right"),
    404: ("the agent was not found (HTTP 404)",
          "check vatel.agent_id (the agent's UUID in the Vatel console) and vatel.base_url"),
}


async def check_key(cfg: Config, *, config_path: str | None = None,
                    environ: Mapping[str, str] | None = None) -> list[Finding]:
    """The key is present, the API host is reachable, and one POST /v1/session-token accepts the key."""
    from vatel_edge.token import TokenClient

    findings, key = _key_findings(cfg, config_path, environ)
    host = await check_host(cfg.vatel.base_url)
    findings.append(host)
    if key is None or host.status.value == "fail":
        return findings
    try:
        async with TokenClient(cfg.vatel, key) as client:
            token = await client.fetch()
    except TokenError as exc:
        if exc.status in _STATUS_TODO:
            text, todo = _STATUS_TODO[exc.status]
            findings.append(fail("key", f"{text}: {exc}", todo))
        else:
            findings.append(fail("key", f"no session token: {exc}",
                                 "retry later; if it persists check vatel.base_url and the Vatel status page"))
        return findings
    findings.append(ok("key", f"the key is accepted: a session token was issued for agent {cfg.vatel.agent_id} "
                              f"(valid {token.expires_at - token.obtained_at:.0f} s; not shown)"))
    return findings


def config_findings(check: ConfigCheck, key_problems: set[str]) -> list[Finding]:
    """The config validates (the key's own problems are the key check's line)."""
    if not check.readable:
        return [fail("config", "; ".join(check.problems),
                     "install one (`sudo scripts/install.sh`) or pass --config PATH")]
    problems = [p for p in check.problems if p not in key_problems]
    if problems or check.config is None:
        return [fail("config", f"{check.path}: {problem}", "fix it (`vatel-edge check-config` lists the same)")
                for problem in problems] or [fail("config", f"{check.path}: invalid", "run vatel-edge check-config")]
    return [ok("config", f"{check.path} is valid"),
            *(warn("config", w, "edit the config (`sudoedit`), then restart the service") for w in check.warnings)]


# ----------------------------------------------------------------------------------------------------- systemd


@dataclass(frozen=True)
class UnitState:
    """What systemd says about the unit, or why it cannot say (`unknown`)."""

    load: str = ""  # loaded, not-found, masked, ...
    enabled: str = ""  # UnitFileState: enabled, disabled, static, ...
    active: str = ""  # active, inactive, failed, activating, ...
    sub: str = ""  # running, dead, auto-restart, ...
    result: str = ""  # success, exit-code, watchdog, start-limit-hit, ...
    groups: tuple[str, ...] = ()  # SupplementaryGroups
    unknown: str | None = None  # "systemctl not found", "systemd is not running (not PID 1)"


class Systemd(Protocol):
    """The one question the doctor asks systemd."""

    def unit(self, name: str) -> UnitState: ...


class Systemctl:
    """The real answer: `systemctl show`."""

    def unit(self, name: str) -> UnitState:
        exe = shutil.which("systemctl")
        if exe is None:
            return UnitState(unknown="systemctl not found")
        if not Path("/run/systemd/system").is_dir():
            return UnitState(unknown="systemd is not running here (not PID 1)")
        try:
            proc = subprocess.run(
                [exe, "show", name, "--property=LoadState,UnitFileState,ActiveState,SubState,Result,"
                 "SupplementaryGroups"],
                capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return UnitState(unknown=f"systemctl failed: {exc}")
        if proc.returncode != 0:
            return UnitState(unknown=f"systemctl: {proc.stderr.strip() or proc.returncode}")
        props = dict(line.partition("=")[::2] for line in proc.stdout.splitlines() if "=" in line)
        return UnitState(load=props.get("LoadState", ""), enabled=props.get("UnitFileState", ""),
                         active=props.get("ActiveState", ""), sub=props.get("SubState", ""),
                         result=props.get("Result", ""), groups=tuple(props.get("SupplementaryGroups", "").split()))


def unit_findings(state: UnitState) -> list[Finding]:
    """Installed, enabled, running; or why not."""
    if state.unknown is not None:
        return [warn("service", f"cannot check the systemd unit: {state.unknown}",
                     "on the device itself: `systemctl status vatel-edge`")]
    if state.load != "loaded":
        return [fail("service", f"{UNIT} is not installed (LoadState={state.load or '?'})",
                     "install it: `sudo scripts/install.sh`")]
    out: list[Finding] = []
    if state.enabled != "enabled":
        out.append(fail("service", f"{UNIT} is not enabled (UnitFileState={state.enabled or '?'}): it will not "
                                   "start at boot", "sudo systemctl enable --now vatel-edge"))
    if state.active == "active" and state.sub == "running":
        out.append(ok("service", f"{UNIT} is installed, {state.enabled or '?'} and running"))
    elif state.active == "inactive" and state.result in ("success", ""):
        # stopped cleanly, by someone (e.g. to free the sound card for this doctor): not a failure of its own
        out.append(warn("service", f"{UNIT} is stopped (it did not fail)", "sudo systemctl start vatel-edge"))
    else:
        why = f"ActiveState={state.active or '?'}, SubState={state.sub or '?'}, Result={state.result or '?'}"
        todo = "see why: `journalctl -u vatel-edge -n 50`; then `sudo systemctl restart vatel-edge`"
        if state.result == "start-limit-hit":
            todo = ("it failed 10 times: `journalctl -u vatel-edge -n 50`, fix the cause, then "
                    "`sudo systemctl reset-failed vatel-edge && sudo systemctl start vatel-edge`")
        elif state.result == "watchdog":
            todo = "the microphone stalled (watchdog): check the device with this doctor's mic lines; " + todo
        out.append(fail("service", f"{UNIT} is not running ({why})", todo))
    return out


async def control_findings(socket_path: str, service_running: bool | None) -> list[Finding]:
    """The daemon answers `status` on its control socket."""
    from vatel_edge.control import control_request

    try:
        reply = await control_request(socket_path, {"cmd": "status"}, timeout=5.0)
    except ControlError as exc:
        if "permission denied" in str(exc):
            return [warn("control", str(exc), "run `sudo vatel-edge doctor`, or `sudo usermod -aG vatel-edge $USER`")]
        if service_running:
            return [fail("control", f"the service runs but its control socket does not answer: {exc}",
                         "check control.socket_path matches the service's config; `journalctl -u vatel-edge`")]
        return [warn("control", str(exc), "start the service: `sudo systemctl start vatel-edge`")]
    state = reply.get("status", {}).get("state", "?") if isinstance(reply.get("status"), dict) else "?"
    return [ok("control", f"the daemon answers on {socket_path} (state {state})")]


# -------------------------------------------------------------------------------------------- the service user


def sound_devices(dev: Path = Path("/dev/snd")) -> list[Path]:
    return sorted(p for p in dev.iterdir() if stat.S_ISCHR(p.stat().st_mode)) if dev.is_dir() else []


def user_findings(unit: UnitState, dev: Path = Path("/dev/snd"), user: str = SERVICE_USER) -> list[Finding]:
    """The service user exists, belongs to `audio` (or the unit gives it the group), and `audio` may open
    the sound devices."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return [fail("user", f"the service user {user} does not exist",
                     "install the service: `sudo scripts/install.sh`")]
    try:
        audio = grp.getgrnam(AUDIO_GROUP)
    except KeyError:
        return [fail("user", f"there is no group {AUDIO_GROUP}",
                     "sudo groupadd --system audio, then re-run the installer")]
    member = user in audio.gr_mem or pw.pw_gid == audio.gr_gid
    via_unit = AUDIO_GROUP in unit.groups
    if not (member or via_unit):
        return [fail("user", f"{user} is not in group {AUDIO_GROUP} (nor given it by the unit's SupplementaryGroups)",
                     f"sudo usermod -aG {AUDIO_GROUP} {user} && sudo systemctl restart vatel-edge")]
    how = f"member of {AUDIO_GROUP}" if member else f"given {AUDIO_GROUP} by SupplementaryGroups"
    nodes = sound_devices(dev)
    if not nodes:
        return [warn("user", f"{user} is {how}, but {dev} has no device nodes (no sound card in the kernel)",
                     "plug in the sound card or enable the HAT overlay, then reboot")]
    blocked = []
    for node in nodes:
        st = node.stat()
        if st.st_uid == pw.pw_uid and st.st_mode & stat.S_IRUSR and st.st_mode & stat.S_IWUSR:
            continue
        if st.st_gid == audio.gr_gid and st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP:
            continue
        if st.st_mode & stat.S_IROTH and st.st_mode & stat.S_IWOTH:
            continue
        blocked.append(node.name)
    if blocked:
        return [fail("user", f"{user} ({how}) cannot open {', '.join(blocked)} in {dev}",
                     f"the nodes should be group {AUDIO_GROUP} with rw (udev); `ls -l {dev}`")]
    return [ok("user", f"{user} is {how} and may open the {len(nodes)} nodes in {dev}")]
