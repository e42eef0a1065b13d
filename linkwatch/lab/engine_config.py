"""The engine's TOML config for a lab: its control socket, hooks, history and probes. Pure.

The TOML is written by small helpers (:func:`toml_value` and friends) and checked by parsing it
back, so an override that cannot be written raises a LabError instead of a broken engine config.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping

from linkwatch.lab.plan import (
    DNS6_SERVER,
    DNS_QUERY,
    DNS_SERVER,
    ICMP6_TARGETS,
    ICMP_TARGETS,
    LabError,
    LabSpec,
)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_RESERVED_TABLES = ("control", "hooks", "uplinks")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise LabError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def _toml_table(name: str, values: Mapping[str, object]) -> list[str]:
    lines = [f"[{name}]"]
    subtables = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            subtables.append((f"{name}.{_toml_key(key)}", value))
        else:
            lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    for sub_name, sub in subtables:
        lines += [""] + _toml_table(sub_name, sub)
    return lines


def probe_specs(count: int, ipv6: bool = False) -> list[dict[str, str]]:
    """1-3 probes per uplink: ICMP 203.0.113.1, DNS 203.0.113.53, ICMP 203.0.113.2; with ``ipv6``
    as many IPv6 ones too (2001:db8:ff::1, ::53, ::2)."""
    if not 1 <= count <= 3:
        raise LabError(f"probe targets per uplink={count!r} is out of range: expected 1 to 3")
    specs = [
        {"type": "icmp", "target": ICMP_TARGETS[0]},
        {"type": "dns", "target": DNS_SERVER, "query": DNS_QUERY},
        {"type": "icmp", "target": ICMP_TARGETS[1]},
    ][:count]
    if ipv6:
        specs += [
            {"type": "icmp", "target": ICMP6_TARGETS[0]},
            {"type": "dns", "target": DNS6_SERVER, "query": DNS_QUERY},
            {"type": "icmp", "target": ICMP6_TARGETS[1]},
        ][:count]
    return specs


def engine_config(spec: LabSpec, probe_targets: int = 2, overrides: Mapping[str, Mapping] | None = None,
                  extra_toml: str = "", web: Mapping[str, object] | None = None,
                  socket_group: str | None = None, ipv6: bool = False) -> str:
    """The engine's TOML config for this lab. Pure.

    The lab keeps a history (in its state directory, one row per uplink every 10 s so a short
    demo draws graphs) unless ``overrides`` has a [history] table. ``web`` is the [web] table
    (for the lab's web UI); ``socket_group`` owns the control socket (the web UI's group).
    ``overrides`` adds whole tables (``{"health": {...}, "policy": {...}}``; ``{"uplinks": {"wan1":
    {"weight": 3}}}`` adds keys to one uplink's table); ``extra_toml`` is
    appended verbatim. ``ipv6``: every uplink gets IPv6 probe targets too (dual stack). The result
    must parse as TOML, else LabError.
    """
    lines = ["# written by `linkwatch lab up`", "[control]", f"socket = {toml_value(spec.control_socket)}"]
    if socket_group:
        lines += [f"group = {toml_value(socket_group)}"]
    lines += ["", "[hooks]", f"directory = {toml_value(spec.hooks_dir)}"]
    tables = dict(overrides or {})
    per_uplink = tables.pop("uplinks", {})  # {"wan1": {"weight": 3}}: keys added to that uplink's table
    unknown = set(per_uplink) - {u.name for u in spec.uplink_list}
    if unknown or not all(isinstance(v, Mapping) for v in per_uplink.values()):
        raise LabError(f"override [uplinks]: expected {{uplink: {{key: value}}}} for this lab's uplinks, "
                       f"got {dict(per_uplink)!r}")
    tables.setdefault("history", {"path": spec.history_path, "sample_period": "10s"})
    if web:
        tables["web"] = {**web, **tables.get("web", {})}
    for table, values in tables.items():
        if table in _RESERVED_TABLES:
            raise LabError(f"override table [{table}] is reserved: the lab writes it itself")
        if not isinstance(values, Mapping):
            raise LabError(f"override [{table}] must be a table (dict), got {values!r}")
        lines += [""] + _toml_table(_toml_key(table), values)
    for u in spec.uplink_list:
        lines += ["", f"[uplinks.{u.name}]", f'interface = "{u.interface}"', 'gateway = "auto"',
                  f"priority = {per_uplink.get(u.name, {}).get('priority', u.index)}"]
        lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in per_uplink.get(u.name, {}).items() if k != "priority"]
        for probe in probe_specs(probe_targets, ipv6):
            lines += ["", f"[[uplinks.{u.name}.probes]]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in probe.items()]
    text = "\n".join(lines) + "\n"
    if extra_toml.strip():
        text += "\n" + extra_toml.strip() + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"the engine config for lab {spec.name!r} is not valid TOML: {e}") from None
    return text
