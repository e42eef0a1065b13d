"""Sticky flows, pure: the marks, the nftables ruleset, the fwmark rules of the routing plan, the
config's checks."""

from __future__ import annotations

import pytest

from linkwatch.config import ConfigError, loads
from linkwatch.core.flows import FLOW_MASK, describe, flow_mark, marks_in, match, ruleset, spread
from linkwatch.core.routing import RoutingParams, RuleSpec, UplinkRoute, plan, rule_target
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
    # a flow that left through the active route is movable (bit 24: move_flows_after may reset it)
    assert 'ct mark and 0x00ff0000 == 0 oifname "eth1" ct mark set ct mark and 0xfe00ffff or 0x01650000' in text
    assert "ct mark and 0x00ff0000 == 0x00660000 meta mark set meta mark and 0xfe00ffff or 0x00660000" in text
    # ... while one that came in on an uplink (below) is not
    assert "hook prerouting priority mangle" in text and "hook postrouting priority mangle" in text
    # a flow that comes in on an uplink (a port forward) is that uplink's: its replies leave through it
    assert ('ct state new ct mark and 0x00ff0000 == 0 iifname "wwan0" ct mark set ct mark and 0xfe00ffff'
            ' or 0x00660000') in text
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


def test_balance_draws_each_uplink_by_its_weight_against_those_not_yet_tried():
    assert spread([(1, 3), (2, 1)]) == [(1, 3, 4), (2, 1, 1)]
    marks = spread([(1, 1), (2, 2), (3, 1)])
    assert marks == [(1, 1, 4), (2, 2, 3), (3, 1, 1)]
    # the chance of each: 1/4; 3/4 * 2/3 = 1/2; 3/4 * 1/3 = 1/4
    p, left = {}, 1.0
    for mark, draw, total in marks:
        p[mark], left = left * draw / total, left * (1 - draw / total)
    assert p == pytest.approx({1: 0.25, 2: 0.5, 3: 0.25}) and left == pytest.approx(0.0)


def test_in_balance_mode_new_lan_flows_get_a_mark_by_weight_and_keep_it():
    rs = plan([route("fibre", 101, True), route("lte", 102, True)], [("fibre", 3), ("lte", 1)], RoutingParams())
    lines = [line.strip() for line in rs.flows.splitlines()]
    choose = [line for line in lines if line.startswith("ct state new") and "iifname !=" in line]
    assert choose == [
        'ct state new ct mark and 0x00ff0000 == 0 iifname != { "up1", "up2" } fib daddr type != local numgen random mod 4 < 3 '
        'ct mark set ct mark and 0xfe00ffff or 0x01650000',
        'ct state new ct mark and 0x00ff0000 == 0 iifname != { "up1", "up2" } fib daddr type != local '
        'ct mark set ct mark and 0xfe00ffff or 0x01660000'], "balanced flows are movable"
    assert lines.index(choose[-1]) < min(i for i, line in enumerate(lines) if "meta mark set" in line), \
        "chosen before the mark is restored: the flow's first packet is routed by it too"
    one = plan([route("fibre", 101, True), route("lte", 102, False)], [("fibre", 3), ("lte", 1)], RoutingParams())
    assert "iifname !=" not in one.flows, "one uplink left that works: nothing to spread"
    failover = plan([route("fibre", 101, True), route("lte", 102, True)], [("fibre", 1)], RoutingParams())
    assert "iifname !=" not in failover.flows and "numgen" not in failover.flows


# ---- policy rules --------------------------------------------------------------------------------

RULES = BASE.format(fibre="", lte="") + """
[[rules]]
name = "voip"
src = ["192.168.1.0/24", "10.1.1.7"]
proto = "udp"
dport = [5060, "10000-20000"]
dscp = "ef"
uplinks = ["lte", "fibre"]

[[rules]]
iif = "br-lan"
mark = "0x10/0xf0"
uplinks = ["fibre"]
fallback = "drop"

[[rules]]
name = "spread"
proto = "tcp"
sport = 22
uplinks = ["fibre", "lte"]
balance = true
"""


def test_policy_rules_parse_with_their_defaults():
    cfg = loads(RULES)
    voip, second, spread_ = cfg.rules
    assert (voip.src, voip.dport, voip.dscp, voip.uplinks) == (
        ("192.168.1.0/24", "10.1.1.7/32"), ((5060, 5060), (10000, 20000)), 46, ("lte", "fibre"))
    assert (second.name, second.mark, second.iif, second.fallback, second.proto) == (
        "rule2", (0x10, 0xF0), "br-lan", "drop", "any")
    assert spread_.balance and spread_.sport == ((22, 22),)


@pytest.mark.parametrize("rule, path, says", [
    ('uplinks = ["dsl"]', "rules[0].uplinks", "dsl is not one"),
    ('proto = "udp"', "rules[0].uplinks", "missing"),
    ('dport = 80\nuplinks = ["fibre"]', "rules[0].dport", 'expected proto "tcp" or "udp"'),
    ('proto = "tcp"\ndport = "90-80"\nuplinks = ["fibre"]', "rules[0].dport", "not a rising range"),
    ('src = "192.168.1.1/24"\nuplinks = ["fibre"]', "rules[0].src", "host bits are set"),
    ('mark = "0x10000/0xff0000"\nuplinks = ["fibre"]', "rules[0].mark", "linkwatch's own flow marks"),
    ('mark = "0x11/0x10"\nuplinks = ["fibre"]', "rules[0].mark", "outside the mask"),
    ('dscp = 64\nuplinks = ["fibre"]', "rules[0].dscp", "DSCP value 0..63"),
    ('uplinks = ["fibre", "fibre"]', "rules[0].uplinks", "appears twice"),
    ('fallback = "lte"\nuplinks = ["fibre"]', "rules[0].fallback", '"default", "drop"'),
    ('colour = "red"\nuplinks = ["fibre"]', "rules[0].colour", "unknown key"),
    ('iif = "wwan0"\nuplinks = ["fibre"]', "rules[0].iif", "uplink lte's interface"),  # could never match
    ('mark = "0x1000000/0x1000000"\nuplinks = ["fibre"]', "rules[0].mark", "linkwatch's own flow marks"),
])
def test_a_bad_policy_rule_is_named_by_its_key_path(rule, path, says):
    with pytest.raises(ConfigError) as e:
        loads(BASE.format(fibre="", lte="") + "\n[[rules]]\n" + rule + "\n")
    issue = next(i for i in e.value.issues if i.path == path)
    assert says in issue.message, issue.message


def test_policy_rules_need_sticky_flows_and_distinct_names():
    with pytest.raises(ConfigError, match="sticky_flows = false"):
        loads("[policy]\nsticky_flows = false\n" + RULES)
    with pytest.raises(ConfigError) as e:
        loads(BASE.format(fibre="", lte="") + '\n[[rules]]\nuplinks = ["fibre"]\n[[rules]]\nname = "rule1"\n'
              'uplinks = ["lte"]\n')
    assert [i.path for i in e.value.issues] == ["rules[1].name"]


def test_a_rule_sends_new_flows_to_the_first_working_uplink_of_its_list_or_its_fallback():
    voip, second, spread_ = loads(RULES).rules
    both = [route("fibre", 101, True), route("lte", 102, True)]
    lines = [x.strip() for x in plan(both, [("fibre", 1)], RoutingParams(), loads(RULES).rules).flows.splitlines()]
    assert ('ct state new ct mark and 0x00ff0000 == 0 iifname != { "up1", "up2" } fib daddr type != local '
            'ip saddr { 192.168.1.0/24, 10.1.1.7/32 } meta l4proto udp udp dport { 5060, 10000-20000 } ip dscp 46 '
            'ct mark set ct mark and 0xfe00ffff or 0x00660000') in lines, "voip: lte first"
    assert any('iifname "br-lan" meta mark and 0x000000f0 == 0x00000010 ct mark set' in x for x in lines)
    assert sum("meta l4proto tcp tcp sport { 22 }" in x for x in lines) == 2, "spread over both"
    rule_lines = [i for i, x in enumerate(lines) if "ct state new" in x]
    assert max(rule_lines) < min(i for i, x in enumerate(lines) if "meta mark set" in x)

    lte_dead = [route("fibre", 101, True), route("lte", 102, False)]
    by_name = {r.name: r for r in lte_dead}
    assert rule_target(voip, by_name) == ("fibre",) and rule_target(spread_, by_name) == ("fibre",)
    fibre_dead = {r.name: r for r in [route("fibre", 101, False), route("lte", 102, True)]}
    assert rule_target(second, fibre_dead) == ()
    text = plan(list(fibre_dead.values()), [("lte", 1)], RoutingParams(), loads(RULES).rules).flows
    chains = text.split("\tchain ")
    restore, refuse = next(c for c in chains if c.startswith("restore")), next(c for c in chains if c.startswith("refuse"))
    assert ('fib daddr type != local iifname "br-lan" meta mark and 0x000000f0 == 0x00000010 accept' in restore
            and " drop" not in restore), "left unmarked by later rules and balancing, not dropped on the way in"
    assert "type filter hook forward" in refuse and (
        'ct state new ct mark and 0x00ff0000 == 0 oifname { "up1", "up2" } iifname "br-lan" meta mark and 0x000000f0 '
        '== 0x00000010 drop') in refuse, "fallback drop: only on its way out of an uplink"
    assert "chain refuse" not in plan(both, [("fibre", 1)], RoutingParams(), loads(RULES).rules).flows
    assert describe(voip) == "src 192.168.1.0/24,10.1.1.7/32 udp dport 5060,10000-20000 dscp 46"
    assert describe(second) == "iif br-lan mark 0x10/0xf0"


def test_a_rule_mark_without_a_mask_matches_every_bit_but_linkwatchs_own():
    """Review finding 8: ``mark = "0x10"`` (the documented form) was always refused (mask 0xffffffff
    overlapped the flow bits)."""
    rule = loads(BASE.format(fibre="", lte="") + '[[rules]]\nmark = "0x10"\nuplinks = ["fibre"]\n').rules[0]
    assert rule.mark == (0x10, 0xFE00FFFF)
    assert "meta mark and 0xfe00ffff == 0x00000010" in match(rule)


def test_the_marks_of_a_previous_run_are_read_from_the_ruleset_or_the_kernels_listing():
    text = ruleset([("up1", flow_mark(101)), ("ppp0", flow_mark(102))], balance=[(flow_mark(101), 1), (flow_mark(102), 1)])
    assert marks_in(text) == {"up1": 0x650000, "ppp0": 0x660000}
    listed = ('\tchain remember {\n\t\ttype filter hook postrouting priority mangle; policy accept;\n'
              '\t\tct mark & 0x00ff0000 == 0x00000000 oifname "up1" ct mark set ct mark & 0xff65ffff | 0x01650000\n'
              '\t}\n')  # as `nft list table ip linkwatch` prints it (seen on this machine's nft)
    assert marks_in(listed) == {"up1": 0x650000} and marks_in("") == {}


def test_without_nftables_no_flow_table_is_no_refusal(monkeypatch):
    """Sticky flows off and no libnftables (a pip install, say): there is no table of linkwatch's to
    look for or remove, and that is no error. It was one at every apply, so every plan counted as
    refused and the kernel was dumped at every tick (review of the event-driven repair)."""
    from linkwatch.kernel import nft
    from linkwatch.kernel.reconciler import ApplyReport, Reconciler

    def missing():
        raise nft.NftError("libnftables is not installed (test); install the libnftables1 package")

    monkeypatch.setattr(nft._Lib, "get", staticmethod(missing))
    rec = Reconciler.__new__(Reconciler)  # no netlink: only the flow table's part is exercised
    rec.netns, rec._flows, rec._flows_applied = None, None, None
    report = ApplyReport()
    rec._apply_flows(None, report)
    assert report.errors == [] and report.removed == []
    rec._apply_flows("table ip linkwatch {}", report)  # wanted, it is an error all the same
    assert len(report.errors) == 1 and "libnftables is not installed" in report.errors[0]
