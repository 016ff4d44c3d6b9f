"""The MQTT bridge: the daemon's state, timeline events and commands over a broker, with Home Assistant
device discovery ([mqtt], off by default).

`model.py` (topics, payloads, discovery, command parsing, rate limits; no I/O), `outbox.py` (the bounded
outgoing queue) and `bridge.py` (the asyncio client over aiomqtt, imported only when mqtt.enabled). Nothing
here is imported by the daemon unless the bridge is enabled: the package needs the `mqtt` extra.
"""

from __future__ import annotations

import typing
from contextlib import AsyncExitStack

from vatel_edge.errors import ConfigError

if typing.TYPE_CHECKING:
    from vatel_edge.config import Config
    from vatel_edge.mqtt.model import DaemonApi


async def enter_fleet_links(stack: AsyncExitStack, cfg: Config, daemon: DaemonApi) -> None:
    """Enter the MQTT bridge (mqtt.enabled) and the metrics file writer (metrics.textfile) on `stack`.

    Their libraries are imported here, only when configured; a missing one is a ConfigError naming the extra."""
    if cfg.metrics.textfile:
        try:
            from vatel_edge.metrics import MetricsWriter
        except ImportError:
            raise ConfigError("metrics.textfile: needs prometheus-client (pip install 'vatel-edge[mqtt]')") from None
        await stack.enter_async_context(MetricsWriter(cfg.metrics, daemon.status, daemon.events))
    if cfg.mqtt.enabled:
        try:
            from vatel_edge.mqtt.bridge import MqttBridge
        except ImportError:
            raise ConfigError("mqtt.enabled: needs aiomqtt (pip install 'vatel-edge[mqtt]')") from None
        from vatel_edge.config import read_mqtt_password
        from vatel_edge.journal import register_secret

        password = read_mqtt_password(cfg.mqtt)
        if password:
            register_secret(password)  # redacted should it ever reach a log line
        await stack.enter_async_context(MqttBridge(cfg.mqtt, daemon, password=password))
