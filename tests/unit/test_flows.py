"""Sticky flows, pure: the marks, the nftables ruleset, the fwmark rules of the routing plan, the
config's checks."""

from __future__ import annotations

import pytest

from linkwatch.config import ConfigError, loads
from linkwatch.core.flows import FLOW_MASK, flow_mark, ruleset
from linkwatch.core.routing import RoutingParams, RuleSpec, UplinkRoute, plan
from linkwatch.kernel.reconciler import rule_args

BASE = """
[uplinks.fibre]
interface = "eth1"
{fibre}
[[uplinks.fibre.probes]]
type = "icmp"
target = "203.0.113.1"
[uplinks.lte]
interface = "wwan0"
{lte}
[[uplinks.lte.probes]]
type = "icmp"
target = "203.0.113.1"
"""


def test_marks_are_the_tables_low_byte_in_bits_16_to_23():
    assert flow_mark(101) == 0x650000 and flow_mark(101) & ~FLOW_MASK == 0
    assert flow_mark(0x1FF) == 0xFF0000


def test_the_ruleset_marks_new_flows_by_interface_and_restores_the_mark_keeping_other_bits():
    text = ruleset([("eth1", 0x650000), ("wwan0", 0x660000)])
    assert text.startswith("table ip linkwatch {")
    assert 'ct mark and 0x00ff0000 == 0 oifname "eth1" ct mark set ct mark and 0xff00ffff or 0x00650000' in text
    assert "ct mark and 0x00ff0000 == 0x00660000 meta mark set meta mark and 0xff00ffff or 0x00660000" in text
    assert "hook prerouting priority mangle" in text and "hook postrouting priority mangle" in text
    with pytest.raises(ValueError, match="interface name"):
        ruleset([('eth1" drop', 0x650000)])


def route(name: str, table: int, working: bool, mark: bool = True) -> UplinkRoute:
    index = table - 100
    return UplinkRoute(name=name, ifindex=10 + index, address=f"198.51.100.{8 * index + 2}", prefixlen=29,
                       gateway=f"198.51.100.{8 * index + 1}", table=table, rule_priority=1000 + index, usable=True,
                       interface=f"up{index}", flow_mark=flow_mark(table) if mark else None, working=working)


def test_the_plan_routes_a_working_uplinks_flows_by_their_mark_and_only_then():
    rs = plan([route("fibre", 101, True), route("lte", 102, False)], [("fibre", 1)], RoutingParams())
    marked = [r for r in rs.rules if r.fwmark is not None]
    assert marked == [RuleSpec(priority=1001, table=101, fwmark=0x650000, fwmask=FLOW_MASK)]
    assert marked[0].describe() == "1001: from all fwmark 0x650000/0xff0000 lookup 101"
    assert 'oifname "up2"' in rs.flows, "a dead uplink's new flows are still marked: only the rule goes"
    rs = plan([route("fibre", 101, True, mark=False), route("lte", 102, True, mark=False)], [("fibre", 1)],
              RoutingParams())
    assert rs.flows is None and not any(r.fwmark for r in rs.rules), "sticky flows off"


def test_rule_args_carry_the_mark_and_mask():
    args = rule_args(RuleSpec(priority=1001, table=101, fwmark=0x650000, fwmask=FLOW_MASK), 77)
    assert args["fwmark"] == 0x650000 and args["fwmask"] == 0xFF0000 and args["table"] == 101


def test_tables_whose_low_bytes_clash_are_refused_while_sticky_flows_are_on():
    with pytest.raises(ConfigError) as err:
        loads(BASE.format(fibre="table = 300", lte="table = 44"))
    assert "uplinks.lte.table: got 44, expected a table whose low byte (table % 256 = 44) differs from fibre's" \
        in str(err.value)
    with pytest.raises(ConfigError, match=r"uplinks.fibre.table: got 512, expected a table whose low byte"):
        loads(BASE.format(fibre="table = 512", lte=""))
    cfg = loads("[policy]\nsticky_flows = false\n" + BASE.format(fibre="table = 300", lte="table = 44"))
    assert [u.table for u in cfg.uplinks] == [300, 44], "no marks, no clash"
    assert [u.table for u in loads(BASE.format(fibre="", lte="")).uplinks] == [101, 102]
