"""Faults injected in a provider namespace, the way real uplinks fail (this kernel has no netem).

* ``blackhole``: drop everything the provider forwards, both ways. The router still sees carrier
  and the gateway still answers ARP (and pings to the gateway itself): an upstream outage.
* ``loss PCT``: drop each forwarded packet with probability PCT % (``numgen random mod 100``),
  in each direction, so a round trip survives with (1 - PCT/100)².
* ``carrier-down``: set the provider end ``dn`` of the veth down: the router's ``up{k}`` loses
  IFF_LOWER_UP at once.
* ``clear``: remove the fault table and set ``dn`` up again.

``blackhole`` and ``loss`` live in an nftables table of the lab's own (``inet lwfault``) and replace
each other; ``carrier-down`` is independent of them. Every fault is idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.plan import LabError, LabSpec
from linkwatch.lab.processes import netns_exec, run_command

FAULT_TABLE = "lwfault"
PROVIDER_LINK = "dn"
KINDS = ("blackhole", "loss", "carrier-down", "clear")


class FaultError(LabError):
    """A fault was named wrongly or cannot be applied."""


@dataclass(frozen=True)
class Fault:
    kind: str
    pct: int | None = None

    def __str__(self) -> str:
        return f"loss {self.pct}%" if self.kind == "loss" else self.kind


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


def apply_fault(lab_name: str, uplink: str | int, fault: Fault) -> str:
    """Apply ``fault`` to the provider of ``uplink`` in lab ``lab_name``; return a one-line summary."""
    spec = discover(lab_name)
    k = parse_uplink(str(uplink), spec.uplinks)
    ns = _provider(spec, k)
    if fault.kind in ("blackhole", "loss", "clear"):
        run_command(netns_exec(ns, ["nft", "-f", "-"]), input_text=fault_ruleset(fault))
    if fault.kind in ("carrier-down", "clear"):
        state = "down" if fault.kind == "carrier-down" else "up"
        run_command(["ip", "-n", ns, "link", "set", PROVIDER_LINK, state])
    return f"wan{k} ({ns}): {fault}"


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
        link = run_command(["ip", "-n", ns, "-o", "link", "show", PROVIDER_LINK])
        flags = re.search(r"<([^>]*)>", link)
        if flags is None or "UP" not in flags.group(1).split(","):
            parts.append("carrier-down")
        out[u.name] = ", ".join(parts) or "none"
    return out
