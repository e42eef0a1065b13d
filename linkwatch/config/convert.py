"""Converters: one raw TOML value -> a typed value, or :class:`_Bad` saying what was expected.

Also the text forms other modules parse and print: durations ("200ms", "2m") and listen
addresses ("127.0.0.1:8080"). Nothing here knows about sections or dataclasses.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import dns.exception
import dns.name

# ---------------------------------------------------------------------------------------------
# Durations

_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_EXAMPLES = 'a duration like "200ms", "1s" or "2m"'


def parse_duration(text: str | int | float) -> float:
    """Parse "200ms", "1s", "2m", "1.5s", "1h", "1m30s", "30d" or a plain number of seconds.

    Raises ValueError for anything else (no unit, unknown unit, negative, inf/nan, booleans).
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"not a duration: {text!r} (must be a finite number >= 0)")
        return value
    if not isinstance(text, str):
        raise ValueError(f"not a duration: {text!r}")
    stripped = text.strip()
    if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", stripped):
        raise ValueError(f"missing unit in duration {text!r}: write e.g. {stripped + 's'!r}")
    pos, total = 0, 0.0
    while pos < len(stripped):
        match = _DURATION_PART.match(stripped, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"not a duration: {text!r} (expected e.g. '200ms', '1s', '2m', '1h', '30d')")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not stripped:
        raise ValueError("empty duration")
    return total


def _plain_number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest natural form: 0.2 -> "200ms", 1.5 -> "1.5s", 120 -> "2m", 3600 -> "1h"."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{_plain_number(seconds * 1000)}ms"
    if seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{_plain_number(seconds)}s"


# ---------------------------------------------------------------------------------------------
# Converters: raw TOML value -> typed value, or _Bad(expected, why)


class _Bad(Exception):
    def __init__(self, expected: str, why: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.why = why


@dataclass(frozen=True)
class _Conv:
    expected: str  # what a good value looks like, for "missing" and type errors
    check: Callable[[Any], Any]

    def __call__(self, raw: Any) -> Any:
        return self.check(raw)


def _show(raw: Any) -> str:
    """A value as the user wrote it in TOML."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str):
        return json.dumps(raw, ensure_ascii=False)
    if isinstance(raw, float):
        return repr(raw) if math.isfinite(raw) else "nan" if raw != raw else "inf" if raw > 0 else "-inf"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, dict):
        return "a table"
    if isinstance(raw, list):
        text = json.dumps(raw, ensure_ascii=False, default=str)
        return f"an array {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(raw, (datetime.date, datetime.time)):
        return f"{raw.isoformat()} (a date/time)"
    return repr(raw)


def _is_int(raw: Any) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)


def _duration(minimum: float = 0.0, allow_off: bool = False) -> _Conv:
    like = DURATION_EXAMPLES + (' or "off"' if allow_off else "")

    def check(raw: Any) -> float | None:
        if allow_off and raw == "off":
            return None
        try:
            value = parse_duration(raw)
        except ValueError:
            raise _Bad(like) from None
        if value <= 0:
            raise _Bad("a duration greater than 0" + (' (or "off")' if allow_off else ""))
        if value < minimum:
            raise _Bad(f"a duration of at least {format_duration(minimum)}")
        return value

    return _Conv(like, check)


def _integer(low: int, high: int, reserved: Mapping[int, str] | None = None, what: str = "an integer",
             note: str = "") -> _Conv:
    reserved = {n: why for n, why in (reserved or {}).items() if low <= n <= high}
    expected = f"{what} {low}..{high}"
    if reserved:
        expected += " other than " + ", ".join(f"{n} ({why})" for n, why in sorted(reserved.items()))
    expected += note

    def check(raw: Any) -> int:
        if not _is_int(raw) or not low <= raw <= high or raw in reserved:
            raise _Bad(expected)
        return raw

    return _Conv(expected, check)


def _percent() -> _Conv:
    expected = 'a percentage 0..100 like 40, 40.0 or "40%"'

    def check(raw: Any) -> float:
        value: float | None = None
        if _is_int(raw) or isinstance(raw, float):
            value = float(raw)
        elif isinstance(raw, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*%\s*", raw):
            value = float(raw.strip()[:-1])
        if value is None or not 0 <= value <= 100:
            raise _Bad(expected)
        return value

    return _Conv(expected, check)


def _number(low: float, high: float) -> _Conv:
    expected = f"a number {low:g}..{high:g}"

    def check(raw: Any) -> float:
        if (_is_int(raw) or isinstance(raw, float)) and math.isfinite(raw) and low <= raw <= high:
            return float(raw)
        raise _Bad(expected)

    return _Conv(expected, check)


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*")
_SIZE_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
SIZE_EXAMPLES = 'a size like "500MB", "10GB" or "1.5GiB"'


def parse_size(text: str) -> int:
    """ "10GB" -> 10_000_000_000 bytes (decimal units as ISPs bill, binary ones with an i)."""
    m = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not a size: {text!r} (expected e.g. '500MB', '10GB')")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def format_size(n: float) -> str:
    """Bytes -> "1.5GB" (decimal units, one decimal)."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}B"


def _size() -> _Conv:
    def check(raw: Any) -> int:
        try:
            value = parse_size(raw)
        except ValueError:
            raise _Bad(SIZE_EXAMPLES) from None
        if value <= 0:
            raise _Bad("a size greater than 0")
        return value

    return _Conv(SIZE_EXAMPLES, check)


def _percent_list() -> _Conv:
    expected = "a list of percentages 1..1000 in rising order, like [80, 100]"

    def check(raw: Any) -> tuple[int, ...]:
        if (not isinstance(raw, list) or not raw or not all(_is_int(x) and 1 <= x <= 1000 for x in raw)
                or list(raw) != sorted(set(raw))):
            raise _Bad(expected)
        return tuple(raw)

    return _Conv(expected, check)


def _boolean() -> _Conv:
    def check(raw: Any) -> bool:
        if not isinstance(raw, bool):
            raise _Bad("true or false")
        return raw

    return _Conv("true or false", check)


def _choice(*options: str) -> _Conv:
    expected = "one of " + ", ".join(json.dumps(o) for o in options)

    def check(raw: Any) -> str:
        if raw not in options:
            raise _Bad(expected)
        return raw

    return _Conv(expected, check)


def _absolute_path(max_bytes: int | None = None, example: str = "/etc/linkwatch/hooks.d",
                   empty_is_off: bool = False) -> _Conv:
    expected = f'an absolute path like "{example}"'
    if max_bytes is not None:
        expected += f" (at most {max_bytes} bytes, the limit of a unix socket address)"
    if empty_is_off:
        expected += ' or "" (off)'

    def check(raw: Any) -> str | None:
        if empty_is_off and raw == "":
            return None
        if not isinstance(raw, str) or not raw.startswith("/") or "\0" in raw:
            raise _Bad(expected)
        if max_bytes is not None and (len(raw.encode()) > max_bytes or raw.endswith("/")):
            raise _Bad(expected)
        return raw

    return _Conv(expected, check)


def _octal_mode() -> _Conv:
    expected = 'an octal file mode string like "0660"'

    def check(raw: Any) -> int:
        if _is_int(raw):
            raise _Bad(expected, "quote it, a TOML integer is read as decimal")
        if not isinstance(raw, str) or not re.fullmatch(r"(0o|0)?[0-7]{1,3}", raw.strip()):
            raise _Bad(expected)
        text = raw.strip()
        return int(text[2:] if text.startswith("0o") else text, 8)

    return _Conv(expected, check)


def _group_name() -> _Conv:
    expected = 'a group name like "linkwatch"'

    def check(raw: Any) -> str:
        if not isinstance(raw, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}\$?", raw):
            raise _Bad(expected)
        return raw

    return _Conv(expected, check)


def _secret_text(low: int, high: int, what: str) -> _Conv:
    expected = f"{what}: {low}..{high} printable ASCII characters"

    def check(raw: Any) -> str:
        if not isinstance(raw, str) or not low <= len(raw) <= high or not all(" " < c <= "~" for c in raw):
            raise _Bad(expected)
        return raw

    return _Conv(expected, check)


def _oid() -> _Conv:
    expected = 'a numeric OID under 1.3.6.1 like "1.3.6.1.4.1.8072.9999.9999.7745"'

    def check(raw: Any) -> str:
        if not isinstance(raw, str) or not re.fullmatch(r"1\.3\.6\.1(\.(0|[1-9]\d{0,9})){1,60}", raw.strip()):
            raise _Bad(expected)
        if any(int(part) > 0xFFFFFFFF for part in raw.split(".")):
            raise _Bad(expected, "each number must fit in 32 bits")
        return raw.strip()

    return _Conv(expected, check)


def _engine_id() -> _Conv:
    expected = 'an SNMP engine ID in hex, 5..32 octets, like "0x80001f888056b2b4e5e3"'

    def check(raw: Any) -> str:
        text = raw.strip().lower() if isinstance(raw, str) else ""
        text = text[2:] if text.startswith("0x") else text
        if not re.fullmatch(r"([0-9a-f]{2}){5,32}", text):
            raise _Bad(expected)
        return text

    return _Conv(expected, check)


def _ip_address() -> _Conv:
    expected = 'an IP address like "10.0.0.5" or "2001:db8::5" (no hostnames)'

    def check(raw: Any) -> str:
        try:
            return str(ipaddress.ip_address(raw.strip() if isinstance(raw, str) else raw))
        except ValueError:
            raise _Bad(expected) from None

    return _Conv(expected, check)


def _names_list() -> _Conv:
    expected = 'a list of user names like ["monitor"]'

    def check(raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, list) or not all(isinstance(x, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", x)
                                                 for x in raw):
            raise _Bad(expected)
        return tuple(raw)

    return _Conv(expected, check)


def _unicast_ipv4(raw: Any, expected: str, hostname_why: str = "") -> str:
    if not isinstance(raw, str):
        raise _Bad(expected)
    try:
        address = ipaddress.IPv4Address(raw.strip())
    except ValueError:
        looks_like_name = bool(re.search(r"[A-Za-z]", raw)) and ":" not in raw
        raise _Bad(expected, hostname_why if looks_like_name else "") from None
    problem = (
        "it is the unspecified address" if address.is_unspecified
        else "it is a multicast address" if address.is_multicast
        else "it is the broadcast address" if address == ipaddress.IPv4Address("255.255.255.255")
        else "it is a loopback address, it never leaves the router" if address.is_loopback
        else ""
    )
    if problem:
        raise _Bad(expected, problem)
    return str(address)


def _unicast_ipv6(raw: str, expected: str) -> str:
    try:
        address = ipaddress.IPv6Address(raw.strip())
    except ValueError:
        raise _Bad(expected) from None
    problem = (
        "it has a %zone: write the address alone (the uplink's interface is the zone)" if address.scope_id
        else "it is the unspecified address" if address.is_unspecified
        else "it is a multicast address" if address.is_multicast
        else "it is a loopback address, it never leaves the router" if address.is_loopback
        else "it is a link-local address, it never leaves the uplink's link" if address.is_link_local
        else "it is an IPv4-mapped address: write the IPv4 address" if address.ipv4_mapped
        else ""
    )
    if problem:
        raise _Bad(expected, problem)
    return str(address)


def _probe_target() -> _Conv:
    expected = 'a unicast IPv4 address like "9.9.9.9" or a global IPv6 address like "2620:fe::fe"'

    def check(raw: Any) -> str:
        if isinstance(raw, str) and ":" in raw:
            return _unicast_ipv6(raw, expected)
        why = "a hostname would need DNS, which may be down exactly when the probe matters"
        return _unicast_ipv4(raw, expected, why)

    return _Conv(expected, check)


def _gateway() -> _Conv:
    expected = '"auto" or a unicast IPv4 address like "198.51.100.1"'

    def check(raw: Any) -> str | None:
        if raw == "auto":
            return None
        return _unicast_ipv4(raw, expected)

    return _Conv(expected, check)


def _gateway6() -> _Conv:
    expected = '"auto" or an IPv6 address like "fe80::1" (link-local on the uplink\'s link, or global)'

    def check(raw: Any) -> str | None:
        if raw == "auto":
            return None
        if not isinstance(raw, str) or ":" not in raw:
            raise _Bad(expected)
        try:
            address = ipaddress.IPv6Address(raw.strip())
        except ValueError:
            raise _Bad(expected) from None
        if address.scope_id:
            raise _Bad(expected, "it has a %zone: write the address alone (the uplink's interface is the zone)")
        if address.is_unspecified or address.is_multicast or address.is_loopback:
            raise _Bad(expected, "not a next hop")
        return str(address)

    return _Conv(expected, check)


def _interface() -> _Conv:
    expected = ('a Linux interface name like "eth1" '
                '(1..15 characters, no "/", ":" or whitespace, not "." or "..")')

    def check(raw: Any) -> str:
        if (
            not isinstance(raw, str)
            or not 1 <= len(raw.encode()) <= 15
            or raw in (".", "..")
            or re.search(r"[/:\s\0]", raw)
        ):
            raise _Bad(expected)
        return raw

    return _Conv(expected, check)


def _dns_name() -> _Conv:
    expected = 'a DNS name like "example.com"'

    def check(raw: Any) -> str:
        if not isinstance(raw, str) or not raw.strip() or re.search(r"\s", raw):
            raise _Bad(expected)
        try:
            dns.name.from_text(raw)
        except (dns.exception.DNSException, ValueError) as exc:
            raise _Bad(expected, str(exc).rstrip(".") or type(exc).__name__) from None
        return raw

    return _Conv(expected, check)


# ---------------------------------------------------------------------------------------------
# Listen addresses

LISTEN_EXAMPLES = 'an address and port like "127.0.0.1:8080", "0.0.0.0:8080" or "[::1]:8080"'


def parse_listen(raw: Any) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``, ``"[::1]:80"`` -> ``("::1", 80)``.

    Raises ValueError saying what is wrong (hostnames are refused: DNS may be down)."""
    if not isinstance(raw, str):
        raise ValueError("")
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})", raw.strip())
    if match is None:
        raise ValueError("hostnames are not accepted" if re.search(r"[g-zG-Z]", raw) else "")
    host, port = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not 1 <= int(port) <= 65535:
        raise ValueError("the port must be 1..65535")
    return host, int(port)


def _listen() -> _Conv:
    def check(raw: Any) -> str:
        try:
            parse_listen(raw)
        except ValueError as e:
            raise _Bad(LISTEN_EXAMPLES, str(e)) from None
        return raw.strip()

    return _Conv(LISTEN_EXAMPLES, check)


def _password_hash() -> _Conv:
    expected = 'a hash written by "linkwatch passwd" (like "scrypt:32768:8:1$...")'

    def check(raw: Any) -> str:
        if not isinstance(raw, str) or not re.fullmatch(r"(scrypt|pbkdf2):[A-Za-z0-9:]+\$[^$\s]+\$[0-9a-f]+", raw):
            raise _Bad(expected, "never put the password itself here")
        return raw

    return _Conv(expected, check)
