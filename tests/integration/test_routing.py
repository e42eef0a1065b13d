"""Routing: plan() pure tests, and the reconciler against the real kernel in a throwaway namespace.

Topology of the root tests (no packet leaves the namespaces; only route lookups are made):

    lwtA-rt (router)                        lwtA-rtp (providers)
      wan1 198.51.100.2/24  <-- veth -->      p1 198.51.100.1/24
      wan2 203.0.113.2/24   <-- veth -->      p2 203.0.113.1/24
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nsutil  # noqa: E402

from linkwatch.core.routing import (  # noqa: E402
    DEFAULT_DST,
    SCOPE_LINK,
    NextHop,
    RouteSet,
    RouteSpec,
    RoutingError,
    RoutingParams,
    RuleSpec,
    UplinkRoute,
    plan,
)
from linkwatch.kernel.reconciler import Reconciler, route_from_msg, rule_from_msg  # noqa: E402

PARAMS = RoutingParams()
RT, PEER = "lwtA-rt", "lwtA-rtp"
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def up(name, ifindex, address, gateway, table, prio, usable=True, prefixlen=24):
    return UplinkRoute(name, ifindex, address, prefixlen, gateway, table, prio, usable)


WAN1 = up("wan1", 2, "198.51.100.2", "198.51.100.1", 101, 1010)
WAN2 = up("wan2", 3, "203.0.113.2", "203.0.113.1", 102, 1020)


def unreachable(table):
    return RouteSpec(table=table, dst=DEFAULT_DST, kind="unreachable", metric=PARAMS.unreachable_metric)


# --------------------------------------------------------------------------- plan (pure)


def test_plan_two_uplinks_one_active_is_exactly_the_model():
    d = plan([WAN1, WAN2], [("wan1", 1)], PARAMS)
    assert d.routes == {
        RouteSpec(101, DEFAULT_DST, gateway="198.51.100.1", ifindex=2),
        RouteSpec(101, "198.51.100.0/24", ifindex=2, prefsrc="198.51.100.2", scope=SCOPE_LINK),
        unreachable(101),
        RouteSpec(102, DEFAULT_DST, gateway="203.0.113.1", ifindex=3),
        RouteSpec(102, "203.0.113.0/24", ifindex=3, prefsrc="203.0.113.2", scope=SCOPE_LINK),
        unreachable(102),
        RouteSpec(100, DEFAULT_DST, gateway="198.51.100.1", ifindex=2),
    }
    assert d.rules == {
        RuleSpec(1000, 254, suppress_prefixlen=0),
        RuleSpec(1010, 101, src="198.51.100.2/32"),
        RuleSpec(1020, 102, src="203.0.113.2/32"),
        RuleSpec(1100, 100),
    }


def test_plan_several_active_gives_weighted_multipath_in_preference_order():
    d = plan([WAN1, WAN2], [("wan2", 3), ("wan1", 1)], PARAMS)
    (active,) = [r for r in d.routes if r.table == 100]
    assert active.gateway is None and active.ifindex is None
    assert active.nexthops == (NextHop("203.0.113.1", 3, 3), NextHop("198.51.100.1", 2, 1))


def test_plan_unusable_uplink_keeps_only_unreachable_and_connected_and_is_skipped():
    dead = up("wan1", 2, "198.51.100.2", "198.51.100.1", 101, 1010, usable=False)
    d = plan([dead, WAN2], [("wan1", 1), ("wan2", 1)], PARAMS)
    assert {r for r in d.routes if r.table == 101} == {
        unreachable(101),
        RouteSpec(101, "198.51.100.0/24", ifindex=2, prefsrc="198.51.100.2", scope=SCOPE_LINK),
    }
    (active,) = [r for r in d.routes if r.table == 100]
    assert (active.gateway, active.ifindex, active.nexthops) == ("203.0.113.1", 3, ())
    # the probe rule stays, so a probe from the dead uplink's address hits its unreachable route
    assert RuleSpec(1010, 101, src="198.51.100.2/32") in d.rules


def test_plan_missing_interface_gets_only_unreachable():
    gone = UplinkRoute("wan1", None, None, None, None, 101, 1010, False)
    d = plan([gone, WAN2], [("wan1", 1)], PARAMS)
    assert {r for r in d.routes if r.table == 101} == {unreachable(101)}
    assert not [r for r in d.rules if r.table == 101]


def test_plan_nothing_active_leaves_active_table_empty_but_keeps_rules():
    d = plan([WAN1, WAN2], [], PARAMS)
    assert not [r for r in d.routes if r.table == 100]
    assert RuleSpec(1100, 100) in d.rules and RuleSpec(1000, 254, suppress_prefixlen=0) in d.rules


def test_plan_skips_unknown_and_duplicate_active_names():
    d = plan([WAN1, WAN2], [("nope", 1), ("wan2", 1), ("wan2", 5)], PARAMS)
    (active,) = [r for r in d.routes if r.table == 100]
    assert (active.gateway, active.nexthops) == ("203.0.113.1", ())


def test_plan_is_deterministic_and_hashable():
    a = plan([WAN1, WAN2], [("wan1", 2), ("wan2", 1)], PARAMS)
    b = plan([WAN2, WAN1], [("wan1", 2), ("wan2", 1)], PARAMS)
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize(
    "uplinks, active, needle",
    [
        ([WAN1, up("wan2", 3, "203.0.113.2", "203.0.113.1", 101, 1020)], [], "table=101"),
        ([WAN1, up("wan2", 3, "203.0.113.2", "203.0.113.1", 102, 1010)], [], "rule_priority=1010"),
        ([up("wan1", 2, "198.51.100.2", "198.51.100.1", 101, 1100)], [], "rule_priority=1100"),
        ([up("wan1", 2, "198.51.100.2", "198.51.100.1", 100, 1010)], [], "active_table"),
        ([up("wan1", 2, "198.51.100.2", "198.51.100.1", 254, 1010)], [], "table=254"),
        ([up("wan1", 2, "198.51.100.300", "198.51.100.1", 101, 1010)], [], "198.51.100.300"),
        ([up("wan1", 2, "198.51.100.2", "gw", 101, 1010)], [], "'gw'"),
        ([WAN1, WAN1], [], "used twice"),
        ([WAN1], [("wan1", 0)], "weight=0"),
        ([WAN1], [("wan1", 257)], "weight=257"),
    ],
)
def test_plan_rejects_inconsistent_input_naming_the_bad_value(uplinks, active, needle):
    with pytest.raises(RoutingError, match=needle):
        plan(uplinks, active, PARAMS)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"protocol": 2}, "protocol=2"),
        ({"active_table": 254}, "active_table=254"),
        ({"suppress_priority": 1200}, "suppress_priority=1200"),
        ({"active_priority": 40000}, "active_priority=40000"),
    ],
)
def test_params_are_validated(kwargs, needle):
    with pytest.raises(RoutingError, match=needle):
        RoutingParams(**kwargs)


# --------------------------------------------------------------------------- kernel


def dump_ours(ns, protocol=PARAMS.protocol):
    """Independent dump (a separate pyroute2 socket): our routes and rules, plus proto checks."""
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        routes = [m for m in ipr.route("dump", family=socket.AF_INET) if m["proto"] == protocol]
        rules = [m for m in ipr.rule("dump", family=socket.AF_INET) if m.get_attr("FRA_PROTOCOL") == protocol]
    return RouteSet(frozenset(map(route_from_msg, routes)), frozenset(map(rule_from_msg, rules)))


def dump_table(ns, table):
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        msgs = [m for m in ipr.route("dump", family=socket.AF_INET) if m.get_attr("RTA_TABLE") == table]
    return sorted((m["proto"], repr(route_from_msg(m))) for m in msgs)


def dump_rules_all(ns):
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        return sorted(
            (m.get_attr("FRA_PROTOCOL"), repr(rule_from_msg(m))) for m in ipr.rule("dump", family=socket.AF_INET)
        )


def route_get(ns, dst, src=None):
    """The kernel's answer to `ip route get dst [from src]`: (gateway, oif) or the errno."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute(netns=ns, flags=0) as ipr:
        try:
            kw = {"dst": dst}
            if src:
                kw["src"] = src
            (msg,) = ipr.route("get", **kw)
        except NetlinkError as err:
            return err.code
    return msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")


class Lab:
    def __init__(self):
        nsutil.make_ns(RT)
        nsutil.make_ns(PEER)
        nsutil.veth(RT, "wan1", PEER, "p1", "198.51.100.2/24", "198.51.100.1/24")
        nsutil.veth(RT, "wan2", PEER, "p2", "203.0.113.2/24", "203.0.113.1/24")
        self.i1 = nsutil.ifindex(RT, "wan1")
        self.i2 = nsutil.ifindex(RT, "wan2")
        # a DHCP-style default in main: the last resort, never ours to touch
        nsutil.ip(RT, "route", "add", "default", "via", "198.51.100.1", "proto", "dhcp", "metric", "100")

    def uplinks(self, usable1=True, usable2=True):
        return [
            up("wan1", self.i1, "198.51.100.2", "198.51.100.1", 101, 1010, usable=usable1),
            up("wan2", self.i2, "203.0.113.2", "203.0.113.1", 102, 1020, usable=usable2),
        ]

    def plan(self, active, **kw):
        return plan(self.uplinks(**kw), active, PARAMS)


@pytest.fixture
def lab():
    try:
        yield Lab()
    finally:
        nsutil.del_ns(RT)
        nsutil.del_ns(PEER)


@pytest.fixture
def rec(lab):
    r = Reconciler(PARAMS, netns=RT)
    try:
        yield r
    finally:
        r.close()


@root
def test_apply_creates_exactly_the_plan_all_tagged_with_our_protocol(lab, rec):
    desired = lab.plan([("wan1", 1)])
    report = rec.apply(desired)
    assert report.errors == [] and report.changed
    assert len(report.added) == len(desired.routes) + len(desired.rules)
    assert dump_ours(RT) == desired  # an independent socket sees exactly the plan
    assert rec.current() == desired
    # and the rules really are what `ip rule` would show (suppress_prefixlength 0 on main)
    out = nsutil.ip(RT, "rule", "show").stdout
    assert "1000:\tfrom all lookup main suppress_prefixlength 0 proto 77" in out
    assert "1010:\tfrom 198.51.100.2 lookup 101 proto 77" in out
    assert "1100:\tfrom all lookup 100 proto 77" in out


@root
def test_second_apply_and_a_restarted_reconciler_change_nothing(lab, rec):
    desired = lab.plan([("wan1", 1)])
    rec.apply(desired)
    again = rec.apply(desired)
    assert not again.changed and again.errors == []
    with Reconciler(PARAMS, netns=RT) as fresh:  # a daemon restart (even after kill -9)
        assert fresh.current() == desired
        report = fresh.apply(desired)
        assert not report.changed and report.errors == []
    assert dump_ours(RT) == desired


@root
def test_route_deleted_by_hand_is_put_back(lab, rec):
    desired = lab.plan([("wan1", 1)])
    rec.apply(desired)
    nsutil.ip(RT, "route", "del", "default", "table", "100")
    nsutil.ip(RT, "rule", "del", "priority", "1010")
    assert dump_ours(RT) != desired
    report = rec.apply(desired)
    assert any("table 100" in line for line in report.added)
    assert any(line.startswith("rule 1010:") for line in report.added)
    assert dump_ours(RT) == desired


def _route_events(ns):
    """A raw rtnetlink socket in ``ns`` subscribed to IPv4 route events (to catch deletes)."""
    from pyroute2.netns import create_socket
    from pyroute2.netlink.rtnl import RTMGRP_IPV4_ROUTE

    sock = create_socket(netns=ns, family=socket.AF_NETLINK, socket_type=socket.SOCK_RAW, proto=0, flags=0)
    sock.bind((0, RTMGRP_IPV4_ROUTE))
    sock.setblocking(False)
    return sock


def _drain(sock):
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    marshal, msgs = MarshalRtnl(), []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return msgs
        msgs.extend(marshal.parse(data))


@root
def test_switching_active_uplink_replaces_the_route_in_place(lab, rec):
    rec.apply(lab.plan([("wan1", 1)]))
    assert rec.active_gateways() == [("198.51.100.1", lab.i1)]
    events = _route_events(RT)
    try:
        report = rec.apply(lab.plan([("wan2", 1)]))
        msgs = _drain(events)
    finally:
        events.close()
    assert report.removed == [] and report.added == [] and report.errors == []
    assert len(report.replaced) == 1 and "table 100" in report.replaced[0]
    assert rec.active_gateways() == [("203.0.113.1", lab.i2)]
    # never a moment without a default route: no delete in the active table, one new route
    in_active = [m for m in msgs if m.get_attr("RTA_TABLE") == 100]
    assert [m["event"] for m in in_active] == ["RTM_NEWROUTE"]
    assert route_get(RT, "10.200.0.1") == ("203.0.113.1", lab.i2)


@root
def test_multipath_with_weights(lab, rec):
    desired = lab.plan([("wan1", 3), ("wan2", 1)])
    assert rec.apply(desired).errors == []
    assert sorted(rec.active_gateways()) == sorted([("198.51.100.1", lab.i1), ("203.0.113.1", lab.i2)])
    out = nsutil.ip(RT, "route", "show", "table", "100").stdout
    assert "nexthop via 198.51.100.1 dev wan1 weight 3" in out
    assert "nexthop via 203.0.113.1 dev wan2 weight 1" in out
    # back to a single route: replaced in place, nothing removed
    report = rec.apply(lab.plan([("wan2", 1)]))
    assert len(report.replaced) == 1 and report.removed == []
    assert rec.active_gateways() == [("203.0.113.1", lab.i2)]


@root
def test_unusable_uplink_keeps_only_unreachable_default(lab, rec):
    rec.apply(lab.plan([("wan1", 1)]))
    nsutil.ip(PEER, "link", "set", "p1", "down")  # carrier loss on wan1
    desired = lab.plan([("wan1", 1), ("wan2", 1)], usable1=False)
    report = rec.apply(desired)
    assert report.errors == []
    assert any("default via 198.51.100.1" in line and "table 101" in line for line in report.removed)
    table101 = {r for r in rec.current().routes if r.table == 101}
    assert {r.kind for r in table101 if r.dst == DEFAULT_DST} == {"unreachable"}
    assert rec.active_gateways() == [("203.0.113.1", lab.i2)]
    # a probe from the dead uplink's address must not leak out through wan2
    assert route_get(RT, "10.200.0.1", src="198.51.100.2") == 113  # EHOSTUNREACH


@root
def test_admin_down_uplink_is_deferred_not_an_error(lab, rec):
    nsutil.ip(RT, "link", "set", "wan2", "down")
    desired = lab.plan([("wan1", 1)], usable2=False)
    report = rec.apply(desired)
    assert report.errors == []
    assert any("203.0.113.0/24" in line for line in report.deferred)
    nsutil.ip(RT, "link", "set", "wan2", "up")
    report = rec.apply(desired)
    assert any("203.0.113.0/24" in line for line in report.added)
    assert dump_ours(RT) == desired


@root
def test_one_bad_object_does_not_stop_the_rest(lab, rec):
    good = lab.plan([("wan1", 1)])
    bad = RouteSpec(103, DEFAULT_DST, gateway="198.51.100.1", ifindex=9999)
    report = rec.apply(RouteSet(good.routes | {bad}, good.rules))
    assert len(report.errors) == 1 and "#9999" in report.errors[0]
    assert dump_ours(RT) == good


@root
def test_refused_replacement_keeps_the_old_active_route(lab, rec):
    rec.apply(lab.plan([("wan1", 1)]))
    good = lab.plan([("wan2", 1)])
    broken_active = RouteSpec(100, DEFAULT_DST, gateway="10.55.0.1", ifindex=lab.i2)  # not on-link
    desired = RouteSet(frozenset(r for r in good.routes if r.table != 100) | {broken_active}, good.rules)
    report = rec.apply(desired)
    assert len(report.errors) == 1 and "10.55.0.1" in report.errors[0]
    assert report.removed == []
    assert rec.active_gateways() == [("198.51.100.1", lab.i1)]  # traffic still has a route


@root
def test_main_table_and_foreign_objects_are_never_touched(lab, rec):
    nsutil.ip(RT, "route", "add", "10.9.9.0/24", "via", "198.51.100.1", "table", "101", "proto", "static")
    nsutil.ip(RT, "route", "add", "10.9.8.0/24", "via", "203.0.113.1", "table", "100", "proto", "boot")
    nsutil.ip(RT, "rule", "add", "priority", "1050", "from", "10.1.1.0/24", "lookup", "101")
    main_before = dump_table(RT, 254)
    rec.apply(lab.plan([("wan1", 1)]))
    rec.apply(lab.plan([("wan2", 1), ("wan1", 2)]))
    report = rec.withdraw()
    assert report.errors == [] and report.added == []
    assert dump_ours(RT) == RouteSet()
    assert dump_table(RT, 254) == main_before
    assert [p for p, _ in dump_table(RT, 101)] == [4]  # the "proto static" route survived
    assert [p for p, _ in dump_table(RT, 100)] == [3]  # the "proto boot" route survived
    assert any("10.1.1.0/24" in r for _, r in dump_rules_all(RT))
    # the main table's DHCP default is the last resort once we are gone
    assert route_get(RT, "10.200.0.1") == ("198.51.100.1", lab.i1)


@root
def test_probe_from_uplink_address_resolves_through_its_own_table(lab, rec):
    rec.apply(lab.plan([("wan1", 1)]))
    assert route_get(RT, "10.200.0.1") == ("198.51.100.1", lab.i1)  # active
    assert route_get(RT, "10.200.0.1", src="203.0.113.2") == ("203.0.113.1", lab.i2)  # standby probe
    assert route_get(RT, "10.200.0.1", src="198.51.100.2") == ("198.51.100.1", lab.i1)
    # connected destinations still win over the uplink tables (suppress_prefixlength 0)
    assert route_get(RT, "198.51.100.1", src="203.0.113.2") == (None, lab.i1)


@root
def test_forget_neighbour_deletes_entry_and_ignores_missing(lab, rec):
    nsutil.ip(RT, "neigh", "replace", "198.51.100.1", "lladdr", "02:00:00:00:00:01", "dev", "wan1", "nud", "stale")
    assert "198.51.100.1" in nsutil.ip(RT, "neigh", "show", "dev", "wan1").stdout
    rec.forget_neighbour(lab.i1, "198.51.100.1")
    assert "198.51.100.1" not in nsutil.ip(RT, "neigh", "show", "dev", "wan1").stdout
    rec.forget_neighbour(lab.i1, "198.51.100.1")  # already gone: fine
    with pytest.raises(RoutingError, match="not-an-ip"):
        rec.forget_neighbour(lab.i1, "not-an-ip")
    # IPv6: the RA gateway's entry (issue 12)
    nsutil.ip(RT, "-6", "neigh", "replace", "fe80::1", "lladdr", "02:00:00:00:00:01", "dev", "wan1", "nud", "stale")
    assert "fe80::1" in nsutil.ip(RT, "-6", "neigh", "show", "dev", "wan1").stdout
    rec.forget_neighbour(lab.i1, "fe80::1")
    assert "fe80::1" not in nsutil.ip(RT, "-6", "neigh", "show", "dev", "wan1").stdout
    rec.forget_neighbour(lab.i1, "fe80::1")  # already gone: fine


@root
def test_reconciler_works_from_inside_a_running_event_loop(lab, rec):
    import asyncio

    async def engine_like():
        return rec.apply(lab.plan([("wan1", 1)]))

    report = asyncio.run(engine_like())
    assert report.errors == [] and report.changed
    print(f"apply (initial) took {report.elapsed_ms:.2f} ms")
    steady = rec.apply(lab.plan([("wan1", 1)]))
    print(f"apply (no change) took {steady.elapsed_ms:.2f} ms")
    switch = rec.apply(lab.plan([("wan2", 1)]))
    print(f"apply (switch) took {switch.elapsed_ms:.2f} ms")
    assert switch.replaced


@root
def test_missing_namespace_is_a_routing_error():
    with pytest.raises(RoutingError, match="lwtA-does-not-exist"):
        Reconciler(PARAMS, netns="lwtA-does-not-exist")
    assert not nsutil.ns_exists("lwtA-does-not-exist")


# --------------------------------------------------------------------------- sticky flows


def sticky(lab, working2=True):
    from dataclasses import replace

    from linkwatch.core.flows import flow_mark

    u1, u2 = lab.uplinks()
    return [replace(u1, interface="wan1", flow_mark=flow_mark(101), working=True),
            replace(u2, interface="wan2", flow_mark=flow_mark(102), working=working2)]


def nft_table(ns, name="linkwatch"):
    res = nsutil.run_in(ns, "nft", "list", "table", "ip", name, check=False)
    return res.stdout if res.returncode == 0 else None


def route_get_marked(ns, dst, mark):
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        (msg,) = ipr.route("get", dst=dst, mark=mark)
    return msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")


@root
def test_sticky_flows_table_and_rules_are_owned_like_the_routes(lab, rec):
    """The nftables table and the fwmark rules: created, routing a marked flow through its own
    uplink whichever is active, put back when deleted by hand, the rule gone while its uplink does
    not work, everything removed on withdraw; another table is never touched."""
    nsutil.nft(RT, "table ip operator {\n chain c {\n type filter hook forward priority 0; policy accept;\n }\n}\n")
    desired = plan(sticky(lab), [("wan1", 1)], PARAMS)
    report = rec.apply(desired)
    assert report.errors == [] and "nft table ip linkwatch" in report.added
    from dataclasses import replace

    assert dump_ours(RT) == replace(desired, flows=None), "routes and rules exactly as planned"
    rules = nsutil.ip(RT, "rule", "show").stdout
    assert "1020:\tfrom all fwmark 0x660000/0xff0000 lookup 102 proto 77" in rules
    listed = nft_table(RT)
    assert 'oifname "wan2" ct mark set ct mark & 0xff66ffff | 0x01660000' in listed
    import asyncio

    assert asyncio.run(rec.flow_marks_async()) == {"wan1": 0x650000, "wan2": 0x660000}, "what a restart reads back"
    # a flow marked for wan2 leaves through wan2 although wan1 is active; an unmarked one through wan1
    assert route_get_marked(RT, "10.200.0.1", 0x660000) == ("203.0.113.1", lab.i2)
    assert route_get_marked(RT, "10.200.0.1", 0x12660034) == ("203.0.113.1", lab.i2), "other bits are not ours"
    assert route_get(RT, "10.200.0.1") == ("198.51.100.1", lab.i1)
    assert not rec.apply(desired).changed, "nothing to do the second time"
    nsutil.run_in(RT, "nft", "delete", "table", "ip", "linkwatch")
    report = rec.apply(desired)
    assert "nft table ip linkwatch" in report.added and nft_table(RT) == listed, "put back whole"
    nsutil.run_in(RT, "nft", "add", "rule", "ip", "linkwatch", "restore", "counter")
    assert "nft table ip linkwatch" in rec.apply(desired).replaced and nft_table(RT) == listed, "an edit is undone"
    rec.apply(plan(sticky(lab, working2=False), [("wan1", 1)], PARAMS))
    assert "fwmark 0x660000" not in nsutil.ip(RT, "rule", "show").stdout, "wan2 does not work: its flows move"
    assert route_get_marked(RT, "10.200.0.1", 0x660000) == ("198.51.100.1", lab.i1)
    report = rec.withdraw()
    assert "nft table ip linkwatch" in report.removed and nft_table(RT) is None
    assert nft_table(RT, "operator") is not None, "the operator's table is not linkwatch's"


# --------------------------------------------------------------------------- point-to-point uplinks

PTP = UplinkRoute("ptp", 9, "10.64.0.2", 32, None, 103, 1030, True, interface="tun0", pointopoint=True)


def test_plan_a_point_to_point_uplink_routes_default_dev_without_a_gateway():
    d = plan([WAN1, PTP], [("ptp", 1)], PARAMS)
    assert RouteSpec(103, DEFAULT_DST, ifindex=9, scope=SCOPE_LINK) in d.routes
    assert RouteSpec(100, DEFAULT_DST, ifindex=9, scope=SCOPE_LINK) in d.routes
    assert RuleSpec(1030, 103, src="10.64.0.2/32") in d.rules
    both = plan([WAN1, PTP], [("wan1", 2), ("ptp", 1)], PARAMS)
    active = next(r for r in both.routes if r.table == 100)
    assert active.nexthops == (NextHop("198.51.100.1", 2, 2), NextHop(None, 9, 1))
    assert active.describe().endswith("nexthop dev #9 weight 1")
    no_gateway = UplinkRoute("eth", 9, "10.64.0.2", 24, None, 103, 1030, True)
    assert not any(r.table == 103 and r.kind == "unicast" and r.dst == DEFAULT_DST
                   for r in plan([no_gateway], [("eth", 1)], PARAMS).routes), "an Ethernet needs its gateway"


@root
def test_a_point_to_point_uplink_that_disappears_and_comes_back_renumbered(lab, rec):
    """A tun device (what a VPN or LTE raw-IP looks like; PPP likewise): facts say point-to-point,
    the routes are "default dev tun0", and a re-created device with a new address is followed."""
    import asyncio

    from linkwatch.kernel.facts import read_facts_async

    def make(local: str, peer: str) -> int:
        nsutil.ip(RT, "tuntap", "add", "dev", "tun0", "mode", "tun")
        nsutil.ip(RT, "addr", "add", local, "peer", peer, "dev", "tun0")
        nsutil.ip(RT, "link", "set", "tun0", "up")
        return nsutil.ifindex(RT, "tun0")

    index = make("10.64.0.2", "10.64.0.1")
    facts = asyncio.run(read_facts_async(["tun0"], RT, PARAMS.protocol))["tun0"]
    assert facts.pointopoint and facts.gateway is None and facts.address == "10.64.0.2" and facts.ifindex == index
    ptp = UplinkRoute("ptp", index, facts.address, facts.prefixlen, None, 103, 1030, True, interface="tun0",
                      pointopoint=True)
    assert rec.apply(plan([lab.uplinks()[0], ptp], [("ptp", 1), ("wan1", 1)], PARAMS)).errors == []
    out = nsutil.ip(RT, "route", "show", "table", "100").stdout
    assert "nexthop dev tun0 weight 1" in out and "nexthop via 198.51.100.1 dev wan1 weight 1" in out
    assert sorted(rec.active_gateways()) == sorted([("198.51.100.1", lab.i1), ("", index)]), "a restart adopts it"
    rec.apply(plan([lab.uplinks()[0], ptp], [("ptp", 1)], PARAMS))
    assert "default dev tun0 proto 77 scope link" in nsutil.ip(RT, "route", "show", "table", "103").stdout
    assert route_get(RT, "10.200.0.1") == (None, index)

    nsutil.ip(RT, "link", "del", "tun0")  # the session drops: the device is gone
    assert asyncio.run(read_facts_async(["tun0"], RT, PARAMS.protocol))["tun0"].ifindex is None
    index2 = make("10.64.0.6", "10.64.0.5")  # it comes back with a new address
    facts = asyncio.run(read_facts_async(["tun0"], RT, PARAMS.protocol))["tun0"]
    assert (facts.ifindex, facts.address, facts.pointopoint) == (index2, "10.64.0.6", True)
    ptp = UplinkRoute("ptp", index2, facts.address, facts.prefixlen, None, 103, 1030, True, interface="tun0",
                      pointopoint=True)
    assert rec.apply(plan([lab.uplinks()[0], ptp], [("ptp", 1)], PARAMS)).errors == []
    assert route_get(RT, "10.200.0.1") == (None, index2)
    assert route_get(RT, "10.200.0.1", src="10.64.0.6") == (None, index2)


# --------------------------------------------------------------------------- IPv6 (issue 12)


def dump_ours6(ns, protocol=PARAMS.protocol):
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        routes = [m for m in ipr.route("dump", family=socket.AF_INET6) if m["proto"] == protocol]
        rules = [m for m in ipr.rule("dump", family=socket.AF_INET6) if m.get_attr("FRA_PROTOCOL") == protocol]
    return RouteSet(frozenset(map(route_from_msg, routes)), frozenset(map(rule_from_msg, rules)))


def route_get6(ns, dst, src=None):
    out = nsutil.ip(ns, "-6", "route", "get", dst, *(["from", src] if src else [])).stdout
    return out.split(" proto")[0].strip()


def dual_stack(lab):
    """IPv6 on both uplinks: 2001:db8:1::2/64 and 2001:db8:2::2/64, each provider fe80::1 (as a
    router advertisement would give it), plus an RA-like default in the main table."""
    for i, (wan, peer) in enumerate((("wan1", "p1"), ("wan2", "p2")), start=1):
        nsutil.ip(RT, "-6", "addr", "add", f"2001:db8:{i}::2/64", "dev", wan, "nodad")
        nsutil.ip(PEER, "-6", "addr", "add", f"2001:db8:{i}::1/64", "dev", peer, "nodad")
        nsutil.ip(PEER, "-6", "addr", "add", "fe80::1/64", "dev", peer, "nodad")
    nsutil.ip(RT, "-6", "route", "add", "default", "via", "fe80::1", "dev", "wan1", "proto", "ra", "metric", "1024")
    return [up("wan1", lab.i1, "2001:db8:1::2", "fe80::1", 101, 1010, prefixlen=64),
            up("wan2", lab.i2, "2001:db8:2::2", "fe80::1", 102, 1020, prefixlen=64)]


@root
def test_ipv6_objects_are_applied_read_back_and_owned_like_the_ipv4_ones(lab, rec):
    from linkwatch.core.routing import merged, plan6

    six = dual_stack(lab)
    desired = merged(lab.plan([("wan1", 1)]), plan6(six, [("wan1", 1)], PARAMS))
    report = rec.apply(desired)
    assert report.errors == [] and report.deferred == []
    assert rec.current() == desired, "both families read back exactly as planned (metric 1024, lo on unreachable)"
    assert dump_ours6(RT) == plan6(six, [("wan1", 1)], PARAMS) and dump_ours(RT) == lab.plan([("wan1", 1)])
    again = rec.apply(desired)
    assert not again.changed and again.errors == []
    with Reconciler(PARAMS, netns=RT) as fresh:  # a restart changes nothing
        assert not fresh.apply(desired).changed
    out = nsutil.ip(RT, "-6", "rule", "show").stdout
    assert "1000:\tfrom all lookup main suppress_prefixlength 0 proto 77" in out
    assert "1020:\tfrom 2001:db8:2::2 lookup 102 proto 77" in out
    # the kernel's own answers: a LAN destination leaves by the active IPv6 uplink, a probe from
    # wan2's address by wan2, and the main table's on-link prefixes still win (suppress_prefixlength 0)
    assert route_get6(RT, "2001:db8:ffff::1").endswith("via fe80::1 dev wan1 table 100")
    assert route_get6(RT, "2001:db8:ffff::1", "2001:db8:2::2").endswith("via fe80::1 dev wan2 table 102")
    assert rec.active_gateways(6) == [("fe80::1", lab.i1)] and rec.active_gateways() == [("198.51.100.1", lab.i1)]
    assert "dev wan2" in route_get6(RT, "2001:db8:2::1") and "via" not in route_get6(RT, "2001:db8:2::1")
    # IPv6 moves to wan2; IPv4 stays on wan1
    switched = merged(lab.plan([("wan1", 1)]), plan6(six, [("wan2", 1)], PARAMS))
    report = rec.apply(switched)
    assert report.errors == [] and report.replaced == ["route -6 default via fe80::1 dev #%d table 100" % lab.i2]
    assert route_get6(RT, "2001:db8:ffff::1").endswith("via fe80::1 dev wan2 table 100")
    assert route_get(RT, "192.0.2.99") == ("198.51.100.1", lab.i1)
    # both, weighted: the IPv6 multipath route reads back as planned
    both = merged(lab.plan([("wan1", 1)]), plan6(six, [("wan1", 3), ("wan2", 1)], PARAMS))
    assert rec.apply(both).errors == [] and rec.current() == both and not rec.apply(both).changed
    withdrawn = rec.withdraw()
    assert withdrawn.errors == [] and dump_ours6(RT) == RouteSet() and dump_ours(RT) == RouteSet()
    assert "default via fe80::1 dev wan1 proto ra" in nsutil.ip(RT, "-6", "route", "show").stdout, "main untouched"


@root
def test_ipv6_lan_prefixes_of_an_uplink_leave_through_it_whatever_is_active(lab, rec):
    from dataclasses import replace

    from linkwatch.core.routing import merged, plan6

    wan1, wan2 = dual_stack(lab)
    six = [wan1, replace(wan2, prefixes=("2001:db8:200::/56",))]
    desired = merged(lab.plan([("wan1", 1)]), plan6(six, [("wan1", 1)], PARAMS))
    assert rec.apply(desired).errors == [] and rec.current() == desired and not rec.apply(desired).changed
    assert "1020:\tfrom 2001:db8:200::/56 lookup 102 proto 77" in nsutil.ip(RT, "-6", "rule", "show").stdout
    assert route_get6(RT, "2001:db8:ffff::1", "2001:db8:200::5").endswith("via fe80::1 dev wan2 table 102")
    assert route_get6(RT, "2001:db8:ffff::1").endswith("via fe80::1 dev wan1 table 100"), "the rest: active"


@root
def test_a_route_the_netlink_layer_cannot_encode_is_one_error_not_an_exception(lab, rec):
    """Review finding 1: an address with a %zone made pyroute2 raise OSError and the whole apply
    fail, IPv4 included. Now it is that object's error; the rest is applied."""
    desired = lab.plan([("wan1", 1)])
    bad = RouteSpec(103, "::/0", gateway="fe80::1%wan1", ifindex=lab.i1, family=6)
    report = rec.apply(RouteSet(routes=desired.routes | {bad}, rules=desired.rules))
    assert len(report.errors) == 1 and "fe80::1%wan1" in report.errors[0]
    assert dump_ours(RT) == desired, "every IPv4 object is in place"


@root
def test_the_lab_refuses_to_start_over_an_ipv6_route_of_its_range(lab):
    """Review finding 7: the overlap check read IPv4 routes only."""
    from linkwatch.lab.namespaces import namespace_prefixes
    from linkwatch.lab.plan import LabError, check_no_overlap

    nsutil.ip(RT, "-6", "route", "add", "unreachable", "2001:db8:ab::/48")
    with pytest.raises(LabError, match="2001:db8::/32 overlaps 2001:db8:ab::/48"):
        check_no_overlap(namespace_prefixes(RT))


@root
def test_a_restart_with_an_ipv4_only_config_removes_the_ipv6_objects_then_stops_reading_ipv6(lab, rec):
    from linkwatch.core.routing import merged, plan6

    six = dual_stack(lab)
    assert rec.apply(merged(lab.plan([("wan1", 1)]), plan6(six, [("wan1", 1)], PARAMS))).errors == []
    with Reconciler(PARAMS, netns=RT) as fresh:  # restarted with the IPv6 probes taken out of the config
        report = fresh.apply(lab.plan([("wan1", 1)]))
        assert report.errors == [] and any(r.startswith("route -6") for r in report.removed)
        assert dump_ours6(RT) == RouteSet() and dump_ours(RT) == lab.plan([("wan1", 1)])
        assert not fresh.apply(lab.plan([("wan1", 1)])).changed
        assert fresh._ipv6 is False, "nothing of ours in IPv6 any more: repairs read IPv4 only"
