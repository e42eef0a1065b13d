"""What the engine core is fed: facts from the kernel, probe results, admin requests, timers.

Values only (frozen dataclasses). The I/O shell (:mod:`linkwatch.daemon`) turns netlink messages,
finished probe rounds, control-socket requests, timers and SIGHUP into these, and hands each one to
:func:`linkwatch.core.engine.step` with the time it read from its one clock (:class:`Now`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from linkwatch.config import Config


@dataclass(frozen=True)
class Now:
    """The time of one step: ``mono`` (monotonic seconds) for every decision and interval,
    ``wall`` (epoch seconds) only to stamp events and the status for humans."""

    mono: float
    wall: float


@dataclass(frozen=True)
class LinkFacts:
    """What the kernel says about one uplink interface (:mod:`linkwatch.kernel.facts` reads it)."""

    ifname: str
    ifindex: int | None  # None: no such interface
    carrier: bool  # IFF_UP and IFF_LOWER_UP
    address: str | None  # first IPv4 address on it (primary)
    prefixlen: int | None
    gateway: str | None  # lowest-metric main-table default route via it (not ours)
    pointopoint: bool = False  # no next hop to find: PPP, tun, WireGuard, LTE raw-IP ("default dev X")
    address6: str | None = None  # a global IPv6 address on it that can be used (not tentative or deprecated)
    prefixlen6: int | None = None
    gateway6: str | None = None  # lowest-metric main-table IPv6 default via it (a router advertisement's
    #                              link-local next hop, or a static one; not ours)
    family: int = 4  # 6: the IPv6 side's view (address/gateway are address6/gateway6: core.family6)


@dataclass(frozen=True)
class ProbeSpec:
    """What to probe: ``kind`` "icmp" or "dns", an IPv4 ``target``, the DNS ``query`` name."""

    kind: str
    target: str
    query: str = "example.com"


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one run (one round) of one probe (:mod:`linkwatch.probes`)."""

    kind: str
    target: str
    ok: bool
    rtt: float | None  # seconds, of the answered attempt
    sent: int  # attempts whose fate is known (answered or lost)
    lost: int  # attempts that got no answer in time
    bytes_sent: int  # IP-layer bytes this run sent
    bytes_received: int  # IP-layer bytes of the packets received for this run's attempts
    error: str | None  # "timeout", "unreachable", "rcode SERVFAIL", socket error text, ...
    late: int = 0  # replies to earlier runs' attempts that came after their timeout, during this run
    late_rtt: float | None = None  # seconds, the longest of those (slow, not dead)
    refused: bool = False  # an attempt got an explicit "no" (ICMP unreachable, a bad rcode)


@dataclass(frozen=True)
class LinkCounters:
    """An interface's packet and byte counters as the kernel keeps them (they only grow, but
    start again from 0 when the interface is re-created, e.g. a PPPoE reconnect)."""

    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    rx_multicast: int = 0  # multicast (with many drivers broadcast too) received: noise, not replies


# ---- the inputs of one step -------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """The engine starts. ``facts`` by interface name; ``kernel_active`` is (gateway, ifindex) of
    each nexthop of the default route linkwatch finds in its active table (a restart adopts it);
    ``detail`` says which program this is (version, pid), for the "started" event."""

    facts: Mapping[str, LinkFacts]
    kernel_active: tuple[tuple[str, int], ...] = ()
    detail: str = ""
    month_bytes: Mapping[str, int] = field(default_factory=dict)  # per uplink: this month so far (history)
    flow_marks: Mapping[str, int] = field(default_factory=dict)  # interface -> flow mark in the kernel's table
    kernel_active6: tuple[tuple[str, int], ...] = ()  # the same as kernel_active, of the IPv6 active table


@dataclass(frozen=True)
class RoundDone:
    """One probe round of ``uplink`` finished: one result per probe. ``seq`` numbers rounds at
    their start, so a slow old round that ends after a newer one does not step the state back."""

    uplink: str
    results: tuple[ProbeResult, ...]
    seq: int | None = None
    burst: bool = False  # a burst the core asked for, to confirm a suspicion (ProbePlan.burst)
    started: float | None = None  # monotonic time the round began (traffic since then is evidence)
    family: int = 4  # 6: a round of the uplink's IPv6 probes (core.family6)


@dataclass(frozen=True)
class FactsChanged:
    """The kernel's facts changed (netlink event): the new snapshot, by interface name."""

    facts: Mapping[str, LinkFacts]


@dataclass(frozen=True)
class AdminRequest:
    """An admin's ``action`` on ``uplink`` (see :data:`linkwatch.core.states.ADMIN_ACTIONS`), from
    ``source`` (``cli``, ``web:<user>@<address>``). Any value may arrive here from the control
    socket: the core checks them all and refuses bad ones without changing anything."""

    uplink: object
    action: object
    source: object = "cli"


@dataclass(frozen=True)
class LanPrefixes:
    """The LAN prefixes ``uplink`` delegates now (a DHCPv6 client's hook, ``linkwatch prefixes``):
    they replace its configured ``ipv6_prefixes`` until the next such request; ``prefixes`` None
    (or empty from the CLI) goes back to the config's. Any value may arrive here: the core checks."""

    uplink: object
    prefixes: object
    source: object = "cli"


@dataclass(frozen=True)
class Counters:
    """The interfaces' counters, read now (by interface name; uplinks not read this time are absent)."""

    by_interface: Mapping[str, LinkCounters]


@dataclass(frozen=True)
class Tick:
    """A timer the core asked for (``Outputs.recheck_at``) is due: a held failback, or the
    start-up grace for an uplink that is not probed yet."""


@dataclass(frozen=True)
class Reload:
    """A new, valid config (SIGHUP) and the kernel's facts for its interfaces."""

    config: Config
    facts: Mapping[str, LinkFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class ReloadFailed:
    """A reload that could not even be offered to the core (the file is invalid, the kernel could
    not be read): the running config stays; the core reports it."""

    why: str


@dataclass(frozen=True)
class ProbeTrouble:
    """The shell could not open ``uplink``'s probes (``error``), or can again (``error`` None)."""

    uplink: str
    error: str | None
    family: int = 4


@dataclass(frozen=True)
class PeriodEnd:
    """A history period ``[start, end]`` (wall clock) ended: sum up what each uplink's probes saw."""

    start: float
    end: float


@dataclass(frozen=True)
class Stop:
    """The engine stops (SIGTERM)."""


Input = (Start | RoundDone | FactsChanged | AdminRequest | Tick | Reload | ReloadFailed | ProbeTrouble | PeriodEnd
         | Stop | Counters | LanPrefixes)
