"""Converters of the policy rules' match keys (prefixes, ports, DSCP, marks, uplink lists, names),
of an uplink's IPv6 LAN prefixes and of the names [mqtt] uses (a broker host, a topic, a client
id): one raw TOML value -> a typed value, or :class:`_Bad`."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from linkwatch.config.convert import _Bad, _Conv, _is_int

DSCP_NAMES = {"cs0": 0, "cs1": 8, "cs2": 16, "cs3": 24, "cs4": 32, "cs5": 40, "cs6": 48, "cs7": 56, "ef": 46,
              "va": 44, "le": 1, **{f"af{c}{d}": 8 * c + 2 * d for c in range(1, 5) for d in range(1, 4)}}


def _items(raw: Any) -> list[Any]:
    """One value or a non-empty list of them."""
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise _Bad("a value or a non-empty list")
    return items


def _prefixes() -> _Conv:
    expected = 'an IPv4 prefix like "192.168.1.0/24" or "192.168.1.10", or a list of them'

    def check(raw: Any) -> tuple[str, ...]:
        out = []
        for item in _items(raw):
            if not isinstance(item, str):
                raise _Bad(expected)
            try:
                out.append(str(ipaddress.IPv4Network(item.strip())))
            except ValueError as e:
                raise _Bad(expected, "host bits are set" if "host bits" in str(e) else "") from None
        return tuple(dict.fromkeys(out))

    return _Conv(expected, check)


def _networks(what: str) -> _Conv:
    """A list (maybe empty) of IPv4 and IPv6 networks or addresses: who may reach a service."""
    expected = f'a list of {what}, IPv4 or IPv6 networks or addresses like ["192.168.1.0/24", "fd00::/64", "::1"]'

    def check(raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, list):
            raise _Bad(expected)
        out = []
        for item in raw:
            if not isinstance(item, str):
                raise _Bad(expected)
            try:
                out.append(str(ipaddress.ip_network(item.strip())))
            except ValueError as e:
                raise _Bad(expected, f"{item[:50]!r}: host bits are set" if "host bits" in str(e)
                           else f"{item[:50]!r} is not a network") from None
        return tuple(dict.fromkeys(out))

    return _Conv(expected, check)


def _host_names() -> _Conv:
    """A list (maybe empty) of DNS names a service answers to, or "*" for any."""
    expected = 'a list of DNS names like ["router.lan", "status.example.org"], or ["*"] for any'
    label = r"(?!-)[a-z0-9-]{1,63}(?<!-)"

    def check(raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise _Bad(expected)
        out = []
        for item in raw:
            name = item.strip().lower().rstrip(".")
            if name != "*" and (len(name) > 253 or not re.fullmatch(rf"{label}(\.{label})*", name)):
                raise _Bad(expected, f"{item[:60]!r} is not a DNS name")
            out.append(name)
        return tuple(dict.fromkeys(out))

    return _Conv(expected, check)


MIN_DELEGATED = 32  # providers delegate /48 to /64 (rarely /44); nothing shorter than their own /32
ULA = ipaddress.IPv6Network("fc00::/7")


def _ipv6_prefixes() -> _Conv:
    expected = 'a list of the IPv6 prefixes a provider delegates, like ["2001:db8:100::/56"]'

    def check(raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, list):
            raise _Bad(expected)
        out = []
        for item in raw:
            if not isinstance(item, str):
                raise _Bad(expected)
            try:
                net = ipaddress.IPv6Network(item.strip())
            except ValueError as e:
                raise _Bad(expected, "host bits are set" if "host bits" in str(e) else "") from None
            if (net.is_link_local or net.is_multicast or net.is_loopback or net.is_reserved or net.is_site_local
                    or net.prefixlen < MIN_DELEGATED):
                raise _Bad(expected, f"{net} is not a LAN prefix a provider delegates (/{MIN_DELEGATED} to /128, "
                                     "not link-local, multicast or reserved)")
            if net.subnet_of(ULA):
                raise _Bad(expected, f"{net} is a unique local prefix, which no provider routes: a LAN on a "
                                     "ULA needs NAT66 or NPTv6, not ipv6_prefixes")
            out.append(str(net))
        return tuple(dict.fromkeys(out))

    return _Conv(expected, check)


def _ports() -> _Conv:
    expected = 'a port, a range like "10000-20000", or a list of them (1..65535)'

    def one(item: Any) -> tuple[int, int]:
        if _is_int(item):
            low = high = item
        elif isinstance(item, str) and (m := re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?", item)):
            low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        else:
            raise _Bad(expected)
        if not 1 <= low <= high <= 65535:
            raise _Bad(expected, f"{low}-{high} is not a rising range of ports" if low > high else "")
        return low, high

    def check(raw: Any) -> tuple[tuple[int, int], ...]:
        return tuple(dict.fromkeys(one(item) for item in _items(raw)))

    return _Conv(expected, check)


def _dscp() -> _Conv:
    expected = 'a DSCP value 0..63 or a class name like "ef", "af41" or "cs1"'

    def check(raw: Any) -> int:
        if _is_int(raw) and 0 <= raw <= 63:
            return raw
        if isinstance(raw, str) and raw.strip().lower() in DSCP_NAMES:
            return DSCP_NAMES[raw.strip().lower()]
        raise _Bad(expected)

    return _Conv(expected, check)


def _packet_mark(reserved: int) -> _Conv:
    expected = 'a packet mark like "0x10" or "0x10/0xf0" (value/mask, 32 bits)'

    def check(raw: Any) -> tuple[int, int]:
        text = f"{raw:#x}" if _is_int(raw) else raw
        if not isinstance(text, str) or not (
                m := re.fullmatch(r"\s*(0x[0-9a-fA-F]{1,8}|\d{1,10})\s*(?:/\s*(0x[0-9a-fA-F]{1,8}|\d{1,10})\s*)?", text)):
            raise _Bad(expected)
        # no mask: every bit but linkwatch's own (a "0x10" must not be refused for bits it never set)
        value, mask = int(m.group(1), 0), int(m.group(2), 0) if m.group(2) else 0xFFFFFFFF & ~reserved
        if value > 0xFFFFFFFF or mask > 0xFFFFFFFF or not mask or value & ~mask:
            raise _Bad(expected, "the value has bits outside the mask" if value & ~mask else "")
        if mask & reserved:
            raise _Bad(expected, f"bits 0x{reserved:08x} are linkwatch's own flow marks; leave them out of the mask")
        return value, mask

    return _Conv(expected, check)


def _uplink_names() -> _Conv:
    expected = 'a non-empty list of uplink names like ["fibre", "lte"]'

    def check(raw: Any) -> tuple[str, ...]:
        items = raw if isinstance(raw, list) else None
        if not items or not all(isinstance(x, str) and x for x in items):
            raise _Bad(expected)
        if len(set(items)) != len(items):
            raise _Bad(expected, "a name appears twice")
        return tuple(items)

    return _Conv(expected, check)


def _label() -> _Conv:
    expected = 'a short name like "voip" (1..32 letters, digits, "-", "_" or ".")'

    def check(raw: Any) -> str:
        if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", raw):
            raise _Bad(expected)
        return raw

    return _Conv(expected, check)


def parse_ipv6_prefixes(raw: Any) -> tuple[str, ...]:
    """``ipv6_prefixes`` given at run time (``linkwatch prefixes``): the same checks as the
    config's; ValueError says what is wrong."""
    conv = _ipv6_prefixes()
    try:
        return conv.check(raw)
    except _Bad as e:
        raise ValueError(conv.expected + (f" ({e.why})" if e.why else "")) from None



_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"


def _host() -> _Conv:
    """A host to connect to: a DNS name or an IP address (no port)."""
    expected = 'a host name or address like "broker.lan", "192.168.1.5" or "fd00::5" (no port)'

    def check(raw: Any) -> str:
        if not isinstance(raw, str):
            raise _Bad(expected)
        text = raw.strip()
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        name = text.rstrip(".")
        if ":" in text:
            raise _Bad(expected, "the port is a key of its own (port)")
        if len(name) > 253 or not re.fullmatch(rf"{_LABEL}(\.{_LABEL})*", name):
            raise _Bad(expected, f"{text[:60]!r} is not a DNS name")
        return name

    return _Conv(expected, check)


def _mqtt_topic() -> _Conv:
    """An MQTT topic to publish under: levels joined by "/", no wildcards, no empty level."""
    expected = 'an MQTT topic like "linkwatch/router" (no "+" or "#", no empty level, no leading "/")'

    def check(raw: Any) -> str:
        if not isinstance(raw, str) or not raw or len(raw.encode()) > 200:
            raise _Bad(expected)
        if "+" in raw or "#" in raw:
            raise _Bad(expected, "wildcards are for subscribers")
        if any(c == "\0" or ord(c) < 32 or ord(c) == 127 for c in raw):
            raise _Bad(expected, "it holds a control character")
        if "" in raw.split("/"):
            raise _Bad(expected, "an empty level (a leading, trailing or double \"/\")")
        return raw

    return _Conv(expected, check)


def _client_id() -> _Conv:
    expected = "an MQTT client id: 1..64 letters, digits, \"_\", \"-\" or \".\""

    def check(raw: Any) -> str:
        if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", raw):
            raise _Bad(expected)
        return raw

    return _Conv(expected, check)
