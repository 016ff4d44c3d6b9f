"""HTTP actions: one request per call (Home Assistant, Node-RED, any LAN service) with httpx.

Argument values enter the URL only URL-encoded (quote(safe="")) and only after the host (config/tools.py checks
that); in the JSON body a placeholder that is the whole string keeps the argument's type. Header values
come from environment variables named in headers_env and are never logged or echoed. TLS is always
verified; redirects are not followed (a redirect would carry the headers elsewhere).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from vatel_edge.config.tools import HttpSpec, render_json
from vatel_edge.tools.args import render_text

log = logging.getLogger(__name__)

#: A failing service's body is read up to this many times max_output_bytes, keeping the tail.
ERROR_READ_FACTOR = 16


def make_client() -> httpx.AsyncClient:
    """The shared client of the HTTP tools: TLS verified, no redirects, no proxy/netrc from the environment."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=True)


def _url_value(value: object) -> str:
    return quote(render_text(value), safe="")


def render_url(spec: HttpSpec, values: Mapping[str, Any]) -> str:
    """The request URL with every argument URL-encoded."""
    return spec.url.render(values, _url_value)


def missing_header_env(spec: HttpSpec, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(header, env var) pairs whose environment variable is unset or empty."""
    source = os.environ if environ is None else environ
    return [(h, env) for h, env in spec.headers_env.items() if not source.get(env)]


def plain_http_host(spec: HttpSpec) -> str | None:
    """The host when the URL is plain http to a non-loopback host (secrets would travel unencrypted), else None."""
    first = spec.url.parts[0] if spec.url.parts and isinstance(spec.url.parts[0], str) else ""
    parts = urlsplit(first)
    host = parts.hostname or ""
    if parts.scheme.lower() != "http" or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return host


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace").strip("\ufffd").strip()


async def run_http(
    tool_name: str,
    spec: HttpSpec,
    values: Mapping[str, Any],
    client: httpx.AsyncClient,
    *,
    timeout_s: float,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Send the request; "STATUS: body" on 2xx, "error: HTTP STATUS: body tail" otherwise."""
    source = os.environ if environ is None else environ
    headers = dict(spec.headers)
    for header, env in spec.headers_env.items():
        value = source.get(env)
        if not value:
            return f"error: environment variable {env} (for header {header}) is not set"
        headers[header] = value
    url = render_url(spec, values)
    host = urlsplit(url).hostname or "?"
    kwargs: dict[str, Any] = {}
    if spec.has_json:
        kwargs["json"] = render_json(spec.json, values, render_text)
    cap = spec.max_output_bytes
    log.debug("tool %s: %s %s", tool_name, spec.method, host)
    try:
        async with client.stream(spec.method, url, headers=headers, timeout=timeout_s, **kwargs) as response:
            status = response.status_code
            ok = 200 <= status < 300
            body = bytearray()
            read = 0
            truncated = False
            async for chunk in response.aiter_bytes():
                read += len(chunk)
                if ok:
                    body += chunk[: cap - len(body)]
                    if read > cap:
                        truncated = True
                        break
                else:
                    body += chunk
                    if len(body) > cap:
                        del body[: len(body) - cap]
                    if read >= cap * ERROR_READ_FACTOR:
                        break
    except httpx.TimeoutException:
        return f"error: HTTP request to {host} timed out after {render_text(timeout_s)} s"
    except httpx.HTTPError as exc:
        # httpx messages name the URL or the socket error, never header values.
        detail = str(exc) or exc.__class__.__name__
        return f"error: HTTP request to {host} failed: {detail[:200]}"
    text = _text(body)
    if ok:
        text = text + " [output truncated]" if truncated else text
        return f"{status}: {text}" if text else str(status)
    return f"error: HTTP {status}: {text}" if text else f"error: HTTP {status}"
