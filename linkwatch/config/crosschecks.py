"""Checks across uplinks, once each is valid on its own: (path, why) pairs for the loader."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from linkwatch.config.values import UplinkConfig


def _path(u: UplinkConfig, key: str) -> str:
    return f"uplinks.{u.name}.{key}"  # uplink names are bare TOML keys (checked before)


def flow_mark_clashes(uplinks: Iterable[UplinkConfig]) -> list[tuple[str, str]]:
    """Sticky flows mark each uplink's flows with its table's low byte: it must be 1..255 and unique."""
    marks: dict[int, UplinkConfig] = {}
    out = []
    for u in uplinks:
        low = u.table & 0xFF
        if low in marks and marks[low].table == u.table:
            continue  # the same table twice: already said
        if low == 0:
            out.append((_path(u, "table"), f"got {u.table}, expected a table whose low byte (table % 256) is "
                                            "not 0: it is the uplink's flow mark (policy.sticky_flows)"))
        elif low in marks:
            out.append((_path(u, "table"), f"got {u.table}, expected a table whose low byte (table % 256 = "
                                            f"{low}) differs from {marks[low].name}'s: it is the uplink's flow "
                                            "mark (policy.sticky_flows)"))
        marks.setdefault(low, u)
    return out


def prefix_overlaps(uplinks: Iterable[UplinkConfig]) -> list[tuple[str, str]]:
    """Two uplinks' LAN prefixes (ipv6_prefixes) must not overlap: one from-rule would take the
    other's traffic."""
    seen: list[tuple[str, ipaddress.IPv6Network]] = []
    out = []
    for u in uplinks:
        for p in map(ipaddress.IPv6Network, u.ipv6_prefixes):
            other = next(((n, q) for n, q in seen if n != u.name and p.overlaps(q)), None)
            if other:
                out.append((_path(u, "ipv6_prefixes"), f"got {p}, which overlaps {other[1]} of uplink {other[0]}: "
                                                       "expected each uplink's own delegated prefixes"))
            seen.append((u.name, p))
    return out
