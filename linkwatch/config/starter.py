"""A first config from what the machine looks like (pure): `linkwatch init`'s text.

:func:`render_starter` takes the detected facts -- one :class:`DetectedUplink` per interface with a
default route in the main table (read by :mod:`linkwatch.kernel.discover`) -- and returns a
commented TOML config: one uplink per interface, ordered by route metric (the lowest is priority
1, the primary), ``gateway = "auto"``, and probes to well-known public anycast resolvers, ICMP and
DNS to two operators per address family, the IPv6 ones only where the interface has an IPv6
default route. The text is meant to pass ``linkwatch check-config`` as it is and to tell a
first-time user what to edit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from linkwatch.config.values import MAX_UPLINKS

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")

# (type, target, operator): ICMP to one operator, DNS to another, so one operator's outage is not
# taken for the uplink's. All are anycast: near every provider's network, answered worldwide.
PROBES4 = (("icmp", "9.9.9.9", "Quad9"), ("dns", "1.1.1.1", "Cloudflare"))
PROBES6 = (("icmp", "2620:fe::fe", "Quad9"), ("dns", "2606:4700:4700::1111", "Cloudflare"))
DNS_QUERY = "example.com"


class StarterError(ValueError):
    """No config can be written from these facts (no default route at all, too many uplinks)."""


@dataclass(frozen=True)
class DetectedUplink:
    """An interface with a default route in the main table, as the kernel showed it.

    ``metric4``/``metric6``: the lowest metric of its IPv4/IPv6 default routes, None when it has
    none of that family; ``gateway``/``gateway6``: their next hop, None for a point-to-point
    route (``default dev ppp0``); ``up``: administratively up and with carrier."""

    interface: str
    metric4: int | None = None
    gateway: str | None = None
    metric6: int | None = None
    gateway6: str | None = None
    pointopoint: bool = False
    up: bool = True

    @property
    def order(self) -> tuple[int, str]:
        """Sort key: the IPv4 default route's metric (the IPv6 one's when it has no IPv4 route)."""
        metric = self.metric4 if self.metric4 is not None else self.metric6
        return (metric if metric is not None else 2**32, self.interface)


def uplink_names(interfaces: Sequence[str]) -> list[str]:
    """A valid, distinct uplink name for each interface, in order: the interface's own name when it
    is one (1..32 of ``[A-Za-z0-9_-]``), else that name with every other character replaced by
    ``_`` (``eth0.100`` -> ``eth0_100``), made distinct with ``-2``, ``-3``, ... on a collision."""
    names: list[str | None] = [i if NAME_RE.fullmatch(i) else None for i in interfaces]
    taken = {n for n in names if n is not None}
    for index, interface in enumerate(interfaces):
        if names[index] is not None:
            continue
        base = re.sub(r"[^A-Za-z0-9_-]", "_", interface)[:32] or "uplink"
        name, number = base, 1
        while name in taken:
            number += 1
            suffix = f"-{number}"
            name = base[: 32 - len(suffix)] + suffix
        taken.add(name)
        names[index] = name
    return [n for n in names if n is not None]


def _quote(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def _shown(text: str) -> str:
    """Text for a comment: printable ASCII as it is, anything else escaped (no line breaks)."""
    return text if re.fullmatch(r"[ -~]*", text) else json.dumps(text)[1:-1]


def _found(up: DetectedUplink) -> str:
    parts = []
    for family, metric, gateway in (("IPv4", up.metric4, up.gateway), ("IPv6", up.metric6, up.gateway6)):
        if metric is not None:
            via = f"via {gateway}" if gateway else f"dev {_shown(up.interface)}"
            parts.append(f"{family} default {via} metric {metric}")
    return "; ".join(parts)


HEADER = """\
# linkwatch configuration, written by `linkwatch init`{origin}.
# From this machine's routes: one uplink per interface that had a default route in the main
# table (set by DHCP, PPP or a router advertisement), in the order of their route metrics.
#
# Read it through, edit what does not fit (names, priorities, a metered backup's quota), then:
#   linkwatch check-config {path}
#   sudo systemctl enable --now linkwatch       # start the engine (and at every boot)
#   sudo systemctl reload linkwatch             # after later edits: applied without a failover
#
# Keys left out take their defaults. Every key, with its default and what it does, is in the
# sample config (/usr/share/doc/linkwatch/examples/linkwatch.toml from the Debian package,
# etc/linkwatch.toml in the source) and in docs/configuration.md.
# Durations: "250ms", "10s", "5m". Sizes: "20GB", "1.5GiB".

[history]
# Events and per-minute probe statistics, for `linkwatch history` and the dashboard's graphs
# (written in batches, to spare an SD card). Delete this line to keep no history.
path = "/var/lib/linkwatch/history.db"

[web]
# The dashboard (`linkwatch web`, or the linkwatch-web service) listens here. Its controls need
# a login; set the password with:  sudo linkwatch passwd --config {path}
listen = "127.0.0.1:8080"

# ---------------------------------------------------------------------------------------------
# Uplinks: one [uplinks.NAME] table each. NAME: 1..32 letters, digits, "_" or "-"; rename them
# as you like ("fibre", "lte"), they show in the status, the dashboard, the logs and hooks.
#
# priority decides which uplink is the primary: the lowest number carries the traffic while it
# works; an uplink with a higher number is a backup that takes over when every better one fails,
# and gives the traffic back once the better one has worked again for 10s ([policy]
# failback_hold). Uplinks with the same priority share the traffic.
#
# Probes leave through their own uplink whichever uplink carries the traffic, so every uplink may
# probe the same targets. They are public anycast resolvers of two operators (Quad9, Cloudflare),
# so one operator's outage is not taken for your uplink's. Targets are addresses, never names:
# DNS may be down exactly when the probes matter.
"""


def _uplink(name: str, up: DetectedUplink, priority: int) -> list[str]:
    key = f"uplinks.{name}"
    lines = ["", f"[{key}]", f"# Found: {_found(up)}."]
    if not up.up:
        lines += ["# It was down or had no carrier when this file was written: check its cable or modem.",
                  "# linkwatch keeps it DOWN (no traffic through it) until it has carrier and its probes answer."]
    lines.append(f"interface = {_quote(up.interface)}")
    if up.pointopoint:
        lines += ["# Point-to-point (PPP/PPPoE, an LTE modem in raw-IP mode, a tunnel): no next hop, its routes",
                  '# are "default dev". If the interface may come back under another name after a reconnect',
                  "# (pppd's ppp0 as ppp1), give it a fixed one (pppd: `ifname wan-ppp`) and write that above."]
    if up.metric4 is not None and up.pointopoint:
        lines += ['# "auto": no next hop to learn here, the traffic goes "dev" the interface.', 'gateway = "auto"']
    elif up.metric4 is not None:
        lines += ['# "auto": the next hop of the main table\'s default route via the interface, followed when',
                  "# DHCP changes it (or write an IPv4 address).",
                  'gateway = "auto"']
    if up.metric6 is not None:
        lines += ["# The same for IPv6: the router advertisement's link-local next hop.",
                  'gateway6 = "auto"']
    if priority == 1:
        role = "the primary: it carries the traffic while it works."
    else:
        role = "a backup: it carries traffic only while every uplink with a lower number fails."
    lines += [f"# {priority} = {role}", f"priority = {priority}"]
    lines += ["# Metered (an LTE plan)? Its monthly volume: events (and SNMP traps) at 80 % and 100 %.",
              '# quota = "20GB"']
    if priority > 1:
        lines += ["# Move the flows left on this backup to the primary 5 minutes after a failback, instead of",
                  "# letting them finish here (calls, downloads on a metered plan):",
                  '# move_flows_after = "5m"']
    families = [PROBES4] if up.metric4 is not None else []
    if up.metric6 is not None:
        families.append(PROBES6)
    if up.metric6 is not None and up.metric4 is None:
        lines.append("# IPv6 only (no IPv4 default route via this interface): it carries IPv6 traffic only.")
    for probes in families:
        for kind, target, operator in probes:
            lines += ["", f"[[{key}.probes]]", f"type = {_quote(kind)}",
                      f"target = {_quote(target)}  # {operator}"]
            if kind == "dns":
                lines.append(f"query = {_quote(DNS_QUERY)}")
    return lines


def starter_uplinks(detected: Iterable[DetectedUplink]) -> list[tuple[str, DetectedUplink]]:
    """(uplink name, facts) of each uplink the config will have, in priority order (1, 2, ...).

    Raises :class:`StarterError` when there is no uplink, or more than a config may have."""
    ups = sorted({up.interface: up for up in detected}.values(), key=lambda up: up.order)
    if not ups:
        raise StarterError("no interface has a default route in the main table (IPv4 or IPv6)")
    if len(ups) > MAX_UPLINKS:
        raise StarterError(f"{len(ups)} interfaces have a default route; a config takes at most {MAX_UPLINKS}")
    return list(zip(uplink_names([up.interface for up in ups]), ups))


def render_starter(detected: Iterable[DetectedUplink], path: str, origin: str | None = None) -> str:
    """The commented config text for these uplinks (see :func:`starter_uplinks`). ``path`` is where
    it goes (for the commands in its comments); ``origin``, if given, says where and when
    (``on pi at 2026-12-06 10:00``)."""
    lines: list[str] = []
    for priority, (name, up) in enumerate(starter_uplinks(detected), start=1):
        lines += _uplink(name, up, priority)
    text = HEADER.format(origin=f" {_shown(origin)}" if origin else "", path=_shown(path))
    return text + "\n".join(lines) + "\n"
