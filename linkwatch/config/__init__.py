"""Typed configuration: TOML (stdlib tomllib) -> frozen dataclasses, checked all at once.

The schema lives on the dataclasses themselves: every field that is a TOML key carries a converter
(raw TOML value -> typed value, or a description of what was expected) in its metadata. One pass
converts every key and collects every problem; cross-field checks then compare keys with each other.
Nothing stops at the first error: :class:`ConfigError` carries all of them, one line each, in the
form ``key.path: got <value>, expected <what>[: why]``.

Modules, each importing only the ones above it:

- ``convert``: converters of single values; durations and listen addresses as text;
- ``values``: the frozen dataclasses (the schema) and the constants they need;
- ``reference``: every key with its default and meaning, for docs/configuration.md;
- ``loading``: :func:`load` / :func:`loads`, the checks, :class:`ConfigError`.

This package re-exports the public names, so ``from linkwatch.config import load, Config`` works.
"""

from __future__ import annotations

from linkwatch.config.convert import (
    DURATION_EXAMPLES,
    LISTEN_EXAMPLES,
    format_duration,
    parse_duration,
    parse_listen,
)
from linkwatch.config.loading import ConfigError, ConfigIssue, load, loads
from linkwatch.config.reference import KeyDoc, describe_keys, key_docs
from linkwatch.config.values import (
    DEFAULT_BASE_OID,
    MAIN_RULE_PRIORITY,
    MAX_UPLINKS,
    MIN_INTERVAL,
    ROUTE_TABLES_RESERVED,
    SNMP_AUTH,
    SNMP_LEVELS,
    SNMP_PRIV,
    Config,
    ControlConfig,
    HealthConfig,
    HistoryConfig,
    HooksConfig,
    KeepalivedConfig,
    LogConfig,
    MqttConfig,
    PolicyConfig,
    ProbeConfig,
    RoutingConfig,
    RuleConfig,
    SnmpAgentConfig,
    SnmpConfig,
    SnmpUserConfig,
    TrapReceiverConfig,
    UplinkConfig,
    WebConfig,
)

__all__ = [
    "DEFAULT_BASE_OID",
    "DURATION_EXAMPLES",
    "LISTEN_EXAMPLES",
    "MAIN_RULE_PRIORITY",
    "MAX_UPLINKS",
    "MIN_INTERVAL",
    "ROUTE_TABLES_RESERVED",
    "SNMP_AUTH",
    "SNMP_LEVELS",
    "SNMP_PRIV",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ControlConfig",
    "HealthConfig",
    "HistoryConfig",
    "HooksConfig",
    "KeepalivedConfig",
    "KeyDoc",
    "LogConfig",
    "MqttConfig",
    "PolicyConfig",
    "ProbeConfig",
    "RoutingConfig",
    "RuleConfig",
    "SnmpAgentConfig",
    "SnmpConfig",
    "SnmpUserConfig",
    "TrapReceiverConfig",
    "UplinkConfig",
    "WebConfig",
    "describe_keys",
    "format_duration",
    "key_docs",
    "load",
    "loads",
    "parse_duration",
    "parse_listen",
]
