"""Faults injected in a provider namespace, the way real uplinks fail (this kernel has no netem).

* ``blackhole``: drop everything the provider forwards, both ways. The router still sees carrier
  and the gateway still answers ARP (and pings to the gateway itself): an upstream outage.
* ``loss PCT``: drop each forwarded packet with probability PCT % (``numgen random mod 100``),
  in each direction, so a round trip survives with (1 - PCT/100)².
* ``carrier-down``: set the provider end ``dn`` of the veth down: the router's ``up{k}`` loses
  IFF_LOWER_UP at once.
* ``shape RATE QUEUE``: a modem's queue under load, both ways: tbf with that rate and that much
  queueing delay on the provider's two links (``dn`` towards the router: downloads; ``in`` towards
  the internet: uploads), e.g. ``shape 10mbit 400ms``. This kernel has no netem, fq_codel or cake.
  RATE is 8kbit to 10gbit (kbit, mbit, gbit: powers of 1000, as tc reads them); QUEUE is 1ms to 10s.
* ``flap DOWN UP DURATION``: blackhole for DOWN, clear for UP, over and over, for DURATION (at most
  10 min; each period at least 100 ms), from a background process (:mod:`linkwatch.lab.flapper`)
  the lab records by pid and stops (``clear``, ``blackhole``, ``loss``, another ``flap``, ``lab
  down``); it stops by itself after DURATION, leaving the provider clear.
* ``no-ra``: the provider's radvd stops (:mod:`linkwatch.lab.radvd`); its last router
  advertisement has a lifetime of 0, so the router's IPv6 default route via ``up{k}`` is withdrawn
  while IPv4 works on: a provider whose IPv6 router stops advertising.
* ``clear``: remove the fault table and the shaping, stop a flap, set ``dn`` up again and start
  radvd again.

``blackhole``, ``loss`` and ``flap`` live in an nftables table of the lab's own (``inet lwfault``)
and replace each other; ``shape`` (tc) and ``carrier-down`` (ip link) are independent of them and
of each other, so a shaped uplink can also lose packets or flap. Every fault is idempotent.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from linkwatch.lab import radvd
from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.plan import GATEWAY6, PROVIDER_LINK, LabError, LabSpec, LabUplink
from linkwatch.lab.processes import forget_process, netns_exec, read_records, run_command, start_background, stop_pid

FAULT_TABLE = "lwfault"
KINDS = ("blackhole", "loss", "carrier-down", "shape", "flap", "no-ra", "clear")
SHAPED_LINKS = ("dn", "in")  # the provider's link towards the router (downloads), towards the internet (uploads)
MAX_FLAP = 600.0
MIN_FLAP_PERIOD = 0.1  # each down or up period: the flapper runs `nft` at every toggle
SHAPE_BURST = "32kbit"
RATE_BOUNDS = (8e3, 10e9)  # bits per second
QUEUE_BOUNDS = (0.001, 10.0)  # seconds
_RATE = re.compile(r"(\d+(?:\.\d+)?)(kbit|mbit|gbit)")
_RATE_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}  # tc's units: powers of 1000
_DURATION = re.compile(r"(\d+(\.\d+)?)(ms|s)")
FORMS = "blackhole [ipv4|ipv6], loss PCT, carrier-down, shape RATE QUEUE, flap DOWN UP DURATION, no-ra, clear"


class FaultError(LabError):
    """A fault was named wrongly or cannot be applied."""


@dataclass(frozen=True)
class Fault:
    kind: str
    pct: int | None = None
    rate: str | None = None  # shape: tc's rate, e.g. "10mbit"
    queue: str | None = None  # shape: tc's latency, e.g. "400ms"
    down: float | None = None  # flap: seconds blackholed ...
    up: float | None = None  # ... and clear ...
    duration: float | None = None  # ... for this long
    family: str | None = None  # blackhole: "ipv4" or "ipv6" only (None: both)

    @property
    def rate_bps(self) -> float | None:
        """shape: the rate in bits per second (what a transfer through it can reach at most)."""
        return parse_rate(self.rate) if self.rate else None

    @property
    def queue_s(self) -> float | None:
        """shape: the queue (tbf latency) in seconds."""
        return _seconds(self.queue, "queue") if self.queue else None

    def __str__(self) -> str:
        if self.kind == "loss":
            return f"loss {self.pct}%"
        if self.kind == "shape":
            return f"shape {self.rate} {self.queue}"
        if self.kind == "flap":
            return f"flap {self.down:g}s down / {self.up:g}s up for {self.duration:g}s"
        if self.family:
            return f"{self.kind} {self.family}"
        return self.kind


def _seconds(text: str, what: str) -> float:
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        raise FaultError(f"{what} {text!r} is not a duration like 400ms or 1s")
    value = float(m.group(1)) / (1000.0 if m.group(3) == "ms" else 1.0)
    if value <= 0:
        raise FaultError(f"{what} {text!r} must be more than 0")
    return value


def parse_rate(text: str) -> float:
    """``"10mbit"`` -> 10e6 bits per second (tc's units); FaultError naming the value otherwise."""
    m = _RATE.fullmatch(text.strip().lower())
    if not m:
        raise FaultError(f"rate {text!r} is not understood: expected a number and kbit, mbit or gbit, "
                         "e.g. 500kbit, 10mbit, 1gbit")
    bps = float(m.group(1)) * _RATE_UNITS[m.group(2)]
    if not RATE_BOUNDS[0] <= bps <= RATE_BOUNDS[1]:
        raise FaultError(f"rate {text!r} is out of range: expected 8kbit to 10gbit")
    return bps


def check_flap(down: float, up: float, duration: float) -> None:
    """FaultError unless a flap of these periods (seconds) is bounded and sensible. Pure."""
    for value, what in ((down, "down time"), (up, "up time")):
        if not MIN_FLAP_PERIOD <= value <= MAX_FLAP:
            raise FaultError(f"{what} {value:g}s is out of range: expected {MIN_FLAP_PERIOD * 1000:g}ms "
                             f"to {MAX_FLAP:g}s")
    if not 0 < duration <= MAX_FLAP:
        raise FaultError(f"duration {duration:g}s is out of range: at most {MAX_FLAP:g}s (a flap stops by itself)")
    if duration < down:
        raise FaultError(f"duration {duration:g}s is shorter than one down time ({down:g}s)")


def parse_uplink(text: str, uplinks: int | None = None) -> int:
    """``"wan2"``, ``"2"`` or ``"up2"`` -> 2 (checked against the lab's size when given)."""
    m = re.fullmatch(r"(?:wan|up)?([1-9][0-9]*)", text.strip().lower())
    if not m:
        raise FaultError(f"uplink {text!r} is not understood: expected wanK, upK or K")
    k = int(m.group(1))
    if uplinks is not None and k > uplinks:
        raise FaultError(f"uplink {text!r} does not exist: the lab has {uplinks} uplink(s)")
    return k


def parse_fault(words: Sequence[str]) -> Fault:
    """``["blackhole"]``, ``["loss", "30"]``, ``["carrier-down"]``, ``["shape", "10mbit", "400ms"]``,
    ``["flap", "1s", "1s", "60s"]``, ``["no-ra"]`` or ``["clear"]`` -> Fault; FaultError naming what is wrong."""
    if not words or words[0] not in KINDS:
        raise FaultError(f"fault {' '.join(words)!r} is not understood: expected one of {FORMS}")
    kind, rest = words[0], list(words[1:])
    if kind == "loss":
        if len(rest) != 1:
            raise FaultError("fault `loss` needs one percentage, e.g. `loss 30`")
        try:
            pct = int(rest[0].rstrip("%"))
        except ValueError:
            raise FaultError(f"loss percentage {rest[0]!r} is not an integer") from None
        if not 0 <= pct <= 100:
            raise FaultError(f"loss percentage {pct} is out of range: expected 0 to 100")
        return Fault("loss", pct)
    if kind == "blackhole" and rest:
        if rest != ["ipv4"] and rest != ["ipv6"]:
            raise FaultError(f"fault `blackhole` takes ipv4 or ipv6 (one family only), got {' '.join(rest)!r}")
        return Fault("blackhole", family=rest[0])
    if kind == "shape":
        if len(rest) != 2:
            raise FaultError("fault `shape` needs a rate and a queue, e.g. `shape 10mbit 400ms`")
        rate = rest[0].strip().lower()
        parse_rate(rate)
        seconds = _seconds(rest[1], "queue")
        if not QUEUE_BOUNDS[0] <= seconds <= QUEUE_BOUNDS[1]:
            raise FaultError(f"queue {rest[1]!r} is out of range: expected 1ms to 10s (the queueing delay at RATE)")
        return Fault("shape", rate=rate, queue=f"{round(seconds * 1000)}ms")
    if kind == "flap":
        if len(rest) != 3:
            raise FaultError("fault `flap` needs DOWN UP DURATION, e.g. `flap 1s 1s 60s`")
        down, up, duration = (_seconds(x, w) for x, w in zip(rest, ("down time", "up time", "duration")))
        check_flap(down, up, duration)
        return Fault("flap", down=down, up=up, duration=duration)
    if rest:
        raise FaultError(f"fault `{kind}` takes no argument, got {' '.join(rest)!r}")
    return Fault(kind)


def fault_ruleset(fault: Fault) -> str:
    """nft script that (re)creates the fault table for ``blackhole``/``loss``, or removes it. Pure.

    ``table X`` followed by ``delete table X`` makes removal work whether or not it exists, and
    both happen in one transaction with the new table.
    """
    head = f"table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n"
    if fault.kind in ("clear", "carrier-down"):
        return head
    if fault.kind == "blackhole":
        rule = {"ipv4": "meta nfproto ipv4 ", "ipv6": "meta nfproto ipv6 ", None: ""}[fault.family] + "counter drop"
    elif fault.kind == "loss":
        rule = f"numgen random mod 100 < {fault.pct} counter drop"
    else:
        raise FaultError(f"fault kind {fault.kind!r} has no ruleset")
    return head + (
        f"table inet {FAULT_TABLE} {{\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy accept;\n"
        f"        {rule}\n"
        "    }\n"
        "}\n"
    )


def _provider(spec: LabSpec, k: int) -> str:
    ns = spec.provider_ns(k)
    if not namespace_exists(ns):
        raise FaultError(f"namespace {ns} does not exist (is lab {spec.name!r} up?)")
    return ns


def flap_role(k: int) -> str:
    return f"flap-wan{k}"


def apply_fault(lab_name: str, uplink: str | int, fault: Fault) -> str:
    """Apply ``fault`` to the provider of ``uplink`` in lab ``lab_name``; return a one-line summary."""
    spec = discover(lab_name)
    k = parse_uplink(str(uplink), spec.uplinks)
    ns = _provider(spec, k)
    if fault.kind in ("flap", "clear", "blackhole", "loss"):
        _stop_flap(spec, k)  # one nftables fault at a time
    if fault.kind in ("blackhole", "loss", "clear"):
        run_command(netns_exec(ns, ["nft", "-f", "-"]), input_text=fault_ruleset(fault))
    if fault.kind in ("carrier-down", "clear"):
        state = "down" if fault.kind == "carrier-down" else "up"
        run_command(["ip", "-n", ns, "link", "set", PROVIDER_LINK, state])
        if state == "up":  # a link set down loses its IPv6 addresses: the provider's come back with it
            u = LabUplink(k)
            for address in (u.provider_address6, GATEWAY6):
                run_command(["ip", "-n", ns, "-6", "addr", "replace", f"{address}/64", "dev", PROVIDER_LINK, "nodad"])
    if fault.kind == "no-ra":
        radvd.stop(spec, LabUplink(k))
    if fault.kind == "clear":  # after the link (and fe80::1, the RAs' source) is back
        radvd.start(spec, LabUplink(k))
    if fault.kind == "shape":
        for link in SHAPED_LINKS:
            run_command(netns_exec(ns, shape_command(link, fault)))
    if fault.kind == "clear":
        for link in SHAPED_LINKS:
            try:
                run_command(netns_exec(ns, ["tc", "qdisc", "del", "dev", link, "root"]))
            except LabError:
                pass  # nothing shaped there
    if fault.kind == "flap":
        argv = [sys.executable, "-m", "linkwatch.lab.flapper", "--lab", spec.name, "--uplink", str(k),
                "--down", f"{fault.down:g}", "--up", f"{fault.up:g}", "--duration", f"{fault.duration:g}"]
        start_background(spec.state_dir, flap_role(k), argv, os.path.join(spec.state_dir, f"{flap_role(k)}.log"))
    return f"wan{k} ({ns}): {fault}"


def shape_command(link: str, fault: Fault) -> list[str]:
    """The tc command that shapes one provider link (its egress). Pure."""
    return ["tc", "qdisc", "replace", "dev", link, "root", "tbf", "rate", fault.rate, "burst", SHAPE_BURST,
            "latency", fault.queue]


def _stop_flap(spec: LabSpec, k: int) -> None:
    for rec in read_records(spec.state_dir):
        if rec.role == flap_role(k):
            stop_pid(rec.pid, rec.start_time)
            forget_process(spec.state_dir, rec.role)


def describe_faults(spec: LabSpec) -> dict[str, str]:
    """``{"wan1": "blackhole", "wan2": "none", ...}`` as the provider namespaces show them now."""
    out = {}
    for u in spec.uplink_list:
        ns = spec.provider_ns(u.index)
        if not namespace_exists(ns):
            out[u.name] = "namespace missing"
            continue
        parts = []
        try:
            text = run_command(netns_exec(ns, ["nft", "list", "table", "inet", FAULT_TABLE]))
        except LabError:
            text = ""  # no table: no nft fault
        m = re.search(r"numgen random mod 100 < (\d+)", text)
        if m:
            parts.append(f"loss {m.group(1)}%")
        elif "drop" in text:
            family = re.search(r"meta nfproto (ipv4|ipv6)", text)
            parts.append(f"blackhole {family.group(1)}" if family else "blackhole")
        shaped = {link: describe_tbf(run_command(netns_exec(ns, ["tc", "qdisc", "show", "dev", link])))
                  for link in SHAPED_LINKS}
        if any(shaped.values()):
            down, up = shaped[SHAPED_LINKS[0]], shaped[SHAPED_LINKS[1]]
            parts.append(f"shape {down}" if down == up else f"shape {down or '-'} down, {up or '-'} up")
        for rec in read_records(spec.state_dir):
            if rec.role == flap_role(u.index) and rec.alive:
                parts.append(describe_flap(rec.argv, process_age(rec.start_time)))
        if not radvd.running(spec, u):
            parts.append("no-ra")
        link = run_command(["ip", "-n", ns, "-o", "link", "show", PROVIDER_LINK])
        flags = re.search(r"<([^>]*)>", link)
        if flags is None or "UP" not in flags.group(1).split(","):
            parts.append("carrier-down")
        out[u.name] = ", ".join(parts) or "none"
    return out


def describe_tbf(tc_show: str) -> str | None:
    """``"10Mbit 400ms"`` from ``tc qdisc show`` output with a root tbf, else None. Pure."""
    m = re.search(r"qdisc tbf .*?rate (\S+) .*?lat(?:ency)? (\S+)", tc_show)
    return f"{m.group(1)} {m.group(2)}" if m else None


def describe_flap(argv: Sequence[str], age: float | None) -> str:
    """``"flapping 1s down / 1s up, 42s left"`` from a flapper's argv and its age in seconds. Pure."""
    opts = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    try:
        down, up, duration = (float(opts[k]) for k in ("--down", "--up", "--duration"))
    except (KeyError, ValueError):
        return "flapping"
    left = f", {max(0.0, duration - age):.0f}s left" if age is not None else ""
    return f"flapping {down:g}s down / {up:g}s up{left}"


def process_age(start_time: int) -> float | None:
    """Seconds since a process started, from its start time in clock ticks since boot."""
    try:
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_time / os.sysconf("SC_CLK_TCK"))
