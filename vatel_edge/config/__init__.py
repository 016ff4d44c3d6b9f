"""Configuration: TOML into frozen dataclasses, one per section, validated before anything starts.

Every error names the key path and the problem; unknown keys are errors with a "did you mean".
The field metadata (doc, choices, min, max) is the single source of the README's config reference.

schema.py holds the sections, validate.py the checks and the one problem collector, tools.py the
[tools] tables, load.py reading a file, credentials.py the API key, check.py what check-config finds.
Nothing here imports the protocol codec or the devkit.
"""

from __future__ import annotations

from vatel_edge.config.check import ConfigCheck, check_config
from vatel_edge.config.credentials import CREDENTIAL_NAME, read_api_key, read_mqtt_password
from vatel_edge.config.load import DEFAULT_CONFIG_PATH, config_from_dict, load_config, loads_config
from vatel_edge.config.schema import (
    SECTIONS,
    AudioConfig,
    Config,
    ControlConfig,
    FeedbackConfig,
    GpioConfig,
    LogConfig,
    MetricsConfig,
    MqttConfig,
    SessionConfig,
    VatelConfig,
    WakeConfig,
    opt,
)
from vatel_edge.config.validate import Problems, coerce_field, describe_value, did_you_mean, parse_section

__all__ = [
    "CREDENTIAL_NAME",
    "DEFAULT_CONFIG_PATH",
    "SECTIONS",
    "AudioConfig",
    "Config",
    "ConfigCheck",
    "ControlConfig",
    "FeedbackConfig",
    "GpioConfig",
    "LogConfig",
    "MetricsConfig",
    "MqttConfig",
    "Problems",
    "SessionConfig",
    "VatelConfig",
    "WakeConfig",
    "check_config",
    "coerce_field",
    "config_from_dict",
    "describe_value",
    "did_you_mean",
    "load_config",
    "loads_config",
    "opt",
    "parse_section",
    "read_api_key",
    "read_mqtt_password",
]
