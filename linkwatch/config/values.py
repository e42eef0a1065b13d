"""The configuration values: frozen dataclasses whose fields carry the TOML schema.

Every field that is a TOML key carries its converter and its documentation in its metadata
(built by :func:`_key`); TABLE / NAMED / ARRAY mark nested tables. Loading and the key
reference both read the schema from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any

from linkwatch.config.convert import (
    _absolute_path,
    _boolean,
    _choice,
    _Conv,
    _dns_name,
    _duration,
    _engine_id,
    _gateway,
    _gateway6,
    _group_name,
    _integer,
    _interface,
    _ip_address,
    _listen,
    _names_list,
    _number,
    _percent_list,
    _size,
    _octal_mode,
    _oid,
    _password_hash,
    _percent,
    _probe_target,
    _secret_text,
)
from linkwatch.config.matchers import (
    _dscp,
    _host_names,
    _ipv6_prefixes,
    _label,
    _networks,
    _packet_mark,
    _ports,
    _prefixes,
    _uplink_names,
    _client_id,
    _host,
    _mqtt_topic,
)


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


def _leaf_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in fields(cls) if CONV in f.metadata]


def _toml_keys(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if {CONV, TABLE, NAMED, ARRAY} & set(f.metadata)]


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
    standby_interval: float = field(default=10.0, metadata=_key(
        _duration(MIN_INTERVAL), "interval on uplinks that carry no traffic (metered backup links); one "
        "target per round, in turn, and every target at fast_interval while the active uplink is in doubt"))
    proven_interval: float = field(default=2.0, metadata=_key(
        _duration(MIN_INTERVAL), "interval on an active uplink while the LAN's own traffic keeps coming in "
        "through it (that traffic proves it works)"))
    timeout: float = field(default=0.25, metadata=_key(
        _duration(), "a round fails when no attempt is answered within this"))
    attempts: int = field(default=2, metadata=_key(
        _integer(1, 5), "packets per target per round at most (retransmit at timeout/attempts)"))
    late_window: float = field(default=3.0, metadata=_key(
        _duration(), "a reply this late still proves the uplink works: slow, not dead"))
    suspect_after: float | None = field(default=0.12, metadata=_key(
        _duration(MIN_INTERVAL, allow_off=True), "LAN packets leaving the active uplink with nothing coming "
        'back for this long make it suspect: a burst of probes confirms at once; "off": probes only'))
    burst_timeout: float = field(default=0.12, metadata=_key(
        _duration(3 * MIN_INTERVAL), "the confirming burst (3 packets per target) gets no answer within this: DOWN"))
    counter_interval: float = field(default=0.06, metadata=_key(
        _duration(MIN_INTERVAL), "how often the active uplink's interface counters are read while the LAN sends "
        "(250ms while it is idle; standby uplinks: every standby_interval, within 1s..10s)"))
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
    target: str = field(metadata=_key(_probe_target(), "IPv4 or IPv6 address to probe (no hostnames); an "
                                      "IPv6 target is an IPv6 probe, sent from the uplink's IPv6 address"))
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
    quota: int | None = field(default=None, metadata=_key(
        _size(), "monthly traffic quota (received + sent on the interface); None = no quota"))
    quota_warn: tuple[int, ...] = field(default=(80, 100), metadata=_key(
        _percent_list(), "percentages of the quota at which an event (and trap) is raised, once a month each"))
    move_flows_after: float | None = field(default=None, metadata=_key(
        _duration(allow_off=True), "with sticky flows, the flows that stayed on this uplink when traffic moved "
        "away from it while it worked (a failback leaves the calls on a metered LTE backup; a rule's first "
        "choice came back) are reset after this long, so they start again on the active uplink; not those "
        'that came in on it or that a rule sends to it first; "off": they finish where they started'))
    gateway6: str | None = field(default=None, metadata=_key(
        _gateway6(), 'the IPv6 next hop (dual stack); None ("auto") = the main table\'s IPv6 default via '
        "interface (what a router advertisement installs)", absent=None))
    ipv6_prefixes: tuple[str, ...] = field(default=(), metadata=_key(
        _ipv6_prefixes(), "the LAN's IPv6 prefixes this uplink delegates, when the LAN has each uplink's "
        "prefix (no NAT66): traffic from them leaves through this uplink whatever IPv6's active uplink "
        "is (its provider drops other sources); deprecate a dead uplink's prefix with a hook"))
    table: int = field(metadata=_key(
        _integer(1, 2**32 - 1, ROUTE_TABLES_RESERVED, what="a routing table number"),
        "routing table of this uplink; absent = first free from 101 upward in file order",
        absent=None))
    rule_priority: int  # assigned: routing.rule_priority + 1 + index in file order
    health: HealthConfig = field(default_factory=HealthConfig,
                                 metadata={TABLE: HealthConfig, OVERRIDE: True})
    probes: tuple[ProbeConfig, ...] = field(metadata={ARRAY: ProbeConfig})  # the IPv4 targets
    probes6: tuple[ProbeConfig, ...] = ()  # assigned: the IPv6 targets of [[uplinks.NAME.probes]]


FLOW_BITS = 0x01FF0000  # the packet and ct mark bits of sticky flows (linkwatch.core.flows: uplink + MOVABLE)


@dataclass(frozen=True)
class RuleConfig:
    """A policy rule: [[rules]]. New flows from the LAN that match every key given go to ``uplinks``
    (the first that works, or spread over those that work), before the [policy] mode decides."""

    name: str = field(default="", metadata=_key(_label(), 'a name shown in status; default "rule N"'))
    src: tuple[str, ...] = field(default=(), metadata=_key(_prefixes(), "source prefixes (any of them)"))
    dst: tuple[str, ...] = field(default=(), metadata=_key(_prefixes(), "destination prefixes (any of them)"))
    proto: str = field(default="any", metadata=_key(_choice("any", "tcp", "udp", "icmp"), "protocol"))
    sport: tuple[tuple[int, int], ...] = field(default=(), metadata=_key(
        _ports(), "source ports or ranges (proto tcp or udp)"))
    dport: tuple[tuple[int, int], ...] = field(default=(), metadata=_key(
        _ports(), "destination ports or ranges (proto tcp or udp)"))
    iif: str | None = field(default=None, metadata=_key(_interface(), "the LAN interface the flow comes in on"))
    dscp: int | None = field(default=None, metadata=_key(_dscp(), "the DSCP of the flow's first packet"))
    mark: tuple[int, int] | None = field(default=None, metadata=_key(
        _packet_mark(FLOW_BITS), "a packet mark set by another firewall rule (value/mask; not bits 16..24)"))
    uplinks: tuple[str, ...] = field(default=(), metadata=_key(
        _uplink_names(), "where matching flows go: the first of these that works (or all that work: balance)"))
    balance: bool = field(default=False, metadata=_key(
        _boolean(), "spread matching flows over the working uplinks of the list by weight"))
    fallback: str = field(default="default", metadata=_key(
        _choice("default", "drop"), "when none of the uplinks works: the default policy decides, or drop"))


@dataclass(frozen=True)
class PolicyConfig:
    """Which healthy uplinks carry traffic: [policy]."""

    mode: str = field(default="failover", metadata=_key(
        _choice("failover", "balance"), "failover: best priority tier; balance: all healthy, weighted"))
    failback_hold: float = field(default=10.0, metadata=_key(
        _duration(), "a better uplink must stay UP this long (no FALLING dip either) before traffic moves "
        "back to it"))
    flush_conntrack: bool = field(default=True, metadata=_key(
        _boolean(), "delete the conntrack entries NATed through an uplink whose flows must move: one that "
        "stopped working (sticky flows), or any that stops carrying traffic (without)"))
    sticky_flows: bool = field(default=True, metadata=_key(
        _boolean(), "a flow stays on the uplink it started on while that uplink works (linkwatch's nftables "
        "table marks flows; fwmark rules route them): a failback or a DEGRADED uplink resets no flow"))
    dampening: bool = field(default=True, metadata=_key(
        _boolean(), "flap dampening: an uplink that keeps failing does not take traffic back until stable"))
    flap_half_life: float = field(default=60.0, metadata=_key(
        _duration(1.0), "a flap penalty halves in this time (each DOWN adds 1, each FALLING dip 0.5)"))
    flap_suppress: float = field(default=3.0, metadata=_key(
        _number(0.5, 100), "penalty at which an uplink is dampened (shown as flapping)"))
    flap_reuse: float = field(default=1.0, metadata=_key(
        _number(0.1, 100), "penalty below which a dampened uplink may take traffic back"))
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
    status_socket: str | None = field(default=None, metadata=_key(
        _absolute_path(107, "/run/linkwatch/status.sock"), "a second, read-only socket: status and ping only, "
        "no controls (for monitoring and users who may only look); None = none"))
    status_mode: int = field(default=0o660, metadata=_key(_octal_mode(), "file mode of the status socket"))
    status_group: str | None = field(default=None, metadata=_key(
        _group_name(), "group that owns the status socket; None = the engine's own group"))


@dataclass(frozen=True)
class HooksConfig:
    """Hook scripts run on events: [hooks]."""

    directory: str | None = field(default=None, metadata=_key(
        _absolute_path(), "directory of executable hook scripts; None = no hooks"))
    timeout: float = field(default=10.0, metadata=_key(_duration(), "a hook is killed after this long"))


@dataclass(frozen=True)
class KeepalivedConfig:
    """The health file keepalived tracks (issue 15): [keepalived]."""

    track_file: str | None = field(default=None, metadata=_key(
        _absolute_path(example="/var/lib/linkwatch/keepalived.track", empty_is_off=True),
        "file kept at 0 while at least one uplink works and 1 while none does (written atomically); "
        "keepalived's track_file reads it. None or \"\" = off"))


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
        _password_hash(), "login password hash (set by linkwatch passwd); None = nobody can log in",
        secret=True))  # a bad one may be the password itself: never echoed
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
    allowed_hosts: tuple[str, ...] = field(default=(), metadata=_key(
        _host_names(), "names the web UI answers to besides those it accepts anyway: IP addresses, localhost "
        "and this machine's own names (its hostname, short and FQDN from /etc/hosts, HOSTNAME.local and HOSTNAME.DOMAIN "
        "for each search/domain entry DOMAIN of /etc/resolv.conf); a request naming another Host gets 400 (DNS "
        "rebinding), so after an upgrade list here any other name the router is reached by (e.g. a reverse "
        'proxy\'s). ["*"]: any'))
    trusted_proxies: tuple[str, ...] = field(default=(), metadata=_key(
        _networks("reverse proxies' addresses"), "reverse proxies whose X-Forwarded-For names the client (for "
        "the login throttle and the log); from anyone else that header is ignored"))


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
    allow_from: tuple[str, ...] = field(default=(), metadata=_key(
        _networks("managers' source networks"), "only requests from these networks are answered (others are "
        "dropped unread and counted); [] = from anywhere, warned about when listen is not loopback"))


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
class MqttConfig:
    """MQTT telemetry (Home Assistant and other subscribers): [mqtt]."""

    host: str | None = field(default=None, metadata=_key(
        _host(), "the broker's host name or address; None = no MQTT"))
    port: int | None = field(default=None, metadata=_key(
        _integer(1, 65535), "the broker's TCP port; absent = 1883, or 8883 with tls", absent=None))
    client_id: str | None = field(default=None, metadata=_key(
        _client_id(), "the client id at the broker; absent = linkwatch-HOSTNAME", absent=None))
    topic_prefix: str | None = field(default=None, metadata=_key(
        _mqtt_topic(), "every topic starts with this (PREFIX/status, PREFIX/active, PREFIX/uplink/NAME/state, "
        "...); absent = linkwatch/HOSTNAME", absent=None))
    qos: int = field(default=1, metadata=_key(_integer(0, 2), "QoS of the messages (all retained)"))
    keepalive: float = field(default=30.0, metadata=_key(
        _duration(5.0), "keepalive: a broker that hears nothing for 1.5 x this publishes the last will (offline)"))
    interval: float = field(default=10.0, metadata=_key(
        _duration(1.0), "RTT and loss are published this often (when they changed); states and the active "
        "uplinks at once"))
    reconnect_max: float = field(default=1.0, metadata=_key(
        _duration(0.1), "reconnect attempts back off from 0.1s up to this; a returning broker gets the whole "
        "state within about this long"))
    username: str | None = field(default=None, metadata=_key(
        _secret_text(1, 128, "a user name"), "user name at the broker; None = anonymous"))
    password: str | None = field(default=None, repr=False, metadata=_key(
        _secret_text(1, 256, "a password"), "password at the broker (password_file keeps it out of this file)",
        secret=True))
    password_file: str | None = field(default=None, metadata=_key(
        _absolute_path(example="/etc/linkwatch/mqtt.password"), "a file (mode 0600) whose first line is the "
        "password; read at start and reload"))
    tls: bool = field(default=False, metadata=_key(_boolean(), "connect over TLS"))
    tls_ca_file: str | None = field(default=None, metadata=_key(
        _absolute_path(example="/etc/linkwatch/mqtt-ca.pem"), "CA certificate(s) (PEM) the broker's certificate "
        "must chain to; None = the system's CAs"))
    tls_cert_file: str | None = field(default=None, metadata=_key(
        _absolute_path(example="/etc/linkwatch/mqtt-client.pem"), "client certificate (PEM), for brokers that "
        "ask for one; needs tls_key_file"))
    tls_key_file: str | None = field(default=None, metadata=_key(
        _absolute_path(example="/etc/linkwatch/mqtt-client.key"), "the client certificate's private key (PEM)"))
    tls_check_hostname: bool = field(default=True, metadata=_key(
        _boolean(), "the broker's certificate must name host (turn off only for a certificate made for "
        "another name)"))
    discovery: bool = field(default=True, metadata=_key(
        _boolean(), "publish Home Assistant MQTT discovery: a connectivity binary_sensor per uplink, the active "
        "uplinks, RTT and loss per uplink"))
    discovery_prefix: str = field(default="homeassistant", metadata=_key(
        _mqtt_topic(), "Home Assistant's discovery prefix"))


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``health`` is the global [health], each uplink has its merged copy."""

    control: ControlConfig = field(default_factory=ControlConfig, metadata={TABLE: ControlConfig})
    health: HealthConfig = field(default_factory=HealthConfig, metadata={TABLE: HealthConfig})
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={TABLE: PolicyConfig})
    routing: RoutingConfig = field(default_factory=RoutingConfig, metadata={TABLE: RoutingConfig})
    hooks: HooksConfig = field(default_factory=HooksConfig, metadata={TABLE: HooksConfig})
    keepalived: KeepalivedConfig = field(default_factory=KeepalivedConfig, metadata={TABLE: KeepalivedConfig})
    log: LogConfig = field(default_factory=LogConfig, metadata={TABLE: LogConfig})
    history: HistoryConfig = field(default_factory=HistoryConfig, metadata={TABLE: HistoryConfig})
    web: WebConfig = field(default_factory=WebConfig, metadata={TABLE: WebConfig})
    snmp: SnmpConfig = field(default_factory=SnmpConfig, metadata={TABLE: SnmpConfig, CUSTOM: True})
    mqtt: MqttConfig = field(default_factory=MqttConfig, metadata={TABLE: MqttConfig})
    uplinks: tuple[UplinkConfig, ...] = field(default=(), metadata={NAMED: UplinkConfig})
    rules: tuple[RuleConfig, ...] = field(default=(), metadata={ARRAY: RuleConfig})
    source: str = "<string>"

    def uplink(self, name: str) -> UplinkConfig:
        """The uplink called ``name``; KeyError if there is none."""
        for uplink in self.uplinks:
            if uplink.name == name:
                return uplink
        raise KeyError(name)
