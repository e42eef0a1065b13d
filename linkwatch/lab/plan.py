"""The lab's plan: names, address plan and build commands of a lab. Pure: no I/O.

A lab named N with U uplinks is made of these namespaces::

    lw-N-client  eth0 10.77.0.2/24 ── lan0 10.77.0.1/24  lw-N-router
                                          up1 198.51.100.2/29  ── dn 198.51.100.1/29   lw-N-p1
                                          up2 198.51.100.10/29 ── dn 198.51.100.9/29   lw-N-p2 ...
    lw-N-pk   in 10.200.k.1/30 ── pk 10.200.k.2/30   lw-N-inet (targets 203.0.113.1-12, .53, .7)

IPv6 (documentation prefix 2001:db8::/32) runs beside: the LAN is 2001:db8:77::/64 (router ::1,
client ::2), uplink k is 2001:db8:k::/64 (router ::2, provider ::1 and ``fe80::1``, its only
link-local address); each provider runs radvd (:func:`radvd_config`), whose router advertisements
give the router's main table ``default via fe80::1 dev upk proto ra metric 100*k`` (the router
accepts RAs on its uplinks although it forwards, as a CPE does), the transit k is 2001:db8:f0:k::/64 and the internet's IPv6 targets are
2001:db8:ff::1-c, DNS ::53 and echo ::7. The router NATs IPv6 too (NAT66 to the uplink's
IPv6 address, by masquerade so that it follows a new prefix: the LAN keeps one prefix), and each
provider filters IPv6 sources as it does IPv4's.

The router NATs with ``snat to <uplink address>`` per uplink, forwards TCP ports 8000-8999 of every
uplink address to the LAN client (a port forward), and has one ``default via <gw> metric 100*k`` per
uplink in its main table (what DHCP clients would install). Each provider drops what its customer
sends from an address not its own (BCP38, as real providers do): a reply that leaves through
the wrong uplink is lost, not delivered by a forgiving lab.

:class:`LabSpec` derives every name and path of a lab; :func:`build_plan`, :func:`sysctl_plan` and
:func:`router_nat_ruleset` say how to build it; :func:`find_overlaps` and :func:`check_no_overlap`
are the network-safety check against the prefixes of the namespace ``up`` starts from.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

LAB_RANGES = ("198.51.100.0/24", "203.0.113.0/24", "10.77.0.0/24", "10.200.0.0/16", "2001:db8::/32")
DEFAULT_NAME = "lab"
DEFAULT_UPLINKS = 2
MAX_UPLINKS = 8
STATE_ROOT = "/run/linkwatch"

LAN_ROUTER = "10.77.0.1"
LAN_CLIENT = "10.77.0.2"
LAN_PREFIXLEN = 24
ICMP_TARGETS = tuple(f"203.0.113.{i}" for i in range(1, 13))
DNS_SERVER = "203.0.113.53"
DNS_ANSWER = "203.0.113.80"
ECHO_SERVER = "203.0.113.7"
ECHO_PORT = 7007
DNS_QUERY = "example.com"
LAN6_ROUTER = "2001:db8:77::1"
LAN6_CLIENT = "2001:db8:77::2"
ICMP6_TARGETS = tuple(f"2001:db8:ff::{i:x}" for i in range(1, 13))
DNS6_SERVER = "2001:db8:ff::53"
ECHO6_SERVER = "2001:db8:ff::7"
GATEWAY6 = "fe80::1"  # every provider's link-local address on its customer link (as an RA gives it)
NAT_TABLE = "lwlab"  # the router's NAT table; the engine's own tables have other names
FORWARD_PORTS = (8000, 8999)  # the router forwards these TCP ports on every uplink to the LAN client
PROVIDER_TABLE = "lwprovider"  # a provider's source filter
PROVIDER_LINK = "dn"  # a provider's end of its customer link
RA_INTERVAL = (3, 10)  # radvd's Min/MaxRtrAdvInterval (seconds); it also answers the router's solicitations
RA_LIFETIME = 1800  # AdvDefaultLifetime: the router's default route expires this long after the last RA

PING_GROUP_RANGE = "0 2147483647"
PAIR_ROLES = ("ra", "rb", "lan")  # a router pair's namespaces besides inet, client and the providers

_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,16}$")


class LabError(RuntimeError):
    """The lab cannot be built, found or torn down as asked."""


@dataclass(frozen=True)
class LabUplink:
    """Addresses of uplink k: router side ``up{k}``, provider side ``dn``, transit to inet."""

    index: int

    @property
    def name(self) -> str:
        return f"wan{self.index}"

    @property
    def interface(self) -> str:
        return f"up{self.index}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"198.51.100.{8 * (self.index - 1)}/29")

    @property
    def gateway(self) -> str:
        return f"198.51.100.{8 * (self.index - 1) + 1}"

    @property
    def address(self) -> str:
        return f"198.51.100.{8 * (self.index - 1) + 2}"

    @property
    def provider_transit(self) -> str:
        return f"10.200.{self.index}.1"

    @property
    def inet_transit(self) -> str:
        return f"10.200.{self.index}.2"

    @property
    def metric(self) -> int:
        return 100 * self.index

    @property
    def network6(self) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network(f"2001:db8:{self.index}::/64")

    @property
    def address6(self) -> str:
        return f"2001:db8:{self.index}::2"

    @property
    def provider_address6(self) -> str:
        return f"2001:db8:{self.index}::1"

    @property
    def provider_transit6(self) -> str:
        return f"2001:db8:f0:{self.index}::1"

    @property
    def inet_transit6(self) -> str:
        return f"2001:db8:f0:{self.index}::2"


def uplink_for_address(address: str) -> LabUplink | None:
    """The uplink whose router address (IPv4 or IPv6) is ``address`` (``"ip"``, ``"ip:port"`` or
    ``"[ip6]:port"``), else None."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    for k in range(1, MAX_UPLINKS + 1):
        if str(ip) in (LabUplink(k).address, LabUplink(k).address6):
            return LabUplink(k)
    return None


@dataclass(frozen=True)
class LabSpec:
    """A lab's name and size, and every name and path derived from them."""

    name: str = DEFAULT_NAME
    uplinks: int = DEFAULT_UPLINKS

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise LabError(f"lab name {self.name!r} is invalid: use 1-16 letters, digits or '_'")
        if not isinstance(self.uplinks, int) or not 1 <= self.uplinks <= MAX_UPLINKS:
            raise LabError(f"uplinks={self.uplinks!r} is out of range: expected 1 to {MAX_UPLINKS}")

    @property
    def prefix(self) -> str:
        return f"lw-{self.name}-"

    @property
    def router_ns(self) -> str:
        return f"{self.prefix}router"

    @property
    def inet_ns(self) -> str:
        return f"{self.prefix}inet"

    @property
    def client_ns(self) -> str:
        return f"{self.prefix}client"

    def provider_ns(self, k: int) -> str:
        return f"{self.prefix}p{k}"

    @property
    def uplink_list(self) -> list[LabUplink]:
        return [LabUplink(k) for k in range(1, self.uplinks + 1)]

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the lab, in build order."""
        return ([self.router_ns] + [self.provider_ns(u.index) for u in self.uplink_list]
                + [self.inet_ns, self.client_ns])

    @property
    def state_dir(self) -> str:
        return os.path.join(STATE_ROOT, f"lab-{self.name}")

    @property
    def control_socket(self) -> str:
        return os.path.join(self.state_dir, "control.sock")

    @property
    def config_path(self) -> str:
        return os.path.join(self.state_dir, "linkwatch.toml")

    @property
    def hooks_dir(self) -> str:
        return os.path.join(self.state_dir, "hooks.d")

    @property
    def engine_log(self) -> str:
        return os.path.join(self.state_dir, "engine.log")

    def radvd_file(self, k: int, suffix: str) -> str:
        """radvd's files for provider k: ``conf``, ``pidfile`` (its own; ``.pid`` files are the lab's records), ``log``."""
        return os.path.join(self.state_dir, f"radvd-wan{k}.{suffix}")

    @property
    def services_log(self) -> str:
        return os.path.join(self.state_dir, "services.log")

    @property
    def history_path(self) -> str:
        return os.path.join(self.state_dir, "history.db")

    @property
    def web_log(self) -> str:
        return os.path.join(self.state_dir, "web.log")


def lab_role(spec_name: str, namespace: str) -> str | None:
    """``router``/``inet``/``client``/``p<k>`` (a router pair's ``ra``/``rb``/``lan`` too, see
    :mod:`linkwatch.lab.pair`) when ``namespace`` belongs to lab ``spec_name``."""
    prefix = f"lw-{spec_name}-"
    if not namespace.startswith(prefix):
        return None
    role = namespace[len(prefix):]
    if role in ("router", "inet", "client", *PAIR_ROLES) or re.fullmatch(r"p[1-9][0-9]*", role):
        return role
    return None


def build_plan(spec: LabSpec) -> list[list[str]]:
    """Every command that builds the lab's namespaces, links, addresses and routes, in order.

    NAT rules and sysctls are separate (:func:`router_nat_ruleset`, :func:`sysctl_plan`).
    """
    r, i, c = spec.router_ns, spec.inet_ns, spec.client_ns
    cmds: list[list[str]] = [["ip", "netns", "add", ns] for ns in spec.namespaces]
    cmds += [["ip", "-n", ns, "link", "set", "lo", "up"] for ns in spec.namespaces]
    # LAN
    cmds += [
        ["ip", "-n", r, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", c],
        ["ip", "-n", r, "addr", "add", f"{LAN_ROUTER}/{LAN_PREFIXLEN}", "dev", "lan0"],
        ["ip", "-n", c, "addr", "add", f"{LAN_CLIENT}/{LAN_PREFIXLEN}", "dev", "eth0"],
        ["ip", "-n", r, "link", "set", "lan0", "up"],
        ["ip", "-n", c, "link", "set", "eth0", "up"],
        ["ip", "-n", c, "route", "add", "default", "via", LAN_ROUTER, "dev", "eth0"],
        ["ip", "-n", r, "-6", "addr", "add", f"{LAN6_ROUTER}/64", "dev", "lan0", "nodad"],
        ["ip", "-n", c, "-6", "addr", "add", f"{LAN6_CLIENT}/64", "dev", "eth0", "nodad"],
        ["ip", "-n", c, "-6", "route", "add", "default", "via", LAN6_ROUTER, "dev", "eth0"],
    ]
    cmds += internet_plan(i)
    for u in spec.uplink_list:
        cmds += uplink_plan(r, spec.provider_ns(u.index), i, u)
    return cmds


def internet_plan(i: str) -> list[list[str]]:
    """The internet namespace ``i``'s probe targets, DNS and echo addresses."""
    # the internet's targets live on a port-less bridge (this kernel has no dummy driver)
    cmds = [["ip", "-n", i, "link", "add", "targets", "type", "bridge"]]
    for addr in dict.fromkeys((*ICMP_TARGETS, DNS_SERVER, ECHO_SERVER)):  # .7 is both ICMP and echo
        cmds.append(["ip", "-n", i, "addr", "add", f"{addr}/32", "dev", "targets"])
    for addr in dict.fromkeys((*ICMP6_TARGETS, DNS6_SERVER, ECHO6_SERVER)):
        cmds.append(["ip", "-n", i, "-6", "addr", "add", f"{addr}/128", "dev", "targets", "nodad"])
    cmds.append(["ip", "-n", i, "link", "set", "targets", "up"])
    return cmds


def uplink_plan(r: str, p: str, i: str, u: LabUplink) -> list[list[str]]:
    """Uplink ``u``: router ``r``'s ``up<k>`` to provider ``p``, the provider's transit to internet ``i``."""
    k = u.index
    return [
        ["ip", "-n", r, "link", "add", u.interface, "type", "veth", "peer", "name", "dn", "netns", p],
        # no link-local address of its own on dn (made when it goes up): fe80::1 is the RAs' source
        ["ip", "netns", "exec", p, "sysctl", "-q", "-w", f"net.ipv6.conf.{PROVIDER_LINK}.addr_gen_mode=1"],
        ["ip", "-n", r, "addr", "add", f"{u.address}/29", "dev", u.interface],
        ["ip", "-n", p, "addr", "add", f"{u.gateway}/29", "dev", "dn"],
        ["ip", "-n", p, "link", "add", "in", "type", "veth", "peer", "name", f"p{k}", "netns", i],
        ["ip", "-n", p, "addr", "add", f"{u.provider_transit}/30", "dev", "in"],
        ["ip", "-n", i, "addr", "add", f"{u.inet_transit}/30", "dev", f"p{k}"],
        ["ip", "-n", r, "link", "set", u.interface, "up"],
        ["ip", "-n", p, "link", "set", "dn", "up"],
        ["ip", "-n", p, "link", "set", "in", "up"],
        ["ip", "-n", i, "link", "set", f"p{k}", "up"],
        ["ip", "-n", p, "route", "add", "default", "via", u.inet_transit, "dev", "in"],
        ["ip", "-n", i, "route", "add", str(u.network), "via", u.provider_transit, "dev", f"p{k}"],
        ["ip", "-n", r, "route", "add", "default", "via", u.gateway, "dev", u.interface,
         "metric", str(u.metric)],
        ["ip", "-n", r, "-6", "addr", "add", f"{u.address6}/64", "dev", u.interface, "nodad"],
        ["ip", "-n", p, "-6", "addr", "add", f"{u.provider_address6}/64", "dev", "dn", "nodad"],
        ["ip", "-n", p, "-6", "addr", "add", f"{GATEWAY6}/64", "dev", "dn", "nodad"],
        ["ip", "-n", p, "-6", "addr", "add", f"{u.provider_transit6}/64", "dev", "in", "nodad"],
        ["ip", "-n", i, "-6", "addr", "add", f"{u.inet_transit6}/64", "dev", f"p{k}", "nodad"],
        ["ip", "-n", p, "-6", "route", "add", "default", "via", u.inet_transit6, "dev", "in"],
        ["ip", "-n", i, "-6", "route", "add", str(u.network6), "via", u.provider_transit6, "dev", f"p{k}"],
        # the default route comes from the provider's router advertisements (radvd)
        ["ip", "netns", "exec", r, "sysctl", "-q", "-w", f"net.ipv6.conf.{u.interface}.accept_ra=2",
         f"net.ipv6.conf.{u.interface}.autoconf=0", f"net.ipv6.conf.{u.interface}.ra_defrtr_metric={u.metric}"],
    ]


def radvd_config(u: LabUplink) -> str:
    """The provider's radvd.conf: a default router (``fe80::1``, the only link-local address the
    provider's ``dn`` has) and the on-link prefix, no SLAAC (the router's address is static, as
    DHCPv6 would give it)."""
    return (
        f"interface {PROVIDER_LINK} {{\n"
        "    AdvSendAdvert on;\n"
        f"    MinRtrAdvInterval {RA_INTERVAL[0]};\n"
        f"    MaxRtrAdvInterval {RA_INTERVAL[1]};\n"
        f"    AdvDefaultLifetime {RA_LIFETIME};\n"
        f"    prefix {u.network6} {{ AdvOnLink on; AdvAutonomous off; }};\n"
        "};\n"
    )


def sysctl_plan(spec: LabSpec) -> dict[str, list[str]]:
    """sysctl settings per namespace (set right after creation, before any link exists).

    Forwarding on router and providers; reverse-path filtering off everywhere (the lab's
    asymmetric moments are the engine's business, not the kernel's); unprivileged ICMP widened in
    the router, where the engine probes.
    """
    common = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
              "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
              "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"]
    plan = {ns: list(common) for ns in spec.namespaces}
    plan[spec.router_ns] += ["net.ipv4.ip_forward=1", f"net.ipv4.ping_group_range={PING_GROUP_RANGE}",
                             "net.ipv6.conf.all.forwarding=1"]
    for u in spec.uplink_list:
        plan[spec.provider_ns(u.index)] += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
    return plan


def router_nat_ruleset(spec: LabSpec) -> str:
    """The router's NAT: ``snat to`` the uplink's address (not masquerade, see DESIGN.md), and the
    port forward of :data:`FORWARD_PORTS` on every uplink to the LAN client."""
    rules = "\n".join(f'        oifname "{u.interface}" snat to {u.address}' for u in spec.uplink_list)
    # IPv6: masquerade, as a NAT66 router on a dynamic (delegated) prefix does: it follows the address
    rules6 = "\n".join(f'        oifname "{u.interface}" masquerade' for u in spec.uplink_list)
    uplinks = ", ".join(f'"{u.interface}"' for u in spec.uplink_list)
    low, high = FORWARD_PORTS
    return (
        f"table ip {NAT_TABLE}\n"
        f"delete table ip {NAT_TABLE}\n"
        f"table ip {NAT_TABLE} {{\n"
        "    chain prerouting {\n"
        "        type nat hook prerouting priority dstnat; policy accept;\n"
        f"        iifname {{ {uplinks} }} tcp dport {low}-{high} dnat to {LAN_CLIENT}\n"
        "    }\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f"{rules}\n"
        "    }\n"
        "}\n"
        f"table ip6 {NAT_TABLE}\n"
        f"delete table ip6 {NAT_TABLE}\n"
        f"table ip6 {NAT_TABLE} {{\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f"{rules6}\n"
        "    }\n"
        "}\n"
    )


def provider_ruleset(uplink: LabUplink) -> str:
    """A provider's source filter (BCP38): what comes from its customer with a source address
    outside the customer's network is dropped."""
    return (
        f"table ip {PROVIDER_TABLE} {{\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy accept;\n"
        f'        iifname "dn" ip saddr != {uplink.network} drop\n'
        "    }\n"
        "}\n"
        f"table ip6 {PROVIDER_TABLE} {{\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy accept;\n"
        f'        iifname "dn" ip6 saddr != {uplink.network6} drop\n'
        "    }\n"
        "}\n"
    )


def services_argv() -> list[str]:
    """Arguments of ``linkwatch.lab.services`` for the inet namespace."""
    return ["--dns", DNS_SERVER, "--echo", f"{ECHO_SERVER}:{ECHO_PORT}", "--dns", DNS6_SERVER,
            "--echo", f"[{ECHO6_SERVER}]:{ECHO_PORT}", "--answer", DNS_ANSWER]


# --- overlap check -----------------------------------------------------------------------------

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Overlap:
    lab_range: IPNetwork
    existing: IPNetwork
    origin: str = ""

    def __str__(self) -> str:
        where = f" ({self.origin})" if self.origin else ""
        return f"lab range {self.lab_range} overlaps {self.existing}{where}"


def find_overlaps(lab_ranges: Iterable[str], existing: Iterable[str | tuple[str, str]]) -> list[Overlap]:
    """Pairs (lab range, existing prefix) that overlap. Pure.

    ``existing`` holds prefixes (``"203.0.113.0/24"``), interface addresses (``"203.0.113.9/24"``,
    taken as their network) or host routes, each optionally paired with an origin for the
    message. Default routes (prefix length 0) are ignored: every namespace with an uplink has
    one. Prefixes of another address family never overlap.
    """
    ranges = [ipaddress.ip_network(r) for r in lab_ranges]
    found: list[Overlap] = []
    for item in existing:
        text, origin = (item, "") if isinstance(item, str) else item
        net = ipaddress.ip_network(text, strict=False)
        if net.prefixlen == 0:
            continue
        for lab_range in ranges:
            if lab_range.version == net.version and lab_range.overlaps(net):
                found.append(Overlap(lab_range, net, origin))
    return found


def check_no_overlap(existing: Iterable[str | tuple[str, str]]) -> None:
    """Raise LabError naming every overlap of the lab's ranges with ``existing``."""
    overlaps = find_overlaps(LAB_RANGES, existing)
    if overlaps:
        listed = "; ".join(str(o) for o in overlaps)
        raise LabError(f"refusing to start: {listed}. The lab's packets could leak into this network")
