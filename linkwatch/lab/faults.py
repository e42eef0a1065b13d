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
* ``flap DOWN UP DURATION``: blackhole for DOWN, clear for UP, over and over, for DURATION (at most
  10 min), from a background process the lab records and stops (``clear``, ``lab down``).
* ``clear``: remove the fault table and the shaping, stop a flap, and set ``dn`` up again.

``blackhole`` and ``loss`` live in an nftables table of the lab's own (``inet lwfault``) and replace
each other; ``carrier-down`` is independent of them. Every fault is idempotent.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.plan import LabError, LabSpec
from linkwatch.lab.processes import forget_process, netns_exec, read_records, run_command, start_background, stop_pid

FAULT_TABLE = "lwfault"
PROVIDER_LINK = "dn"
KINDS = ("blackhole", "loss", "carrier-down", "shape", "flap", "clear")
SHAPED_LINKS = ("dn", "in")  # the provider's link towards the router (downloads), towards the internet (uploads)
MAX_FLAP = 600.0
_RATE = re.compile(r"\d+(\.\d+)?(kbit|mbit|gbit)")
_DURATION = re.compile(r"(\d+(\.\d+)?)(ms|s)")


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

    def __str__(self) -> str:
        if self.kind == "loss":
            return f"loss {self.pct}%"
        if self.kind == "shape":
            return f"shape {self.rate} {self.queue}"
        if self.kind == "flap":
            return f"flap {self.down:g}s down / {self.up:g}s up for {self.duration:g}s"
        return self.kind


def _seconds(text: str, what: str) -> float:
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        raise FaultError(f"{what} {text!r} is not a duration like 400ms or 1s")
    value = float(m.group(1)) / (1000.0 if m.group(3) == "ms" else 1.0)
    if value <= 0:
        raise FaultError(f"{what} {text!r} must be more than 0")
    return value


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
    """``["blackhole"]``, ``["loss", "30"]``, ``["carrier-down"]`` or ``["clear"]`` -> Fault."""
    if not words or words[0] not in KINDS:
        raise FaultError(f"fault {' '.join(words)!r} is not understood: expected one of "
                         "blackhole, loss PCT, carrier-down, clear")
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
    if kind == "shape":
        if len(rest) != 2:
            raise FaultError("fault `shape` needs a rate and a queue, e.g. `shape 10mbit 400ms`")
        rate, queue = rest[0].lower(), rest[1].lower()
        if not _RATE.fullmatch(rate):
            raise FaultError(f"rate {rest[0]!r} is not understood: expected e.g. 500kbit, 10mbit, 1gbit")
        seconds = _seconds(queue, "queue")
        if seconds > 10:
            raise FaultError(f"queue {rest[1]!r} is too long: at most 10s")
        return Fault("shape", rate=rate, queue=f"{round(seconds * 1000)}ms")
    if kind == "flap":
        if len(rest) != 3:
            raise FaultError("fault `flap` needs DOWN UP DURATION, e.g. `flap 1s 1s 60s`")
        down, up, duration = (_seconds(x, w) for x, w in zip(rest, ("down time", "up time", "duration")))
        if duration > MAX_FLAP:
            raise FaultError(f"duration {rest[2]!r} is too long: at most {MAX_FLAP:g}s (a flap stops by itself)")
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
        rule = "counter drop"
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
    if fault.kind == "shape":
        for link in SHAPED_LINKS:
            run_command(netns_exec(ns, ["tc", "qdisc", "replace", "dev", link, "root", "tbf", "rate", fault.rate,
                                        "burst", "32kbit", "latency", fault.queue]))
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
            parts.append("blackhole")
        qdisc = run_command(netns_exec(ns, ["tc", "qdisc", "show", "dev", "dn"]))
        shaped = re.search(r"tbf .*rate (\S+) .*lat(?:ency)? (\S+)", qdisc)
        if shaped:
            parts.append(f"shape {shaped.group(1)} {shaped.group(2)}")
        if any(rec.role == flap_role(u.index) and rec.alive for rec in read_records(spec.state_dir)):
            parts.append("flapping")
        link = run_command(["ip", "-n", ns, "-o", "link", "show", PROVIDER_LINK])
        flags = re.search(r"<([^>]*)>", link)
        if flags is None or "UP" not in flags.group(1).split(","):
            parts.append("carrier-down")
        out[u.name] = ", ".join(parts) or "none"
    return out
