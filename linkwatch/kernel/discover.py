"""What `linkwatch init` finds on the machine: the interfaces with a default route in the main table.

:func:`detect_uplinks` is the pure part (dumped links and main-table default routes in, one
:class:`~linkwatch.config.starter.DetectedUplink` per interface out); :func:`read_default_uplinks`
dumps the kernel once through netlink (:func:`linkwatch.kernel.facts.dump_kernel`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from linkwatch.config.starter import DetectedUplink
from linkwatch.kernel.facts import (
    IFF_LOOPBACK,
    IFF_LOWER_UP,
    IFF_NOARP,
    IFF_POINTOPOINT,
    IFF_UP,
    DefaultRoute,
    Link,
    default_route_from_msg,
    dump_kernel,
    link_from_msg,
)


def detect_uplinks(links: Iterable[Link], routes: Iterable[DefaultRoute], protocol: int = 77) -> list[DetectedUplink]:
    """One DetectedUplink per interface that a main-table default route (IPv4 or IPv6, each
    nexthop of a multipath one) leaves through, with the lowest metric and its next hop per
    family; loopback, routes of linkwatch's own ``protocol`` and interfaces without a default
    route are left out. In ifindex order (the config orders them by metric)."""
    by_index = {link.index: link for link in links}
    best: dict[tuple[int, int], tuple[int, str | None]] = {}  # (ifindex, family) -> (metric, gateway)
    for route in routes:
        if route.proto == protocol:
            continue
        for gateway, oif in route.hops:
            link = by_index.get(oif) if oif is not None else None
            if link is None or link.flags & IFF_LOOPBACK:
                continue
            key = (link.index, route.family)
            if key not in best or route.metric < best[key][0]:
                best[key] = (route.metric, gateway or None)
    found = []
    for index in sorted({index for index, _ in best}):
        link = by_index[index]
        v4 = best.get((index, socket.AF_INET))
        v6 = best.get((index, socket.AF_INET6))
        found.append(DetectedUplink(
            interface=link.ifname,
            metric4=v4[0] if v4 else None,
            gateway=v4[1] if v4 else None,
            metric6=v6[0] if v6 else None,
            gateway6=v6[1] if v6 else None,
            pointopoint=bool(link.flags & (IFF_POINTOPOINT | IFF_NOARP)),
            up=bool(link.flags & IFF_UP) and bool(link.flags & IFF_LOWER_UP),
        ))
    return found


def read_default_uplinks(netns: str | None = None, protocol: int = 77) -> list[DetectedUplink]:
    """The interfaces with a default route in the main table, read from the kernel now (one netlink
    dump; no privileges needed). Raises :class:`~linkwatch.kernel.facts.FactsError`."""
    links, _, routes = dump_kernel(netns)
    defaults = [r for r in (default_route_from_msg(m) for m in routes) if r is not None]
    return detect_uplinks((link_from_msg(m) for m in links), defaults, protocol)
