"""Checks across uplinks, and across the keys of [mqtt], once each is valid on its own: (path, why) pairs
for the loader."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from linkwatch.config.values import MqttConfig, UplinkConfig


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


def mqtt_clashes(m: MqttConfig, bad: set[str]) -> list[tuple[str, str]]:
    """[mqtt] keys that only make sense together (``bad``: keys already reported)."""
    out = []
    if m.password is not None and m.password_file is not None:
        out.append(("mqtt.password_file", "got both password and password_file, expected one of them"))
    if (m.password is not None or m.password_file is not None) and m.username is None and "username" not in bad:
        out.append(("mqtt.username", "missing, expected a user name: a password is sent with one"))
    if (m.tls_cert_file is None) != (m.tls_key_file is None) and not {"tls_cert_file", "tls_key_file"} & bad:
        key, other = ("tls_key_file", "tls_cert_file") if m.tls_key_file is None else ("tls_cert_file", "tls_key_file")
        out.append((f"mqtt.{key}", f"missing, expected it with {other}: a client certificate needs its key"))
    tls_keys = [k for k in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(m, k) is not None]
    if tls_keys and not m.tls and "tls" not in bad:
        out.append(("mqtt.tls", f"got false, expected true: {', '.join(tls_keys)} is set, which only TLS uses"))
    if m.host is None and "host" not in bad:
        others = [f.name for f in dataclasses.fields(m) if f.name != "host" and getattr(m, f.name) != f.default]
        if others:
            out.append(("mqtt.host", f"missing, expected the broker's host: {', '.join(others)} is set, and "
                                     "without a host nothing is published"))
    return out
