"""The status snapshot: the one contract every reader uses (control socket, ``linkwatch status``,
the web UI and its API, /metrics, the SNMP agent, the lab demo).

Frozen dataclasses, built by :func:`build_status` from the core's state plus the few things only
the I/O shell knows (:class:`ShellReport`). On the wire it is JSON: :meth:`Status.to_dict` writes
it and :func:`status_from_dict` reads it back, checking every field; :func:`json_schema` describes
it (docs/status.schema.json, held by a test). ``schema_version`` grows when a field changes
meaning or goes away; new fields may appear without it. ``version`` is linkwatch's own version.

Outside tools read ``uplinks[].name/state/active/rtt_ms/loss_pct``: those keys are a contract.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Union

from linkwatch.core import dampening as damp
from linkwatch.core.dampening import DampeningParams
from linkwatch.core.engine import EngineState, dampening_params, flows_move_at, in_doubt
from linkwatch.core.evidence import month_of
from linkwatch.core.inputs import Now
from linkwatch.core.states import State, usable
from linkwatch.core.flows import describe
from linkwatch.core.routing import rule_target
from linkwatch.core.uplink import UplinkState, bytes_per_day, gateway_of, is_proven, probe_plan, route_of

SCHEMA_VERSION = 1


class StatusError(ValueError):
    """A status document that does not match the contract (names the bad field)."""


@dataclass(frozen=True)
class ProbeStatus:
    """The latest result of one probe of an uplink."""

    kind: str
    target: str
    ok: bool
    rtt_ms: float | None
    error: str | None


@dataclass(frozen=True)
class FamilyStatus:
    """An uplink's IPv6 side (issue 12): its own state, judged by its IPv6 probes."""

    state: State
    usable: bool
    reason: str
    active: bool  # IPv6 traffic goes through it
    since: float
    rtt_ms: float | None
    loss_pct: float | None
    jitter_ms: float | None
    address: str | None  # the global IPv6 address its probes leave from
    gateway: str | None  # the IPv6 default route's next hop via it (often link-local, from an RA)
    interval_ms: int
    rounds: int
    downs: int
    probe_error: str | None
    probes: tuple[ProbeStatus, ...] = ()
    dampened: bool = False
    prefixes: tuple[str, ...] = ()  # the LAN prefixes it delegates (config's ipv6_prefixes or `linkwatch prefixes`)


@dataclass(frozen=True)
class UplinkStatus:
    name: str
    interface: str
    state: State
    usable: bool  # the state can carry traffic (UP, FALLING, DEGRADED): see linkwatch.core.states
    reason: str
    active: bool
    since: float  # wall clock of the last state change
    priority: int
    weight: int
    table: int
    rtt_ms: float | None
    loss_pct: float | None
    jitter_ms: float | None
    carrier: bool
    address: str | None
    gateway: str | None
    forced: bool
    interval_ms: int
    probe_bytes_per_day: int | None
    rounds: int
    downs: int
    transitions: int
    probe_error: str | None
    probes: tuple[ProbeStatus, ...] = ()
    proven: bool = False  # the LAN's own traffic keeps coming in: it works without asking (fewer probes)
    suspect: bool = False  # LAN packets leave with nothing coming back: a probe burst is confirming
    slow_rounds: int = 0  # rounds that timed out while it showed it was alive (late replies, traffic)
    dampened: bool = False  # it kept failing (flapping): no traffic back until the penalty decays
    flap_penalty: float = 0.0
    month_bytes: int = 0  # traffic on the interface this month (received + sent), kept across restarts
    quota_bytes: int | None = None
    quota_pct: float | None = None
    flows_move_in_s: float | None = None  # flows left on it after traffic moved away are reset then
    ipv6: FamilyStatus | None = None  # its IPv6 side; None: it has no IPv6 probe targets
    ipv6_only: bool = False  # all its probe targets are IPv6: its IPv4 side (state DOWN) never carries traffic


@dataclass(frozen=True)
class FlushReport:
    """One conntrack flush the engine did (the last ones are kept)."""

    uplink: str
    address: str
    deleted: int
    ms: float  # the flush itself
    mark: int | None = None  # by flow mark (one kernel operation); None: by NAT address
    after_switch_ms: float | None = None  # from the route switch to the last entry gone


@dataclass(frozen=True)
class RuleStatus:
    """A policy rule and where it sends new flows now."""

    name: str
    matches: str  # what it matches, for people
    uplinks: tuple[str, ...]  # its list, in order
    balance: bool
    fallback: str  # "default" or "drop": when none of its uplinks works
    now: tuple[str, ...]  # the uplinks new matching flows take now; () = the fallback applies
    applied: bool = True  # False: sticky flows are off (no libnftables): the rule does nothing


@dataclass(frozen=True)
class SinkStats:
    handled: int
    failed: int
    timed_out: int
    dropped: int
    last_error: str | None
    queued: int
    detail: Mapping[str, Any] | None = None  # what the sink itself reports (history, traps)


@dataclass(frozen=True)
class SnmpStatus:
    """What status shows of SNMP (never a community or key)."""

    engine_id: str
    base_oid: str
    agent: Mapping[str, Any] | None  # the agent's counters; None when it is off or did not start
    agent_error: str | None
    agent_listen: str | None


@dataclass(frozen=True)
class Status:
    schema_version: int
    version: str
    pid: int
    started: float
    mode: str
    active: tuple[str, ...]
    forced: str | None
    previous_active: tuple[str, ...]
    reason: str
    last_apply_ms: float | None
    conntrack_flushes: tuple[FlushReport, ...]
    active_changes: int
    uplinks: tuple[UplinkStatus, ...]
    sinks: Mapping[str, SinkStats] = field(default_factory=dict)
    snmp: SnmpStatus | None = None
    rules: tuple[RuleStatus, ...] = ()  # the policy rules and where each sends new flows now
    active_ipv6: tuple[str, ...] = ()  # the uplinks IPv6 traffic goes through (their IPv6 side)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what the control socket sends)."""
        return _dump(self)

    def uplink(self, name: str) -> UplinkStatus | None:
        return next((u for u in self.uplinks if u.name == name), None)


@dataclass(frozen=True)
class ShellReport:
    """What only the I/O shell knows, for the status."""

    version: str
    pid: int
    last_apply_ms: float | None = None
    conntrack_flushes: tuple[FlushReport, ...] = ()
    sinks: Mapping[str, SinkStats] = field(default_factory=dict)
    snmp: SnmpStatus | None = None


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def uplink_status(u: UplinkState, active: bool, forced: bool, now: Now, doubt: bool,
                  damping: DampeningParams, carrying: bool) -> UplinkStatus:
    """``carrying``: LAN traffic goes through it (active, or a policy rule's uplink): probed as such."""
    s, f, mono = u.stats, u.facts, now.mono
    bpd = bytes_per_day(u, mono)
    month = u.counters.month_bytes if u.counters.month == month_of(now.wall) else 0
    move_at = flows_move_at(u)
    return UplinkStatus(
        name=u.name, interface=u.cfg.interface, state=u.health.state, usable=usable(u.health.state),
        reason=u.health.reason, active=active, since=u.wall_since, priority=u.cfg.priority, weight=u.cfg.weight,
        table=u.cfg.table, rtt_ms=_r(s.rtt_ms), loss_pct=_r(s.loss_pct), jitter_ms=_r(s.jitter_ms),
        carrier=bool(f and f.carrier), address=f.address if f else None, gateway=gateway_of(u.cfg, f),
        forced=forced, interval_ms=round(probe_plan(u, carrying, doubt).interval * 1000),
        probe_bytes_per_day=None if bpd is None else round(bpd), rounds=u.rounds, downs=u.downs,
        transitions=u.transitions, probe_error=u.probe_error,
        probes=tuple(ProbeStatus(r.kind, r.target, r.ok, _r(r.rtt and r.rtt * 1000), r.error)
                     for r in u.last_results),
        proven=active and is_proven(u, mono), suspect=u.suspect_since is not None,
        slow_rounds=u.slow_rounds, dampened=u.penalty.dampened,
        flap_penalty=round(damp.current(u.penalty, mono, damping), 2), month_bytes=month,
        quota_bytes=u.cfg.quota, quota_pct=_r(100.0 * month / u.cfg.quota) if u.cfg.quota else None,
        flows_move_in_s=None if move_at is None else _r(max(move_at - mono, 0.0)),
        ipv6_only=not u.cfg.probes,
    )


def family_status(u: UplinkState, active: bool, doubt: bool) -> FamilyStatus:
    s, f = u.stats, u.facts
    return FamilyStatus(
        state=u.health.state, usable=usable(u.health.state), reason=u.health.reason, active=active,
        since=u.wall_since, rtt_ms=_r(s.rtt_ms), loss_pct=_r(s.loss_pct), jitter_ms=_r(s.jitter_ms),
        address=f.address if f else None, gateway=f.gateway if f else None,
        interval_ms=round(probe_plan(u, active, doubt).interval * 1000), rounds=u.rounds, downs=u.downs,
        probe_error=u.probe_error, dampened=u.penalty.dampened, prefixes=u.cfg.ipv6_prefixes,
        probes=tuple(ProbeStatus(r.kind, r.target, r.ok, _r(r.rtt and r.rtt * 1000), r.error)
                     for r in u.last_results))


def _with_ipv6(state: EngineState, status: UplinkStatus) -> UplinkStatus:
    v6 = state.v6
    u = v6.uplink(status.name)
    if u is None:
        return status
    doubt = any(x.health.state in (State.FALLING, State.DOWN) for x in v6.uplinks if x.name in v6.active)
    return replace(status, ipv6=family_status(u, u.name in v6.active, doubt))


def build_status(state: EngineState, now: Now, shell: ShellReport) -> Status:
    """The snapshot of ``state`` at ``now``."""
    d = state.decision
    return Status(
        schema_version=SCHEMA_VERSION, version=shell.version, pid=shell.pid, started=state.started,
        mode=state.config.policy.mode, active=tuple(state.active), forced=state.forced,
        previous_active=tuple(state.previous_active), reason=d.reason if d else "",
        last_apply_ms=_r(shell.last_apply_ms), conntrack_flushes=tuple(shell.conntrack_flushes),
        active_changes=state.active_changes,
        uplinks=tuple(_with_ipv6(state, uplink_status(u, u.name in state.active, state.forced == u.name, now,
                                                      in_doubt(state), dampening_params(state.config),
                                                      state.carries(u.name)))
                      for u in state.uplinks),
        rules=rule_status(state), sinks=dict(shell.sinks), snmp=shell.snmp, active_ipv6=tuple(state.v6.active),
    )


def rule_status(state: EngineState) -> tuple[RuleStatus, ...]:
    sticky = state.config.policy.sticky_flows
    by_name = {u.name: route_of(u, sticky) for u in state.uplinks}
    chosen = dict(state.rule_choices)
    return tuple(RuleStatus(r.name, describe(r), r.uplinks, r.balance, r.fallback,
                            rule_target(r, by_name, chosen.get(r.name)) if sticky else (), sticky)
                 for r in state.config.rules)


# ---- JSON: one description of the types drives writing, reading and the schema -----------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, State):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_dump(v) for v in value]
    return value


def _split_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True
    return tp, False


def _load(tp: Any, raw: Any, path: str) -> Any:
    tp, optional = _split_optional(tp)
    if tp is Any:  # free-form (a sink's own detail, the agent's counters)
        return raw
    if raw is None:
        if optional:
            return None
        raise StatusError(f"{path}: missing (null)")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(raw, dict):
            raise StatusError(f"{path}: expected an object, got {type(raw).__name__}")
        hints = _hints(tp)
        values = {}
        for f in dataclasses.fields(tp):
            if f.name not in raw:
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                    continue
                raise StatusError(f"{path}.{f.name}: missing")
            values[f.name] = _load(hints[f.name], raw[f.name], f"{path}.{f.name}")
        return tp(**values)
    if tp is State:
        try:
            return State(raw)
        except ValueError:
            raise StatusError(f"{path}: unknown state {raw!r}") from None
    if origin is tuple:
        if not isinstance(raw, list):
            raise StatusError(f"{path}: expected a list, got {type(raw).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(_load(item, v, f"{path}[{i}]") for i, v in enumerate(raw))
    if origin in (Mapping, dict):
        if not isinstance(raw, dict):
            raise StatusError(f"{path}: expected an object, got {type(raw).__name__}")
        item = typing.get_args(tp)[1]
        return {k: _load(item, v, f"{path}.{k}") for k, v in raw.items()}
    if tp is bool:
        if not isinstance(raw, bool):
            raise StatusError(f"{path}: expected true or false, got {raw!r}")
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise StatusError(f"{path}: expected an integer, got {raw!r}")
        return raw
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise StatusError(f"{path}: expected a number, got {raw!r}")
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            raise StatusError(f"{path}: expected a string, got {raw!r}")
        return raw
    raise TypeError(f"{path}: no reader for {tp!r}")  # a new field type: teach this module


def status_from_dict(raw: Any) -> Status:
    """Read a status document (what :meth:`Status.to_dict` wrote), checking every field;
    raises :class:`StatusError` naming the first bad one. Unknown keys are ignored (a newer
    engine may add some)."""
    return _load(Status, raw, "status")


def _schema(tp: Any) -> dict[str, Any]:
    tp, optional = _split_optional(tp)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        fields = dataclasses.fields(tp)
        out: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: _schema(hints[f.name]) for f in fields},
            "required": [f.name for f in fields if f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING],
        }
    elif tp is State:
        out = {"type": "string", "enum": [s.value for s in State]}
    elif origin is tuple:
        out = {"type": "array", "items": _schema(typing.get_args(tp)[0])}
    elif origin in (Mapping, dict):
        out = {"type": "object", "additionalProperties": _schema(typing.get_args(tp)[1])}
    elif tp is Any:
        out = {}
    else:
        out = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]}
    if optional:
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the status document, derived from the dataclasses."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "linkwatch status",
        "description": "What `linkwatch status --json` prints and the control socket's status command returns.",
        **_schema(Status),
    }
