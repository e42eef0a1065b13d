"""Sticky flows: a flow stays on the uplink it started on while that uplink works. Pure: the nftables
ruleset text and the marks; :mod:`linkwatch.kernel.nft` applies it, the routing plan adds one
``fwmark`` rule per working uplink (:mod:`linkwatch.core.routing`).

How it works, per uplink U with flow mark M (its table number's low byte, in bits 16..23)::

    prerouting:  a new flow arriving on U's interface gets ct mark M (a port forward, a connection to
                 the router: its replies leave through the uplink it came in on, whatever is active)
                 a packet of a flow with ct mark M gets packet mark M
    postrouting: a flow without a mark leaving through U's interface gets ct mark M | MOVABLE
    rule:        <U's rule priority>: from all fwmark M/0xff0000 lookup <U's table>
                 (only while U works: UP, FALLING, DEGRADED)

Policy rules come first in the prerouting chain: a new flow from the LAN that matches a rule gets the
mark of the rule's uplink (the first of its list that works; spread by weight over those that work
with ``balance``), or, when none works and the rule says ``drop``, is left unmarked and dropped in
the forward chain if it leaves through an uplink (so the router and the other LAN networks stay
reachable). Flows to the router itself are never marked by a rule or by balancing. In balance mode
the chain then gives each new flow from the LAN one of the active uplinks' marks at random, by weight
(``numgen random``): balancing per flow, whatever the kernel's multipath hash policy, and a flow
stays on its uplink; an uplink leaving the set resets only its own.

So when traffic moves away from a working uplink (failback, DEGRADED), only new flows move: the
old ones keep leaving through their own uplink with their own NAT address until they end. When an
uplink stops working its rule goes and its flows' conntrack entries are deleted: they start again
through the new uplink at once instead of hanging. Replies coming in are routed by the main table
first (the suppress rule is before the mark rules), so the LAN stays reachable. Only bits 16..24
of the packet and conntrack marks are linkwatch's (the uplink, and MOVABLE: see :func:`ruleset`);
the other bits are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from linkwatch.config.values import FLOW_BITS, RuleConfig

FLOW_MASK = 0x00FF0000  # bits 16..23: which uplink a flow belongs to (fwmark rules, restore, flushes)
MOVABLE = 0x01000000  # bit 24: the flow is on its uplink only because traffic was sent there (see below)
assert FLOW_BITS == FLOW_MASK | MOVABLE  # the config refuses policy rules that match on these bits
FLOW_SHIFT = 16
TABLE_NAME = "linkwatch"  # nftables: table ip linkwatch (linkwatch touches no other table)


def flow_mark(table: int) -> int:
    """The flow mark of the uplink whose routing table is ``table`` (its low byte in bits 16..23;
    0 when the low byte is 0: the config refuses such a table while sticky flows are on)."""
    return (table & 0xFF) << FLOW_SHIFT


def spread(shares: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Balance per flow: [(flow mark, weight)] -> [(mark, draw, out of)]: a new flow takes rule i's
    mark when a random number mod ``out of`` is below ``draw``, trying the rules in order (the last
    always matches). Each draw is the uplink's weight against the weights not yet tried, so mark i
    is taken with probability weight_i / total: 3:1 -> (3 of 4), then (1 of 1)."""
    out, left = [], sum(w for _, w in shares)
    for mark, weight in shares:
        out.append((mark, weight, left))
        left -= weight
    return out


def match(rule: RuleConfig) -> str:
    """The nft match of a policy rule (its keys, all of them: AND; several values of one key: OR)."""
    parts = []
    if rule.iif:
        parts.append(f'iifname "{_quoted(rule.iif)}"')
    if rule.src:
        parts.append(f"ip saddr {{ {', '.join(rule.src)} }}")
    if rule.dst:
        parts.append(f"ip daddr {{ {', '.join(rule.dst)} }}")
    if rule.proto != "any":
        parts.append(f"meta l4proto {rule.proto}")
    for key, ports in (("sport", rule.sport), ("dport", rule.dport)):
        if ports:
            parts.append(f"{rule.proto} {key} {{ {_ports(ports, ', ')} }}")
    if rule.dscp is not None:
        parts.append(f"ip dscp {rule.dscp}")
    if rule.mark is not None:
        value, mask = rule.mark
        parts.append(f"meta mark and 0x{mask:08x} == 0x{value:08x}")
    return " ".join(parts)


def _ports(ports: Sequence[tuple[int, int]], sep: str) -> str:
    """(low, high) port ranges as ``5060<sep>10000-20000``."""
    return sep.join(str(a) if a == b else f"{a}-{b}" for a, b in ports)


def describe(rule: RuleConfig) -> str:
    """What a policy rule matches, for people: ``src 192.168.1.0/24 udp dport 5060,10000-20000``."""
    parts = [f"iif {rule.iif}"] if rule.iif else []
    parts += [f"src {','.join(rule.src)}"] if rule.src else []
    parts += [f"dst {','.join(rule.dst)}"] if rule.dst else []
    parts += [rule.proto] if rule.proto != "any" else []
    parts += [f"sport {_ports(rule.sport, ',')}"] if rule.sport else []
    parts += [f"dport {_ports(rule.dport, ',')}"] if rule.dport else []
    parts += [f"dscp {rule.dscp}"] if rule.dscp is not None else []
    parts += [f"mark 0x{rule.mark[0]:x}/0x{rule.mark[1]:x}"] if rule.mark is not None else []
    return " ".join(parts) or "all traffic"


def ruleset(marks: Sequence[tuple[str, int]], name: str = TABLE_NAME,
            balance: Sequence[tuple[int, int]] = (),
            policy: Sequence[tuple[RuleConfig, Sequence[tuple[int, int]]]] = ()) -> str:
    """The nftables table for uplinks ``marks`` = [(interface name, flow mark)]: nft syntax, one
    transaction. Interfaces are matched by name, so a PPPoE interface that comes back keeps its mark.
    ``balance`` = [(flow mark, weight)] of the uplinks that share traffic (balance mode, two or
    more): each new flow from the LAN (not arriving on an uplink) gets one of their marks at random,
    by weight, before its first packet is routed; the fwmark rules then route it and it stays there.
    ``policy`` = [(rule, [(flow mark, weight)])]: where each rule sends its new flows now (a mark
    with :data:`MOVABLE` for a rule's fallback uplink).

    A flow that is on its uplink only because traffic was sent there (it left through the active
    route, balancing drew it, a rule fell back to it) also gets :data:`MOVABLE`; flows that came in
    on an uplink and those a rule sends to its first choice do not. ``move_flows_after`` resets
    only the movable flows of an uplink traffic has left (one delete with mark and mask)."""
    keep = f"0x{0xFFFFFFFF & ~FLOW_BITS:08x}"
    mask = f"0x{FLOW_MASK:08x}"
    uplinks = ", ".join(f'"{_quoted(ifname)}"' for ifname, _ in marks)
    # a new flow from the LAN (or the router's LAN side) to somewhere else than the router itself
    new_flow = f"\t\tct state new ct mark and {mask} == 0 iifname != {{ {uplinks} }} fib daddr type != local"

    def set_mark(m: int) -> str:
        return f"ct mark set ct mark and {keep} or 0x{m:08x}"

    def choose(shares: Sequence[tuple[int, int]], matching: str = "") -> list[str]:
        where = f" {matching}" if matching else ""
        return [new_flow + where + (f" numgen random mod {total} < {draw}" if draw < total else "")
                + f" {set_mark(m)}" for m, draw, total in spread(shares)]

    rules, refuse = [], []
    for rule, shares in policy:  # in order: the first rule a flow matches sets its mark
        rules += [f"\t\t# rule {rule.name}"] + (
            choose(shares, match(rule)) if shares else
            [f"{new_flow} {match(rule)} accept".replace("  ", " ")] if rule.fallback == "drop" else [])
        if not shares and rule.fallback == "drop":
            # left unmarked above (no later rule or balance line takes it); dropped only on its way
            # out of an uplink: the router itself and other LAN networks stay reachable
            refuse.append(f"\t\tct state new ct mark and {mask} == 0 oifname {{ {uplinks} }} {match(rule)} drop"
                          .replace("  ", " "))
    arrived = [f'\t\tct state new ct mark and {mask} == 0 iifname "{_quoted(ifname)}" {set_mark(m)}'
               for ifname, m in marks]
    restore = arrived + rules + (choose([(m | MOVABLE, w) for m, w in balance]) if len(balance) > 1 else []) + [
        f"\t\tct mark and {mask} == 0x{m:08x} meta mark set meta mark and {keep} or 0x{m:08x}" for _, m in marks]
    remember = [f'\t\tct mark and {mask} == 0 oifname "{_quoted(ifname)}" {set_mark(m | MOVABLE)}'
                for ifname, m in marks]
    return "\n".join([
        f"table ip {name} {{",
        "\tchain restore {",
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
        *restore,
        "\t}",
        "\tchain remember {",
        "\t\ttype filter hook postrouting priority mangle; policy accept;",
        *remember,
        "\t}",
        *(["\tchain refuse {", "\t\ttype filter hook forward priority filter; policy accept;", *refuse, "\t}"]
          if refuse else []),
        "}",
        "",
    ])


_REMEMBERED = re.compile(r'oifname "([^"]+)" ct mark set .*?(?:\||\bor\b) 0x([0-9a-f]+)\s*$')


def marks_in(listing: str) -> dict[str, int]:
    """Interface -> flow mark, as a ruleset (or the kernel's listing of it, which writes ``&`` and
    ``|`` for ``and`` and ``or``) gives them: what a previous run marked flows with."""
    return {m.group(1): int(m.group(2), 16) & FLOW_MASK for line in listing.splitlines()
            if (m := _REMEMBERED.search(line.strip()))}


def _quoted(ifname: str) -> str:
    if not ifname or any(ch in ifname for ch in '"\\\n\t ') or len(ifname) > 15:
        raise ValueError(f"interface name {ifname!r} cannot be used in an nftables rule")
    return ifname
