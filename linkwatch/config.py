"""Typed configuration: TOML (stdlib tomllib) -> frozen dataclasses, checked all at once.

The schema lives on the dataclasses themselves: every field that is a TOML key carries a converter
(raw TOML value -> typed value, or a description of what was expected) in its metadata. One pass
converts every key and collects every problem; cross-field checks then compare keys with each other.
Nothing stops at the first error: :class:`ConfigError` carries all of them, one line each, in the
form ``key.path: got <value>, expected <what>[: why]``.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any, Callable, Mapping

import dns.exception
import dns.name

# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: the key path and a message that already says what was got and expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The configuration is unusable; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: list[ConfigIssue], source: str = "<string>") -> None:
        self.issues = list(issues)
        self.source = source
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


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


def _absolute_path(max_bytes: int | None = None, example: str = "/etc/linkwatch/hooks.d") -> _Conv:
    expected = f'an absolute path like "{example}"'
    if max_bytes is not None:
        expected += f" (at most {max_bytes} bytes, the limit of a unix socket address)"

    def check(raw: Any) -> str:
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


def _probe_target() -> _Conv:
    expected = 'a unicast IPv4 address like "9.9.9.9"'

    def check(raw: Any) -> str:
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


# Field metadata. A field with CONV is a TOML key; TABLE / NAMED / ARRAY mark nested tables.
CONV, DOC, ABSENT, SECRET = "lw_conv", "lw_doc", "lw_absent", "lw_secret"
TABLE, NAMED, ARRAY, OVERRIDE, CUSTOM = "lw_table", "lw_named", "lw_array", "lw_override", "lw_custom"
_REQUIRED = object()


def _key(conv: _Conv, doc: str, absent: Any = _REQUIRED, secret: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {CONV: conv, DOC: doc}
    if absent is not _REQUIRED:
        meta[ABSENT] = absent
    if secret:
        meta[SECRET] = True  # never echoed in an error message
    return meta


# ---------------------------------------------------------------------------------------------
# Schema

MIN_INTERVAL = 0.01  # 10ms: below this probing is a flood, not a health check
ROUTE_TABLES_RESERVED = {0: "unspec", 253: "default", 254: "main", 255: "local"}
MAX_UPLINKS = 99  # uplink rules sit between rule_priority + 1 and rule_priority + 99
MAIN_RULE_PRIORITY = 32766


@dataclass(frozen=True)
class HealthConfig:
    """How an uplink is probed and judged; [health] with per-uplink overrides."""

    interval: float = field(default=0.25, metadata=_key(
        _duration(MIN_INTERVAL), "seconds between probe rounds on an uplink that carries traffic"))
    fast_interval: float = field(default=0.1, metadata=_key(
        _duration(MIN_INTERVAL), "interval while a transition is pending (FALLING/RISING)"))
    standby_interval: float = field(default=1.0, metadata=_key(
        _duration(MIN_INTERVAL), "interval on uplinks that carry no traffic (metered backup links)"))
    timeout: float = field(default=0.25, metadata=_key(
        _duration(), "a round fails when no attempt is answered within this"))
    attempts: int = field(default=2, metadata=_key(
        _integer(1, 5), "packets per target per round at most (retransmit at timeout/attempts)"))
    down_after: int = field(default=3, metadata=_key(
        _integer(1, 100), "failed rounds in a row before DOWN"))
    up_after: int = field(default=5, metadata=_key(
        _integer(1, 100), "good rounds in a row before UP again"))
    min_targets: int = field(default=1, metadata=_key(
        _integer(1, 2**31 - 1), "targets that must answer for a round to count as good"))
    quality_window: float = field(default=10.0, metadata=_key(
        _duration(), "window for loss/RTT/jitter statistics"))
    loss_degraded: float = field(default=40.0, metadata=_key(
        _percent(), "% loss over the window that marks the uplink DEGRADED"))
    loss_recovered: float = field(default=20.0, metadata=_key(
        _percent(), "% loss the window must fall to before the uplink is UP again"))
    rtt_degraded: float | None = field(default=None, metadata=_key(
        _duration(allow_off=True), 'average RTT that marks the uplink DEGRADED; None ("off") = no RTT check'))
    rtt_recovered: float | None = field(default=None, metadata=_key(
        _duration(allow_off=True), "average RTT the uplink must fall to before it is UP again"))
    quality_hold: float = field(default=2.0, metadata=_key(
        _duration(), "a quality condition must last this long before it changes the state"))


@dataclass(frozen=True)
class ProbeConfig:
    """One probe target of an uplink: [[uplinks.NAME.probes]]."""

    type: str = field(metadata=_key(_choice("icmp", "dns"), "probe kind"))
    target: str = field(metadata=_key(_probe_target(), "IPv4 address to probe (no hostnames)"))
    query: str = field(default="example.com", metadata=_key(
        _dns_name(), "name to resolve (dns probes only)"))


@dataclass(frozen=True)
class UplinkConfig:
    """One uplink: [uplinks.NAME]. Fields after ``gateway`` are keyword-only."""

    name: str
    interface: str = field(metadata=_key(_interface(), "the uplink's network interface"))
    gateway: str | None = field(metadata=_key(
        _gateway(), 'next hop; None ("auto") = learn it from the main table\'s default via interface',
        absent=None))
    _: KW_ONLY
    priority: int = field(default=1, metadata=_key(
        _integer(0, 2**31 - 1), "lower is preferred; equal priorities form a tier"))
    weight: int = field(default=1, metadata=_key(_integer(1, 256), "share in multipath (balance mode)"))
    table: int = field(metadata=_key(
        _integer(1, 2**32 - 1, ROUTE_TABLES_RESERVED, what="a routing table number"),
        "routing table of this uplink; absent = first free from 101 upward in file order",
        absent=None))
    rule_priority: int  # assigned: routing.rule_priority + 1 + index in file order
    health: HealthConfig = field(default_factory=HealthConfig,
                                 metadata={TABLE: HealthConfig, OVERRIDE: True})
    probes: tuple[ProbeConfig, ...] = field(metadata={ARRAY: ProbeConfig})


@dataclass(frozen=True)
class PolicyConfig:
    """Which healthy uplinks carry traffic: [policy]."""

    mode: str = field(default="failover", metadata=_key(
        _choice("failover", "balance"), "failover: best priority tier; balance: all healthy, weighted"))
    failback_hold: float = field(default=10.0, metadata=_key(
        _duration(), "a better uplink must stay UP this long before traffic moves back to it"))
    flush_conntrack: bool = field(default=True, metadata=_key(
        _boolean(), "delete conntrack entries NATed through an uplink that stops carrying traffic"))
    on_stop: str = field(default="keep", metadata=_key(
        _choice("keep", "withdraw"), "keep routes when the engine stops (fail-static) or withdraw them"))


@dataclass(frozen=True)
class RoutingConfig:
    """Kernel objects linkwatch owns: [routing]."""

    protocol: int = field(default=77, metadata=_key(
        _integer(5, 255, what="a route protocol number", note=" (0-4 are reserved by the kernel)"),
        "route protocol number tagging linkwatch's routes and rules"))
    active_table: int = field(default=100, metadata=_key(
        _integer(1, 2**32 - 1, ROUTE_TABLES_RESERVED, what="a routing table number"),
        "table holding the default route(s) of the active uplink(s)"))
    rule_priority: int = field(default=1000, metadata=_key(
        _integer(1, MAIN_RULE_PRIORITY - 101),
        "suppress rule; uplink rules follow; the active rule is rule_priority + 100"))


@dataclass(frozen=True)
class ControlConfig:
    """The engine's control socket: [control]."""

    socket: str = field(default="/run/linkwatch/control.sock", metadata=_key(
        _absolute_path(107, "/run/linkwatch/control.sock"), "unix socket for the CLI, web UI and SNMP agent"))
    mode: int = field(default=0o660, metadata=_key(_octal_mode(), 'file mode of the socket ("0660" in TOML)'))
    group: str | None = field(default=None, metadata=_key(
        _group_name(), "group that owns the socket: its members (the web UI's user) may connect"))


@dataclass(frozen=True)
class HooksConfig:
    """Hook scripts run on events: [hooks]."""

    directory: str | None = field(default=None, metadata=_key(
        _absolute_path(), "directory of executable hook scripts; None = no hooks"))
    timeout: float = field(default=10.0, metadata=_key(_duration(), "a hook is killed after this long"))


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


@dataclass(frozen=True)
class HistoryConfig:
    """The history database: [history]."""

    path: str | None = field(default=None, metadata=_key(
        _absolute_path(example="/var/lib/linkwatch/history.db"),
        "SQLite file of events and samples; None = no history"))
    sample_period: float = field(default=60.0, metadata=_key(
        _duration(10.0), "probe results are summed up into one row per uplink per period"))
    commit_interval: float = field(default=10.0, metadata=_key(
        _duration(1.0), "samples are written at most this often (SD cards wear out)"))
    event_delay: float = field(default=2.0, metadata=_key(
        _duration(), "an event is written at most this long after it happened"))
    keep_samples: float = field(default=30 * 86400.0, metadata=_key(
        _duration(3600.0), "samples older than this are deleted"))
    keep_events: float = field(default=365 * 86400.0, metadata=_key(
        _duration(3600.0), "events older than this are deleted"))
    max_events: int = field(default=100_000, metadata=_key(
        _integer(100, 10_000_000), "the oldest events beyond this count are deleted (a flapping uplink)"))


@dataclass(frozen=True)
class WebConfig:
    """The web UI (`linkwatch web`): [web]."""

    listen: str = field(default="127.0.0.1:8080", metadata=_key(_listen(), "address and port to serve on"))
    password_hash: str | None = field(default=None, metadata=_key(
        _password_hash(), "login password hash (set by linkwatch passwd); None = nobody can log in"))
    public_read: bool = field(default=False, metadata=_key(
        _boolean(), "the dashboard and the read-only API without logging in"))
    public_metrics: bool = field(default=True, metadata=_key(
        _boolean(), "/metrics without logging in (Prometheus cannot log in)"))
    secure_cookies: bool = field(default=False, metadata=_key(
        _boolean(), "mark the session cookie Secure (when served over HTTPS by a reverse proxy)"))
    session_lifetime: float = field(default=12 * 3600.0, metadata=_key(
        _duration(60.0), "a login lasts this long"))
    refresh: float = field(default=1.0, metadata=_key(
        _duration(0.2), "how often the dashboard polls the engine"))


@dataclass(frozen=True)
class LogConfig:
    """Logging: [log]."""

    level: str = field(default="info", metadata=_key(
        _choice("debug", "info", "warning", "error"), "log level"))


SNMP_AUTH = ("none", "md5", "sha", "sha224", "sha256", "sha384", "sha512")
SNMP_PRIV = ("none", "des", "aes", "aes192", "aes256")
SNMP_LEVELS = ("noAuthNoPriv", "authNoPriv", "authPriv")
DEFAULT_BASE_OID = "1.3.6.1.4.1.8072.9999.9999.7745"  # net-snmp's netSnmpPlaypen: see docs/snmp.md


@dataclass(frozen=True)
class SnmpUserConfig:
    """An SNMPv3 (USM) user: [snmp.users.NAME], used by the agent and by v3 trap receivers."""

    name: str
    auth: str = field(default="sha256", metadata=_key(_choice(*SNMP_AUTH), "authentication protocol"))
    auth_key: str | None = field(default=None, repr=False, metadata=_key(
        _secret_text(8, 64, "an authentication passphrase"), "authentication passphrase", secret=True))
    priv: str = field(default="aes", metadata=_key(_choice(*SNMP_PRIV), "privacy (encryption) protocol"))
    priv_key: str | None = field(default=None, repr=False, metadata=_key(
        _secret_text(8, 64, "a privacy passphrase"), "privacy passphrase", secret=True))


@dataclass(frozen=True)
class TrapReceiverConfig:
    """Where traps go: one [[snmp.traps]] entry."""

    host: str = field(metadata=_key(_ip_address(), "receiver address"))
    port: int = field(default=162, metadata=_key(_integer(1, 65535), "receiver UDP port"))
    version: str = field(default="2c", metadata=_key(_choice("2c", "3"), "SNMP version"))
    community: str | None = field(default=None, repr=False, metadata=_key(
        _secret_text(1, 64, "a community string"), "v2c community", secret=True))
    user: str | None = field(default=None, metadata=_key(
        _secret_text(1, 32, "a user name of [snmp.users]"), "v3 user (a [snmp.users.NAME])"))
    level: str = field(default="authPriv", metadata=_key(_choice(*SNMP_LEVELS), "v3 security level"))
    kind: str = field(default="trap", metadata=_key(
        _choice("trap", "inform"), "trap (fire and forget) or inform (acknowledged, retried)"))
    retries: int = field(default=2, metadata=_key(_integer(0, 10), "inform retransmissions"))
    timeout: float = field(default=1.0, metadata=_key(_duration(0.05), "wait for an inform's answer"))


@dataclass(frozen=True)
class SnmpAgentConfig:
    """The SNMP agent in the engine: [snmp.agent]."""

    enabled: bool = field(default=False, metadata=_key(_boolean(), "answer GET/GETNEXT/GETBULK"))
    listen: str = field(default="127.0.0.1:1161", metadata=_key(_listen(), "UDP address and port"))
    community: str | None = field(default=None, repr=False, metadata=_key(
        _secret_text(1, 64, "a community string"), "read-only v2c community; None = no v2c", secret=True))
    users: tuple[str, ...] = field(default=(), metadata=_key(_names_list(), "v3 users allowed to read"))


@dataclass(frozen=True)
class SnmpConfig:
    """SNMP traps and agent: [snmp]."""

    base_oid: str = field(default=DEFAULT_BASE_OID, metadata=_key(_oid(), "OID of the LINKWATCH-MIB module"))
    engine_id: str | None = field(default=None, metadata=_key(
        _engine_id(), "SNMPv3 engine ID (hex); None = derived from /etc/machine-id"))
    trap_burst: int = field(default=3, metadata=_key(_integer(1, 100), "traps per uplink per trap_window"))
    trap_window: float = field(default=60.0, metadata=_key(_duration(1.0), "the storm limit's window"))
    agent: SnmpAgentConfig = field(default_factory=SnmpAgentConfig, metadata={TABLE: SnmpAgentConfig})
    users: tuple[SnmpUserConfig, ...] = field(default=(), metadata={NAMED: SnmpUserConfig})
    traps: tuple[TrapReceiverConfig, ...] = field(default=(), metadata={ARRAY: TrapReceiverConfig})

    def user(self, name: str) -> SnmpUserConfig:
        for u in self.users:
            if u.name == name:
                return u
        raise KeyError(name)


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``health`` is the global [health], each uplink has its merged copy."""

    control: ControlConfig = field(default_factory=ControlConfig, metadata={TABLE: ControlConfig})
    health: HealthConfig = field(default_factory=HealthConfig, metadata={TABLE: HealthConfig})
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={TABLE: PolicyConfig})
    routing: RoutingConfig = field(default_factory=RoutingConfig, metadata={TABLE: RoutingConfig})
    hooks: HooksConfig = field(default_factory=HooksConfig, metadata={TABLE: HooksConfig})
    log: LogConfig = field(default_factory=LogConfig, metadata={TABLE: LogConfig})
    history: HistoryConfig = field(default_factory=HistoryConfig, metadata={TABLE: HistoryConfig})
    web: WebConfig = field(default_factory=WebConfig, metadata={TABLE: WebConfig})
    snmp: SnmpConfig = field(default_factory=SnmpConfig, metadata={TABLE: SnmpConfig, CUSTOM: True})
    uplinks: tuple[UplinkConfig, ...] = field(default=(), metadata={NAMED: UplinkConfig})
    source: str = "<string>"

    def uplink(self, name: str) -> UplinkConfig:
        """The uplink called ``name``; KeyError if there is none."""
        for uplink in self.uplinks:
            if uplink.name == name:
                return uplink
        raise KeyError(name)


def _leaf_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in fields(cls) if CONV in f.metadata]


def _toml_keys(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if {CONV, TABLE, NAMED, ARRAY} & set(f.metadata)]


@dataclass(frozen=True)
class KeyDoc:
    """One key of the schema, for the configuration reference."""

    path: str  # "health.interval", "uplinks.*.probes.*.type"
    default: str  # as TOML would write it, or "required" / "unset"
    expected: str  # what a good value looks like
    doc: str  # what it does


def _default_text(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING and ABSENT not in f.metadata:
        return "required"
    value = f.default if f.default is not dataclasses.MISSING else f.metadata.get(ABSENT)
    expected = f.metadata[CONV].expected
    if value is None:
        return '"off"' if '"off"' in expected else "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if "percentage" in expected else json.dumps(format_duration(value))
    if isinstance(value, int) and f.name == "mode":
        return json.dumps(f"0{value:o}")
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return json.dumps(value) if isinstance(value, str) else str(value)


def key_docs() -> list[KeyDoc]:
    """Every key of :func:`describe_keys` with its default, expected form and meaning."""

    def walk(cls: type, prefix: str) -> list[KeyDoc]:
        out: list[KeyDoc] = []
        for f in fields(cls):
            meta = f.metadata
            if CONV in meta:
                out.append(KeyDoc(prefix + f.name, _default_text(f), meta[CONV].expected, meta[DOC]))
            elif TABLE in meta and not meta.get(OVERRIDE):
                out += walk(meta[TABLE], f"{prefix}{f.name}.")
            elif NAMED in meta:
                out += walk(meta[NAMED], f"{prefix}{f.name}.*.")
            elif ARRAY in meta:
                out += walk(meta[ARRAY], f"{prefix}{f.name}.*.")
        return out

    return walk(Config, "")


def describe_keys(per_uplink_health: bool = False) -> list[str]:
    """Every TOML key path the schema knows, derived from the dataclasses, in file order.

    Named tables and array entries appear as ``*``: "uplinks.*.interface", "uplinks.*.probes.*.type".
    The per-uplink health overrides ("uplinks.*.health.interval", ...) repeat the [health] keys and
    are listed only with ``per_uplink_health=True``.
    """

    def walk(cls: type, prefix: str) -> list[str]:
        keys: list[str] = []
        for f in fields(cls):
            meta = f.metadata
            if CONV in meta:
                keys.append(prefix + f.name)
            elif TABLE in meta and (per_uplink_health or not meta.get(OVERRIDE)):
                keys += walk(meta[TABLE], f"{prefix}{f.name}.")
            elif NAMED in meta:
                keys += walk(meta[NAMED], f"{prefix}{f.name}.*.")
            elif ARRAY in meta:
                keys += walk(meta[ARRAY], f"{prefix}{f.name}.*.")
        return keys

    return walk(Config, "")


# ---------------------------------------------------------------------------------------------
# Loading


def _join(parent: str, key: str) -> str:
    """Key path, quoting keys that are not TOML bare keys: uplinks."my link"."""
    part = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def _bad_issue(path: str, raw: Any, bad: _Bad, secret: bool = False) -> ConfigIssue:
    shown = f"a secret of {len(raw)} characters" if secret and isinstance(raw, str) else (
        f"a {type(raw).__name__}" if secret else _show(raw))
    message = f"got {shown}, expected {bad.expected}"
    return ConfigIssue(path, message + (f": {bad.why}" if bad.why else ""))


def _check_unknown(raw: Mapping[str, Any], allowed: list[str], path: str, issues: list[ConfigIssue]) -> None:
    for key in raw:
        if key in allowed:
            continue
        message = f'unknown key "{key}", expected one of: {", ".join(sorted(allowed))}'
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            message += f'; did you mean "{close[0]}"?'
        issues.append(ConfigIssue(_join(path, key), message))


def _table(raw: Any, path: str, header: str, issues: list[ConfigIssue]) -> dict[str, Any] | None:
    """raw if it is a TOML table, else an issue and None."""
    if isinstance(raw, dict):
        return raw
    issues.append(ConfigIssue(path, f"got {_show(raw)}, expected a table {header}"))
    return None


def _convert(cls: type, raw: Mapping[str, Any], path: str, issues: list[ConfigIssue],
             fill: bool = True) -> tuple[dict[str, Any], set[str]]:
    """Convert the leaf keys of ``cls`` found in ``raw``; with ``fill`` also absent ones.

    Returns the converted values (bad ones fall back to their default where there is one) and the
    names of the keys that were bad or missing, so cross-field checks can skip them.
    """
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for f in _leaf_fields(cls):
        conv: _Conv = f.metadata[CONV]
        key_path = _join(path, f.name)
        if f.name in raw:
            try:
                values[f.name] = conv(raw[f.name])
                continue
            except _Bad as exc:
                issues.append(_bad_issue(key_path, raw[f.name], exc, bool(f.metadata.get(SECRET))))
                bad.add(f.name)
        elif not fill:
            continue
        elif f.default is dataclasses.MISSING and ABSENT not in f.metadata:
            issues.append(ConfigIssue(key_path, f"missing, expected {conv.expected}"))
            bad.add(f.name)
        if fill:
            values[f.name] = f.default if f.default is not dataclasses.MISSING else f.metadata.get(ABSENT)
    return values, bad


def _section(cls: type, doc: Mapping[str, Any], name: str,
             issues: list[ConfigIssue]) -> tuple[Any, set[str]]:
    raw = _table(doc.get(name, {}), name, f"[{name}]", issues)
    if raw is None:
        return cls(), set(_toml_keys(cls))
    _check_unknown(raw, _toml_keys(cls), name, issues)
    values, bad = _convert(cls, raw, name, issues)
    return cls(**values), bad


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return '"off"'
    if key.startswith("loss_"):
        return f"{value:g}%"
    if isinstance(value, float):
        return format_duration(value)
    return str(value)


def _health_rules(h: HealthConfig, name: Callable[[str], str]) -> list[tuple[tuple[str, ...], bool, str]]:
    """Cross-field rules: (keys, holds, message); keys[0] is the key the issue is reported on."""
    d = format_duration
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (("fast_interval", "interval"), h.fast_interval <= h.interval,
         f"expected at most {name('interval')} ({d(h.interval)}): the fast interval is used while a "
         "transition is pending and must not be slower than the normal one"),
        (("standby_interval", "interval"), h.standby_interval >= h.interval,
         f"expected at least {name('interval')} ({d(h.interval)}): standby uplinks are probed less "
         "often than active ones, not more"),
        (("timeout", "interval"), h.timeout <= 10 * h.interval,
         f"expected at most 10 × {name('interval')} = {d(10 * h.interval)} (interval {d(h.interval)}): "
         "a failed round is only known after the timeout, so detection would take longer than 10 "
         "rounds and more than 10 rounds would be in flight at once"),
        (("attempts", "timeout"), h.timeout / h.attempts >= MIN_INTERVAL,
         f"expected at most {max(1, int(h.timeout / MIN_INTERVAL + 1e-9))} with {name('timeout')} = "
         f"{d(h.timeout)}: retransmits are sent every timeout / attempts "
         f"({d(h.timeout / h.attempts)}), which must be at least {d(MIN_INTERVAL)}"),
        (("quality_window", "interval"), h.quality_window >= 4 * h.interval,
         f"expected at least 4 × {name('interval')} = {d(4 * h.interval)} (interval {d(h.interval)}): "
         "a shorter window holds too few rounds for loss, RTT and jitter statistics"),
        (("loss_recovered", "loss_degraded"), h.loss_recovered < h.loss_degraded,
         f"expected less than {name('loss_degraded')} ({h.loss_degraded:g}%): an uplink must recover "
         "below the loss that degraded it, or it flaps on the boundary"),
    ]
    if h.rtt_degraded is not None and h.rtt_recovered is None:
        rules.append((("rtt_recovered", "rtt_degraded"), False,
                      f"expected a duration below {name('rtt_degraded')} ({d(h.rtt_degraded)}): set both "
                      "RTT thresholds or neither"))
    elif h.rtt_degraded is None and h.rtt_recovered is not None:
        rules.append((("rtt_degraded", "rtt_recovered"), False,
                      f"expected a duration above {name('rtt_recovered')} ({d(h.rtt_recovered)}): set "
                      "both RTT thresholds or neither"))
    elif h.rtt_degraded is not None and h.rtt_recovered is not None:
        rules.append((("rtt_recovered", "rtt_degraded"), h.rtt_recovered < h.rtt_degraded,
                      f"expected less than {name('rtt_degraded')} ({d(h.rtt_degraded)}): an uplink must "
                      "recover below the RTT that degraded it, or it flaps on the boundary"))
    return rules


def _check_health(h: HealthConfig, bad: set[str], path: str, overridden: set[str] | None,
                  issues: list[ConfigIssue]) -> None:
    """Cross-field checks of one effective [health]; ``overridden`` is None for the global one.

    For an uplink only rules touching one of its overridden keys are checked (the global [health]
    reports the others once); values it inherits are marked with where they come from.
    """

    def name(key: str) -> str:
        return _join(path, key) if overridden is None or key in overridden else _join("health", key)

    for keys, holds, message in _health_rules(h, name):
        if holds or bad & set(keys) or (overridden is not None and not overridden & set(keys)):
            continue
        subject = keys[0]
        got = _fmt(subject, getattr(h, subject))
        if overridden is not None and subject not in overridden:
            got += f" (inherited from {_join('health', subject)})"
        issues.append(ConfigIssue(_join(path, subject), f"got {got}, {message}"))


@dataclass
class _UplinkDraft:
    """An uplink as read, before tables and rule priorities are assigned."""

    values: dict[str, Any]
    health: HealthConfig
    probes: tuple[ProbeConfig, ...]


def _probes(raw: Any, path: str, issues: list[ConfigIssue]) -> tuple[ProbeConfig, ...]:
    header = f"[[{path}]]"
    need = f"at least one {header} with a type and a target"
    if raw is None:
        issues.append(ConfigIssue(path, f"missing, expected {need}"))
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        issues.append(ConfigIssue(path, f"got {_show(raw)}, expected an array of tables {header}"))
        return ()
    if not raw:
        issues.append(ConfigIssue(path, f"got no probes, expected {need}"))
        return ()
    probes: list[ProbeConfig] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(raw):
        probe_path = f"{path}[{index}]"
        _check_unknown(item, _toml_keys(ProbeConfig), probe_path, issues)
        values, bad = _convert(ProbeConfig, item, probe_path, issues)
        if "query" in item and "type" not in bad and values["type"] != "dns":
            issues.append(ConfigIssue(
                f"{probe_path}.query",
                f'got {_show(item["query"])}, expected no query: a query applies only to dns probes '
                f'(this probe\'s type is {_show(values["type"])})'))
            bad.add("query")
        if bad:
            continue
        probe = ProbeConfig(**values)
        signature = (probe.type, probe.target, probe.query if probe.type == "dns" else "")
        if signature in seen:
            issues.append(ConfigIssue(
                probe_path, f"got a second {probe.type} probe of {probe.target}, expected distinct "
                f"probes: it repeats {path}[{seen[signature]}], which would count one target twice"))
            continue
        seen[signature] = index
        probes.append(probe)
    return tuple(probes)


def _uplink(name: str, raw: Any, health: HealthConfig, health_bad: set[str],
            issues: list[ConfigIssue]) -> _UplinkDraft | None:
    path = _join("uplinks", name)
    before = len(issues)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
        issues.append(ConfigIssue(path, f'got {_show(name)}, expected an uplink name of 1..32 letters, '
                                        'digits, "_" or "-"'))
    body = _table(raw, path, f"[{path}]", issues)
    if body is None:
        return None
    _check_unknown(body, _toml_keys(UplinkConfig), path, issues)
    values, _ = _convert(UplinkConfig, body, path, issues)

    effective, overridden = health, set()
    if "health" in body:
        health_path = f"{path}.health"
        override = _table(body["health"], health_path, f"[{health_path}]", issues)
        if override is not None:
            _check_unknown(override, _toml_keys(HealthConfig), health_path, issues)
            changed, override_bad = _convert(HealthConfig, override, health_path, issues, fill=False)
            overridden = {key for key in override if key in _toml_keys(HealthConfig)}
            effective = dataclasses.replace(health, **changed)
            bad = (health_bad - overridden) | override_bad
            _check_health(effective, bad, health_path, overridden, issues)
            health_bad = bad

    probes_raw = body.get("probes")
    probe_count = len(probes_raw) if isinstance(probes_raw, list) else 0
    probes = _probes(probes_raw, f"{path}.probes", issues)
    if "min_targets" not in health_bad and probe_count and effective.min_targets > probe_count:
        got = str(effective.min_targets)
        if "min_targets" not in overridden:
            got += " (inherited from health.min_targets)"
        plural = "probe" if probe_count == 1 else "probes"
        issues.append(ConfigIssue(
            f"{path}.health.min_targets",
            f"got {got}, expected at most {probe_count}: uplink {name} has only {probe_count} {plural}, "
            "so no round could ever count as good"))
    if len(issues) > before:
        return None
    return _UplinkDraft(values, effective, probes)


def _uplinks(doc: Mapping[str, Any], health: HealthConfig, health_bad: set[str], routing: RoutingConfig,
             routing_bad: set[str], issues: list[ConfigIssue]) -> tuple[UplinkConfig, ...]:
    need = "at least one [uplinks.NAME] table with an interface and [[uplinks.NAME.probes]]"
    if "uplinks" not in doc:
        issues.append(ConfigIssue("uplinks", f"missing, expected {need}"))
        return ()
    raw = _table(doc["uplinks"], "uplinks", "[uplinks.NAME] per uplink", issues)
    if raw is None:
        return ()
    if not raw:
        issues.append(ConfigIssue("uplinks", f"got no uplinks, expected {need}"))
        return ()
    if len(raw) > MAX_UPLINKS:
        issues.append(ConfigIssue("uplinks", f"got {len(raw)} uplinks, expected at most {MAX_UPLINKS}: "
                                             "uplink rules take routing.rule_priority + 1..99, below the "
                                             "active rule at + 100"))

    interfaces: dict[str, str] = {}
    tables: dict[int, str] = {}
    drafts: dict[str, _UplinkDraft | None] = {}
    for name, body in raw.items():
        drafts[name] = _uplink(name, body, health, health_bad, issues)
        path = _join("uplinks", name)
        if not isinstance(body, dict):
            continue
        interface = body.get("interface")
        if isinstance(interface, str):
            if interface in interfaces:
                issues.append(ConfigIssue(
                    f"{path}.interface", f"got {_show(interface)}, expected an interface no other uplink "
                    f"uses ({interfaces[interface]}.interface is {_show(interface)})"))
            interfaces.setdefault(interface, path)
        table = body.get("table")
        if _is_int(table):
            if table in tables:
                issues.append(ConfigIssue(
                    f"{path}.table", f"got {table}, expected a table no other uplink uses "
                    f"({tables[table]}.table is {table})"))
            elif "active_table" not in routing_bad and table == routing.active_table:
                issues.append(ConfigIssue(
                    f"{path}.table", f"got {table}, expected a table other than routing.active_table "
                    f"({routing.active_table}), which holds the active default route"))
            tables.setdefault(table, path)

    taken = set(tables) | {routing.active_table} | set(ROUTE_TABLES_RESERVED)
    uplinks: list[UplinkConfig] = []
    next_table = 101
    for index, (name, draft) in enumerate(drafts.items()):
        if draft is None:
            continue
        table = draft.values["table"]
        if table is None:
            while next_table in taken:
                next_table += 1
            table = next_table
            taken.add(table)
        fields_ = {k: v for k, v in draft.values.items() if k != "table"}
        uplinks.append(UplinkConfig(name=name, table=table, rule_priority=routing.rule_priority + 1 + index,
                                    health=draft.health, probes=draft.probes, **fields_))
    return tuple(uplinks)


_LEVEL_NEEDS = {"authPriv": ("auth", "priv"), "authNoPriv": ("auth",), "noAuthNoPriv": ()}


def _snmp_users(raw: Any, issues: list[ConfigIssue]) -> tuple[SnmpUserConfig, ...]:
    table = _table(raw, "snmp.users", "[snmp.users.NAME] per user", issues)
    users = []
    for name, body in (table or {}).items():
        path = _join("snmp.users", name)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", name):
            issues.append(ConfigIssue(path, "expected a user name of 1..32 letters, digits, '_', '.' or '-'"))
            continue
        if _table(body, path, f"[{path}]", issues) is None:
            continue
        _check_unknown(body, _toml_keys(SnmpUserConfig), path, issues)
        values, bad = _convert(SnmpUserConfig, body, path, issues)
        for proto, key in (("auth", "auth_key"), ("priv", "priv_key")):
            if proto not in bad and values[proto] != "none" and values[key] is None and key not in bad:
                issues.append(ConfigIssue(_join(path, key), f"missing, expected a passphrase for "
                                                            f"{proto} = {_show(values[proto])}"))
                bad.add(key)
        if not {"auth", "priv"} & bad and values["priv"] != "none" and values["auth"] == "none":
            issues.append(ConfigIssue(_join(path, "priv"), f"got {_show(values['priv'])}, expected \"none\" "
                                                           "while auth is \"none\": SNMPv3 privacy needs authentication"))
            bad.add("priv")
        if not bad:
            users.append(SnmpUserConfig(name=name, **values))
    return tuple(users)


def _snmp(doc: Mapping[str, Any], issues: list[ConfigIssue]) -> SnmpConfig:
    """[snmp] with its [snmp.agent], [snmp.users.NAME] and [[snmp.traps]], checked against each other."""
    raw = _table(doc.get("snmp", {}), "snmp", "[snmp]", issues)
    if raw is None:
        return SnmpConfig()
    _check_unknown(raw, _toml_keys(SnmpConfig), "snmp", issues)
    values, _ = _convert(SnmpConfig, raw, "snmp", issues)
    users = _snmp_users(raw.get("users", {}), issues)
    by_name = {u.name: u for u in users}
    agent = SnmpAgentConfig()
    agent_raw = _table(raw.get("agent", {}), "snmp.agent", "[snmp.agent]", issues)
    if agent_raw is not None:
        _check_unknown(agent_raw, _toml_keys(SnmpAgentConfig), "snmp.agent", issues)
        agent_values, agent_bad = _convert(SnmpAgentConfig, agent_raw, "snmp.agent", issues)
        agent = SnmpAgentConfig(**agent_values)
        for name in agent.users:
            if name not in by_name and name not in raw.get("users", {}):
                issues.append(ConfigIssue("snmp.agent.users", f"got {_show(name)}, expected a user defined "
                                                              "in [snmp.users.NAME]"))
        if agent.enabled and not agent.community and not agent.users and not {"community", "users"} & agent_bad:
            issues.append(ConfigIssue("snmp.agent.enabled", "got true, expected a community or users as well: "
                                                            "an agent nobody may read is a mistake"))
    traps = []
    raw_traps = raw.get("traps", [])
    if not isinstance(raw_traps, list) or not all(isinstance(t, dict) for t in raw_traps):
        issues.append(ConfigIssue("snmp.traps", f"got {_show(raw_traps)}, expected an array of tables [[snmp.traps]]"))
        raw_traps = []
    for index, item in enumerate(raw_traps):
        path = f"snmp.traps[{index}]"
        _check_unknown(item, _toml_keys(TrapReceiverConfig), path, issues)
        tv, tbad = _convert(TrapReceiverConfig, item, path, issues)
        if not {"version", "community"} & tbad and tv["version"] == "2c" and tv["community"] is None:
            issues.append(ConfigIssue(f"{path}.community", "missing, expected a community string for version 2c"))
            tbad.add("community")
        if "version" not in tbad and tv["version"] == "3":
            if tv["user"] is None and "user" not in tbad:
                issues.append(ConfigIssue(f"{path}.user", "missing, expected a user of [snmp.users] for version 3"))
                tbad.add("user")
            elif tv["user"] is not None and tv["user"] not in by_name:
                if tv["user"] not in raw.get("users", {}):
                    issues.append(ConfigIssue(f"{path}.user", f"got {_show(tv['user'])}, expected a user "
                                                              "defined in [snmp.users.NAME]"))
                tbad.add("user")
            elif tv["user"] is not None and "level" not in tbad:
                user = by_name[tv["user"]]
                missing = [p for p in _LEVEL_NEEDS[tv["level"]] if getattr(user, p) == "none"]
                if missing:
                    issues.append(ConfigIssue(f"{path}.level", (
                        f"got {_show(tv['level'])}, expected a level user {tv['user']!r} supports: its "
                        + " and ".join(f"{p} is \"none\"" for p in missing))))
                    tbad.add("level")
        if not tbad:
            traps.append(TrapReceiverConfig(**tv))
    return SnmpConfig(**{k: v for k, v in values.items() if k in {f.name for f in _leaf_fields(SnmpConfig)}},
                      agent=agent, users=users, traps=tuple(traps))


def _validate(doc: Mapping[str, Any], source: str) -> Config:
    issues: list[ConfigIssue] = []
    _check_unknown(doc, _toml_keys(Config), "", issues)
    sections: dict[str, Any] = {}
    bad: dict[str, set[str]] = {}
    for f in fields(Config):
        if TABLE in f.metadata and not f.metadata.get(CUSTOM):
            sections[f.name], bad[f.name] = _section(f.metadata[TABLE], doc, f.name, issues)
    sections["snmp"] = _snmp(doc, issues)
    _check_health(sections["health"], bad["health"], "health", None, issues)
    hist = sections["history"]
    if not {"event_delay", "commit_interval"} & bad["history"] and hist.event_delay > hist.commit_interval:
        issues.append(ConfigIssue("history.event_delay", (
            f"got {format_duration(hist.event_delay)}, expected at most history.commit_interval "
            f"({format_duration(hist.commit_interval)}): events are written at least as soon as samples")))
    uplinks = _uplinks(doc, sections["health"], bad["health"], sections["routing"], bad["routing"], issues)
    if issues:
        raise ConfigError(issues, source)
    return Config(uplinks=uplinks, source=source, **sections)


def loads(text: str, source: str = "<string>") -> Config:
    """Parse and check TOML text; ConfigError lists every problem (syntax errors with line/column)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if where:
            path = f"line {where.group(1)}, column {where.group(2)}"
            message = message[: where.start()]
        else:
            at_end = re.search(r"\s*\(at end of document\)$", message)
            path = "end of document" if at_end else "<toml>"
            message = message[: at_end.start()] if at_end else message
        raise ConfigError([ConfigIssue(path, f"invalid TOML: {message}")], source) from None
    return _validate(doc, source)


def load(path: str | os.PathLike[str]) -> Config:
    """Read, parse and check a config file; unreadable files raise ConfigError too."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        issue = ConfigIssue(source, f"cannot read the file: {exc.strerror or exc}")
        raise ConfigError([issue], source) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(source, f"not UTF-8 text (bad byte at offset {exc.start})")],
                          source) from None
    return loads(text, source)
