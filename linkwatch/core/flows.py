"""Sticky flows: a flow stays on the uplink it started on while that uplink works. Pure: the nftables
ruleset text and the marks; :mod:`linkwatch.kernel.nft` applies it, the routing plan adds one
``fwmark`` rule per working uplink (:mod:`linkwatch.core.routing`).

How it works, per uplink U with flow mark M (its table number's low byte, in bits 16..23)::

    postrouting: a flow without a mark leaving through U's interface gets ct mark M
    prerouting:  a packet of a flow with ct mark M gets packet mark M
    rule:        <U's rule priority>: from all fwmark M/0xff0000 lookup <U's table>
                 (only while U works: UP, FALLING, DEGRADED)

So when traffic moves away from a working uplink (failback, DEGRADED), only new flows move: the
old ones keep leaving through their own uplink with their own NAT address until they end. When an
uplink stops working its rule goes and its flows' conntrack entries are deleted: they start again
through the new uplink at once instead of hanging. Replies coming in are routed by the main table
first (the suppress rule is before the mark rules), so the LAN stays reachable. Only bits
16..23 of the packet and conntrack marks are linkwatch's; the other bits are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

FLOW_MASK = 0x00FF0000
FLOW_SHIFT = 16
TABLE_NAME = "linkwatch"  # nftables: table ip linkwatch (linkwatch touches no other table)


def flow_mark(table: int) -> int:
    """The flow mark of the uplink whose routing table is ``table`` (its low byte in bits 16..23;
    0 when the low byte is 0: the config refuses such a table while sticky flows are on)."""
    return (table & 0xFF) << FLOW_SHIFT


def ruleset(marks: Sequence[tuple[str, int]], name: str = TABLE_NAME) -> str:
    """The nftables table for uplinks ``marks`` = [(interface name, flow mark)]: nft syntax, one
    transaction. Interfaces are matched by name, so a PPPoE interface that comes back keeps its mark."""
    keep = f"0x{0xFFFFFFFF & ~FLOW_MASK:08x}"
    mask = f"0x{FLOW_MASK:08x}"
    restore = [f"\t\tct mark and {mask} == 0x{m:08x} meta mark set meta mark and {keep} or 0x{m:08x}"
               for _, m in marks]
    remember = [f'\t\tct mark and {mask} == 0 oifname "{_quoted(ifname)}" ct mark set ct mark and {keep} or 0x{m:08x}'
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
        "}",
        "",
    ])


def _quoted(ifname: str) -> str:
    if not ifname or any(ch in ifname for ch in '"\\\n\t ') or len(ifname) > 15:
        raise ValueError(f"interface name {ifname!r} cannot be used in an nftables rule")
    return ifname
