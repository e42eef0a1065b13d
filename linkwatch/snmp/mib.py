"""LINKWATCH-MIB as data (pure): the OID layout, engine status -> MIB instances, event -> notification.

The MIB module text (:mod:`.mibtext` builds it from the tables below; packaging/mibs/LINKWATCH-MIB.txt
is its output for the default base) describes exactly this layout; both the agent and the trap sender
use only this module, so they cannot disagree with each other. Values are
``(syntax, value)`` pairs with plain Python values; the SNMP library turns them into its types.

Layout under the module's OID B (``[snmp] base_oid``, default 1.3.6.1.4.1.8072.9999.9999.7745)::

    B.0            lwNotifications: .1 lwUplinkDown .2 lwUplinkUp .3 lwUplinkDegraded
                   .4 lwActiveChanged .5 lwUplinkFlapping (the storm summary)
                   .6 lwUplinkDampenedChange .7 lwUplinkQuotaReached
    B.1.1          lwScalars: .1 lwVersion .2 lwUptime .3 lwActiveUplinks .4 lwMode
                   .5 lwUplinkCount .6 lwActiveChanges .7 lwPreviousActiveUplinks .8 lwActiveReason
    B.1.2.1.C.I    lwUplinkTable, column C of the uplink with index I (1 = first in the config)
    B.1.3          lwNotifyObjects (accessible-for-notify, only in notifications): .1 lwQuotaThreshold
    B.2            lwConformance

Columns and notifications are only ever appended: managers store the numbers.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from linkwatch.core.events import ActiveChanged, Event, QuotaReached, UplinkDampened, UplinkStateChanged
from linkwatch.core.states import State

if TYPE_CHECKING:  # annotations only: `linkwatch mib` and the trap sink need not load the engine's core
    from linkwatch.core.status import FamilyStatus, Status, UplinkStatus

OID = tuple[int, ...]
Value = tuple[str, Any]  # (syntax, value); syntax is one of SYNTAXES
SYNTAXES = ("Integer32", "OctetString", "Counter32", "Gauge32", "TimeTicks", "ObjectIdentifier")

# lwUplinkState: the MIB's number of each uplink state (fixed: managers store them), keyed by the
# state's name as the engine's status and events carry it
_STATE_NUMBERS = {State.INIT: 1, State.UP: 2, State.FALLING: 3, State.DOWN: 4, State.RISING: 5,
                  State.DEGRADED: 6, State.DISABLED: 7}
if set(_STATE_NUMBERS) != set(State) or len(set(_STATE_NUMBERS.values())) != len(State):
    raise ImportError("LINKWATCH-MIB needs one distinct lwUplinkState number for every State, got "
                      f"{ {str(s): _STATE_NUMBERS.get(s) for s in State} }")
STATE_VALUES = {state.value: number for state, number in _STATE_NUMBERS.items()}
MODE_VALUES = {"failover": 1, "balance": 2}
TRUE, FALSE = 1, 2  # SNMPv2-TC TruthValue
UNKNOWN = -1  # RTT, jitter and loss columns when there is no measurement

SCALARS = {  # name -> sub-identifier under B.1.1
    "lwVersion": 1, "lwUptime": 2, "lwActiveUplinks": 3, "lwMode": 4, "lwUplinkCount": 5,
    "lwActiveChanges": 6, "lwPreviousActiveUplinks": 7, "lwActiveReason": 8, "lwActiveIpv6Uplinks": 9,
}
COLUMNS = {  # name -> column under B.1.2.1 (lwUplinkIndex is the not-accessible index)
    "lwUplinkIndex": 1, "lwUplinkName": 2, "lwUplinkInterface": 3, "lwUplinkState": 4,
    "lwUplinkReason": 5, "lwUplinkActive": 6, "lwUplinkPriority": 7, "lwUplinkRtt": 8,
    "lwUplinkJitter": 9, "lwUplinkLoss": 10, "lwUplinkLastChange": 11, "lwUplinkTransitions": 12,
    "lwUplinkDowns": 13, "lwUplinkSuppressedTraps": 14,
    "lwUplinkDampened": 15, "lwUplinkFlapPenalty": 16, "lwUplinkMonthTraffic": 17, "lwUplinkQuota": 18,
    "lwUplinkProbeBytesPerDay": 19,
    # the uplink's IPv6 side (issue 12): instances only in the rows of uplinks with IPv6 probe targets
    "lwUplinkIpv6State": 20, "lwUplinkIpv6Reason": 21, "lwUplinkIpv6Active": 22, "lwUplinkIpv6Rtt": 23,
    "lwUplinkIpv6Loss": 24, "lwUplinkIpv6Downs": 25,
}
IPV6_OBJECTS = ("lwActiveIpv6Uplinks", "lwUplinkIpv6State", "lwUplinkIpv6Reason", "lwUplinkIpv6Active",
                "lwUplinkIpv6Rtt", "lwUplinkIpv6Loss", "lwUplinkIpv6Downs")
NOTIFY_OBJECTS = {"lwQuotaThreshold": 1}  # name -> sub-identifier under B.1.3 (accessible-for-notify)
NOTIFICATIONS = {"lwUplinkDown": 1, "lwUplinkUp": 2, "lwUplinkDegraded": 3, "lwActiveChanged": 4,
                 "lwUplinkFlapping": 5, "lwUplinkDampenedChange": 6, "lwUplinkQuotaReached": 7}
# the objects each notification carries (the MIB's OBJECTS clauses, in this order)
NOTIFICATION_OBJECTS = {
    "lwUplinkDown": ("lwUplinkName", "lwUplinkInterface", "lwUplinkState", "lwUplinkReason", "lwUplinkLoss",
                     "lwUplinkRtt", "lwActiveUplinks"),
    "lwUplinkUp": ("lwUplinkName", "lwUplinkInterface", "lwUplinkState", "lwUplinkReason", "lwUplinkLoss",
                   "lwUplinkRtt", "lwActiveUplinks"),
    "lwUplinkDegraded": ("lwUplinkName", "lwUplinkInterface", "lwUplinkState", "lwUplinkReason",
                         "lwUplinkLoss", "lwUplinkRtt", "lwActiveUplinks"),
    "lwActiveChanged": ("lwActiveUplinks", "lwPreviousActiveUplinks", "lwActiveReason"),
    "lwUplinkFlapping": ("lwUplinkName", "lwUplinkState", "lwUplinkTransitions", "lwUplinkSuppressedTraps"),
    "lwUplinkDampenedChange": ("lwUplinkName", "lwUplinkState", "lwUplinkDampened", "lwUplinkFlapPenalty",
                               "lwActiveUplinks"),
    "lwUplinkQuotaReached": ("lwUplinkName", "lwQuotaThreshold", "lwUplinkMonthTraffic", "lwUplinkQuota",
                             "lwActiveUplinks"),
}
MAX_TEXT = 255  # DisplayString
# DateAndTime when the time is unknown: 1 January of year 0, 00:00:00.0 (HOST-RESOURCES-MIB's
# convention). DateAndTime is SIZE (8 | 11), so an empty string would break the TC.
UNKNOWN_DATE = bytes([0, 0, 1, 1, 0, 0, 0, 0])
MEGABYTE = 10**6  # lwUplinkMonthTraffic and lwUplinkQuota count decimal megabytes, as ISPs bill
GAUGE_MAX = 2**32 - 1


class MibError(ValueError):
    """A base OID or a status that cannot be put into LINKWATCH-MIB."""


def parse_oid(text: str) -> OID:
    """``"1.3.6.1.4.1.8072"`` -> ``(1, 3, 6, 1, 4, 1, 8072)``."""
    try:
        oid = tuple(int(p) for p in text.strip().strip(".").split("."))
    except ValueError:
        raise MibError(f"not a numeric OID: {text!r}") from None
    if len(oid) < 2 or any(not 0 <= p <= 0xFFFFFFFF for p in oid):
        raise MibError(f"not a numeric OID: {text!r}")
    return oid


def oid_str(oid: OID) -> str:
    return ".".join(map(str, oid))


@dataclass(frozen=True)
class Layout:
    """The OIDs of LINKWATCH-MIB under one base."""

    base: OID

    @classmethod
    def from_text(cls, base_oid: str) -> Layout:
        return cls(parse_oid(base_oid))

    def scalar(self, name: str) -> OID:
        """The OID of a scalar's instance (with its trailing .0)."""
        return self.base + (1, 1, SCALARS[name], 0)

    def column(self, name: str, index: int | None = None) -> OID:
        """A column's OID, or the instance of the uplink with ``index``."""
        oid = self.base + (1, 2, 1, COLUMNS[name])
        return oid if index is None else oid + (index,)

    def notify_object(self, name: str) -> OID:
        """The OID an accessible-for-notify object has in a notification (with a trailing .0)."""
        return self.base + (1, 3, NOTIFY_OBJECTS[name], 0)

    def instance(self, name: str, index: int) -> OID:
        """The OID of any object a notification carries: a column of the uplink with ``index``, a
        scalar, or an accessible-for-notify object."""
        if name in COLUMNS:
            return self.column(name, index)
        return self.scalar(name) if name in SCALARS else self.notify_object(name)

    def notification(self, name: str) -> OID:
        return self.base + (0, NOTIFICATIONS[name])

    @property
    def table(self) -> OID:
        return self.base + (1, 2)


def _text(text: str) -> Value:
    return ("OctetString", text.encode("utf-8", "replace")[:MAX_TEXT].decode("utf-8", "ignore"))


def _known(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _micros(ms: float | None) -> Value:
    return ("Integer32", max(0, min(int(round(ms * 1000)), 2**31 - 1)) if _known(ms) else UNKNOWN)


def _hundredths(pct: float | None) -> Value:
    return ("Integer32", max(0, min(int(round(pct * 100)), 10000)) if _known(pct) else UNKNOWN)


def date_and_time(epoch: float | None) -> bytes:
    """SNMPv2-TC DateAndTime (8 octets + UTC offset, 11 octets) of a wall-clock time, in UTC;
    :data:`UNKNOWN_DATE` (8 octets) when there is none."""
    if not epoch or not math.isfinite(epoch):
        return UNKNOWN_DATE
    t = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return bytes([t.year >> 8, t.year & 0xFF, t.month, t.day, t.hour, t.minute, t.second,
                  t.microsecond // 100000, ord("+"), 0, 0])


def _names(names: Iterable[str]) -> Value:
    return _text(",".join(names))


def _state(state: State | str) -> Value:
    """lwUplinkState of a state or its name (events carry names; one the MIB does not know reads
    as init(1))."""
    try:
        return ("Integer32", _STATE_NUMBERS[State(state)])
    except ValueError:
        return ("Integer32", _STATE_NUMBERS[State.INIT])


def _counter(n: int) -> Value:
    return ("Counter32", int(n) & 0xFFFFFFFF)


def _gauge(n: float) -> Value:
    """Gauge32: never below 0, stuck at its maximum rather than wrapping."""
    return ("Gauge32", max(0, min(int(n), GAUGE_MAX)))


def _truth(flag: bool) -> Value:
    return ("Integer32", TRUE if flag else FALSE)


def _penalty(value: float) -> Value:
    """lwUplinkFlapPenalty: hundredths."""
    return _gauge(round(value * 100) if _known(value) else 0)


def _megabytes(n: int | None, up: bool = False) -> Value:
    """Bytes as whole megabytes (10^6): rounded down (traffic), or up (a quota, which must never read as
    0, "no quota"); None is 0."""
    if not n:
        return _gauge(0)
    return _gauge(-(-n // MEGABYTE) if up else n // MEGABYTE)


def uplink_row(u: UplinkStatus, index: int, suppressed: int = 0) -> dict[str, Value]:
    """The table row of one uplink of the engine's status (``status.uplinks[index - 1]``)."""
    return {
        "lwUplinkName": _text(u.name),
        "lwUplinkInterface": _text(u.interface),
        "lwUplinkState": _state(u.state),
        "lwUplinkReason": _text(u.reason),
        "lwUplinkActive": _truth(u.active),
        "lwUplinkPriority": ("Integer32", u.priority),
        "lwUplinkRtt": _micros(u.rtt_ms),
        "lwUplinkJitter": _micros(u.jitter_ms),
        "lwUplinkLoss": _hundredths(u.loss_pct),
        "lwUplinkLastChange": ("OctetString", date_and_time(u.since)),
        "lwUplinkTransitions": _counter(u.transitions),
        "lwUplinkDowns": _counter(u.downs),
        "lwUplinkSuppressedTraps": _counter(suppressed),
        "lwUplinkDampened": _truth(u.dampened),
        "lwUplinkFlapPenalty": _penalty(u.flap_penalty),
        "lwUplinkMonthTraffic": _megabytes(u.month_bytes),
        "lwUplinkQuota": _megabytes(u.quota_bytes, up=True),
        "lwUplinkProbeBytesPerDay": _gauge(u.probe_bytes_per_day or 0),
        **(_ipv6_columns(u.ipv6) if u.ipv6 is not None else {}),
    }


def _ipv6_columns(six: FamilyStatus) -> dict[str, Value]:
    return {
        "lwUplinkIpv6State": _state(six.state), "lwUplinkIpv6Reason": _text(six.reason),
        "lwUplinkIpv6Active": _truth(six.active), "lwUplinkIpv6Rtt": _micros(six.rtt_ms),
        "lwUplinkIpv6Loss": _hundredths(six.loss_pct), "lwUplinkIpv6Downs": _counter(six.downs),
    }


def scalars(status: Status, uptime_s: float) -> dict[str, Value]:
    return {
        "lwVersion": _text(status.version),
        "lwUptime": ("TimeTicks", max(0, int(uptime_s * 100)) & 0xFFFFFFFF),
        "lwActiveUplinks": _names(status.active),
        "lwMode": ("Integer32", MODE_VALUES.get(status.mode, 1)),
        "lwUplinkCount": ("Integer32", len(status.uplinks)),
        "lwActiveChanges": _counter(status.active_changes),
        "lwPreviousActiveUplinks": _names(status.previous_active),
        "lwActiveReason": _text(status.reason),
        "lwActiveIpv6Uplinks": _names(status.active_ipv6),
    }


def instances(layout: Layout, status: Status, uptime_s: float,
              suppressed: Mapping[str, int] | None = None) -> list[tuple[OID, Value]]:
    """Every readable instance of the MIB for this status, sorted by OID (what a walk returns).
    ``suppressed``: the traps held back per uplink name (lwUplinkSuppressedTraps; 0 when absent)."""
    out: list[tuple[OID, Value]] = [(layout.scalar(n), v) for n, v in scalars(status, uptime_s).items()]
    for index, u in enumerate(status.uplinks, start=1):
        for name, value in uplink_row(u, index, (suppressed or {}).get(u.name, 0)).items():
            out.append((layout.column(name, index), value))
    return sorted(out)


@dataclass(frozen=True)
class Notification:
    name: str
    oid: OID
    varbinds: tuple[tuple[OID, Value], ...]  # after sysUpTime.0 and snmpTrapOID.0, which the sender adds


NOTIFY_STATES = {State.DOWN.value: "lwUplinkDown", State.UP.value: "lwUplinkUp",
                 State.DEGRADED.value: "lwUplinkDegraded"}


_FROM_OLD = object()  # notification_for without what was reported: judge UP by the event's old state


def _notification(layout: Layout, name: str, index: int, values: Mapping[str, Value]) -> Notification:
    """Notification ``name`` with its objects (of the uplink with ``index``) in the MIB's order."""
    return Notification(name, layout.notification(name),
                        tuple((layout.instance(o, index), values[o]) for o in NOTIFICATION_OBJECTS[name]))


def notification_for(layout: Layout, event: Event, index: int, active: Iterable[str],
                     reported: Any = _FROM_OLD, state: str | None = None) -> Notification | None:
    """The notification an event causes, or None (only DOWN, UP, DEGRADED, traffic moves, a dampening
    that starts or ends and a quota threshold do).

    ``index`` is the uplink's row index (1-based, config order); ``active`` the uplinks now active.
    UP is news only to receivers that last heard DOWN or DEGRADED about the uplink: ``reported`` is
    the state the last notification about it carried (None: none yet), as the trap sender keeps it.
    Without ``reported``, UP is reported from any state but INIT (start-up) and FALLING (a scare
    that passed). ``state`` is the uplink's state now, which lwUplinkDampenedChange carries (its
    event has none; None reads as init(1))."""
    if isinstance(event, UplinkStateChanged):
        name = NOTIFY_STATES.get(event.new)
        if name is None:
            return None
        if event.new == State.UP.value:
            if reported is _FROM_OLD:
                if event.old in (State.INIT.value, State.FALLING.value):
                    return None
            elif reported not in (State.DOWN.value, State.DEGRADED.value):
                return None
        return _notification(layout, name, index, {
            "lwUplinkName": _text(event.uplink), "lwUplinkInterface": _text(event.interface),
            "lwUplinkState": _state(event.new), "lwUplinkReason": _text(event.reason),
            "lwUplinkLoss": _hundredths(event.loss_pct), "lwUplinkRtt": _micros(event.rtt_ms),
            "lwActiveUplinks": _names(active)})
    if isinstance(event, ActiveChanged):
        return _notification(layout, "lwActiveChanged", 0, {
            "lwActiveUplinks": _names(event.new), "lwPreviousActiveUplinks": _names(event.old),
            "lwActiveReason": _text(event.reason)})
    if isinstance(event, UplinkDampened):
        return _notification(layout, "lwUplinkDampenedChange", index, {
            "lwUplinkName": _text(event.uplink), "lwUplinkState": _state(state or State.INIT),
            "lwUplinkDampened": _truth(event.dampened), "lwUplinkFlapPenalty": _penalty(event.penalty),
            "lwActiveUplinks": _names(active)})
    if isinstance(event, QuotaReached):
        return _notification(layout, "lwUplinkQuotaReached", index, {
            "lwUplinkName": _text(event.uplink), "lwQuotaThreshold": ("Integer32", event.percent),
            "lwUplinkMonthTraffic": _megabytes(event.used), "lwUplinkQuota": _megabytes(event.quota, up=True),
            "lwActiveUplinks": _names(active)})
    return None


def flapping(layout: Layout, uplink: str, index: int, state: str, transitions: int,
             suppressed: int) -> Notification:
    """The summary sent when a storm window ends with traps held back for ``uplink``.

    ``transitions`` and ``suppressed`` are the uplink's counters (lwUplinkTransitions and
    lwUplinkSuppressedTraps, both Counter32 "since the engine started"), i.e. the values the agent
    shows in the uplink's row; what this window held back is the increase of ``suppressed``."""
    return _notification(layout, "lwUplinkFlapping", index, {
        "lwUplinkName": _text(uplink), "lwUplinkState": _state(state), "lwUplinkTransitions": _counter(transitions),
        "lwUplinkSuppressedTraps": _counter(suppressed)})
