"""A router pair in the lab (issue 15): two routers share the LAN's gateway address through
keepalived (VRRP), each with its own uplinks and its own linkwatch engine. Pure: names, address
plan, build commands and keepalived's config; :mod:`linkwatch.lab.pairlab` runs it.

A pair named N with U uplinks per router (1 or 2) is made of these namespaces::

    lw-N-client eth0 10.77.0.2/24 ──┐            (default via the virtual gateway 10.77.0.1)
                                 client0
    lw-N-lan    bridge br0 ── ra0 ── lan0 10.77.0.3/24  lw-N-ra  up1 .. upU     ── lw-N-p1 .. pU
                           └─ rb0 ── lan0 10.77.0.4/24  lw-N-rb  upU+1 .. up2U  ── lw-N-pU+1 .. p2U
    lw-N-pk   in 10.200.k.1/30 ── pk 10.200.k.2/30   lw-N-inet (targets 203.0.113.1-12, .53, .7)

Uplink k is the single lab's uplink k (:class:`~linkwatch.lab.plan.LabUplink`: same addresses,
providers and faults), so ``linkwatch lab fault --name N wan3 blackhole`` and the client flows
(:mod:`linkwatch.lab.client`, whose echo replies name the NAT address, hence the uplink, hence the
router) work on a pair unchanged. Router ``ra`` (priority 150) normally holds the gateway address,
``rb`` (priority 100) takes it over when ``ra`` reports no working uplink or its engine is gone.

keepalived runs one per router, started from the host's namespace with ``--namespace`` (its
process tracking uses the kernel's process-events connector, which exists only in the initial
network namespace). Both routers' engines share one PID namespace, so in the lab each router's
keepalived matches its own engine by its full command line (the router's own config path), not by
the name ``linkwatchd`` a real router uses (packaging/keepalived/keepalived.conf).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from linkwatch.lab.plan import (
    LAN_CLIENT,
    LAN_PREFIXLEN,
    LAN_ROUTER,
    PING_GROUP_RANGE,
    LabError,
    LabSpec,
    LabUplink,
    internet_plan,
    uplink_plan,
)

VIRTUAL_GATEWAY = LAN_ROUTER  # 10.77.0.1: the client's gateway, held by the VRRP master
ROUTER_ADDRESSES = {"ra": "10.77.0.3", "rb": "10.77.0.4"}
PRIORITIES = {"ra": 150, "rb": 100}
TRACK_WEIGHT = -100  # no working uplink, or no engine: 150 -> 50 (< 100), 100 -> 1 (keepalived's floor)
VRID = 77
DEFAULT_ADVERT_INT = 0.2  # seconds; keepalived takes over after 3 adverts + skew without one
BRIDGE = "br0"
MAX_UPLINKS_PER_ROUTER = 2


@dataclass(frozen=True)
class PairRouter:
    """One router of a pair: its namespace, uplinks and files (what
    :func:`linkwatch.lab.engine_config.engine_config` needs of a lab spec)."""

    lab: str
    role: str  # "ra" or "rb"
    first_uplink: int
    uplinks: int

    @property
    def name(self) -> str:
        return f"{self.lab}_{self.role}"

    @property
    def ns(self) -> str:
        return f"lw-{self.lab}-{self.role}"

    @property
    def uplink_list(self) -> list[LabUplink]:
        return [LabUplink(k) for k in range(self.first_uplink, self.first_uplink + self.uplinks)]

    @property
    def lan_address(self) -> str:
        return ROUTER_ADDRESSES[self.role]

    @property
    def priority(self) -> int:
        return PRIORITIES[self.role]

    @property
    def state_dir(self) -> str:
        return os.path.join(LabSpec(self.lab).state_dir, self.role)

    def path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    @property
    def control_socket(self) -> str:
        return self.path("control.sock")

    @property
    def config_path(self) -> str:
        return self.path("linkwatch.toml")

    @property
    def hooks_dir(self) -> str:
        return self.path("hooks.d")

    @property
    def history_path(self) -> str:
        return self.path("history.db")

    @property
    def engine_log(self) -> str:
        return self.path("engine.log")

    @property
    def track_file(self) -> str:
        return self.path("keepalived.track")

    @property
    def keepalived_conf(self) -> str:
        return self.path("keepalived.conf")

    @property
    def keepalived_log(self) -> str:
        return self.path("keepalived.log")

    @property
    def engine_role(self) -> str:
        return f"engine-{self.role}"

    @property
    def keepalived_role(self) -> str:
        return f"keepalived-{self.role}"

    def engine_argv(self) -> list[str]:
        """The engine's command line inside the router namespace (``ip netns exec`` execs it: the
        pid and /proc/PID/cmdline are python's, which keepalived matches)."""
        return [sys.executable, "-m", "linkwatch", "run", "--config", self.config_path]


@dataclass(frozen=True)
class PairSpec:
    """A router pair's name, uplinks per router and VRRP advert interval."""

    name: str
    uplinks: int = 1  # per router
    advert_int: float = DEFAULT_ADVERT_INT
    engine_weight: int = TRACK_WEIGHT  # 0: a dead engine puts its router in FAULT (docs/keepalived.md)

    def __post_init__(self) -> None:
        LabSpec(self.name)  # validates the name
        if not isinstance(self.uplinks, int) or not 1 <= self.uplinks <= MAX_UPLINKS_PER_ROUTER:
            raise LabError(f"uplinks per router={self.uplinks!r} is out of range: expected 1 to {MAX_UPLINKS_PER_ROUTER}")
        if not isinstance(self.engine_weight, int) or not -254 <= self.engine_weight <= 0:
            raise LabError(f"engine_weight={self.engine_weight!r} is out of range: expected -254 to 0")
        if not 0.01 <= self.advert_int <= 255:
            raise LabError(f"advert_int={self.advert_int!r} is out of range: expected 0.01 to 255 seconds")

    @property
    def lab(self) -> LabSpec:
        """The single-lab view (providers, inet, client, state directory) the fault and flow
        helpers use; its "router" namespace does not exist in a pair."""
        return LabSpec(self.name, 2 * self.uplinks)

    @property
    def routers(self) -> tuple[PairRouter, PairRouter]:
        return (PairRouter(self.name, "ra", 1, self.uplinks),
                PairRouter(self.name, "rb", 1 + self.uplinks, self.uplinks))

    def router(self, role: str) -> PairRouter:
        for r in self.routers:
            if r.role == role:
                return r
        raise LabError(f"no router {role!r} in a pair: expected ra or rb")

    def router_of_uplink(self, uplink: str | None) -> str | None:
        """``ra``/``rb`` for an uplink name (``wan3``), None when it is none of the pair's."""
        for r in self.routers:
            if uplink in {u.name for u in r.uplink_list}:
                return r.role
        return None

    @property
    def lan_ns(self) -> str:
        return f"lw-{self.name}-lan"

    @property
    def namespaces(self) -> list[str]:
        lab = self.lab
        return ([r.ns for r in self.routers] + [lab.provider_ns(k) for k in range(1, 2 * self.uplinks + 1)]
                + [lab.inet_ns, lab.client_ns, self.lan_ns])


def build_pair_plan(spec: PairSpec) -> list[list[str]]:
    """Every command that builds the pair's namespaces, links, addresses and routes, in order
    (sysctls: :func:`pair_sysctls`; NAT: :func:`linkwatch.lab.plan.router_nat_ruleset` per router)."""
    lab, lan, c = spec.lab, spec.lan_ns, spec.lab.client_ns
    cmds: list[list[str]] = [["ip", "netns", "add", ns] for ns in spec.namespaces]
    cmds += [["ip", "-n", ns, "link", "set", "lo", "up"] for ns in spec.namespaces]
    cmds += [["ip", "-n", lan, "link", "add", BRIDGE, "type", "bridge"],
             ["ip", "-n", lan, "link", "set", BRIDGE, "up"],
             ["ip", "-n", lan, "link", "add", "client0", "type", "veth", "peer", "name", "eth0", "netns", c],
             ["ip", "-n", lan, "link", "set", "client0", "master", BRIDGE],
             ["ip", "-n", lan, "link", "set", "client0", "up"],
             ["ip", "-n", c, "addr", "add", f"{LAN_CLIENT}/{LAN_PREFIXLEN}", "dev", "eth0"],
             ["ip", "-n", c, "link", "set", "eth0", "up"],
             ["ip", "-n", c, "route", "add", "default", "via", VIRTUAL_GATEWAY, "dev", "eth0"]]
    for r in spec.routers:
        port = f"{r.role}0"  # the bridge's port towards the router
        cmds += [["ip", "-n", lan, "link", "add", port, "type", "veth", "peer", "name", "lan0", "netns", r.ns],
                 ["ip", "-n", lan, "link", "set", port, "master", BRIDGE],
                 ["ip", "-n", lan, "link", "set", port, "up"],
                 ["ip", "-n", r.ns, "addr", "add", f"{r.lan_address}/{LAN_PREFIXLEN}", "dev", "lan0"],
                 ["ip", "-n", r.ns, "link", "set", "lan0", "up"]]
    cmds += internet_plan(lab.inet_ns)
    for r in spec.routers:
        for u in r.uplink_list:
            cmds += uplink_plan(r.ns, lab.provider_ns(u.index), lab.inet_ns, u)
    return cmds


def pair_sysctls(spec: PairSpec) -> dict[str, list[str]]:
    """sysctls per namespace, as :func:`linkwatch.lab.plan.sysctl_plan` sets them for one router."""
    common = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
              "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
              "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"]
    plan = {ns: list(common) for ns in spec.namespaces}
    for r in spec.routers:
        plan[r.ns] += ["net.ipv4.ip_forward=1", f"net.ipv4.ping_group_range={PING_GROUP_RANGE}",
                       "net.ipv6.conf.all.forwarding=1"]
    for k in range(1, 2 * spec.uplinks + 1):
        plan[spec.lab.provider_ns(k)] += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
    return plan


def _quote(text: str) -> str:
    if any(ch in text for ch in '"\n\\'):
        raise LabError(f"cannot quote {text!r} in keepalived.conf")
    return f'"{text}"'


def keepalived_config(spec: PairSpec, router: PairRouter) -> str:
    """keepalived.conf of one lab router: VRRPv3 on ``lan0``, the virtual gateway, the router's
    track file (weight -100) and its own engine by full command line (``spec.engine_weight``,
    -100 unless a benchmark asks for FAULT with 0). Pure.

    ``net_namespace`` is not set here: the lab passes ``--namespace`` (keepalived opens its
    process-events socket before it switches)."""
    argv = router.engine_argv()
    params = " ".join(_quote(a) for a in argv[1:])
    return (
        f"# written by `linkwatch lab up --pair` for {router.ns}\n"
        "global_defs {\n"
        f"    router_id {router.ns}\n"
        "}\n\n"
        "track_file lw_uplinks {\n"
        f"    file {_quote(router.track_file)}\n"
        f"    weight {TRACK_WEIGHT}\n"
        "    init_file 1\n"
        "}\n\n"
        "vrrp_track_process lw_engine {\n"
        f"    process {_quote(argv[0])} {params}\n"
        "    param_match partial\n"
        "    full_command\n"
        f"    weight {spec.engine_weight}\n"
        "}\n\n"
        "vrrp_instance lan {\n"
        "    state BACKUP\n"
        "    interface lan0\n"
        f"    virtual_router_id {VRID}\n"
        "    version 3\n"
        f"    priority {router.priority}\n"
        f"    advert_int {spec.advert_int:g}\n"
        "    virtual_ipaddress {\n"
        f"        {VIRTUAL_GATEWAY}/{LAN_PREFIXLEN} dev lan0\n"
        "    }\n"
        "    track_file {\n"
        "        lw_uplinks\n"
        "    }\n"
        "    track_process {\n"
        "        lw_engine\n"
        "    }\n"
        "}\n"
    )


def keepalived_argv(router: PairRouter, binary: str = "/usr/sbin/keepalived") -> list[str]:
    """keepalived in the foreground, VRRP only, logging to the console, its pid files in the
    router's lab directory, switching to the router's namespace itself."""
    return [binary, "--dont-fork", "--log-console", "--vrrp", "--no-syslog",
            f"--namespace={router.ns}", f"--use-file={router.keepalived_conf}",
            f"--pid={router.path('keepalived.pidfile')}", f"--vrrp_pid={router.path('vrrp.pidfile')}"]
