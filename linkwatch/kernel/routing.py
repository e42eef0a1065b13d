"""Routing reconciler: plan (pure) -> dump the kernel (only our objects) -> diff -> apply.

Kernel model (IPv4), per uplink table T::

    default via <gw> dev <if> table T proto P               (only while the uplink is usable)
    <net>/<len> dev <if> src <addr> scope link table T proto P  (while it has an address)
    unreachable default table T metric 4278198272 proto P      (always: a probe from a dead
                                                                 uplink never leaks elsewhere)

Rules::

    <suppress_priority>: lookup main suppress_prefixlength 0 proto P
    <uplink priority>:   from <addr>/32 lookup T proto P          (one per uplink with an address)
    <active_priority>:   lookup <active_table> proto P

and the active table holds one default route (or a weighted multipath route) over the active
uplinks. Every object carries linkwatch's route protocol number P, so the reconciler dumps,
changes and deletes only its own objects; the main table is never touched.

:func:`plan` is pure. :class:`Reconciler` talks to the kernel through pyroute2 from one private
worker thread (pyroute2's synchronous API cannot run inside a running asyncio loop), so its
methods may be called from the engine's event loop or from any thread.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DST = "0.0.0.0/0"
SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
RESERVED_TABLES = frozenset({0, 253, 254, 255})  # unspec, default, main, local
MAIN_TABLE = 254
NO_SUPPRESS = 0xFFFFFFFF  # FRA_SUPPRESS_PREFIXLEN as the kernel reports "not set"
MAX_WEIGHT = 256  # rtnh_hops is one byte: weight = hops + 1
_RTN_NAMES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
_RTN_TYPES = {name: num for num, name in _RTN_NAMES.items()}
# errors that mean "the device is down/absent right now": retried on the next apply
_DEVICE_DOWN = frozenset({errno.ENETDOWN})
_NOT_FOUND = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV})


class RoutingError(Exception):
    """A bad routing parameter or uplink, or the kernel could not be reached."""


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class RoutingParams:
    protocol: int = 77  # linkwatch's route protocol number
    active_table: int = 100
    suppress_priority: int = 1000  # "lookup main suppress_prefixlength 0"
    active_priority: int = 1100  # "lookup active_table"
    unreachable_metric: int = 4278198272

    def __post_init__(self) -> None:
        if not 5 <= self.protocol <= 255:
            raise RoutingError(
                f"protocol={self.protocol}: expected 5..255 (0-4 belong to the kernel)"
            )
        _check_table("active_table", self.active_table)
        for name in ("suppress_priority", "active_priority"):
            value = getattr(self, name)
            if not 1 <= value < 32766:
                raise RoutingError(f"{name}={value}: expected 1..32765 (before the main rule)")
        if self.suppress_priority >= self.active_priority:
            raise RoutingError(
                f"suppress_priority={self.suppress_priority} must be lower than "
                f"active_priority={self.active_priority}"
            )
        if not 0 < self.unreachable_metric <= 0xFFFFFFFF:
            raise RoutingError(f"unreachable_metric={self.unreachable_metric}: expected 1..2**32-1")


@dataclass(frozen=True)
class UplinkRoute:
    name: str
    ifindex: int | None  # None: interface missing
    address: str | None  # IPv4 address of the uplink
    prefixlen: int | None
    gateway: str | None
    table: int
    rule_priority: int  # priority of "from address lookup table"
    usable: bool  # carrier + address + gateway known


@dataclass(frozen=True, order=True)
class NextHop:
    """One leg of a multipath route; ``weight`` is iproute2's weight (1..256)."""

    gateway: str
    ifindex: int
    weight: int = 1


@dataclass(frozen=True)
class RouteSpec:
    """One IPv4 route as linkwatch wants it (or found it) in the kernel.

    The kernel identifies an IPv4 route by (table, dst, tos, metric); linkwatch never uses tos,
    so :attr:`key` is (table, dst, metric) and a route with the same key is replaced in place.
    """

    table: int
    dst: str  # "0.0.0.0/0" or "198.51.100.0/24"
    kind: str = "unicast"  # unicast | unreachable | blackhole | prohibit
    metric: int = 0
    gateway: str | None = None
    ifindex: int | None = None
    prefsrc: str | None = None
    scope: int = SCOPE_UNIVERSE
    nexthops: tuple[NextHop, ...] = ()

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.table, self.dst, self.metric)

    def describe(self) -> str:
        """iproute2-like one line, e.g. ``default via 198.51.100.1 dev #2 table 101``."""
        dst = "default" if self.dst == DEFAULT_DST else self.dst
        parts = [dst] if self.kind == "unicast" else [self.kind, dst]
        if self.gateway:
            parts += ["via", self.gateway]
        if self.ifindex is not None:
            parts += ["dev", f"#{self.ifindex}"]
        parts += ["table", str(self.table)]
        if self.scope == SCOPE_LINK:
            parts += ["scope", "link"]
        if self.prefsrc:
            parts += ["src", self.prefsrc]
        if self.metric:
            parts += ["metric", str(self.metric)]
        for hop in self.nexthops:
            parts += ["nexthop", "via", hop.gateway, "dev", f"#{hop.ifindex}", "weight", str(hop.weight)]
        return " ".join(parts)


@dataclass(frozen=True)
class RuleSpec:
    """One IPv4 policy rule (action "lookup <table>")."""

    priority: int
    table: int
    src: str | None = None  # "198.51.100.2/32"
    suppress_prefixlen: int | None = None

    def describe(self) -> str:
        parts = [f"{self.priority}:", "from", self.src or "all", "lookup", _table_name(self.table)]
        if self.suppress_prefixlen is not None:
            parts += ["suppress_prefixlength", str(self.suppress_prefixlen)]
        return " ".join(parts)


@dataclass(frozen=True)
class Desired:
    """What linkwatch wants in the kernel (or what it found there): hashable specs."""

    routes: frozenset[RouteSpec] = frozenset()
    rules: frozenset[RuleSpec] = frozenset()


@dataclass
class ApplyReport:
    """Human-readable one-line descriptions of what one apply did."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # objects whose device is down right now (ENETDOWN): not an error, retried next apply
    deferred: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


# --------------------------------------------------------------------------- plan (pure)


def _table_name(table: int) -> str:
    return "main" if table == MAIN_TABLE else str(table)


def _check_table(what: str, table: int) -> None:
    if not 1 <= table <= 0xFFFFFFFF or table in RESERVED_TABLES:
        raise RoutingError(f"{what}={table}: expected a table id other than 0, 253, 254, 255")


def _check_ipv4(what: str, value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise RoutingError(f"{what}={value!r}: not an IPv4 address") from None


def _check_uplinks(uplinks: Sequence[UplinkRoute], params: RoutingParams) -> None:
    seen_names: set[str] = set()
    seen_tables: dict[int, str] = {}
    seen_prios: dict[int, str] = {}
    for up in uplinks:
        where = f"uplink {up.name!r}"
        if up.name in seen_names:
            raise RoutingError(f"{where}: name used twice")
        seen_names.add(up.name)
        _check_table(f"{where} table", up.table)
        if up.table == params.active_table:
            raise RoutingError(f"{where} table={up.table}: same as active_table")
        if up.table in seen_tables:
            raise RoutingError(f"{where} table={up.table}: also used by {seen_tables[up.table]!r}")
        seen_tables[up.table] = up.name
        if not params.suppress_priority < up.rule_priority < params.active_priority:
            raise RoutingError(
                f"{where} rule_priority={up.rule_priority}: expected between "
                f"suppress_priority={params.suppress_priority} and "
                f"active_priority={params.active_priority}"
            )
        if up.rule_priority in seen_prios:
            raise RoutingError(
                f"{where} rule_priority={up.rule_priority}: also used by "
                f"{seen_prios[up.rule_priority]!r}"
            )
        seen_prios[up.rule_priority] = up.name
        if up.address is not None:
            _check_ipv4(f"{where} address", up.address)
        if up.gateway is not None:
            _check_ipv4(f"{where} gateway", up.gateway)
        if up.prefixlen is not None and not 0 <= up.prefixlen <= 32:
            raise RoutingError(f"{where} prefixlen={up.prefixlen}: expected 0..32")


def _can_default(up: UplinkRoute) -> bool:
    return up.usable and up.ifindex is not None and bool(up.address) and bool(up.gateway)


def _uplink_objects(up: UplinkRoute, params: RoutingParams) -> tuple[list[RouteSpec], list[RuleSpec]]:
    routes = [
        RouteSpec(table=up.table, dst=DEFAULT_DST, kind="unreachable", metric=params.unreachable_metric)
    ]
    rules: list[RuleSpec] = []
    if up.address is not None:
        rules.append(RuleSpec(priority=up.rule_priority, table=up.table, src=f"{up.address}/32"))
        if up.ifindex is not None and up.prefixlen is not None:
            net = ipaddress.IPv4Interface(f"{up.address}/{up.prefixlen}").network
            routes.append(
                RouteSpec(
                    table=up.table,
                    dst=str(net),
                    ifindex=up.ifindex,
                    prefsrc=up.address,
                    scope=SCOPE_LINK,
                )
            )
    if _can_default(up):
        routes.append(RouteSpec(table=up.table, dst=DEFAULT_DST, gateway=up.gateway, ifindex=up.ifindex))
    return routes, rules


def _active_route(
    uplinks: Sequence[UplinkRoute], active: Sequence[tuple[str, int]], params: RoutingParams
) -> RouteSpec | None:
    by_name = {up.name: up for up in uplinks}
    hops: list[NextHop] = []
    taken: set[str] = set()
    for name, weight in active:
        up = by_name.get(name)
        if up is None or name in taken or not _can_default(up):
            continue
        if not 1 <= weight <= MAX_WEIGHT:
            raise RoutingError(f"active uplink {name!r} weight={weight}: expected 1..{MAX_WEIGHT}")
        taken.add(name)
        assert up.gateway is not None and up.ifindex is not None
        hops.append(NextHop(gateway=up.gateway, ifindex=up.ifindex, weight=weight))
    if not hops:
        return None
    if len(hops) == 1:
        return RouteSpec(
            table=params.active_table, dst=DEFAULT_DST, gateway=hops[0].gateway, ifindex=hops[0].ifindex
        )
    return RouteSpec(table=params.active_table, dst=DEFAULT_DST, nexthops=tuple(hops))


def plan(
    uplinks: Sequence[UplinkRoute], active: Sequence[tuple[str, int]], params: RoutingParams
) -> Desired:
    """Kernel objects for these uplinks with ``active`` = [(name, weight)] carrying traffic.

    Pure. Names that are unknown or not usable are skipped; with nothing active the active
    table gets no default route (traffic falls through to the main table's default).
    Raises :class:`RoutingError` for inconsistent uplinks (shared table or priority, bad
    address, a rule priority outside suppress_priority..active_priority, a bad weight).
    """
    _check_uplinks(uplinks, params)
    routes: set[RouteSpec] = set()
    rules: set[RuleSpec] = {
        RuleSpec(priority=params.suppress_priority, table=MAIN_TABLE, suppress_prefixlen=0),
        RuleSpec(priority=params.active_priority, table=params.active_table),
    }
    for up in uplinks:
        up_routes, up_rules = _uplink_objects(up, params)
        routes.update(up_routes)
        rules.update(up_rules)
    active_route = _active_route(uplinks, active, params)
    if active_route is not None:
        routes.add(active_route)
    return Desired(routes=frozenset(routes), rules=frozenset(rules))


# --------------------------------------------------------------------------- netlink <-> specs


def route_from_msg(msg: Any) -> RouteSpec:
    """Turn a dumped RTM_NEWROUTE message into a RouteSpec (flags such as linkdown ignored)."""
    dst = msg.get_attr("RTA_DST") or "0.0.0.0"
    hops = tuple(
        NextHop(gateway=nh.get_attr("RTA_GATEWAY"), ifindex=nh["oif"], weight=nh["hops"] + 1)
        for nh in (msg.get_attr("RTA_MULTIPATH") or ())
    )
    return RouteSpec(
        table=msg.get_attr("RTA_TABLE", msg["table"]),
        dst=f"{dst}/{msg['dst_len']}",
        kind=_RTN_NAMES.get(msg["type"], f"type{msg['type']}"),
        metric=msg.get_attr("RTA_PRIORITY", 0) or 0,
        gateway=msg.get_attr("RTA_GATEWAY"),
        ifindex=msg.get_attr("RTA_OIF"),
        prefsrc=msg.get_attr("RTA_PREFSRC"),
        scope=msg["scope"],
        nexthops=hops,
    )


def rule_from_msg(msg: Any) -> RuleSpec:
    """Turn a dumped RTM_NEWRULE message into a RuleSpec."""
    src = msg.get_attr("FRA_SRC")
    suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN", NO_SUPPRESS)
    return RuleSpec(
        priority=msg.get_attr("FRA_PRIORITY", 0),
        table=msg.get_attr("FRA_TABLE", msg["table"]),
        src=f"{src}/{msg['src_len']}" if src else None,
        suppress_prefixlen=None if suppress == NO_SUPPRESS else suppress,
    )


def route_args(spec: RouteSpec, protocol: int) -> dict[str, Any]:
    """Keyword arguments for ``IPRoute.route()`` that create, replace or delete ``spec``."""
    args: dict[str, Any] = {
        "family": socket.AF_INET,
        "dst": spec.dst,
        "table": spec.table,
        "proto": protocol,
        "type": _RTN_TYPES.get(spec.kind, spec.kind),
        "scope": spec.scope,
        "priority": spec.metric,
    }
    if spec.gateway:
        args["gateway"] = spec.gateway
    if spec.ifindex is not None:
        args["oif"] = spec.ifindex
    if spec.prefsrc:
        args["prefsrc"] = spec.prefsrc
    if spec.nexthops:
        args["multipath"] = [
            {"gateway": hop.gateway, "oif": hop.ifindex, "hops": hop.weight - 1} for hop in spec.nexthops
        ]
    return args


def rule_args(spec: RuleSpec, protocol: int) -> dict[str, Any]:
    """Keyword arguments for ``IPRoute.rule()`` that add or delete ``spec``."""
    args: dict[str, Any] = {
        "family": socket.AF_INET,
        "priority": spec.priority,
        "table": spec.table,
        "action": "to_tbl",
        "protocol": protocol,
    }
    if spec.src:
        addr, _, length = spec.src.partition("/")
        args["src"] = addr
        args["src_len"] = int(length or 32)
    if spec.suppress_prefixlen is not None:
        args["suppress_prefixlen"] = spec.suppress_prefixlen  # pyroute2 NLA name: ..._prefixlen
    return args


def _put_order(spec: RouteSpec, active_table: int) -> tuple[int, int]:
    """Connected routes first (gateways are checked against them), active table last."""
    if spec.scope == SCOPE_LINK:
        return (0, spec.table)
    if spec.table == active_table:
        return (2, spec.table)
    return (1, spec.table)


def _netlink_message(err: Exception) -> str:
    if isinstance(err, NetlinkError):
        return f"{err.args[1] if len(err.args) > 1 else err} (errno {err.code})"
    return str(err)


# --------------------------------------------------------------------------- reconciler


class Reconciler:
    """Diffs the kernel's linkwatch-owned routes and rules against a :class:`Desired` and fixes them.

    Stateless between calls: every apply dumps the kernel first, so a new instance (a restart,
    even after kill -9) sees what an old one left and changes nothing that is already right.
    """

    def __init__(self, params: RoutingParams, netns: str | None = None):
        self.params = params
        self.netns = netns
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lw-routing")
        self._ipr: IPRoute | None = None
        try:
            self._ipr = self._run(self._open)
        except Exception:
            self._pool.shutdown(wait=False)
            raise

    # -- plumbing: every kernel call runs on the private worker thread

    def _open(self) -> IPRoute:
        try:
            if self.netns is None:
                return IPRoute()
            return IPRoute(netns=self.netns, flags=0)  # flags=0: never create the namespace
        except OSError as err:
            raise RoutingError(f"cannot open netlink in netns={self.netns!r}: {err}") from err

    def _run(self, func: Callable[[], T]) -> T:
        if self._pool is None:
            raise RoutingError("reconciler is closed")
        return self._pool.submit(func).result()

    @property
    def _kernel(self) -> IPRoute:
        if self._ipr is None:
            raise RoutingError("reconciler is closed")
        return self._ipr

    def _dump(self, what: Callable[[], Iterable[Any]]) -> list[Any]:
        for attempt in range(5):
            try:
                return list(what())
            except NetlinkDumpInterrupted:
                log.debug("netlink dump interrupted, retry %d", attempt + 1)
        raise RoutingError("netlink dump kept being interrupted (5 tries)")

    def _route_msgs(self) -> list[Any]:
        msgs = self._dump(lambda: self._kernel.route("dump", family=socket.AF_INET))
        return [m for m in msgs if m["proto"] == self.params.protocol]

    def _current(self) -> Desired:
        rule_msgs = self._dump(lambda: self._kernel.rule("dump", family=socket.AF_INET))
        rules = frozenset(
            rule_from_msg(m)
            for m in rule_msgs
            if m.get_attr("FRA_PROTOCOL") == self.params.protocol and m["action"] == 1
        )
        routes = frozenset(route_from_msg(m) for m in self._route_msgs())
        return Desired(routes=routes, rules=rules)

    # -- public API

    def current(self) -> Desired:
        """Routes (any table) and rules that carry our protocol number, as the kernel has them."""
        return self._run(self._current)

    def apply(self, desired: Desired) -> ApplyReport:
        """Make the kernel match ``desired``; kernel refusals are collected, never raised.

        Order: every missing or different route is put (replace, so the active default route is
        swapped in place, never deleted first), missing rules are added, and only then are
        surplus rules and routes removed. A route whose replacement was refused is kept.
        """
        return self._run(lambda: self._apply(desired))

    def withdraw(self) -> ApplyReport:
        """Remove every route and rule linkwatch owns (clean stop)."""
        return self.apply(Desired())

    def active_gateways(self) -> list[tuple[str, int]]:
        """(gateway, ifindex) of the default route now in the active table (all nexthops)."""
        return self._run(self._active_gateways)

    def forget_neighbour(self, ifindex: int, address: str) -> None:
        """Delete the neighbour entry of ``address`` on ``ifindex``; "not found" is fine."""
        _check_ipv4("neighbour address", address)
        self._run(lambda: self._forget_neighbour(ifindex, address))

    def close(self) -> None:
        """Close the netlink socket and stop the worker thread (idempotent)."""
        if self._pool is None:
            return
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            try:
                self._pool.submit(ipr.close).result()
            except Exception as err:  # closing must not fail a shutdown
                log.debug("closing netlink socket: %s", err)
        self._pool.shutdown(wait=True)
        self._pool = None  # type: ignore[assignment]

    def __enter__(self) -> "Reconciler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- implementation (worker thread only)

    def _apply(self, desired: Desired) -> ApplyReport:
        started = time.perf_counter()
        report = ApplyReport()
        current = self._current()
        current_keys = {r.key for r in current.routes}
        protocol = self.params.protocol

        to_put = sorted(
            desired.routes - current.routes, key=lambda s: _put_order(s, self.params.active_table)
        )
        failed_keys: set[tuple[int, str, int]] = set()
        for spec in to_put:
            replacing = spec.key in current_keys
            if self._route_call("replace", spec, report):
                (report.replaced if replacing else report.added).append(f"route {spec.describe()}")
            else:
                failed_keys.add(spec.key)

        for rule in sorted(desired.rules - current.rules, key=lambda r: r.priority):
            if self._rule_call("add", rule, report):
                report.added.append(f"rule {rule.describe()}")

        for rule in sorted(current.rules - desired.rules, key=lambda r: r.priority):
            if self._rule_call("del", rule, report):
                report.removed.append(f"rule {rule.describe()}")

        surplus = current.routes - desired.routes
        if surplus:
            # re-dump: a replace above may already have overwritten a surplus route in place
            after = frozenset(route_from_msg(m) for m in self._route_msgs())
            for spec in sorted(after - desired.routes, key=lambda s: (s.table, s.dst, s.metric)):
                if spec.table in RESERVED_TABLES:
                    log.debug("not touching %s: reserved table", spec.describe())
                    continue
                if spec.key in failed_keys:
                    # its successor was refused: keep the old route rather than leave none
                    log.debug("keeping %s: its replacement failed", spec.describe())
                    continue
                if self._route_call("del", spec, report, missing_ok=True):
                    report.removed.append(f"route {spec.describe()}")

        report.elapsed_ms = (time.perf_counter() - started) * 1000.0
        log.debug(
            "routing apply: %.2f ms, added=%d replaced=%d removed=%d errors=%d deferred=%d (protocol %d)",
            report.elapsed_ms,
            len(report.added),
            len(report.replaced),
            len(report.removed),
            len(report.errors),
            len(report.deferred),
            protocol,
        )
        return report

    def _route_call(self, command: str, spec: RouteSpec, report: ApplyReport, missing_ok: bool = False) -> bool:
        try:
            self._kernel.route(command, **route_args(spec, self.params.protocol))
        except NetlinkError as err:
            return self._refused(f"{command} route {spec.describe()}", err, report, missing_ok)
        return True

    def _rule_call(self, command: str, spec: RuleSpec, report: ApplyReport) -> bool:
        try:
            self._kernel.rule(command, **rule_args(spec, self.params.protocol))
        except NetlinkError as err:
            # a rule that is already there (added by a concurrent instance) is not an error
            if command == "add" and err.code == errno.EEXIST:
                return False
            return self._refused(f"{command} rule {spec.describe()}", err, report, command == "del")
        return True

    @staticmethod
    def _refused(what: str, err: NetlinkError, report: ApplyReport, missing_ok: bool) -> bool:
        if missing_ok and err.code in _NOT_FOUND:
            log.debug("%s: already gone", what)
            return False
        line = f"{what}: {_netlink_message(err)}"
        if err.code in _DEVICE_DOWN:
            report.deferred.append(line)
            log.debug("deferred %s", line)
        else:
            report.errors.append(line)
            log.warning("routing: %s", line)
        return False

    def _active_gateways(self) -> list[tuple[str, int]]:
        result: list[tuple[str, int]] = []
        for msg in self._route_msgs():
            spec = route_from_msg(msg)
            if spec.table != self.params.active_table or spec.dst != DEFAULT_DST or spec.kind != "unicast":
                continue
            if spec.nexthops:
                result.extend((hop.gateway, hop.ifindex) for hop in spec.nexthops)
            elif spec.gateway and spec.ifindex is not None:
                result.append((spec.gateway, spec.ifindex))
        return result

    def _forget_neighbour(self, ifindex: int, address: str) -> None:
        try:
            self._kernel.neigh("del", dst=address, ifindex=ifindex, family=socket.AF_INET)
        except NetlinkError as err:
            if err.code in _NOT_FOUND:
                return
            raise RoutingError(
                f"cannot delete neighbour {address} on ifindex {ifindex}: {_netlink_message(err)}"
            ) from err
