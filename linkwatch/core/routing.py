"""The routing plan: which routes and rules linkwatch wants in the kernel. Pure: no netlink.

Kernel model (IPv4), per uplink table T::

    default via <gw> dev <if> table T proto P               (only while the uplink is usable)
    <net>/<len> dev <if> src <addr> scope link table T proto P  (while it has an address)
    unreachable default table T metric 4278198272 proto P      (always: a probe from a dead
                                                                 uplink never leaks elsewhere)

Rules::

    <suppress_priority>: lookup main suppress_prefixlength 0 proto P
    <uplink priority>:   from <addr>/32 lookup T proto P          (one per uplink with an address)
    <uplink priority>:   fwmark M/0xff0000 lookup T proto P       (sticky flows: while it works)
    <active_priority>:   lookup <active_table> proto P

With sticky flows the plan also carries linkwatch's nftables table (:mod:`linkwatch.core.flows`;
with several uplinks active it spreads new flows over them by weight),
which marks each flow with the uplink it leaves through.

and the active table holds one default route (or a weighted multipath route) over the active
uplinks. Every object carries linkwatch's route protocol number P, so the reconciler
(:mod:`linkwatch.kernel.reconciler`) dumps, changes and deletes only its own objects; the main
table is never touched.

IPv6 (issue 12) has the same model in its own family (:func:`plan6`): the same table numbers and
rule priorities (the kernel keeps IPv6 tables and rules apart from IPv4's), ``from <addr>/128``
rules, the uplink's on-link prefix, ``default via <link-local gateway> dev X`` (a router
advertisement's) and the active table behind ``suppress_prefixlength 0``; no flow marks.

A :class:`RouteSet` is a set of routes and rules: :func:`plan` returns the one linkwatch wants,
and the reconciler reads the one the kernel has into the same type, then diffs the two.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from collections.abc import Mapping, Sequence

from linkwatch.config import Config, RuleConfig
from linkwatch.core.flows import FLOW_MASK, MOVABLE, ruleset

DEFAULT_DST = "0.0.0.0/0"
DEFAULT_DST6 = "::/0"
SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
RESERVED_TABLES = frozenset({0, 253, 254, 255})  # unspec, default, main, local
MAIN_TABLE = 254
MAX_WEIGHT = 256  # rtnh_hops is one byte: weight = hops + 1

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


def routing_params(config: Config) -> RoutingParams:
    r = config.routing
    return RoutingParams(protocol=r.protocol, active_table=r.active_table, suppress_priority=r.rule_priority,
                         active_priority=r.rule_priority + 100)


@dataclass(frozen=True)
class UplinkRoute:
    name: str
    ifindex: int | None  # None: interface missing
    address: str | None  # IPv4 address of the uplink (IPv6 in an IPv6 plan)
    prefixlen: int | None
    gateway: str | None
    table: int
    rule_priority: int  # priority of "from address lookup table"
    usable: bool  # carrier + address + gateway known
    interface: str = ""  # its name (the flow table matches on it)
    flow_mark: int | None = None  # sticky flows: the mark of its flows (None: sticky flows off)
    working: bool = False  # healthy enough to keep its flows (UP, FALLING, DEGRADED)
    weight: int = 1  # its share when a policy rule or balance mode spreads flows
    pointopoint: bool = False  # no next hop: without a gateway its default route is "default dev X"
    prefixes: tuple[str, ...] = ()  # IPv6: the LAN prefixes it delegates (their traffic leaves through it)


@dataclass(frozen=True, order=True)
class NextHop:
    """One leg of a multipath route; ``weight`` is iproute2's weight (1..256)."""

    gateway: str | None  # None: a point-to-point uplink ("nexthop dev X")
    ifindex: int
    weight: int = 1


@dataclass(frozen=True)
class RouteSpec:
    """One IPv4 or IPv6 route as linkwatch wants it (or found it) in the kernel.

    The kernel identifies an IPv4 route by (table, dst, tos, metric); linkwatch never uses tos,
    so :attr:`key` is (family, table, dst, metric) and a route with the same key is replaced in place.
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
    family: int = 4

    @property
    def key(self) -> tuple[int, int, str, int]:
        return (self.family, self.table, self.dst, self.metric)

    def describe(self) -> str:
        """iproute2-like one line, e.g. ``default via 198.51.100.1 dev #2 table 101`` (``-6 ...``)."""
        dst = "default" if self.dst in (DEFAULT_DST, DEFAULT_DST6) else self.dst
        parts = [dst] if self.kind == "unicast" else [self.kind, dst]
        if self.family == 6:
            parts.insert(0, "-6")
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
            parts += ["nexthop", *(["via", hop.gateway] if hop.gateway else []), "dev", f"#{hop.ifindex}",
                      "weight", str(hop.weight)]
        return " ".join(parts)


@dataclass(frozen=True)
class RuleSpec:
    """One IPv4 policy rule (action "lookup <table>")."""

    priority: int
    table: int
    src: str | None = None  # "198.51.100.2/32"
    suppress_prefixlen: int | None = None
    fwmark: int | None = None  # a flow's mark (sticky flows) ...
    fwmask: int | None = None  # ... under this mask
    family: int = 4

    def describe(self) -> str:
        parts = [f"{self.priority}:", "from", self.src or "all"]
        if self.family == 6:
            parts.insert(0, "-6")
        if self.fwmark is not None:
            parts += ["fwmark", f"0x{self.fwmark:x}/0x{self.fwmask if self.fwmask is not None else 0xFFFFFFFF:x}"]
        parts += ["lookup", _table_name(self.table)]
        if self.suppress_prefixlen is not None:
            parts += ["suppress_prefixlength", str(self.suppress_prefixlen)]
        return " ".join(parts)


@dataclass(frozen=True)
class RouteSet:
    """Routes and rules (hashable specs): what linkwatch wants in the kernel, or what it found there."""

    routes: frozenset[RouteSpec] = frozenset()
    rules: frozenset[RuleSpec] = frozenset()
    flows: str | None = None  # linkwatch's nftables table (sticky flows); None: no table




# --------------------------------------------------------------------------- plan (pure)


def _table_name(table: int) -> str:
    return "main" if table == MAIN_TABLE else str(table)


def _check_table(what: str, table: int) -> None:
    if not 1 <= table <= 0xFFFFFFFF or table in RESERVED_TABLES:
        raise RoutingError(f"{what}={table}: expected a table id other than 0, 253, 254, 255")


def check_ipv4(what: str, value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise RoutingError(f"{what}={value!r}: not an IPv4 address") from None


def check_ip(what: str, value: str, family: int) -> None:
    if family == 4:
        return check_ipv4(what, value)
    try:
        scoped = ipaddress.IPv6Address(value).scope_id
    except ValueError:
        raise RoutingError(f"{what}={value!r}: not an IPv6 address") from None
    if scoped:
        raise RoutingError(f"{what}={value!r}: an address with a %zone (the interface is the zone)")


def _check_uplinks(uplinks: Sequence[UplinkRoute], params: RoutingParams, family: int = 4) -> None:
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
            check_ip(f"{where} address", up.address, family)
        if up.gateway is not None:
            check_ip(f"{where} gateway", up.gateway, family)
        bits = 128 if family == 6 else 32
        if up.prefixlen is not None and not 0 <= up.prefixlen <= bits:
            raise RoutingError(f"{where} prefixlen={up.prefixlen}: expected 0..{bits}")


def _can_default(up: UplinkRoute) -> bool:
    return up.usable and up.ifindex is not None and bool(up.address) and (bool(up.gateway) or up.pointopoint)


def _default_route(table: int, up: UplinkRoute, family: int = 4) -> RouteSpec:
    """``default via <gateway> dev X``, or ``default dev X scope link`` on a point-to-point link."""
    dst = DEFAULT_DST6 if family == 6 else DEFAULT_DST
    if up.gateway:
        return RouteSpec(table=table, dst=dst, gateway=up.gateway, ifindex=up.ifindex, family=family)
    # IPv6 has no link scope for routes: a route without a gateway is on-link
    return RouteSpec(table=table, dst=dst, ifindex=up.ifindex, scope=SCOPE_UNIVERSE if family == 6 else SCOPE_LINK,
                     family=family)


def _uplink_objects(up: UplinkRoute, params: RoutingParams, family: int = 4) -> tuple[list[RouteSpec], list[RuleSpec]]:
    routes = [
        RouteSpec(table=up.table, dst=DEFAULT_DST6 if family == 6 else DEFAULT_DST, kind="unreachable",
                  metric=params.unreachable_metric, family=family)
    ]
    rules: list[RuleSpec] = []
    if up.address is not None:
        host = 128 if family == 6 else 32
        rules.append(RuleSpec(priority=up.rule_priority, table=up.table, src=f"{up.address}/{host}", family=family))
        if up.ifindex is not None and up.prefixlen is not None:
            net = ipaddress.ip_interface(f"{up.address}/{up.prefixlen}").network
            routes.append(
                RouteSpec(
                    table=up.table,
                    dst=str(net),
                    ifindex=up.ifindex,
                    prefsrc=up.address,
                    scope=SCOPE_UNIVERSE if family == 6 else SCOPE_LINK,
                    family=family,
                )
            )
    if _can_default(up):
        routes.append(_default_route(up.table, up, family))
        if up.flow_mark and up.working:  # its flows keep leaving through it
            rules.append(RuleSpec(priority=up.rule_priority, table=up.table, fwmark=up.flow_mark, fwmask=FLOW_MASK))
    return routes, rules


def _active_route(
    uplinks: Sequence[UplinkRoute], active: Sequence[tuple[str, int]], params: RoutingParams, family: int = 4
) -> RouteSpec | None:
    by_name = {up.name: up for up in uplinks}
    hops: list[NextHop] = []
    taken: dict[str, UplinkRoute] = {}
    for name, weight in active:
        up = by_name.get(name)
        if up is None or name in taken or not _can_default(up):
            continue
        if not 1 <= weight <= MAX_WEIGHT:
            raise RoutingError(f"active uplink {name!r} weight={weight}: expected 1..{MAX_WEIGHT}")
        taken[name] = up
        assert up.ifindex is not None
        hops.append(NextHop(gateway=up.gateway or None, ifindex=up.ifindex, weight=weight))
    if not hops:
        return None
    if family == 6 and len(hops) > 1 and any(h.gateway is None for h in hops):
        # the kernel takes no device-only nexthop in an IPv6 multipath route: the uplinks with a
        # gateway share the traffic; with none, the first (point-to-point) one carries it alone
        kept = [n for n, up in taken.items() if up.gateway] or [next(iter(taken))]
        hops = [h for h, n in zip(hops, taken) if n in kept]
        taken = {n: taken[n] for n in kept}
    if len(hops) == 1:
        return _default_route(params.active_table, next(iter(taken.values())), family)
    return RouteSpec(table=params.active_table, dst=DEFAULT_DST6 if family == 6 else DEFAULT_DST,
                     nexthops=tuple(hops), family=family)


def plan6(uplinks: Sequence[UplinkRoute], active: Sequence[tuple[str, int]], params: RoutingParams) -> RouteSet:
    """The IPv6 objects for the IPv6 side of these uplinks (addresses and gateways IPv6), with
    ``active`` = [(name, weight)] carrying IPv6 traffic: as :func:`plan`, without flow marks."""
    _check_uplinks(uplinks, params, family=6)
    routes: set[RouteSpec] = set()
    rules: set[RuleSpec] = {
        RuleSpec(priority=params.suppress_priority, table=MAIN_TABLE, suppress_prefixlen=0, family=6),
        RuleSpec(priority=params.active_priority, table=params.active_table, family=6),
    }
    for up in uplinks:
        up_routes, up_rules = _uplink_objects(replace(up, flow_mark=None), params, family=6)
        routes.update(up_routes)
        rules.update(up_rules)
        # per-uplink LAN prefixes: a host's source address picks the uplink, dead or alive (a
        # prefix is not moved: its provider is the only one that routes it back)
        rules.update(RuleSpec(priority=up.rule_priority, table=up.table, src=p, family=6) for p in up.prefixes)
    active_route = _active_route(uplinks, active, params, family=6)
    if active_route is not None:
        routes.add(active_route)
    return RouteSet(routes=frozenset(routes), rules=frozenset(rules))


_last_merge: list = [None, None, None]  # (v4 plan, v6 plan, both): a memo, a step changes them rarely


def merged(v4: RouteSet | None, v6: RouteSet | None) -> RouteSet | None:
    """One plan of both families (the reconciler diffs and applies them together)."""
    if v4 is None or v6 is None:
        return v4 or v6
    if _last_merge[0] is not v4 or _last_merge[1] is not v6:
        _last_merge[:] = [v4, v6, RouteSet(routes=v4.routes | v6.routes, rules=v4.rules | v6.rules, flows=v4.flows)]
    return _last_merge[2]


def plan(
    uplinks: Sequence[UplinkRoute], active: Sequence[tuple[str, int]], params: RoutingParams,
    policy: Sequence[RuleConfig] = (), chosen: Mapping[str, Sequence[str]] | None = None,
) -> RouteSet:
    """Kernel objects for these uplinks with ``active`` = [(name, weight)] carrying traffic.

    Pure. ``policy``: the policy rules, in order (sticky flows only: they send flows by their mark);
    ``chosen``: rule name -> the uplinks the core chose for it (see :func:`rule_target`).
    Names that are unknown or not usable are skipped; with nothing active the active
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
    marks = [(up.interface, up.flow_mark) for up in uplinks if up.flow_mark]
    by_name = {up.name: up for up in uplinks}
    shares = [(up.flow_mark, weight) for name, weight in dict(active).items()
              if (up := by_name.get(name)) is not None and _takes_flows(up)]
    targets = [(r, tuple((by_name[n].flow_mark | (0 if n in rule_home(r) else MOVABLE), by_name[n].weight)
                         for n in rule_target(r, by_name, (chosen or {}).get(r.name)))) for r in policy]
    return RouteSet(routes=frozenset(routes), rules=frozenset(rules),
                    flows=ruleset(marks, balance=shares, policy=targets) if marks else None)


def _takes_flows(up: UplinkRoute) -> bool:
    """A new flow may be sent to it by its mark: it works and its fwmark rule is in place."""
    return bool(up.flow_mark) and up.working and _can_default(up)


def rule_home(rule: RuleConfig) -> tuple[str, ...]:
    """Where a policy rule's flows belong: its first uplink, or all of them (``balance``). A flow
    it sends elsewhere (its fallback, the next of its list) is left behind there when the rule's
    first choice comes back, and ``move_flows_after`` may move it."""
    return tuple(rule.uplinks) if rule.balance else tuple(rule.uplinks[:1])


def rule_target(rule: RuleConfig, by_name: Mapping[str, UplinkRoute],
                chosen: Sequence[str] | None = None) -> tuple[str, ...]:
    """Where a policy rule sends new flows now: those of ``chosen`` (the core's choice:
    :func:`linkwatch.core.policy.rule_choice`) that take flows; without a choice, or when none of
    them does, the first of its uplinks that takes flows, or all of them that do (``balance``);
    () when none does (its ``fallback`` decides)."""
    ready = [n for n in (chosen or ()) if (up := by_name.get(n)) is not None and _takes_flows(up)]
    if not ready:
        ready = [n for n in rule.uplinks if (up := by_name.get(n)) is not None and _takes_flows(up)]
    return tuple(ready) if rule.balance else tuple(ready[:1])
