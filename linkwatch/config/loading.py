"""Loading: TOML text or file -> :class:`Config`, with every problem collected into one :class:`ConfigError`.

One pass converts every key of every section; cross-field checks then compare keys with each
other ([health] rules, uplink tables and interfaces, SNMP users, levels and receivers).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from linkwatch.config.convert import _Bad, _Conv, _is_int, _show, format_duration
from linkwatch.config.crosschecks import flow_mark_clashes, mqtt_clashes, prefix_overlaps
from linkwatch.config.values import (
    ABSENT,
    CONV,
    CUSTOM,
    MAX_UPLINKS,
    MIN_INTERVAL,
    ROUTE_TABLES_RESERVED,
    SECRET,
    TABLE,
    Config,
    HealthConfig,
    ProbeConfig,
    RoutingConfig,
    SnmpAgentConfig,
    SnmpConfig,
    RuleConfig,
    SnmpUserConfig,
    TrapReceiverConfig,
    UplinkConfig,
    _leaf_fields,
    _toml_keys,
)


# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: the key path and a message that already says what was got and expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The configuration is unusable; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: list[ConfigIssue], source: str = "<string>") -> None:
        self.issues = list(issues)
        self.source = source
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


# ---------------------------------------------------------------------------------------------
# Checking


def _join(parent: str, key: str) -> str:
    """Key path, quoting keys that are not TOML bare keys: uplinks."my link"."""
    part = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def _bad_issue(path: str, raw: Any, bad: _Bad, secret: bool = False) -> ConfigIssue:
    shown = f"a secret of {len(raw)} characters" if secret and isinstance(raw, str) else (
        f"a {type(raw).__name__}" if secret else _show(raw))
    message = f"got {shown}, expected {bad.expected}"
    return ConfigIssue(path, message + (f": {bad.why}" if bad.why else ""))


def _check_unknown(raw: Mapping[str, Any], allowed: list[str], path: str, issues: list[ConfigIssue]) -> None:
    for key in raw:
        if key in allowed:
            continue
        message = f'unknown key "{key}", expected one of: {", ".join(sorted(allowed))}'
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            message += f'; did you mean "{close[0]}"?'
        issues.append(ConfigIssue(_join(path, key), message))


def _table(raw: Any, path: str, header: str, issues: list[ConfigIssue]) -> dict[str, Any] | None:
    """raw if it is a TOML table, else an issue and None."""
    if isinstance(raw, dict):
        return raw
    issues.append(ConfigIssue(path, f"got {_show(raw)}, expected a table {header}"))
    return None


def _convert(cls: type, raw: Mapping[str, Any], path: str, issues: list[ConfigIssue],
             fill: bool = True) -> tuple[dict[str, Any], set[str]]:
    """Convert the leaf keys of ``cls`` found in ``raw``; with ``fill`` also absent ones.

    Returns the converted values (bad ones fall back to their default where there is one) and the
    names of the keys that were bad or missing, so cross-field checks can skip them.
    """
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for f in _leaf_fields(cls):
        conv: _Conv = f.metadata[CONV]
        key_path = _join(path, f.name)
        if f.name in raw:
            try:
                values[f.name] = conv(raw[f.name])
                continue
            except _Bad as exc:
                issues.append(_bad_issue(key_path, raw[f.name], exc, bool(f.metadata.get(SECRET))))
                bad.add(f.name)
        elif not fill:
            continue
        elif f.default is dataclasses.MISSING and ABSENT not in f.metadata:
            issues.append(ConfigIssue(key_path, f"missing, expected {conv.expected}"))
            bad.add(f.name)
        if fill:
            values[f.name] = f.default if f.default is not dataclasses.MISSING else f.metadata.get(ABSENT)
    return values, bad


def _section(cls: type, doc: Mapping[str, Any], name: str,
             issues: list[ConfigIssue]) -> tuple[Any, set[str]]:
    raw = _table(doc.get(name, {}), name, f"[{name}]", issues)
    if raw is None:
        return cls(), set(_toml_keys(cls))
    _check_unknown(raw, _toml_keys(cls), name, issues)
    values, bad = _convert(cls, raw, name, issues)
    return cls(**values), bad


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return '"off"'
    if key.startswith("loss_"):
        return f"{value:g}%"
    if isinstance(value, float):
        return format_duration(value)
    return str(value)


def _health_rules(h: HealthConfig, name: Callable[[str], str]) -> list[tuple[tuple[str, ...], bool, str]]:
    """Cross-field rules: (keys, holds, message); keys[0] is the key the issue is reported on."""
    d = format_duration
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (("fast_interval", "interval"), h.fast_interval <= h.interval,
         f"expected at most {name('interval')} ({d(h.interval)}): the fast interval is used while a "
         "transition is pending and must not be slower than the normal one"),
        (("standby_interval", "interval"), h.standby_interval >= h.interval,
         f"expected at least {name('interval')} ({d(h.interval)}): standby uplinks are probed less "
         "often than active ones, not more"),
        (("timeout", "interval"), h.timeout <= 10 * h.interval,
         f"expected at most 10 × {name('interval')} = {d(10 * h.interval)} (interval {d(h.interval)}): "
         "a failed round is only known after the timeout, so detection would take longer than 10 "
         "rounds and more than 10 rounds would be in flight at once"),
        (("attempts", "timeout"), h.timeout / h.attempts >= MIN_INTERVAL,
         f"expected at most {max(1, int(h.timeout / MIN_INTERVAL + 1e-9))} with {name('timeout')} = "
         f"{d(h.timeout)}: retransmits are sent every timeout / attempts "
         f"({d(h.timeout / h.attempts)}), which must be at least {d(MIN_INTERVAL)}"),
        (("quality_window", "interval"), h.quality_window >= 4 * h.interval,
         f"expected at least 4 × {name('interval')} = {d(4 * h.interval)} (interval {d(h.interval)}): "
         "a shorter window holds too few rounds for loss, RTT and jitter statistics"),
        (("late_window", "timeout"), h.late_window >= h.timeout,
         f"expected at least {name('timeout')} ({d(h.timeout)}): a late reply is one that comes after the "
         "timeout"),
        (("proven_interval", "interval"), h.proven_interval >= h.interval,
         f"expected at least {name('interval')} ({d(h.interval)}): the LAN's traffic lets the engine probe "
         "less, not more"),
        (("counter_interval", "suspect_after"), h.suspect_after is None or h.counter_interval <= h.suspect_after / 2,
         f"expected at most half of {name('suspect_after')} ({d(h.suspect_after or 0)}): the counters must be "
         "read at least twice within the window that makes an uplink suspect"),
        (("loss_recovered", "loss_degraded"), h.loss_recovered < h.loss_degraded,
         f"expected less than {name('loss_degraded')} ({h.loss_degraded:g}%): an uplink must recover "
         "below the loss that degraded it, or it flaps on the boundary"),
    ]
    if h.rtt_degraded is not None and h.rtt_recovered is None:
        rules.append((("rtt_recovered", "rtt_degraded"), False,
                      f"expected a duration below {name('rtt_degraded')} ({d(h.rtt_degraded)}): set both "
                      "RTT thresholds or neither"))
    elif h.rtt_degraded is None and h.rtt_recovered is not None:
        rules.append((("rtt_degraded", "rtt_recovered"), False,
                      f"expected a duration above {name('rtt_recovered')} ({d(h.rtt_recovered)}): set "
                      "both RTT thresholds or neither"))
    elif h.rtt_degraded is not None and h.rtt_recovered is not None:
        rules.append((("rtt_recovered", "rtt_degraded"), h.rtt_recovered < h.rtt_degraded,
                      f"expected less than {name('rtt_degraded')} ({d(h.rtt_degraded)}): an uplink must "
                      "recover below the RTT that degraded it, or it flaps on the boundary"))
    return rules


def _check_health(h: HealthConfig, bad: set[str], path: str, overridden: set[str] | None,
                  issues: list[ConfigIssue]) -> None:
    """Cross-field checks of one effective [health]; ``overridden`` is None for the global one.

    For an uplink only rules touching one of its overridden keys are checked (the global [health]
    reports the others once); values it inherits are marked with where they come from.
    """

    def name(key: str) -> str:
        return _join(path, key) if overridden is None or key in overridden else _join("health", key)

    for keys, holds, message in _health_rules(h, name):
        if holds or bad & set(keys) or (overridden is not None and not overridden & set(keys)):
            continue
        subject = keys[0]
        got = _fmt(subject, getattr(h, subject))
        if overridden is not None and subject not in overridden:
            got += f" (inherited from {_join('health', subject)})"
        issues.append(ConfigIssue(_join(path, subject), f"got {got}, {message}"))


@dataclass
class _UplinkDraft:
    """An uplink as read, before tables and rule priorities are assigned."""

    values: dict[str, Any]
    health: HealthConfig
    probes: tuple[ProbeConfig, ...]


def _probes(raw: Any, path: str, issues: list[ConfigIssue]) -> tuple[ProbeConfig, ...]:
    header = f"[[{path}]]"
    need = f"at least one {header} with a type and a target"
    if raw is None:
        issues.append(ConfigIssue(path, f"missing, expected {need}"))
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        issues.append(ConfigIssue(path, f"got {_show(raw)}, expected an array of tables {header}"))
        return ()
    if not raw:
        issues.append(ConfigIssue(path, f"got no probes, expected {need}"))
        return ()
    probes: list[ProbeConfig] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(raw):
        probe_path = f"{path}[{index}]"
        _check_unknown(item, _toml_keys(ProbeConfig), probe_path, issues)
        values, bad = _convert(ProbeConfig, item, probe_path, issues)
        if "query" in item and "type" not in bad and values["type"] != "dns":
            issues.append(ConfigIssue(
                f"{probe_path}.query",
                f'got {_show(item["query"])}, expected no query: a query applies only to dns probes '
                f'(this probe\'s type is {_show(values["type"])})'))
            bad.add("query")
        if bad:
            continue
        probe = ProbeConfig(**values)
        signature = (probe.type, probe.target, probe.query if probe.type == "dns" else "")
        if signature in seen:
            issues.append(ConfigIssue(
                probe_path, f"got a second {probe.type} probe of {probe.target}, expected distinct "
                f"probes: it repeats {path}[{seen[signature]}], which would count one target twice"))
            continue
        seen[signature] = index
        probes.append(probe)
    return tuple(probes)


def _uplink(name: str, raw: Any, health: HealthConfig, health_bad: set[str],
            issues: list[ConfigIssue]) -> _UplinkDraft | None:
    path = _join("uplinks", name)
    before = len(issues)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
        issues.append(ConfigIssue(path, f'got {_show(name)}, expected an uplink name of 1..32 letters, '
                                        'digits, "_" or "-"'))
    body = _table(raw, path, f"[{path}]", issues)
    if body is None:
        return None
    _check_unknown(body, _toml_keys(UplinkConfig), path, issues)
    values, _ = _convert(UplinkConfig, body, path, issues)

    effective, overridden = health, set()
    if "health" in body:
        health_path = f"{path}.health"
        override = _table(body["health"], health_path, f"[{health_path}]", issues)
        if override is not None:
            _check_unknown(override, _toml_keys(HealthConfig), health_path, issues)
            changed, override_bad = _convert(HealthConfig, override, health_path, issues, fill=False)
            overridden = {key for key in override if key in _toml_keys(HealthConfig)}
            effective = dataclasses.replace(health, **changed)
            bad = (health_bad - overridden) | override_bad
            _check_health(effective, bad, health_path, overridden, issues)
            health_bad = bad

    probes_raw = body.get("probes")
    probe_count = len(probes_raw) if isinstance(probes_raw, list) else 0
    probes = _probes(probes_raw, f"{path}.probes", issues)
    if "min_targets" not in health_bad and probe_count and effective.min_targets > probe_count:
        # blamed where the value was written: the uplink's own [health], else the global one
        plural = "probe" if probe_count == 1 else "probes"
        why = (f"got {effective.min_targets}, expected at most {probe_count}: uplink {name} has only "
               f"{probe_count} {plural}, so no round could ever count as good")
        if "min_targets" in overridden:
            issues.append(ConfigIssue(f"{path}.health.min_targets", why))
        else:
            issues.append(ConfigIssue("health.min_targets", f"{why} (or set {path}.health.min_targets for it)"))
    if len(issues) > before:
        return None
    return _UplinkDraft(values, effective, probes)


def _uplinks(doc: Mapping[str, Any], health: HealthConfig, health_bad: set[str], routing: RoutingConfig,
             routing_bad: set[str], issues: list[ConfigIssue]) -> tuple[UplinkConfig, ...]:
    need = "at least one [uplinks.NAME] table with an interface and [[uplinks.NAME.probes]]"
    if "uplinks" not in doc:
        issues.append(ConfigIssue("uplinks", f"missing, expected {need}"))
        return ()
    raw = _table(doc["uplinks"], "uplinks", "[uplinks.NAME] per uplink", issues)
    if raw is None:
        return ()
    if not raw:
        issues.append(ConfigIssue("uplinks", f"got no uplinks, expected {need}"))
        return ()
    if len(raw) > MAX_UPLINKS:
        issues.append(ConfigIssue("uplinks", f"got {len(raw)} uplinks, expected at most {MAX_UPLINKS}: "
                                             "uplink rules take routing.rule_priority + 1..99, below the "
                                             "active rule at + 100"))

    interfaces: dict[str, str] = {}
    tables: dict[int, str] = {}
    drafts: dict[str, _UplinkDraft | None] = {}
    for name, body in raw.items():
        drafts[name] = _uplink(name, body, health, health_bad, issues)
        path = _join("uplinks", name)
        if not isinstance(body, dict):
            continue
        interface = body.get("interface")
        if isinstance(interface, str):
            if interface in interfaces:
                issues.append(ConfigIssue(
                    f"{path}.interface", f"got {_show(interface)}, expected an interface no other uplink "
                    f"uses ({interfaces[interface]}.interface is {_show(interface)})"))
            interfaces.setdefault(interface, path)
        table = body.get("table")
        if _is_int(table):
            if table in tables:
                issues.append(ConfigIssue(
                    f"{path}.table", f"got {table}, expected a table no other uplink uses "
                    f"({tables[table]}.table is {table})"))
            elif "active_table" not in routing_bad and table == routing.active_table:
                issues.append(ConfigIssue(
                    f"{path}.table", f"got {table}, expected a table other than routing.active_table "
                    f"({routing.active_table}), which holds the active default route"))
            tables.setdefault(table, path)

    taken = set(tables) | {routing.active_table} | set(ROUTE_TABLES_RESERVED)
    uplinks: list[UplinkConfig] = []
    next_table = 101
    for index, (name, draft) in enumerate(drafts.items()):
        if draft is None:
            continue
        table = draft.values["table"]
        if table is None:
            while next_table in taken:
                next_table += 1
            table = next_table
            taken.add(table)
        fields_ = {k: v for k, v in draft.values.items() if k != "table"}
        v4, v6 = (tuple(p for p in draft.probes if (":" in p.target) == six) for six in (False, True))
        if fields_.get("ipv6_prefixes") and not v6:
            issues.append(ConfigIssue(f"{_join('uplinks', name)}.ipv6_prefixes", "got LAN prefixes, expected IPv6 "
                                      "probe targets too: the uplink's IPv6 side routes them"))
        uplinks.append(UplinkConfig(name=name, table=table, rule_priority=routing.rule_priority + 1 + index,
                                    health=draft.health, probes=v4, probes6=v6, **fields_))
    issues.extend(ConfigIssue(path, why) for path, why in prefix_overlaps(uplinks))
    return tuple(uplinks)


_LEVEL_NEEDS = {"authPriv": ("auth", "priv"), "authNoPriv": ("auth",), "noAuthNoPriv": ()}


def _snmp_users(raw: Any, issues: list[ConfigIssue]) -> tuple[SnmpUserConfig, ...]:
    table = _table(raw, "snmp.users", "[snmp.users.NAME] per user", issues)
    users = []
    for name, body in (table or {}).items():
        path = _join("snmp.users", name)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", name):
            issues.append(ConfigIssue(path, "expected a user name of 1..32 letters, digits, '_', '.' or '-'"))
            continue
        if _table(body, path, f"[{path}]", issues) is None:
            continue
        _check_unknown(body, _toml_keys(SnmpUserConfig), path, issues)
        values, bad = _convert(SnmpUserConfig, body, path, issues)
        for proto, key in (("auth", "auth_key"), ("priv", "priv_key")):
            if proto not in bad and values[proto] != "none" and values[key] is None and key not in bad:
                issues.append(ConfigIssue(_join(path, key), f"missing, expected a passphrase for "
                                                            f"{proto} = {_show(values[proto])}"))
                bad.add(key)
        if not {"auth", "priv"} & bad and values["priv"] != "none" and values["auth"] == "none":
            issues.append(ConfigIssue(_join(path, "priv"), f"got {_show(values['priv'])}, expected \"none\" "
                                                           "while auth is \"none\": SNMPv3 privacy needs authentication"))
            bad.add("priv")
        if not bad:
            users.append(SnmpUserConfig(name=name, **values))
    return tuple(users)


def _snmp(doc: Mapping[str, Any], issues: list[ConfigIssue]) -> SnmpConfig:
    """[snmp] with its [snmp.agent], [snmp.users.NAME] and [[snmp.traps]], checked against each other."""
    raw = _table(doc.get("snmp", {}), "snmp", "[snmp]", issues)
    if raw is None:
        return SnmpConfig()
    _check_unknown(raw, _toml_keys(SnmpConfig), "snmp", issues)
    values, _ = _convert(SnmpConfig, raw, "snmp", issues)
    users = _snmp_users(raw.get("users", {}), issues)
    by_name = {u.name: u for u in users}
    agent = SnmpAgentConfig()
    agent_raw = _table(raw.get("agent", {}), "snmp.agent", "[snmp.agent]", issues)
    if agent_raw is not None:
        _check_unknown(agent_raw, _toml_keys(SnmpAgentConfig), "snmp.agent", issues)
        agent_values, agent_bad = _convert(SnmpAgentConfig, agent_raw, "snmp.agent", issues)
        agent = SnmpAgentConfig(**agent_values)
        for name in agent.users:
            if name not in by_name and name not in raw.get("users", {}):
                issues.append(ConfigIssue("snmp.agent.users", f"got {_show(name)}, expected a user defined "
                                                              "in [snmp.users.NAME]"))
        if agent.enabled and not agent.community and not agent.users and not {"community", "users"} & agent_bad:
            issues.append(ConfigIssue("snmp.agent.enabled", "got true, expected a community or users as well: "
                                                            "an agent nobody may read is a mistake"))
    traps = []
    raw_traps = raw.get("traps", [])
    if not isinstance(raw_traps, list) or not all(isinstance(t, dict) for t in raw_traps):
        issues.append(ConfigIssue("snmp.traps", f"got {_show(raw_traps)}, expected an array of tables [[snmp.traps]]"))
        raw_traps = []
    for index, item in enumerate(raw_traps):
        path = f"snmp.traps[{index}]"
        _check_unknown(item, _toml_keys(TrapReceiverConfig), path, issues)
        tv, tbad = _convert(TrapReceiverConfig, item, path, issues)
        if not {"version", "community"} & tbad and tv["version"] == "2c" and tv["community"] is None:
            issues.append(ConfigIssue(f"{path}.community", "missing, expected a community string for version 2c"))
            tbad.add("community")
        if "version" not in tbad and tv["version"] == "3":
            if tv["user"] is None and "user" not in tbad:
                issues.append(ConfigIssue(f"{path}.user", "missing, expected a user of [snmp.users] for version 3"))
                tbad.add("user")
            elif tv["user"] is not None and tv["user"] not in by_name:
                if tv["user"] not in raw.get("users", {}):
                    issues.append(ConfigIssue(f"{path}.user", f"got {_show(tv['user'])}, expected a user "
                                                              "defined in [snmp.users.NAME]"))
                tbad.add("user")
            elif tv["user"] is not None and "level" not in tbad:
                user = by_name[tv["user"]]
                missing = [p for p in _LEVEL_NEEDS[tv["level"]] if getattr(user, p) == "none"]
                if missing:
                    issues.append(ConfigIssue(f"{path}.level", (
                        f"got {_show(tv['level'])}, expected a level user {tv['user']!r} supports: its "
                        + " and ".join(f"{p} is \"none\"" for p in missing))))
                    tbad.add("level")
        if not tbad:
            traps.append(TrapReceiverConfig(**tv))
    return SnmpConfig(**{k: v for k, v in values.items() if k in {f.name for f in _leaf_fields(SnmpConfig)}},
                      agent=agent, users=users, traps=tuple(traps))


def _rules(raw: Any, uplinks: tuple[UplinkConfig, ...], sticky: bool | None,
           issues: list[ConfigIssue]) -> tuple[RuleConfig, ...]:
    """[[rules]]: each checked on its own and against the uplinks; ``sticky`` None: policy.sticky_flows
    was bad (already said)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        issues.append(ConfigIssue("rules", f"got {_show(raw)}, expected an array of tables [[rules]]"))
        return ()
    if raw and sticky is False:
        issues.append(ConfigIssue("rules", "got policy rules with policy.sticky_flows = false, expected sticky "
                                           "flows on: a rule sends a flow by its mark"))
    names = {u.name for u in uplinks}
    rules: list[RuleConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        path = f"rules[{index}]"
        _check_unknown(item, _toml_keys(RuleConfig), path, issues)
        values, bad = _convert(RuleConfig, item, path, issues)
        if "uplinks" not in item and "uplinks" not in bad:
            issues.append(ConfigIssue(f"{path}.uplinks", 'missing, expected a non-empty list of uplink names like '
                                                         '["fibre", "lte"]'))
            bad.add("uplinks")
        unknown = [n for n in values["uplinks"] if n not in names] if "uplinks" not in bad else []
        if unknown:
            issues.append(ConfigIssue(f"{path}.uplinks", f"got {_show(list(values['uplinks']))}, expected names of "
                                      f"configured uplinks ({', '.join(sorted(names)) or 'none'}): "
                                      f"{', '.join(unknown)} is not one"))
            bad.add("uplinks")
        owner = next((u.name for u in uplinks if "iif" not in bad and u.interface == values["iif"]), None)
        if owner is not None:
            issues.append(ConfigIssue(f"{path}.iif", f"got {_show(values['iif'])}, uplink {owner}'s interface, expected "
                                      "a LAN interface: a rule sends flows from the LAN (one that comes in on an "
                                      "uplink stays on that uplink)"))
            bad.add("iif")
        for key in ("sport", "dport"):
            if values[key] and "proto" not in bad and values["proto"] not in ("tcp", "udp"):
                issues.append(ConfigIssue(f"{path}.{key}", f"got ports with proto {_show(values['proto'])}, expected "
                                          'proto "tcp" or "udp": only they have ports'))
                bad.add(key)
        if not values["name"] and "name" not in bad:
            values["name"] = f"rule{index + 1}"
        if "name" not in bad and values["name"] in seen:
            issues.append(ConfigIssue(f"{path}.name", f"got {_show(values['name'])}, expected a name no other rule "
                                      f"has (rules[{seen[values['name']]}] has it)"))
            bad.add("name")
        seen.setdefault(values["name"], index)
        if not bad:
            rules.append(RuleConfig(**values))
    return tuple(rules)


def _validate(doc: Mapping[str, Any], source: str) -> Config:
    issues: list[ConfigIssue] = []
    _check_unknown(doc, _toml_keys(Config), "", issues)
    sections: dict[str, Any] = {}
    bad: dict[str, set[str]] = {}
    for f in fields(Config):
        if TABLE in f.metadata and not f.metadata.get(CUSTOM):
            sections[f.name], bad[f.name] = _section(f.metadata[TABLE], doc, f.name, issues)
    sections["snmp"] = _snmp(doc, issues)
    _check_health(sections["health"], bad["health"], "health", None, issues)
    pol = sections["policy"]
    if not {"flap_reuse", "flap_suppress"} & bad["policy"] and pol.flap_reuse >= pol.flap_suppress:
        issues.append(ConfigIssue("policy.flap_reuse", (
            f"got {pol.flap_reuse:g}, expected less than policy.flap_suppress ({pol.flap_suppress:g}): a dampened "
            "uplink is let back once its penalty has decayed below the level that dampened it")))
    hist = sections["history"]
    if not {"event_delay", "commit_interval"} & bad["history"] and hist.event_delay > hist.commit_interval:
        issues.append(ConfigIssue("history.event_delay", (
            f"got {format_duration(hist.event_delay)}, expected at most history.commit_interval "
            f"({format_duration(hist.commit_interval)}): events are written at least as soon as samples")))
    ctl = sections["control"]
    if ctl.status_socket is not None and ctl.status_socket == ctl.socket:
        issues.append(ConfigIssue("control.status_socket", f"got {_show(ctl.status_socket)}, expected another "
                                  "path than control.socket: the read-only socket is a second socket"))
    issues.extend(ConfigIssue(path, why) for path, why in mqtt_clashes(sections["mqtt"], bad["mqtt"]))
    uplinks = _uplinks(doc, sections["health"], bad["health"], sections["routing"], bad["routing"], issues)
    if "sticky_flows" not in bad["policy"] and pol.sticky_flows:
        issues.extend(ConfigIssue(path, why) for path, why in flow_mark_clashes(uplinks))
    rules = _rules(doc.get("rules"), uplinks, None if "sticky_flows" in bad["policy"] else pol.sticky_flows, issues)
    if issues:
        raise ConfigError(issues, source)
    return Config(uplinks=uplinks, rules=rules, source=source, **sections)


def loads(text: str, source: str = "<string>") -> Config:
    """Parse and check TOML text; ConfigError lists every problem (syntax errors with line/column)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if where:
            path = f"line {where.group(1)}, column {where.group(2)}"
            message = message[: where.start()]
        else:
            at_end = re.search(r"\s*\(at end of document\)$", message)
            path = "end of document" if at_end else "<toml>"
            message = message[: at_end.start()] if at_end else message
        raise ConfigError([ConfigIssue(path, f"invalid TOML: {message}")], source) from None
    return _validate(doc, source)


def load(path: str | os.PathLike[str]) -> Config:
    """Read, parse and check a config file; unreadable files raise ConfigError too."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        issue = ConfigIssue(source, f"cannot read the file: {exc.strerror or exc}")
        raise ConfigError([issue], source) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(source, f"not UTF-8 text (bad byte at offset {exc.start})")],
                          source) from None
    return loads(text, source)
