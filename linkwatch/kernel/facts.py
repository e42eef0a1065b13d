"""What the kernel says about each uplink interface: carrier, addresses, gateways (DHCP, router
advertisements).

:func:`facts_from_kernel` is the pure part: it turns dumped links, addresses and main-table default
routes of both families into one :class:`LinkFacts` per watched interface name. :func:`read_facts`
dumps once; :class:`LinkMonitor` listens to rtnetlink multicast groups (link, IPv4 and IPv6
addresses and routes) on an asyncio socket and calls back as soon as any fact changes -- no polling.

IPv6: the address is a global one the kernel would use as a source (not tentative, not failed its
duplicate address detection, not deprecated), a stable one rather than a temporary privacy address;
the gateway is the main table's IPv6 default route via the interface, usually the link-local address
of the provider's router, learned from its router advertisements (``proto ra``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from pyroute2 import AsyncIPRoute, IPRoute
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV4_RULE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_IPV6_RULE,
    RTMGRP_LINK,
)

from linkwatch.core.inputs import LinkFacts  # noqa: F401  (the type this module produces; re-exported)

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
IFF_NOARP = 0x80
IFF_LOWER_UP = 0x10000
IFA_F_SECONDARY = 0x01  # IPv4; the same bit is IFA_F_TEMPORARY for IPv6 (a privacy address)
IFA_F_TEMPORARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
UNUSABLE6 = IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TENTATIVE
RT_SCOPE_UNIVERSE = 0
MAIN_TABLE = 254
RTN_UNICAST = 1
EVENT_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
EVENT_GROUPS |= RTMGRP_IPV4_RULE | RTMGRP_IPV6_RULE  # linkwatch's own rules deleted or changed: repair
_LINK_EVENTS = ("RTM_NEWLINK", "RTM_DELLINK")
_ADDR_EVENTS = ("RTM_NEWADDR", "RTM_DELADDR")
_ROUTE_EVENTS = ("RTM_NEWROUTE", "RTM_DELROUTE")
_RULE_EVENTS = ("RTM_NEWRULE", "RTM_DELRULE")


class FactsError(Exception):
    """The kernel could not be asked (e.g. the network namespace does not exist)."""


# --------------------------------------------------------------------------- pure part


@dataclass(frozen=True)
class Link:
    index: int
    ifname: str
    flags: int


@dataclass(frozen=True)
class Addr:
    index: int
    address: str
    prefixlen: int
    secondary: bool  # IPv4: a secondary address; IPv6: a temporary (privacy) address
    family: int = socket.AF_INET
    flags: int = 0  # IFA_F_* (IPv6: tentative, deprecated, ...)
    scope: int = RT_SCOPE_UNIVERSE


@dataclass(frozen=True)
class DefaultRoute:
    """A main-table default route; ``hops`` = (gateway, oif) of each nexthop."""

    proto: int
    metric: int
    hops: tuple[tuple[str | None, int | None], ...]
    family: int = socket.AF_INET


def missing(ifname: str) -> LinkFacts:
    return LinkFacts(ifname=ifname, ifindex=None, carrier=False, address=None, prefixlen=None, gateway=None)


def _gateway_for(index: int, routes: Iterable[DefaultRoute], protocol: int,
                 family: int = socket.AF_INET) -> str | None:
    best: tuple[int, str] | None = None
    for route in routes:
        if route.proto == protocol or route.family != family:
            continue
        for gateway, oif in route.hops:
            if oif == index and gateway and (best is None or route.metric < best[0]):
                best = (route.metric, gateway)
    return best[1] if best else None


def facts_from_kernel(
    ifnames: Sequence[str],
    links: Iterable[Link],
    addrs: Iterable[Addr],
    routes: Iterable[DefaultRoute],
    protocol: int,
) -> dict[str, LinkFacts]:
    """One LinkFacts per name in ``ifnames`` from dumped kernel state (pure)."""
    by_name = {link.ifname: link for link in links}
    addrs = list(addrs)
    addrs4 = [a for a in addrs if a.family == socket.AF_INET]
    routes = list(routes)
    facts: dict[str, LinkFacts] = {}
    for name in ifnames:
        link = by_name.get(name)
        if link is None:
            facts[name] = missing(name)
            continue
        primary = next((a for a in addrs4 if a.index == link.index and not a.secondary), None)
        address6 = _address6(a for a in addrs if a.index == link.index)
        facts[name] = LinkFacts(
            ifname=name,
            ifindex=link.index,
            carrier=bool(link.flags & IFF_UP) and bool(link.flags & IFF_LOWER_UP),
            address=primary.address if primary else None,
            prefixlen=primary.prefixlen if primary else None,
            gateway=_gateway_for(link.index, routes, protocol),
            # PPP, tun, WireGuard, LTE raw-IP: no next hop to learn, the route is "default dev X"
            pointopoint=bool(link.flags & (IFF_POINTOPOINT | IFF_NOARP)),
            address6=address6.address if address6 else None,
            prefixlen6=address6.prefixlen if address6 else None,
            gateway6=_gateway_for(link.index, routes, protocol, socket.AF_INET6),
        )
    return facts


def _address6(addrs: Iterable[Addr]) -> Addr | None:
    """The interface's IPv6 source for probes: global scope, usable, a stable address before a
    temporary one (privacy addresses come and go), the first the kernel lists of each kind."""
    usable = [a for a in addrs if a.family == socket.AF_INET6 and a.scope == RT_SCOPE_UNIVERSE
              and not a.flags & UNUSABLE6]
    return next((a for a in usable if not a.flags & IFA_F_TEMPORARY), usable[0] if usable else None)


# --------------------------------------------------------------------------- message parsing


def link_from_msg(msg: Any) -> Link:
    return Link(index=msg["index"], ifname=msg.get_attr("IFLA_IFNAME"), flags=msg["flags"])


def addr_from_msg(msg: Any) -> Addr:
    flags = msg.get_attr("IFA_FLAGS", msg["flags"]) or 0
    return Addr(
        index=msg["index"],
        address=msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"),
        prefixlen=msg["prefixlen"],
        secondary=bool(flags & IFA_F_SECONDARY),
        family=msg["family"],
        flags=flags,
        scope=msg["scope"],
    )


def default_route_from_msg(msg: Any) -> DefaultRoute | None:
    """The message as a main-table default route (IPv4 or IPv6), or None if it is not one."""
    table = msg.get_attr("RTA_TABLE", msg["table"])
    if msg["family"] not in (socket.AF_INET, socket.AF_INET6) or table != MAIN_TABLE:
        return None
    if msg["dst_len"] != 0 or msg["type"] != RTN_UNICAST:
        return None
    multipath = msg.get_attr("RTA_MULTIPATH")
    if multipath:
        hops = tuple((nh.get_attr("RTA_GATEWAY"), nh["oif"]) for nh in multipath)
    else:
        hops = ((msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")),)
    return DefaultRoute(proto=msg["proto"], metric=msg.get_attr("RTA_PRIORITY", 0) or 0, hops=hops,
                        family=msg["family"])


def _facts_from_msgs(
    ifnames: Sequence[str], links: Iterable[Any], addrs: Iterable[Any], routes: Iterable[Any], protocol: int
) -> dict[str, LinkFacts]:
    defaults = [r for r in (default_route_from_msg(m) for m in routes) if r is not None]
    return facts_from_kernel(
        ifnames,
        (link_from_msg(m) for m in links),
        (addr_from_msg(m) for m in addrs if m["family"] in (socket.AF_INET, socket.AF_INET6)),
        defaults,
        protocol,
    )


# --------------------------------------------------------------------------- one-shot read


def _open_sync(netns: str | None) -> IPRoute:
    try:
        return IPRoute() if netns is None else IPRoute(netns=netns, flags=0)
    except OSError as err:
        raise FactsError(f"cannot open netlink in netns={netns!r}: {err}") from err


def dump_kernel(netns: str | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """One consistent dump of the links, addresses and routes (IPv4 and IPv6, every table) as
    netlink messages; a dump the kernel interrupts (something changed meanwhile) is taken again.
    Blocks the calling thread."""
    ipr = _open_sync(netns)
    try:
        for _ in range(5):
            try:
                links = list(ipr.link("dump"))
                addrs = list(ipr.addr("dump"))
                routes = list(ipr.route("dump", family=socket.AF_INET)) + list(ipr.route("dump", family=socket.AF_INET6))
                return links, addrs, routes
            except NetlinkDumpInterrupted:
                continue
        raise FactsError("netlink dump kept being interrupted (5 tries)")
    finally:
        ipr.close()


def _read_facts_sync(ifnames: Sequence[str], netns: str | None, protocol: int) -> dict[str, LinkFacts]:
    links, addrs, routes = dump_kernel(netns)
    return _facts_from_msgs(ifnames, links, addrs, routes, protocol)


def read_facts(ifnames: Sequence[str], netns: str | None = None, protocol: int = 77) -> dict[str, LinkFacts]:
    """Dump the kernel once; interfaces that do not exist get ``ifindex=None``.

    Blocks the calling thread until the dump is done. Called inside a running asyncio loop it
    still works (pyroute2's synchronous API then runs on a private thread) but blocks that loop:
    the engine uses :func:`read_facts_async`.
    """
    names = list(ifnames)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _read_facts_sync(names, netns, protocol)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lw-netwatch") as pool:
        return pool.submit(_read_facts_sync, names, netns, protocol).result()


async def read_facts_async(ifnames: Sequence[str], netns: str | None = None,
                           protocol: int = 77) -> dict[str, LinkFacts]:
    """:func:`read_facts` on a worker thread: the event loop goes on while the kernel is dumped."""
    return await asyncio.to_thread(_read_facts_sync, list(ifnames), netns, protocol)


# --------------------------------------------------------------------------- monitor


class LinkMonitor:
    """Calls ``on_change(snapshot)`` whenever a watched interface's LinkFacts change, and
    ``on_owned()`` whenever linkwatch's own routes or rules may have changed.

    Two netlink sockets on the running loop: one bound to the link and the IPv4 and IPv6 address,
    route and rule multicast groups, one for dumps. A relevant event triggers a re-dump (about 1-3
    ms) and the callback runs only if the snapshot differs from the last one delivered. A route or
    rule that comes, goes or changes and is linkwatch's (its protocol, or in one of ``tables``, or
    at a priority in ``priorities``: someone's ``ip route replace`` puts a route of another
    protocol in its place), a watched interface's event or one of its addresses going (the kernel
    drops an interface's IPv4 routes without telling) and a lost event (overrun) call ``on_owned``, and so does the
    start (what changed while no monitor listened is not known): the engine checks the kernel
    then instead of dumping it every 2 s.
    """

    def __init__(self, ifnames: Sequence[str], netns: str | None = None, protocol: int = 77,
                 tables: Iterable[int] = (), priorities: tuple[int, int] | None = None):
        self.ifnames = tuple(ifnames)
        self.netns = netns
        self.protocol = protocol
        self.tables = frozenset(tables)  # linkwatch's routing tables
        self.priorities = priorities  # (lowest, highest) priority of linkwatch's rules
        self.last: dict[str, LinkFacts] | None = None
        self.last_event_latency_ms: float | None = None  # netlink message -> callback, last change
        self._events: AsyncIPRoute | None = None
        self._query: AsyncIPRoute | None = None
        self._closed = False

    def _open_async(self) -> AsyncIPRoute:
        try:
            if self.netns is None:
                return AsyncIPRoute()
            return AsyncIPRoute(netns=self.netns, flags=0)
        except OSError as err:
            raise FactsError(f"cannot open netlink in netns={self.netns!r}: {err}") from err

    async def _snapshot(self) -> dict[str, LinkFacts]:
        query = self._query
        assert query is not None
        for _ in range(5):
            try:
                links = [m async for m in await query.link("dump")]
                addrs = [m async for m in await query.addr("dump")]
                routes = [m async for m in await query.route("dump", family=socket.AF_INET)]
                routes += [m async for m in await query.route("dump", family=socket.AF_INET6)]
                return _facts_from_msgs(self.ifnames, links, addrs, routes, self.protocol)
            except NetlinkDumpInterrupted:
                continue
        raise FactsError("netlink dump kept being interrupted (5 tries)")

    def _relevant(self, msg: Any) -> bool:
        """Could this event change any LinkFacts we report?"""
        event = msg.get("event")
        known = {f.ifindex for f in (self.last or {}).values() if f.ifindex is not None}
        if event in _LINK_EVENTS:
            return msg.get_attr("IFLA_IFNAME") in self.ifnames or msg["index"] in known
        if event in _ADDR_EVENTS:
            return msg["index"] in known
        if event in _ROUTE_EVENTS:
            route = default_route_from_msg(msg)
            return route is not None and route.proto != self.protocol
        return False

    def _owned(self, msg: Any, relevant: bool) -> bool:
        """Could this event have changed linkwatch's own objects?"""
        event = msg.get("event")
        if event in _ROUTE_EVENTS:
            return msg["proto"] == self.protocol or (msg.get_attr("RTA_TABLE") or msg["table"]) in self.tables
        if event in _RULE_EVENTS:
            if msg.get_attr("FRA_PROTOCOL") == self.protocol:
                return True
            low, high = self.priorities or (1, 0)
            return low <= (msg.get_attr("FRA_PRIORITY") or 0) <= high
        # an address that goes takes its IPv4 routes with it, unannounced; a new one takes none
        # (and a router advertisement refreshes an IPv6 address's lifetimes with an RTM_NEWADDR)
        return relevant and event in (*_LINK_EVENTS, "RTM_DELADDR")

    def _deliver(self, snapshot: dict[str, LinkFacts], on_change: Callable[[dict[str, LinkFacts]], None]) -> None:
        self.last = snapshot
        self._call(on_change, dict(snapshot))

    @staticmethod
    def _call(callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # a broken callback must not kill the monitor
            log.exception("link monitor callback failed")

    async def run(self, on_change: Callable[[dict[str, LinkFacts]], None],
                  on_owned: Callable[[], None] | None = None) -> None:
        """Deliver a first snapshot at once, then one per change, until :meth:`close`."""
        if self._closed:
            return
        self._events = self._open_async()
        self._query = self._open_async()
        try:
            try:
                await self._events.bind(groups=EVENT_GROUPS)
                first = await self._snapshot()
            except OSError as err:
                raise FactsError(f"cannot open netlink in netns={self.netns!r}: {err}") from err
            self._deliver(first, on_change)
            if on_owned is not None:
                self._call(on_owned)
            while not self._closed:
                relevant, owned, received_at, ended = await self._next_batch()
                if ended or self._closed:
                    break
                if owned and on_owned is not None:
                    self._call(on_owned)
                if not relevant:
                    continue
                snapshot = await self._snapshot()
                if snapshot != self.last:
                    self.last_event_latency_ms = (time.perf_counter() - received_at) * 1000.0
                    log.debug("link facts changed (%.2f ms after the event)", self.last_event_latency_ms)
                    self._deliver(snapshot, on_change)
        finally:
            self._close_sockets()

    async def _next_batch(self) -> tuple[bool, bool, float, bool]:
        """Wait for one batch of multicast messages: (relevant?, owned objects touched?, when it
        arrived, socket ended?)."""
        events = self._events
        assert events is not None
        relevant = owned = False
        got_any = False
        received_at = time.perf_counter()
        try:
            async for msg in events.get():
                if not got_any:
                    received_at = time.perf_counter()
                got_any = True
                this = self._relevant(msg)
                relevant = relevant or this
                owned = owned or self._owned(msg, this)
        except NetlinkError as err:
            if self._closed:
                return False, False, received_at, True
            if err.code == errno.ENOBUFS:
                # the kernel dropped events: we cannot know what changed, so re-dump and repair
                log.warning("netlink event socket overrun; re-reading link facts")
                return True, True, time.perf_counter(), False
            raise FactsError(f"netlink event socket failed: {err}") from err
        return relevant, owned, received_at, not got_any

    def _close_sockets(self) -> None:
        for sock in (self._events, self._query):
            if sock is not None:
                try:
                    sock.close()
                except Exception as err:
                    log.debug("closing netlink socket: %s", err)
        self._events = self._query = None

    def close(self) -> None:
        """Stop :meth:`run` (it returns promptly) and release the sockets."""
        self._closed = True
        self._close_sockets()

    @property
    def snapshot(self) -> Mapping[str, LinkFacts] | None:
        """The last snapshot delivered, or None before the first."""
        return self.last
