"""Typed events the engine emits and every sink receives (history, SNMP traps, hooks, log).

Events are frozen dataclasses. ``at`` is the wall-clock time (``time.time()``) for humans and the
history; ``mono`` is the ``time.monotonic()`` value the engine used for the decision, useful to
measure intervals between events of one run. ``event_to_dict`` / ``event_from_dict`` give a
JSON-ready form that round-trips exactly (tuples travel as lists).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from linkwatch.core.states import STATE_NAMES

STATES: frozenset[str] = frozenset(STATE_NAMES)
"""Uplink state names an :class:`UplinkStateChanged` may carry."""


class EventError(ValueError):
    """A dict does not describe a valid event (bad kind, missing or mistyped field)."""


@dataclass(frozen=True)
class UplinkStateChanged:
    """One uplink moved from state ``old`` to ``new``, with the numbers that explain it."""

    at: float
    mono: float
    uplink: str
    interface: str
    old: str
    new: str
    reason: str
    loss_pct: float | None
    rtt_ms: float | None
    jitter_ms: float | None
    kind: ClassVar[str] = "uplink_state"


@dataclass(frozen=True)
class ActiveChanged:
    """The set of uplinks carrying traffic changed (names, in policy order)."""

    at: float
    mono: float
    old: tuple[str, ...]
    new: tuple[str, ...]
    reason: str
    kind: ClassVar[str] = "active_changed"


@dataclass(frozen=True)
class Ipv6StateChanged:
    """An uplink's IPv6 side moved from ``old`` to ``new`` (issue 12: its IPv4 state is
    :class:`UplinkStateChanged`'s). A kind of its own, so a sink that knows only IPv4 (SNMP
    traps) never takes one for the other."""

    at: float
    mono: float
    uplink: str
    interface: str
    old: str
    new: str
    reason: str
    loss_pct: float | None
    rtt_ms: float | None
    jitter_ms: float | None
    kind: ClassVar[str] = "ipv6_state"


@dataclass(frozen=True)
class Ipv6ActiveChanged:
    """The set of uplinks carrying IPv6 traffic changed."""

    at: float
    mono: float
    old: tuple[str, ...]
    new: tuple[str, ...]
    reason: str
    kind: ClassVar[str] = "ipv6_active"


ENGINE_WHATS: tuple[str, ...] = ("started", "stopped", "reloaded", "reload_failed")


@dataclass(frozen=True)
class EngineEvent:
    """Engine life cycle: ``what`` is one of :data:`ENGINE_WHATS` (started, stopped, reloaded,
    reload_failed); ``detail`` says more (version and pid, what a reload kept, why it failed)."""

    at: float
    mono: float
    what: str
    detail: str = ""
    kind: ClassVar[str] = "engine"


@dataclass(frozen=True)
class AdminAction:
    """An operator acted on an uplink (``action`` is one of ADMIN_ACTIONS) from ``source``
    (``cli``, ``web:<user>@<address>``, ...); ``result`` says what it did."""

    at: float
    mono: float
    action: str
    uplink: str
    source: str
    result: str
    kind: ClassVar[str] = "admin"


@dataclass(frozen=True)
class UplinkSamples:
    """What the probes of one uplink saw over one history period ``[start, at]`` (wall clock)."""

    at: float
    mono: float
    uplink: str
    start: float
    sent: int
    lost: int
    loss_pct: float | None
    rtt_avg_ms: float | None
    rtt_min_ms: float | None
    rtt_max_ms: float | None
    jitter_ms: float | None
    rx_bytes: int = 0  # the interface's own traffic in the period (counters), received ...
    tx_bytes: int = 0  # ... and sent
    family: int = 4  # 6: what the IPv6 probes saw (no bytes: the counters count both families, on the 4 row)
    kind: ClassVar[str] = "samples"


@dataclass(frozen=True)
class UplinkDampened:
    """An uplink that kept failing is dampened (it does not take traffic back), or no longer is."""

    at: float
    mono: float
    uplink: str
    dampened: bool
    penalty: float
    kind: ClassVar[str] = "dampened"


@dataclass(frozen=True)
class QuotaReached:
    """An uplink's traffic this month reached ``percent`` % of its quota."""

    at: float
    mono: float
    uplink: str
    percent: int
    used: int  # bytes this month
    quota: int  # bytes
    kind: ClassVar[str] = "quota"


Event = (UplinkStateChanged | ActiveChanged | EngineEvent | AdminAction | UplinkSamples | UplinkDampened | QuotaReached
         | Ipv6StateChanged | Ipv6ActiveChanged)

EVENT_TYPES: dict[str, type] = {
    cls.kind: cls for cls in (UplinkStateChanged, ActiveChanged, EngineEvent, AdminAction, UplinkSamples,
                              UplinkDampened, QuotaReached, Ipv6StateChanged, Ipv6ActiveChanged)
}


def event_to_dict(ev: Event) -> dict[str, Any]:
    """JSON-ready dict of an event, with its ``kind`` first; tuples become lists."""
    out: dict[str, Any] = {"kind": ev.kind}
    for f in dataclasses.fields(ev):
        value = getattr(ev, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# --- parsing: one small checker per field type --------------------------------------------


def _number(kind: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventError(f"{kind}.{name}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise EventError(f"{kind}.{name}: expected a finite number, got {value!r}")
    return float(value)


def _opt_number(kind: str, name: str, value: Any) -> float | None:
    return None if value is None else _number(kind, name, value)


def _count(kind: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventError(f"{kind}.{name}: expected a count (an integer >= 0), got {value!r}")
    return value


def _family(kind: str, name: str, value: Any) -> int:
    if value not in (4, 6) or isinstance(value, bool):
        raise EventError(f"{kind}.{name}: expected 4 or 6, got {value!r}")
    return value


def _string(kind: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise EventError(f"{kind}.{name}: expected a string, got {value!r}")
    return value


def _bool(kind: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise EventError(f"{kind}.{name}: expected true or false, got {value!r}")
    return value


def _state(kind: str, name: str, value: Any) -> str:
    value = _string(kind, name, value)
    if value not in STATES:
        raise EventError(
            f"{kind}.{name}: unknown state {value!r}, expected one of {sorted(STATES)}"
        )
    return value


def _names(kind: str, name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise EventError(f"{kind}.{name}: expected a list of uplink names, got {value!r}")
    return tuple(value)


_FIELD_CHECKS: dict[str, dict[str, Any]] = {
    "uplink_state": {
        "at": _number, "mono": _number, "uplink": _string, "interface": _string,
        "old": _state, "new": _state, "reason": _string,
        "loss_pct": _opt_number, "rtt_ms": _opt_number, "jitter_ms": _opt_number,
    },
    "active_changed": {
        "at": _number, "mono": _number, "old": _names, "new": _names, "reason": _string,
    },
    "engine": {"at": _number, "mono": _number, "what": _string, "detail": _string},
    "admin": {"at": _number, "mono": _number, "action": _string, "uplink": _string, "source": _string,
              "result": _string},
    "samples": {
        "at": _number, "mono": _number, "uplink": _string, "start": _number, "sent": _count, "lost": _count,
        "loss_pct": _opt_number, "rtt_avg_ms": _opt_number, "rtt_min_ms": _opt_number,
        "rtt_max_ms": _opt_number, "jitter_ms": _opt_number, "rx_bytes": _count, "tx_bytes": _count,
        "family": _family,
    },
    "dampened": {"at": _number, "mono": _number, "uplink": _string, "dampened": _bool, "penalty": _number},
    "quota": {"at": _number, "mono": _number, "uplink": _string, "percent": _count, "used": _count,
              "quota": _count},
}


_FIELD_CHECKS["ipv6_state"] = _FIELD_CHECKS["uplink_state"]
_FIELD_CHECKS["ipv6_active"] = _FIELD_CHECKS["active_changed"]


def event_from_dict(d: dict[str, Any]) -> Event:
    """Inverse of :func:`event_to_dict`; raises :class:`EventError` (a ValueError) on bad input."""
    if not isinstance(d, dict):
        raise EventError(f"event: expected a dict, got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in EVENT_TYPES:
        raise EventError(
            f"event.kind: unknown kind {kind!r}, expected one of {sorted(EVENT_TYPES)}"
        )
    cls = EVENT_TYPES[kind]
    checks = _FIELD_CHECKS[kind]
    unknown = sorted(set(d) - set(checks) - {"kind"})
    if unknown:
        raise EventError(f"{kind}: unknown field(s) {unknown}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            if f.default is not dataclasses.MISSING:
                continue
            raise EventError(f"{kind}.{f.name}: missing")
        values[f.name] = checks[f.name](kind, f.name, d[f.name])
    return cls(**values)
