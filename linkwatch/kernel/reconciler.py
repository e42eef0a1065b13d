"""The routing reconciler: dump the kernel (only linkwatch's objects) -> diff with the plan -> apply.

The plan comes from :func:`linkwatch.core.routing.plan` (pure). :class:`Reconciler` talks to the
kernel through pyroute2 from one private worker thread (pyroute2's synchronous API cannot run
inside a running asyncio loop). Its blocking methods may be called from any thread except the
event loop's; the engine uses the ``*_async`` forms, which wait for the worker without blocking
the loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

from linkwatch.core.flows import TABLE_NAME, marks_in
from linkwatch.kernel.nft import FlowTable, NftError
from linkwatch.core.routing import (
    DEFAULT_DST,
    DEFAULT_DST6,
    RESERVED_TABLES,
    SCOPE_LINK,
    NextHop,
    RouteSet,
    RouteSpec,
    RoutingError,
    RoutingParams,
    RuleSpec,
    check_ip,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

NO_SUPPRESS = 0xFFFFFFFF  # FRA_SUPPRESS_PREFIXLEN as the kernel reports "not set"
_RTN_NAMES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
_RTN_TYPES = {name: num for num, name in _RTN_NAMES.items()}
# errors that mean "the device is down/absent right now": retried on the next apply
_DEVICE_DOWN = frozenset({errno.ENETDOWN})
_NOT_FOUND = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV})
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
IP6_DEFAULT_METRIC = 1024  # the kernel's metric for an IPv6 route added without one


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



# --------------------------------------------------------------------------- netlink <-> specs


def route_from_msg(msg: Any) -> RouteSpec:
    """Turn a dumped RTM_NEWROUTE message into a RouteSpec (flags such as linkdown ignored).

    IPv6 routes come back as the kernel keeps them: metric 1024 when none was given (read as 0,
    what linkwatch asks for), and an unreachable route on ``lo`` (read as no device)."""
    v6 = msg["family"] == socket.AF_INET6
    dst = msg.get_attr("RTA_DST") or ("::" if v6 else "0.0.0.0")
    hops = tuple(
        NextHop(gateway=nh.get_attr("RTA_GATEWAY"), ifindex=nh["oif"], weight=nh["hops"] + 1)
        for nh in (msg.get_attr("RTA_MULTIPATH") or ())
    )
    kind = _RTN_NAMES.get(msg["type"], f"type{msg['type']}")
    metric = msg.get_attr("RTA_PRIORITY", 0) or 0
    return RouteSpec(
        table=msg.get_attr("RTA_TABLE", msg["table"]),
        dst=f"{dst}/{msg['dst_len']}",
        kind=kind,
        metric=0 if v6 and metric == IP6_DEFAULT_METRIC else metric,
        gateway=msg.get_attr("RTA_GATEWAY"),
        ifindex=None if v6 and kind != "unicast" else msg.get_attr("RTA_OIF"),
        prefsrc=msg.get_attr("RTA_PREFSRC"),
        scope=msg["scope"],
        nexthops=hops,
        family=6 if v6 else 4,
    )


def rule_from_msg(msg: Any) -> RuleSpec:
    """Turn a dumped RTM_NEWRULE message (either family) into a RuleSpec."""
    src = msg.get_attr("FRA_SRC")
    suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN", NO_SUPPRESS)
    fwmark = msg.get_attr("FRA_FWMARK")
    return RuleSpec(
        priority=msg.get_attr("FRA_PRIORITY", 0),
        table=msg.get_attr("FRA_TABLE", msg["table"]),
        src=f"{src}/{msg['src_len']}" if src else None,
        suppress_prefixlen=None if suppress == NO_SUPPRESS else suppress,
        fwmark=fwmark if fwmark else None,
        fwmask=msg.get_attr("FRA_FWMASK") if fwmark else None,
        family=6 if msg["family"] == socket.AF_INET6 else 4,
    )


def route_args(spec: RouteSpec, protocol: int) -> dict[str, Any]:
    """Keyword arguments for ``IPRoute.route()`` that create, replace or delete ``spec``."""
    args: dict[str, Any] = {
        "family": _FAMILY[spec.family],
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
            {**({"gateway": hop.gateway} if hop.gateway else {}), "oif": hop.ifindex, "hops": hop.weight - 1}
            for hop in spec.nexthops
        ]
    return args


def rule_args(spec: RuleSpec, protocol: int) -> dict[str, Any]:
    """Keyword arguments for ``IPRoute.rule()`` that add or delete ``spec``."""
    args: dict[str, Any] = {
        "family": _FAMILY[spec.family],
        "priority": spec.priority,
        "table": spec.table,
        "action": "to_tbl",
        "protocol": protocol,
    }
    if spec.src:
        addr, _, length = spec.src.partition("/")
        args["src"] = addr
        args["src_len"] = int(length or (128 if spec.family == 6 else 32))
    if spec.suppress_prefixlen is not None:
        args["suppress_prefixlen"] = spec.suppress_prefixlen  # pyroute2 NLA name: ..._prefixlen
    if spec.fwmark is not None:
        args["fwmark"] = spec.fwmark
        args["fwmask"] = spec.fwmask if spec.fwmask is not None else 0xFFFFFFFF
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


def _table_left(table: FlowTable) -> bool:
    """Is there a table of linkwatch's that no plan wants (a previous run's)? Without libnftables
    (or nf_tables in the kernel) none can be seen or removed: that is no error to report at every
    repair (it kept every plan "refused", and the kernel dumped at every tick)."""
    try:
        return table.listing() is not None
    except NftError as err:
        log.debug("no nftables to look for a table of linkwatch's in: %s", err)
        return False


def _enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (iproute2's /run/netns/NAME)."""
    import ctypes
    import os

    clone_newnet = 0x40000000
    fd = os.open(os.path.join("/run/netns", name), os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, clone_newnet) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name!r} failed")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reconciler


class Reconciler:
    """Diffs the kernel's linkwatch-owned routes and rules against a :class:`RouteSet` and fixes them.

    Stateless between calls: every apply dumps the kernel first, so a new instance (a restart,
    even after kill -9) sees what an old one left and changes nothing that is already right.
    """

    def __init__(self, params: RoutingParams, netns: str | None = None):
        self.params = params
        self.netns = netns
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lw-routing")
        self._ipr: IPRoute | None = None
        self._flows: FlowTable | None = None  # linkwatch's nftables table, once sticky flows ask for it
        self._flows_applied: str | None = None  # the ruleset last put in it
        # IPv6 is dumped while linkwatch has or wants IPv6 objects (and at the first look, for what a
        # previous run left): an IPv4-only router need not parse its IPv6 tables at every repair
        self._ipv6 = True
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

    async def _run_async(self, func: Callable[[], T]) -> T:
        if self._pool is None:
            raise RoutingError("reconciler is closed")
        return await asyncio.wrap_future(self._pool.submit(func))

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

    def _families(self) -> list[int]:
        return list(_FAMILY.values()) if self._ipv6 else [socket.AF_INET]

    def _route_msgs(self) -> list[Any]:
        msgs = [m for family in self._families()
                for m in self._dump(lambda: self._kernel.route("dump", family=family))]
        return [m for m in msgs if m["proto"] == self.params.protocol]

    def _current(self) -> RouteSet:
        rule_msgs = [m for family in self._families()
                     for m in self._dump(lambda: self._kernel.rule("dump", family=family))]
        rules = frozenset(
            rule_from_msg(m)
            for m in rule_msgs
            if m.get_attr("FRA_PROTOCOL") == self.params.protocol and m["action"] == 1
        )
        routes = frozenset(route_from_msg(m) for m in self._route_msgs())
        return RouteSet(routes=routes, rules=rules)

    # -- public API

    def current(self) -> RouteSet:
        """Routes (any table) and rules that carry our protocol number, as the kernel has them."""
        return self._run(self._current)

    def apply(self, desired: RouteSet) -> ApplyReport:
        """Make the kernel match ``desired``; kernel refusals are collected, never raised.

        Order: every missing or different route is put (replace, so the active default route is
        swapped in place, never deleted first), missing rules are added, and only then are
        surplus rules and routes removed. A route whose replacement was refused is kept.
        """
        return self._run(lambda: self._apply(desired))

    def withdraw(self) -> ApplyReport:
        """Remove every route and rule linkwatch owns (clean stop)."""
        return self.apply(RouteSet())

    async def apply_async(self, desired: RouteSet) -> ApplyReport:
        """:meth:`apply`, awaited: the event loop goes on while the worker talks to the kernel."""
        return await self._run_async(lambda: self._apply(desired))

    async def apply_flows_async(self, desired: RouteSet) -> ApplyReport:
        """Only the nftables table of :meth:`apply`: routes and rules are left as they are."""
        def flows() -> ApplyReport:
            started = time.perf_counter()
            report = ApplyReport()
            self._apply_flows(desired.flows, report)
            report.elapsed_ms = (time.perf_counter() - started) * 1000.0
            return report

        return await self._run_async(flows)

    def active_gateways(self, family: int = 4) -> list[tuple[str, int]]:
        """(gateway, ifindex) of the default route now in the active table (all nexthops) of
        ``family`` (4 or 6)."""
        return self._run(lambda: self._active_gateways(family))

    async def active_gateways_async(self, family: int = 4) -> list[tuple[str, int]]:
        return await self._run_async(lambda: self._active_gateways(family))

    async def flow_marks_async(self) -> dict[str, int]:
        """Interface -> flow mark in linkwatch's nftables table as the kernel has it (left by a
        previous run); empty when there is none or it cannot be read."""
        def read() -> dict[str, int]:
            try:
                return marks_in(self._flow_table().listing() or "")
            except (NftError, OSError) as err:
                log.debug("cannot read the previous flow table: %s", err)
                return {}
        return await self._run_async(read)

    def forget_neighbour(self, ifindex: int, address: str) -> None:
        """Delete the neighbour entry of ``address`` (IPv4 or IPv6) on ``ifindex``; "not found" is fine."""
        check_ip("neighbour address", address, 6 if ":" in address else 4)
        self._run(lambda: self._forget_neighbour(ifindex, address))

    async def forget_neighbour_async(self, ifindex: int, address: str) -> None:
        check_ip("neighbour address", address, 6 if ":" in address else 4)
        await self._run_async(lambda: self._forget_neighbour(ifindex, address))

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

    def _apply(self, desired: RouteSet) -> ApplyReport:
        started = time.perf_counter()
        report = ApplyReport()
        wants6 = any(r.family == 6 for r in desired.routes) or any(r.family == 6 for r in desired.rules)
        self._ipv6 = self._ipv6 or wants6
        current = self._current()
        if not wants6 and not any(r.family == 6 for r in (*current.routes, *current.rules)):
            self._ipv6 = False  # none of ours in IPv6 and none wanted: IPv4 only from now on
        current_keys = {r.key for r in current.routes}
        protocol = self.params.protocol

        to_put = sorted(
            desired.routes - current.routes, key=lambda s: _put_order(s, self.params.active_table)
        )
        failed_keys: set[tuple[int, int, str, int]] = set()
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
            for spec in sorted(after - desired.routes, key=lambda s: s.key):
                if spec.table in RESERVED_TABLES:
                    log.debug("not touching %s: reserved table", spec.describe())
                    continue
                if spec.key in failed_keys:
                    # its successor was refused: keep the old route rather than leave none
                    log.debug("keeping %s: its replacement failed", spec.describe())
                    continue
                if self._route_call("del", spec, report, missing_ok=True):
                    report.removed.append(f"route {spec.describe()}")

        # the flow table last: it changes with the config and where balancing and the policy rules send
        # new flows (a plain failover changes routes and rules only);
        # checking it costs one listing (~0.2 ms), putting it back whole ~12 ms
        self._apply_flows(desired.flows, report)
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

    def _apply_flows(self, ruleset: str | None, report: ApplyReport) -> None:
        """Make linkwatch's nftables table equal ``ruleset`` (None: no table). Cheap when nothing
        changed: one listing of the table, compared with the one taken right after the last apply
        (someone deleted or edited it: it is put back whole)."""
        try:
            table = self._flow_table()
            if ruleset is None:
                if self._flows_applied is None and not _table_left(table):
                    return
                table.remove()
                report.removed.append(f"nft table ip {table.name}")
                self._flows_applied = None
                return
            if ruleset == self._flows_applied and table.check():
                return
            existed = table.listing() is not None
            table.apply(ruleset)
            (report.replaced if existed else report.added).append(f"nft table ip {table.name}")
            self._flows_applied = ruleset
        except (NftError, OSError) as err:
            self._flows_applied = None
            report.errors.append(f"nft table ip {TABLE_NAME}: {err}")

    def _flow_table(self) -> FlowTable:
        if self._flows is None:
            if self.netns is not None:
                _enter_netns(self.netns)  # this worker thread only: nft has no namespace argument
            self._flows = FlowTable(TABLE_NAME)
        return self._flows

    def _route_call(self, command: str, spec: RouteSpec, report: ApplyReport, missing_ok: bool = False) -> bool:
        try:
            self._kernel.route(command, **route_args(spec, self.params.protocol))
        except NetlinkError as err:
            return self._refused(f"{command} route {spec.describe()}", err, report, missing_ok)
        except (OSError, ValueError) as err:  # not even encoded (a bad address): this object's error only
            report.errors.append(f"{command} route {spec.describe()}: {err}")
            return False
        return True

    def _rule_call(self, command: str, spec: RuleSpec, report: ApplyReport) -> bool:
        try:
            self._kernel.rule(command, **rule_args(spec, self.params.protocol))
        except NetlinkError as err:
            # a rule that is already there (added by a concurrent instance) is not an error
            if command == "add" and err.code == errno.EEXIST:
                return False
            return self._refused(f"{command} rule {spec.describe()}", err, report, command == "del")
        except (OSError, ValueError) as err:  # not even encoded (a bad address): this object's error only
            report.errors.append(f"{command} rule {spec.describe()}: {err}")
            return False
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
            log.debug("refused: %s", line)  # the caller reports the errors (once per streak)
        return False

    def _active_gateways(self, family: int = 4) -> list[tuple[str, int]]:
        result: list[tuple[str, int]] = []
        for msg in self._route_msgs():
            spec = route_from_msg(msg)
            if (spec.table != self.params.active_table or spec.dst not in (DEFAULT_DST, DEFAULT_DST6)
                    or spec.kind != "unicast" or spec.family != family):
                continue
            if spec.nexthops:
                result.extend((hop.gateway or "", hop.ifindex) for hop in spec.nexthops)
            elif spec.ifindex is not None:  # "default dev X" (point-to-point): no gateway
                result.append((spec.gateway or "", spec.ifindex))
        return result

    def _forget_neighbour(self, ifindex: int, address: str) -> None:
        try:
            self._kernel.neigh("del", dst=address, ifindex=ifindex, family=_FAMILY[6 if ":" in address else 4])
        except NetlinkError as err:
            if err.code in _NOT_FOUND:
                return
            raise RoutingError(
                f"cannot delete neighbour {address} on ifindex {ifindex}: {_netlink_message(err)}"
            ) from err
