"""The [feedback.leds], [feedback.hooks], [privacy] and [buttons] settings beyond one key: LED settings parsed
into items, blink periods in range, hook placeholders known, and no GPIO line named twice. No I/O here.

A line written the same way (chip and line as strings) in two places is caught here, by check-config; lines
that are the same only after resolution (a name and its offset) are refused when they are claimed
(gpio/base.py LineClaims), with the same message naming both owners.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vatel_edge.config.schema import ButtonsConfig, HooksConfig, LedsConfig, PrivacyConfig, WakeConfig
from vatel_edge.config.tools import GpioSpec, Template, ToolSpec

#: The visible states an LED setting exists for, in [feedback.leds] order.
LED_STATES = ("listening", "connecting", "in_session", "agent_speaking", "muted", "offline")
LEDS_OWNER = "feedback.leds"
MUTE_SWITCH_OWNER = "privacy.mute_switch"
#: The names a hook's argv may use as {placeholders}.
HOOK_PLACEHOLDERS = ("old", "new")
MIN_BLINK_MS, MAX_BLINK_MS = 100, 10_000
_ITEM = re.compile(r"([A-Za-z0-9_-]+):(on|off|blink)(?::([0-9]+))?")


@dataclass(frozen=True)
class LedItem:
    """One LED in one state: its line, the pattern, and the blink period (ms, blink only)."""

    line: str
    pattern: str  # "on" | "off" | "blink"
    period_ms: int = 0


def parse_led_setting(text: str, default_period_ms: int) -> tuple[LedItem, ...]:
    """ "17:on, 27:blink:400" -> LedItems (the text matched schema.LED_PATTERN already)."""
    items = []
    for m in _ITEM.finditer(text):
        line, pattern, period = m.groups()
        ms = (int(period) if period else default_period_ms) if pattern == "blink" else 0
        items.append(LedItem(line, pattern, ms))
    return tuple(items)


def led_settings(leds: LedsConfig) -> dict[str, tuple[LedItem, ...]]:
    """Every state's LED items."""
    return {state: parse_led_setting(getattr(leds, state), leds.blink_period_ms) for state in LED_STATES}


def led_lines(leds: LedsConfig) -> list[str]:
    """Every LED line named in any state, in first-use order."""
    out: list[str] = []
    for items in led_settings(leds).values():
        out.extend(item.line for item in items if item.line not in out)
    return out


def _line_users(sections: Mapping[str, Any], tools: Mapping[str, ToolSpec]) -> list[tuple[str, str, str, str]]:
    """(owner, key path, chip, line) of every configured GPIO line use."""
    uses: list[tuple[str, str, str, str]] = []
    for name, spec in tools.items():
        if isinstance(spec.params, GpioSpec):
            uses.append((f"tool {name!r}", f"tools.{name}.line", spec.params.chip, str(spec.params.line)))
    wake: WakeConfig = sections.get("wake", WakeConfig())
    if wake.mode == "button" and wake.button_line:
        uses.append(("wake.button", "wake.button_line", wake.button_chip, wake.button_line))
    leds: LedsConfig = sections.get("feedback_leds", LedsConfig())
    for state, items in led_settings(leds).items():
        uses.extend((LEDS_OWNER, f"feedback.leds.{state}", leds.chip, item.line) for item in items)
    privacy: PrivacyConfig = sections.get("privacy", PrivacyConfig())
    if privacy.mute_switch_line:
        uses.append((MUTE_SWITCH_OWNER, "privacy.mute_switch_line", privacy.mute_switch_chip,
                     privacy.mute_switch_line))
    buttons: ButtonsConfig = sections.get("buttons", ButtonsConfig())
    for key in ("volume_up_line", "volume_down_line", "talk_line"):
        line = getattr(buttons, key)
        if line:
            uses.append((f"buttons.{key.removesuffix('_line')}", f"buttons.{key}", buttons.chip, line))
    return uses


def _chip_key(chip: str) -> str:
    return chip.removeprefix("/dev/")


def check_feedback(sections: Mapping[str, Any], tools: Mapping[str, ToolSpec]) -> list[str]:
    """Problems of the feedback, privacy and button settings (sections keyed by Config attribute name; a key
    that failed validation has its default there)."""
    problems: list[str] = []
    leds: LedsConfig = sections.get("feedback_leds", LedsConfig())
    for state in LED_STATES:
        for item in parse_led_setting(getattr(leds, state), leds.blink_period_ms):
            if item.pattern == "blink" and not MIN_BLINK_MS <= item.period_ms <= MAX_BLINK_MS:
                problems.append(f"feedback.leds.{state}: blink period of line {item.line} must be "
                                f"{MIN_BLINK_MS}..{MAX_BLINK_MS} ms, got {item.period_ms}")
    hooks: HooksConfig = sections.get("feedback_hooks", HooksConfig())
    for i, arg in enumerate(hooks.command):
        unknown = sorted(set(Template.parse(arg).placeholders) - set(HOOK_PLACEHOLDERS))
        if unknown:
            problems.append(f"feedback.hooks.command[{i}]: unknown placeholder {{{unknown[0]}}} "
                            "(known: {old}, {new})")
    seen: dict[tuple[str, str], str] = {}
    for owner, path, chip, line in _line_users(sections, tools):
        key = (_chip_key(chip), line)
        holder = seen.setdefault(key, owner)
        if holder != owner:
            problems.append(f"{path}: GPIO chip {chip!r} line {line!r} is claimed by {holder} and by {owner}")
    return problems
