"""The lab's small internet in network namespaces: plan, build, record, tear down.

A lab named N with U uplinks is made of these namespaces::

    lw-N-client  eth0 10.77.0.2/24 ── lan0 10.77.0.1/24  lw-N-router
                                          up1 198.51.100.2/29  ── dn 198.51.100.1/29   lw-N-p1
                                          up2 198.51.100.10/29 ── dn 198.51.100.9/29   lw-N-p2 ...
    lw-N-pk   in 10.200.k.1/30 ── pk 10.200.k.2/30   lw-N-inet (targets 203.0.113.1-12, .53, .7)

The router NATs with ``snat to <uplink address>`` per uplink and has one ``default via <gw>
metric 100*k`` per uplink in its main table (what DHCP clients would install). The inet namespace
runs ``linkwatch.lab.services`` (DNS and UDP echo); ``lab up`` also starts the engine in the router
namespace unless told not to.

Network safety: ``up`` refuses when a lab range overlaps an address or a route of the namespace
it is started from (:func:`find_overlaps` is the pure check), and when the lab already exists.
Everything the lab starts is recorded by pid (and process start time, so a reused pid is never
signalled) under ``/run/linkwatch/lab-N/`` and stopped by pid at ``down``; ``down`` then deletes
the lab's namespaces by name. ``down`` is idempotent and safe after a partial ``up``.

The lab tooling builds with the ``ip`` and ``nft`` commands; the engine itself never does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from linkwatch.lab.safety import NETNS_DIR

LAB_RANGES = ("198.51.100.0/24", "203.0.113.0/24", "10.77.0.0/24", "10.200.0.0/16")
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
NAT_TABLE = "lwlab"  # the router's NAT table; the engine's own tables have other names

PING_GROUP_RANGE = "0 2147483647"
READY_TIMEOUT = 5.0  # services must listen within this
ENGINE_TIMEOUT = 10.0  # the engine's control socket must answer within this
STOP_TIMEOUT = 3.0  # SIGTERM grace before SIGKILL

_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,16}$")
_PYTHON_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the linkwatch package


class LabError(RuntimeError):
    """The lab cannot be built, found or torn down as asked."""


# --- the plan (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Uplink:
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


def uplink_for_address(address: str) -> Uplink | None:
    """The uplink whose router address is ``address`` (``"ip"`` or ``"ip:port"``), else None."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    for k in range(1, MAX_UPLINKS + 1):
        if str(ip) == Uplink(k).address:
            return Uplink(k)
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
    def uplink_list(self) -> list[Uplink]:
        return [Uplink(k) for k in range(1, self.uplinks + 1)]

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
    """``router``/``inet``/``client``/``p<k>`` when ``namespace`` belongs to lab ``spec_name``."""
    prefix = f"lw-{spec_name}-"
    if not namespace.startswith(prefix):
        return None
    role = namespace[len(prefix):]
    if role in ("router", "inet", "client") or re.fullmatch(r"p[1-9][0-9]*", role):
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
    ]
    # the internet's targets live on a port-less bridge (this kernel has no dummy driver)
    cmds += [["ip", "-n", i, "link", "add", "targets", "type", "bridge"]]
    for addr in dict.fromkeys((*ICMP_TARGETS, DNS_SERVER, ECHO_SERVER)):  # .7 is both ICMP and echo
        cmds.append(["ip", "-n", i, "addr", "add", f"{addr}/32", "dev", "targets"])
    cmds.append(["ip", "-n", i, "link", "set", "targets", "up"])
    for u in spec.uplink_list:
        p, k = spec.provider_ns(u.index), u.index
        cmds += [
            ["ip", "-n", r, "link", "add", u.interface, "type", "veth", "peer", "name", "dn", "netns", p],
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
        ]
    return cmds


def sysctl_plan(spec: LabSpec) -> dict[str, list[str]]:
    """sysctl settings per namespace (set right after creation, before any link exists).

    Forwarding on router and providers; reverse-path filtering off everywhere (the lab's
    asymmetric moments are the engine's business, not the kernel's); unprivileged ICMP widened in
    the router, where the engine probes.
    """
    common = ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
    plan = {ns: list(common) for ns in spec.namespaces}
    plan[spec.router_ns] += ["net.ipv4.ip_forward=1", f"net.ipv4.ping_group_range={PING_GROUP_RANGE}"]
    for u in spec.uplink_list:
        plan[spec.provider_ns(u.index)].append("net.ipv4.ip_forward=1")
    return plan


def router_nat_ruleset(spec: LabSpec) -> str:
    """The router's NAT: ``snat to`` the uplink's address (not masquerade, see DESIGN.md)."""
    rules = "\n".join(f'        oifname "{u.interface}" snat to {u.address}' for u in spec.uplink_list)
    return (
        f"table ip {NAT_TABLE}\n"
        f"delete table ip {NAT_TABLE}\n"
        f"table ip {NAT_TABLE} {{\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f"{rules}\n"
        "    }\n"
        "}\n"
    )


def services_argv() -> list[str]:
    """Arguments of ``linkwatch.lab.services`` for the inet namespace."""
    return ["--dns", DNS_SERVER, "--echo", f"{ECHO_SERVER}:{ECHO_PORT}", "--answer", DNS_ANSWER]


# --- overlap check -----------------------------------------------------------------------------

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Overlap:
    lab_range: ipaddress.IPv4Network
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


def namespace_prefixes(netns: str | None = None) -> list[tuple[str, str]]:
    """Addresses and route destinations of a namespace (default: the calling thread's), with origins."""
    from pyroute2 import IPRoute

    out: list[tuple[str, str]] = []
    kwargs = {"netns": netns} if netns else {}
    with IPRoute(**kwargs) as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for a in ipr.get_addr():
            addr = a.get_attr("IFA_ADDRESS") or a.get_attr("IFA_LOCAL")
            if addr:
                out.append((f"{addr}/{a['prefixlen']}", f"address on {names.get(a['index'], a['index'])}"))
        for r in ipr.get_routes(family=socket.AF_INET):
            dst = r.get_attr("RTA_DST")
            if dst:
                table = r.get_attr("RTA_TABLE") or r["table"]
                out.append((f"{dst}/{r['dst_len']}", f"route in table {table}"))
    return out


def check_no_overlap(existing: Iterable[str | tuple[str, str]]) -> None:
    """Raise LabError naming every overlap of the lab's ranges with ``existing``."""
    overlaps = find_overlaps(LAB_RANGES, existing)
    if overlaps:
        listed = "; ".join(str(o) for o in overlaps)
        raise LabError(f"refusing to start: {listed}. The lab's packets could leak into this network")


# --- engine config (pure) ----------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_RESERVED_TABLES = ("control", "hooks", "uplinks")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise LabError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def _toml_table(name: str, values: Mapping[str, object]) -> list[str]:
    lines = [f"[{name}]"]
    subtables = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            subtables.append((f"{name}.{_toml_key(key)}", value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for sub_name, sub in subtables:
        lines += [""] + _toml_table(sub_name, sub)
    return lines


def probe_specs(count: int) -> list[dict[str, str]]:
    """1-3 probes per uplink: ICMP 203.0.113.1, DNS 203.0.113.53, ICMP 203.0.113.2."""
    if not 1 <= count <= 3:
        raise LabError(f"probe targets per uplink={count!r} is out of range: expected 1 to 3")
    specs = [
        {"type": "icmp", "target": ICMP_TARGETS[0]},
        {"type": "dns", "target": DNS_SERVER, "query": DNS_QUERY},
        {"type": "icmp", "target": ICMP_TARGETS[1]},
    ]
    return specs[:count]


def engine_config(spec: LabSpec, probe_targets: int = 2, overrides: Mapping[str, Mapping] | None = None,
                  extra_toml: str = "", web: Mapping[str, object] | None = None,
                  socket_group: str | None = None) -> str:
    """The engine's TOML config for this lab. Pure.

    The lab keeps a history (in its state directory, one row per uplink every 10 s so a short
    demo draws graphs) unless ``overrides`` has a [history] table. ``web`` is the [web] table
    (for the lab's web UI); ``socket_group`` owns the control socket (the web UI's group).
    ``overrides`` adds whole tables (``{"health": {...}, "policy": {...}}``); ``extra_toml`` is
    appended verbatim. The result must parse as TOML, else LabError.
    """
    lines = ["# written by `linkwatch lab up`", "[control]", f"socket = {_toml_value(spec.control_socket)}"]
    if socket_group:
        lines += [f"group = {_toml_value(socket_group)}"]
    lines += ["", "[hooks]", f"directory = {_toml_value(spec.hooks_dir)}"]
    tables = dict(overrides or {})
    tables.setdefault("history", {"path": spec.history_path, "sample_period": "10s"})
    if web:
        tables["web"] = {**web, **tables.get("web", {})}
    for table, values in tables.items():
        if table in _RESERVED_TABLES:
            raise LabError(f"override table [{table}] is reserved: the lab writes it itself")
        if not isinstance(values, Mapping):
            raise LabError(f"override [{table}] must be a table (dict), got {values!r}")
        lines += [""] + _toml_table(_toml_key(table), values)
    for u in spec.uplink_list:
        lines += ["", f"[uplinks.{u.name}]", f'interface = "{u.interface}"', 'gateway = "auto"',
                  f"priority = {u.index}"]
        for probe in probe_specs(probe_targets):
            lines += ["", f"[[uplinks.{u.name}.probes]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in probe.items()]
    text = "\n".join(lines) + "\n"
    if extra_toml.strip():
        text += "\n" + extra_toml.strip() + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"the engine config for lab {spec.name!r} is not valid TOML: {e}") from None
    return text


# --- commands ----------------------------------------------------------------------------------


def run_command(argv: Sequence[str], input_text: str | None = None, timeout: float = 10.0) -> str:
    """Run a lab tool command; its failure becomes a LabError quoting the command and stderr."""
    try:
        done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"command not found: {argv[0]} (the lab needs iproute2 and nftables)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(f"`{' '.join(argv)}` failed: {detail[-1] if detail else f'exit {done.returncode}'}")
    return done.stdout


def netns_exec(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def python_module_argv(ns: str, module: str, args: Sequence[str]) -> list[str]:
    """``ip netns exec <ns> <this python> -m <module> <args>`` (exec, no fork: the pid is python's)."""
    return netns_exec(ns, [sys.executable, "-m", module, *args])


def child_env() -> dict[str, str]:
    """Environment for lab children: they import linkwatch from this very tree."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = _PYTHON_ROOT + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def namespace_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def existing_lab_namespaces(name: str) -> list[str]:
    """The namespaces of lab ``name`` that exist now (whatever its size)."""
    try:
        entries = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []
    return [ns for ns in entries if lab_role(name, ns) is not None]


def discover(name: str) -> LabSpec:
    """The spec of an existing lab, its size read from its provider namespaces."""
    providers = [ns for ns in existing_lab_namespaces(name) if lab_role(name, ns).startswith("p")]
    if not providers:
        raise LabError(f"lab {name!r} is not up (no namespace lw-{name}-p1 …); run `linkwatch lab up --name {name}`")
    return LabSpec(name, max(int(lab_role(name, ns)[1:]) for ns in providers))


# --- processes, recorded by pid ----------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRecord:
    """A process the lab started: pid plus kernel start time, so a reused pid is never signalled."""

    role: str
    pid: int
    start_time: int
    argv: tuple[str, ...] = ()

    @property
    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start_time


def process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def record_process(state_dir: str, role: str, pid: int, argv: Sequence[str] = ()) -> ProcessRecord:
    start = process_start_time(pid)
    if start is None:
        raise LabError(f"{role} (pid {pid}) exited right after it started")
    rec = ProcessRecord(role, pid, start, tuple(argv))
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, f"{role}.pid")
    with open(path + ".tmp", "w") as f:
        json.dump({"role": role, "pid": pid, "start_time": start, "argv": list(argv)}, f)
    os.replace(path + ".tmp", path)
    return rec


def read_records(state_dir: str) -> list[ProcessRecord]:
    records = []
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return []
    for fname in names:
        if not fname.endswith(".pid"):
            continue
        try:
            with open(os.path.join(state_dir, fname)) as f:
                d = json.load(f)
            records.append(ProcessRecord(d["role"], int(d["pid"]), int(d["start_time"]), tuple(d.get("argv", ()))))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a torn file: nothing trustworthy to signal
    return records


def forget_process(state_dir: str, role: str) -> None:
    try:
        os.unlink(os.path.join(state_dir, f"{role}.pid"))
    except FileNotFoundError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it


def stop_pid(pid: int, start_time: int | None, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; only while the pid is still the same process.

    Returns True when the process was running and is gone now.
    """
    def same() -> bool:
        _reap(pid)
        now = process_start_time(pid)
        return now is not None and (start_time is None or now == start_time)

    if not same():
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not same():
                return True
            time.sleep(0.02)
    raise LabError(f"pid {pid} survived SIGKILL")


def start_background(state_dir: str, role: str, argv: list[str],
                     log_path: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, ProcessRecord]:
    """Start ``argv`` detached (own session), output to ``log_path``, and record its pid."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env or child_env(), cwd="/", start_new_session=True)
    try:
        return proc, record_process(state_dir, role, proc.pid, argv)
    except LabError:
        proc.wait(timeout=STOP_TIMEOUT)
        raise LabError(f"{role} exited at once (exit {proc.returncode}): {tail(log_path)}") from None


def namespace_pids(ns: str) -> list[int]:
    """Pids of processes inside namespace ``ns`` (compares /proc/<pid>/ns/net with the name's inode)."""
    try:
        ino = os.stat(os.path.join(NETNS_DIR, ns)).st_ino
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read()[-4000:]
    except OSError:
        return "(no log)"
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(last) if last else "(empty log)"


# --- readiness ---------------------------------------------------------------------------------


def udp_listeners(proc_net_udp: str) -> set[tuple[str, int]]:
    """(address, port) of every UDP socket in /proc/<pid>/net/udp text. Pure."""
    found = set()
    for line in proc_net_udp.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 2 or ":" not in parts[1]:
            continue
        hex_ip, hex_port = parts[1].split(":")
        ip = socket.inet_ntoa(int(hex_ip, 16).to_bytes(4, "little"))
        found.add((ip, int(hex_port, 16)))
    return found


def _wait_until(check: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.03)
    return check()


def _services_listening(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/net/udp") as f:
            bound = udp_listeners(f.read())
    except OSError:
        return False
    need = [(DNS_SERVER, 53), (ECHO_SERVER, ECHO_PORT)]
    return all(addr in bound or ("0.0.0.0", addr[1]) in bound for addr in need)


def engine_status(spec: LabSpec, timeout: float = 1.0) -> tuple[dict | None, str | None]:
    """(status, None) from the engine's control socket, or (None, why not)."""
    try:
        from linkwatch.report.control import call
    except ImportError as e:
        return None, f"engine control module unavailable: {e}"
    try:
        answer = call(spec.control_socket, {"cmd": "status"}, timeout=timeout)
    except Exception as e:  # ControlError and anything a half-written engine might raise
        return None, str(e)
    if not answer.get("ok"):
        return None, f"engine said: {answer.get('error', answer)}"
    return answer.get("status", {}), None


# --- up / down / status ------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineOptions:
    """What `lab up` passes to the engine's config."""

    probe_targets: int = 2
    overrides: Mapping[str, Mapping] | None = None
    extra_toml: str = ""
    timeout: float = ENGINE_TIMEOUT
    web: str | None = None  # address:port on the host's loopback for the lab's web UI; None = no web UI


def preflight(spec: LabSpec) -> None:
    """Refuse to build when the calling namespace overlaps a lab range or the lab exists already."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network namespaces)")
    check_no_overlap(namespace_prefixes())
    present = existing_lab_namespaces(spec.name)
    if present:
        raise LabError(f"lab {spec.name!r} already exists (namespaces {', '.join(present)}); "
                       f"run `linkwatch lab down --name {spec.name}` first")
    running = [f"{r.role} (pid {r.pid})" for r in read_records(spec.state_dir) if r.alive]
    if running:
        raise LabError(f"lab {spec.name!r} still has processes running ({', '.join(running)}); "
                       f"run `linkwatch lab down --name {spec.name}` first")
    if not shutil.which("ip") or not shutil.which("nft"):
        raise LabError("the lab needs the `ip` (iproute2) and `nft` (nftables) commands")
    if importlib.util.find_spec("linkwatch.lab.services") is None:
        raise LabError("linkwatch.lab.services is missing: the lab cannot serve DNS and echo")


def up(spec: LabSpec, engine: bool = True, options: EngineOptions | None = None) -> LabSpec:
    """Build lab ``spec`` (and start its services and, unless ``engine`` is False, the engine).

    All or nothing: on any failure what was built is torn down again and LabError raised.
    """
    preflight(spec)
    os.makedirs(spec.state_dir, exist_ok=True)
    try:
        _build(spec)
        start_services(spec)
        if engine:
            start_engine(spec, options or EngineOptions())
    except BaseException as e:
        try:
            down(spec.name)
        except LabError as cleanup:
            raise LabError(f"{e}; cleaning up also failed: {cleanup}") from e
        raise
    return spec


@contextlib.contextmanager
def running(spec: LabSpec, engine: bool = True, options: EngineOptions | None = None) -> Iterator[LabSpec]:
    """``with running(LabSpec("tB1")) as lab: ...``: the lab is up inside, down afterwards (always)."""
    up(spec, engine, options)
    try:
        yield spec
    finally:
        down(spec.name)


def _build(spec: LabSpec) -> None:
    plan = build_plan(spec)
    n_ns = len(spec.namespaces)
    for argv in plan[:n_ns]:  # namespaces first, then their sysctls, then links
        run_command(argv)
    for ns, settings in sysctl_plan(spec).items():
        run_command(netns_exec(ns, ["sysctl", "-q", "-w", *settings]))
    for argv in plan[n_ns:]:
        run_command(argv)
    run_command(netns_exec(spec.router_ns, ["nft", "-f", "-"]), input_text=router_nat_ruleset(spec))


def start_services(spec: LabSpec) -> ProcessRecord:
    argv = python_module_argv(spec.inet_ns, "linkwatch.lab.services", services_argv())
    proc, rec = start_background(spec.state_dir, "services", argv, spec.services_log)
    if not _wait_until(lambda: _services_listening(proc.pid), READY_TIMEOUT, proc):
        raise LabError(f"lab services did not listen on {DNS_SERVER}:53 and {ECHO_SERVER}:{ECHO_PORT} "
                       f"within {READY_TIMEOUT:g}s: {tail(spec.services_log)}")
    return rec


def start_engine(spec: LabSpec, options: EngineOptions) -> ProcessRecord:
    """Write the config, start ``linkwatch run`` in the router namespace, wait for its socket.

    With ``options.web`` the web UI follows (see :mod:`linkwatch.lab.web`)."""
    web_table, group, web_argv = None, None, None
    if options.web:
        from linkwatch.lab import web

        web_table, group, web_argv = web.prepare(spec, options.web)
    text = engine_config(spec, options.probe_targets, options.overrides, options.extra_toml, web_table, group)
    os.makedirs(spec.hooks_dir, exist_ok=True)
    with open(spec.config_path, "w") as f:
        f.write(text)
    argv = python_module_argv(spec.router_ns, "linkwatch", ["run", "--config", spec.config_path])
    proc, rec = start_background(spec.state_dir, "engine", argv, spec.engine_log)
    why = "no answer"

    def answers() -> bool:
        nonlocal why
        status, why = engine_status(spec, timeout=0.5)
        return status is not None

    if not _wait_until(answers, options.timeout, proc):
        if proc.poll() is not None:
            raise LabError(f"the engine exited (code {proc.returncode}): {tail(spec.engine_log)}")
        raise LabError(f"the engine's control socket {spec.control_socket} did not answer within "
                       f"{options.timeout:g}s ({why}); log: {tail(spec.engine_log)}")
    if web_argv is not None:
        from linkwatch.lab import web

        web.start(spec, web_argv, options.web)
    return rec


@dataclass
class DownReport:
    stopped: list[str] = field(default_factory=list)  # "role pid"
    deleted: list[str] = field(default_factory=list)  # namespace names


def down(name: str) -> DownReport:
    """Stop everything lab ``name`` started (by pid) and delete its namespaces. Idempotent."""
    state_dir = LabSpec(name).state_dir  # validates the name
    report = DownReport()
    for rec in read_records(state_dir):
        if stop_pid(rec.pid, rec.start_time):
            report.stopped.append(f"{rec.role} {rec.pid}")
        forget_process(state_dir, rec.role)
    namespaces = existing_lab_namespaces(name)
    for ns in namespaces:  # anything left inside the lab's namespaces was started in the lab
        for pid in namespace_pids(ns):
            if pid != os.getpid() and stop_pid(pid, process_start_time(pid)):
                report.stopped.append(f"stray {pid} in {ns}")
    for ns in namespaces:
        try:
            run_command(["ip", "netns", "del", ns])
            report.deleted.append(ns)
        except LabError:
            if namespace_exists(ns):
                raise
    shutil.rmtree(state_dir, ignore_errors=True)
    return report


@dataclass(frozen=True)
class LabStatus:
    spec: LabSpec
    namespaces: dict[str, bool]
    processes: list[tuple[ProcessRecord, bool]]
    engine: dict | None
    engine_error: str | None
    faults: dict[str, str]


def status(name: str) -> LabStatus:
    """What exists of lab ``name``: namespaces, recorded processes, faults, the engine's status."""
    from linkwatch.lab.faults import describe_faults  # faults imports this module

    spec = discover(name)
    namespaces = {ns: namespace_exists(ns) for ns in spec.namespaces}
    procs = [(rec, rec.alive) for rec in read_records(spec.state_dir)]
    engine, err = engine_status(spec) if os.path.exists(spec.control_socket) else (None, "no control socket")
    return LabStatus(spec, namespaces, procs, engine, err, describe_faults(spec))
