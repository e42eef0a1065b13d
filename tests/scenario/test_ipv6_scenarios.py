"""Issue 12: each family has its own health and its own active set (the IPv6 side of dual-stack
uplinks: core.family6), driven through the engine's public step with made-up time."""

from __future__ import annotations

from dataclasses import replace

from harness import CONFIG, FACTS, Scenario, results

from linkwatch.core.events import UplinkSamples
from linkwatch.core.inputs import AdminRequest, LanPrefixes, PeriodEnd, Reload, RoundDone

DUAL = CONFIG.replace('[uplinks.lte]', '[[uplinks.fibre.probes]]\ntype = "icmp"\ntarget = "2001:db8:f::1"\n'
                      '[[uplinks.fibre.probes]]\ntype = "dns"\ntarget = "2001:db8:f::53"\n[uplinks.lte]') + (
    '[[uplinks.lte.probes]]\ntype = "icmp"\ntarget = "2001:db8:f::1"\n')
FACTS6 = {
    "up1": replace(FACTS["up1"], address6="2001:db8:1::2", prefixlen6=64, gateway6="fe80::1"),
    "up2": replace(FACTS["up2"], address6="2001:db8:2::2", prefixlen6=64, gateway6="fe80::1"),
}


def round6(s: Scenario, name: str, ok: bool, dt: float = 0.125):
    s.t += dt
    s.seq += 1
    probes = s.state.v6.uplink(name).cfg.probes
    return s.feed(RoundDone(name, results(probes, len(probes) if ok else 0), s.seq, family=6))


def both(s: Scenario, pattern4: dict[str, str], pattern6: dict[str, str]) -> None:
    """Rounds of both families in turn: ``{"fibre": "ggb"}`` per family (g good, b bad)."""
    length = max(len(p) for p in (*pattern4.values(), *pattern6.values()))
    for i in range(length):
        for name, p in pattern4.items():
            if i < len(p):
                s.round(name, p[i] == "g", dt=0.05)
        for name, p in pattern6.items():
            if i < len(p):
                round6(s, name, p[i] == "g", dt=0.05)


def state6(s: Scenario, name: str) -> str:
    return s.state.v6.uplink(name).health.state.value


def test_an_ipv4_only_config_has_no_ipv6_side():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    assert s.state.v6.uplinks == () and s.outputs[-1].probes6 == {}
    assert [p.target for p in s.state.uplink("fibre").cfg.probes] == ["203.0.113.1", "203.0.113.53"]


def test_each_family_is_judged_by_its_own_probes_from_its_own_source():
    s = Scenario(DUAL, facts=FACTS6)
    plans6 = s.outputs[-1].probes6
    assert plans6["fibre"].source == "2001:db8:1::2" and plans6["lte"].source == "2001:db8:2::2"
    assert [x.target for x in plans6["fibre"].specs] == ["2001:db8:f::1", "2001:db8:f::53"]
    assert [x.target for x in s.outputs[-1].probes["fibre"].specs] == ["203.0.113.1", "203.0.113.53"]
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    assert s.state.active == ("fibre",) and s.state.v6.active == ("fibre",)
    # fibre's IPv6 breaks while its IPv4 works: only IPv6 moves
    both(s, {"fibre": "gggggg", "lte": "gggggg"}, {"fibre": "bbbbbb", "lte": "gggggg"})
    assert state6(s, "fibre") == "DOWN" and s.state_of("fibre") == "UP"
    assert s.state.v6.active == ("lte",) and s.state.active == ("fibre",), "IPv4 does not move at all"
    assert not any(e for e in s.events if type(e).__name__ == "ActiveChanged" and e.new == ("lte",))
    moves = [(e.old, e.new) for e in s.events if e.kind == "ipv6_active"]
    assert moves[-1] == (("fibre",), ("lte",)), "an event of its own, not an IPv4 ActiveChanged"
    downs = [(e.uplink, e.new) for e in s.events if e.kind == "ipv6_state"]
    assert ("fibre", "DOWN") in downs and not any(e.kind == "uplink_state" and e.new == "DOWN" for e in s.events)


def test_ipv4_broken_while_ipv6_works_moves_only_ipv4():
    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "gbbbbbb", "lte": "ggggggg"}, {"fibre": "ggggggg", "lte": "ggggggg"})
    assert s.state_of("fibre") == "DOWN" and state6(s, "fibre") == "UP"
    assert s.state.active == ("lte",) and s.state.v6.active == ("fibre",)


def test_no_ipv6_address_or_gateway_is_down_for_ipv6_only_and_a_new_prefix_is_followed():
    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    s.set_facts("up1", address6=None, prefixlen6=None)  # the delegated prefix went away
    assert state6(s, "fibre") == "DOWN" and s.state_of("fibre") == "UP"
    assert "no IPv6 address on up1" in s.state.v6.uplink("fibre").health.reason
    assert s.state.v6.active == ("lte",) and s.outputs[-1].probes6["fibre"].source is None
    s.set_facts("up1", address6="2001:db8:1a::2", prefixlen6=64)  # a new prefix
    assert s.outputs[-1].probes6["fibre"].source == "2001:db8:1a::2"
    s.set_facts("up1", gateway6=None)
    assert "no gateway (no IPv6 default route via up1" in s.state.v6.uplink("fibre").health.reason
    s.set_facts("up1", gateway6="fe80::1")
    both(s, {}, {"fibre": "ggggg"})
    assert state6(s, "fibre") == "UP"
    s.set_facts("up1", carrier=False)
    assert s.state_of("fibre") == "DOWN" and state6(s, "fibre") == "DOWN", "carrier loss: both families"


def test_the_admin_disables_and_forces_both_families_and_ipv6_keeps_its_own_failback_hold():
    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    s.feed(AdminRequest("fibre", "disable", "test"))
    assert state6(s, "fibre") == "DISABLED" and s.state.v6.active == ("lte",) and s.state.active == ("lte",)
    s.feed(AdminRequest("fibre", "enable", "test"))
    assert state6(s, "fibre") == "INIT"
    both(s, {"fibre": "ggggg", "lte": "ggggg"}, {"fibre": "ggggg", "lte": "ggggg"})
    assert s.state.v6.active == ("lte",), "fibre's IPv6 works again, but the failback hold (10 s) runs"
    s.wait(10.5)
    assert s.state.v6.active == ("fibre",) and s.state.active == ("fibre",)
    s.feed(AdminRequest("lte", "force", "test"))
    assert s.state.v6.active == ("lte",) and s.state.active == ("lte",)


def test_a_reload_keeps_an_unchanged_ipv6_side_and_drops_a_removed_one():
    from linkwatch.config import loads
    from linkwatch.core.inputs import Reload

    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "gb", "lte": "g"})
    before = s.state.v6.uplink("fibre")
    s.feed(Reload(loads(DUAL), dict(FACTS6)))
    assert s.state.v6.uplink("fibre").health == before.health, "unchanged: its state stays"
    s.feed(Reload(loads(CONFIG), dict(FACTS6)))
    assert s.state.v6.uplinks == () and s.state.v6.active == ()


def test_adding_ipv6_targets_on_reload_keeps_the_ipv4_state():
    from linkwatch.config import loads
    from linkwatch.core.inputs import Reload

    s = Scenario(CONFIG, facts=FACTS6)
    s.rounds({"fibre": "gb", "lte": "g"})
    before = s.state.uplink("fibre")
    s.feed(Reload(loads(DUAL), dict(FACTS6)))
    assert s.state.uplink("fibre").health == before.health and s.state.uplink("fibre").rounds == before.rounds
    assert state6(s, "fibre") == "INIT" and set(s.outputs[-1].probes6) == {"fibre", "lte"}


def test_status_keeps_its_ipv4_fields_and_adds_each_uplinks_ipv6_object():
    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "gggggg", "lte": "g"}, {"fibre": "gbbbbb", "lte": "g"})
    d = s.status().to_dict()
    fibre = next(u for u in d["uplinks"] if u["name"] == "fibre")
    assert fibre["state"] == "UP" and fibre["active"] is True and fibre["address"] == "198.51.100.2"
    six = fibre["ipv6"]
    assert six["state"] == "DOWN" and six["active"] is False and six["address"] == "2001:db8:1::2"
    assert six["gateway"] == "fe80::1" and six["loss_pct"] > 0 and six["rtt_ms"] == 12.0
    assert [p["target"] for p in six["probes"]] == ["2001:db8:f::1", "2001:db8:f::53"]
    assert d["active_ipv6"] == ["lte"] and d["active"] == ["fibre"]
    assert Scenario().status().to_dict()["uplinks"][0]["ipv6"] is None, "IPv4 only: no IPv6 object"
    from linkwatch.core.status import status_from_dict

    assert status_from_dict(d).to_dict() == d, "what the CLI and the web UI read back"


def v6_active_hops(out) -> list[tuple[str | None, int]]:
    return sorted((r.gateway, r.ifindex) if not r.nexthops else (h.gateway, h.ifindex)
                  for r in out.routing.routes if r.family == 6 and r.table == 100 and r.dst == "::/0"
                  for h in (r.nexthops or (None,)))


def test_ipv6_routing_follows_the_ipv6_active_set_and_leaves_ipv4_alone():
    from harness import active_gateways

    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    out = s.outputs[-1]
    assert v6_active_hops(out) == [("fe80::1", 11)] and active_gateways(out.routing) == ["198.51.100.1"]
    six = {r.describe() for r in out.routing.rules if r.family == 6}
    assert six == {"-6 1000: from all lookup main suppress_prefixlength 0", "-6 1100: from all lookup 100",
                   "-6 1001: from 2001:db8:1::2/128 lookup 101", "-6 1002: from 2001:db8:2::2/128 lookup 102"}
    routes101 = {r.describe() for r in out.routing.routes if r.family == 6 and r.table == 101}
    assert routes101 == {"-6 default via fe80::1 dev #11 table 101", "-6 2001:db8:1::/64 dev #11 table 101 src "
                         "2001:db8:1::2", "-6 unreachable default table 101 metric 4278198272"}
    both(s, {"fibre": "gggggg", "lte": "gggggg"}, {"fibre": "bbbbbb", "lte": "gggggg"})
    out = s.outputs[-1]
    assert v6_active_hops(out) == [("fe80::1", 12)], "IPv6 moved to lte"
    assert active_gateways(out.routing) == ["198.51.100.1"], "IPv4 still via fibre"
    assert "-6 default via fe80::1 dev #11 table 101" in {r.describe() for r in out.routing.routes}, \
        "its own table keeps its route while the link is up: its probes watch it come back"
    s.set_facts("up1", address6=None, prefixlen6=None)
    assert not any(r.family == 6 and r.table == 101 and r.kind == "unicast" for r in s.outputs[-1].routing.routes)


def test_an_ipv4_only_config_plans_no_ipv6_object():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    assert {r.family for r in s.outputs[-1].routing.routes} == {4}
    assert {r.family for r in s.outputs[-1].routing.rules} == {4}


def test_flows_natted_to_an_uplinks_ipv6_address_are_reset_when_ipv6_leaves_it_or_its_prefix_changes():
    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    start = len(s.outputs)
    both(s, {"fibre": "gggggg", "lte": "gggggg"}, {"fibre": "bbbbbb", "lte": "gggggg"})
    flushes = [(f.uplink, f.address, f.mark) for out in s.outputs[start:] for f in out.flushes]
    assert flushes == [("fibre", "2001:db8:1::2", None)], "by NAT address (IPv6 flows carry no mark)"
    start = len(s.outputs)
    s.set_facts("up2", address6="2001:db8:22::2")  # lte's delegated prefix changed
    assert [(f.uplink, f.address) for f in s.outputs[-1].flushes] == [("lte", "2001:db8:2::2")]


def test_a_silent_interface_makes_ipv6_send_its_burst_with_ipv4_and_fall_with_it():
    """The LAN sends, nothing comes back on the interface (both families): the IPv4 side is suspect;
    the IPv6 side takes the suspicion up and bursts at once, and is DOWN when its burst gets no
    answer while still nothing comes in. A burst answered (IPv6 alive) takes nothing down."""
    from linkwatch.core.inputs import Counters, LinkCounters

    def silent_reads(s, t0, n, rx, tx):
        for i in range(n):
            s.t = t0 + 0.05 * i
            tx += 10
            s.feed(Counters({"up1": LinkCounters(rx, tx, rx * 100, tx * 100)}))
        return tx

    for ipv6_answers, ipv4_first in ((False, False), (True, False), (False, True)):
        s = Scenario(DUAL, facts=FACTS6)
        both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
        rx = tx = 0
        for i in range(30):  # two-way LAN traffic
            s.t += 0.05
            rx, tx = rx + 5, tx + 5
            s.feed(Counters({"up1": LinkCounters(rx, tx, rx * 100, tx * 100)}))
        bursts = s.outputs[-1].probes6["fibre"].burst
        silent_reads(s, s.t + 0.05, 5, rx, tx)
        assert s.state.uplink("fibre").suspect_since is not None, "IPv4 suspects the silence"
        assert s.outputs[-1].probes6["fibre"].burst == bursts + 1, "IPv6 bursts with it"
        s.t += 0.13
        if ipv4_first:  # IPv4's burst result comes first: DOWN (nothing came in); IPv6's still decides
            s.seq += 1
            s.feed(RoundDone("fibre", results(s.state.uplink("fibre").cfg.probes, 0), s.seq, burst=True))
            assert s.state_of("fibre") == "DOWN" and s.state.v6.uplink("fibre").suspect_since is not None
        s.seq += 1
        probes = s.state.v6.uplink("fibre").cfg.probes
        s.feed(RoundDone("fibre", results(probes, len(probes) if ipv6_answers else 0), s.seq, burst=True, family=6))
        assert state6(s, "fibre") == ("UP" if ipv6_answers else "DOWN")
        assert s.state.v6.active == (("fibre",) if ipv6_answers else ("lte",))


def test_per_uplink_lan_prefixes_are_routed_by_source_through_their_uplink_dead_or_alive():
    text = DUAL.replace('interface = "up2"', 'interface = "up2"\nipv6_prefixes = ["2001:db8:200::/56"]')
    s = Scenario(text, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    rule = "-6 1002: from 2001:db8:200::/56 lookup 102"
    assert rule in {r.describe() for r in s.outputs[-1].routing.rules}
    both(s, {"fibre": "gggggg", "lte": "gggggg"}, {"fibre": "gggggg", "lte": "bbbbbb"})
    assert state6(s, "lte") == "DOWN" and rule in {r.describe() for r in s.outputs[-1].routing.rules}, \
        "no other provider routes that prefix back: it stays (the hook deprecates it)"


def test_a_configured_ipv6_gateway_is_used_instead_of_the_kernels():
    text = DUAL.replace('interface = "up1"', 'interface = "up1"\ngateway6 = "fe80::fe"')
    s = Scenario(text, facts={**FACTS6, "up1": replace(FACTS6["up1"], gateway6=None)})  # no RA
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    assert state6(s, "fibre") == "UP" and s.state.v6.active == ("fibre",)
    assert v6_active_hops(s.outputs[-1]) == [("fe80::fe", 11)]


def test_a_restart_adopts_the_ipv6_uplink_the_kernel_routes_through():
    from linkwatch.core.engine import initial_state, step
    from linkwatch.config import loads
    from linkwatch.core.inputs import Now, Start

    state, out = step(initial_state(loads(DUAL)), Start(FACTS6, (("198.51.100.1", 11),), "test",
                                                          kernel_active6=(("fe80::1", 12),)), Now(1000.0, 1e9))
    assert state.active == ("fibre",) and state.v6.active == ("lte",), "IPv6 stays on lte until probed"
    assert v6_active_hops(out) == [("fe80::1", 12)]
    fresh, _ = step(initial_state(loads(DUAL)), Start(FACTS6, (("198.51.100.1", 11),), "test"), Now(1000.0, 1e9))
    assert fresh.v6.active == ("fibre",), "nothing in the kernel: the best by priority, as before"


def test_on_a_dual_stack_uplink_traffic_coming_in_does_not_prove_ipv4():
    """Review finding 2: the counters count both families. The LAN's IPv6 keeps coming in while
    IPv4 is blackholed: it must neither stretch IPv4's rounds to proven_interval nor excuse them."""
    from linkwatch.core.inputs import Counters, LinkCounters

    for text, want_interval in ((CONFIG, 2.0), (DUAL, 0.25)):
        s = Scenario(text, facts=FACTS6)
        s.rounds({"fibre": "g", "lte": "g"})
        rx = tx = 0
        for _ in range(120):  # three seconds of two-way LAN traffic (the IPv6 half goes on below)
            s.t += 0.025
            rx, tx = rx + 5, tx + 5
            s.feed(Counters({"up1": LinkCounters(rx, tx, rx * 100, tx * 100)}))
        assert s.outputs[-1].probes["fibre"].interval == want_interval
    started = s.t
    for _ in range(3):  # IPv4 rounds fail while packets (IPv6) keep coming in
        for _ in range(10):
            s.t += 0.025
            rx, tx = rx + 5, tx + 5
            s.feed(Counters({"up1": LinkCounters(rx, tx, rx * 100, tx * 100)}))
        s.seq += 1
        s.feed(RoundDone("fibre", results(s.state.uplink("fibre").cfg.probes, 0), s.seq, started=s.t - 0.25))
    assert s.state_of("fibre") == "DOWN" and s.state.active == ("lte",) and s.t - started < 1.0


def test_a_reload_changing_only_ipv6_keys_keeps_the_ipv4_state_and_its_flows():
    """Review finding 3: gateway6 or ipv6_prefixes changed: the IPv4 side is not rebuilt (which
    would drop its fwmark rule and strand its sticky flows)."""
    from linkwatch.config import loads
    from linkwatch.core.inputs import Reload

    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "gg"}, {"fibre": "g", "lte": "g"})
    before = s.state.uplink("lte")
    changed = DUAL.replace('interface = "up2"', 'interface = "up2"\ngateway6 = "fe80::fe"\n'
                                                'ipv6_prefixes = ["2001:db8:200::/56"]')
    out = s.feed(Reload(loads(changed), dict(FACTS6)))
    assert s.state.uplink("lte").health == before.health and s.state.uplink("lte").rounds == before.rounds
    assert "1002: from all fwmark 0x660000/0xff0000 lookup 102" in {r.describe() for r in out.routing.rules}
    assert state6(s, "lte") == "INIT", "its IPv6 side changed: rebuilt"


def test_a_lost_ipv6_burst_does_not_leave_its_suspicion_set_and_the_back_off_resets_with_ipv4s():
    """Review findings 5 and 6: the IPv6 side's suspicion ends with IPv4's (or times out) even when
    its burst's result never comes; its false-alarm back-off resets when IPv4's does."""
    from linkwatch.core.inputs import Counters, LinkCounters

    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    rx = tx = 0

    def reads(n, both_ways=True):
        nonlocal rx, tx
        for _ in range(n):
            s.t += 0.05
            rx, tx = rx + (5 if both_ways else 0), tx + 5
            s.feed(Counters({"up1": LinkCounters(rx, tx, rx * 100, tx * 100)}))

    reads(60)
    reads(5, both_ways=False)
    assert s.state.v6.uplink("fibre").suspect_since is not None, "IPv6 took the suspicion up"
    # the IPv4 burst is answered (a false alarm); IPv6's burst result is lost (a dropped round)
    s.seq += 1
    s.feed(RoundDone("fibre", results(s.state.uplink("fibre").cfg.probes, 2), s.seq, burst=True))
    assert s.state.uplink("fibre").suspect_since is None
    assert s.state.v6.uplink("fibre").suspect_since is None, "it ends with IPv4's"
    from dataclasses import replace as rep
    s.state = rep(s.state, v6=rep(s.state.v6, uplinks=tuple(
        rep(u, false_alarms=4, quiet_until=s.t + 30.0) if u.name == "fibre" else u for u in s.state.v6.uplinks)))
    reads(80)  # two-way traffic resets IPv4's back-off; IPv6's goes with it
    assert s.state.uplink("fibre").false_alarms == 0
    assert (s.state.v6.uplink("fibre").false_alarms, s.state.v6.uplink("fibre").quiet_until) == (0, 0.0)


def test_ipv6_balance_keeps_device_only_uplinks_out_of_the_multipath_route():
    """Review finding 4: the kernel refuses a device-only nexthop in an IPv6 multipath route."""
    from linkwatch.core.routing import RoutingParams, UplinkRoute, plan6

    gw = UplinkRoute("wan1", 11, "2001:db8:1::2", 64, "fe80::1", 101, 1001, True)
    p2p = UplinkRoute("ppp", 13, "2001:db8:3::2", 128, None, 103, 1003, True, pointopoint=True)
    gw2 = UplinkRoute("wan2", 12, "2001:db8:2::2", 64, "fe80::1", 102, 1002, True)
    (route,) = [r for r in plan6([gw, p2p, gw2], [("wan1", 1), ("ppp", 1), ("wan2", 2)], RoutingParams()).routes
                if r.table == 100]
    assert [(h.gateway, h.ifindex, h.weight) for h in route.nexthops] == [("fe80::1", 11, 1), ("fe80::1", 12, 2)]
    (alone,) = [r for r in plan6([p2p], [("ppp", 1)], RoutingParams()).routes if r.table == 100]
    assert (alone.gateway, alone.ifindex, alone.nexthops) == (None, 13, ())


def test_when_carrier_returns_the_ipv6_gateways_neighbour_entry_is_forgotten_too():
    s = Scenario(DUAL, facts=FACTS6)
    both(s, {"fibre": "g", "lte": "g"}, {"fibre": "g", "lte": "g"})
    s.set_facts("up1", carrier=False)
    out = s.set_facts("up1", carrier=True)
    assert set(out.forget_neighbours) == {(11, "198.51.100.1"), (11, "fe80::1")}


def test_history_periods_give_each_family_its_own_samples():
    s = Scenario(DUAL, facts=FACTS6)
    s.feed(PeriodEnd(4940.0, 5000.0))  # the period of the start
    both(s, {"fibre": "gggg", "lte": "gggg"}, {"fibre": "ggbb", "lte": "gggg"})
    out = s.feed(PeriodEnd(5000.0, 5060.0))
    got = {(e.uplink, e.family): e for e in out.events if isinstance(e, UplinkSamples)}
    assert set(got) == {("fibre", 4), ("lte", 4), ("fibre", 6), ("lte", 6)}
    assert (got["fibre", 4].sent, got["fibre", 4].lost) == (8, 0), "IPv4's row counts IPv4's probes only"
    assert (got["fibre", 6].sent, got["fibre", 6].lost, got["fibre", 6].loss_pct) == (8, 4, 50.0)
    assert (got["lte", 6].sent, got["lte", 6].lost) == (4, 0)
    assert got["fibre", 6].rx_bytes == 0 == got["fibre", 6].tx_bytes, "the counters are on the IPv4 row"
    out = s.feed(PeriodEnd(5060.0, 5120.0))  # nothing since: empty periods, not the old ones again
    assert sorted((e.family, e.sent) for e in out.events if isinstance(e, UplinkSamples)) == [(4, 0)] * 2 + [(6, 0)] * 2


def test_an_ipv4_only_config_writes_no_ipv6_samples():
    s = Scenario()
    s.rounds({"fibre": "gg", "lte": "gg"})
    out = s.feed(PeriodEnd(5000.0, 5060.0))
    assert {e.family for e in out.events if isinstance(e, UplinkSamples)} == {4}


# an IPv6-only LTE (its provider gives no IPv4; IPv4 would come through a CLAT or DS-Lite tunnel,
# another uplink) beside a dual-stack fibre
ONLY6 = DUAL.replace('[[uplinks.lte.probes]]\ntype = "icmp"\ntarget = "203.0.113.1"\n'
                     '[[uplinks.lte.probes]]\ntype = "icmp"\ntarget = "203.0.113.2"\n', '')
FACTS_ONLY6 = {"up1": FACTS6["up1"],
               "up2": replace(FACTS6["up2"], address=None, prefixlen=None, gateway=None)}


def test_an_ipv6_only_uplink_carries_ipv6_and_never_ipv4():
    s = Scenario(ONLY6, facts=FACTS_ONLY6)
    lte = s.state.uplink("lte")
    assert lte.cfg.probes == () and [p.target for p in lte.cfg.probes6] == ["2001:db8:f::1"]
    assert s.state_of("lte") == "DOWN" and lte.health.reason == "IPv6 only: no IPv4 probe targets"
    assert not any(getattr(e, "uplink", None) == "lte" and e.kind == "uplink_state" for e in s.events), \
        "nothing failed: no DOWN event at start"
    assert not s.outputs[-1].probes["lte"].running and s.outputs[-1].probes6["lte"].source == "2001:db8:2::2"
    both(s, {"fibre": "gg"}, {"fibre": "gg", "lte": "gg"})
    assert s.state.active == ("fibre",) and s.state.v6.active == ("fibre",)
    # fibre's IPv6 dies: IPv6 moves to the IPv6-only LTE
    both(s, {"fibre": "gggggg"}, {"fibre": "bbbbbb", "lte": "gggggg"})
    assert s.state.v6.active == ("lte",) and s.state.active == ("fibre",)
    # fibre dies altogether: IPv4 has nowhere to go (fail-static on fibre), IPv6 stays on LTE
    both(s, {"fibre": "bbbbbb"}, {"fibre": "bbbbbb", "lte": "gggggg"})
    assert s.state_of("fibre") == "DOWN" and "lte" not in s.state.active and s.state.v6.active == ("lte",)
    assert "198.51.100.9" not in s.gateways(), "no IPv4 route through an uplink without IPv4"
    st = s.status().uplink("lte")
    assert st.state.value == "DOWN" and st.reason.startswith("IPv6 only") and st.ipv6.state.value == "UP"


def test_an_ipv6_only_uplink_with_an_ipv4_address_still_takes_no_ipv4_and_follows_the_admin():
    s = Scenario(ONLY6, facts=FACTS6)  # the interface has an IPv4 address and gateway after all
    both(s, {"fibre": "bbbbbbbb"}, {"fibre": "gg", "lte": "gggg"})
    assert s.state_of("lte") == "DOWN" and "lte" not in s.state.active, "no IPv4 probes: nothing proves IPv4"
    s.feed(AdminRequest("lte", "disable"))
    assert s.state_of("lte") == "DISABLED" and state6(s, "lte") == "DISABLED"
    s.feed(AdminRequest("lte", "enable"))
    assert s.state_of("lte") == "DOWN" and s.state.uplink("lte").health.reason == "IPv6 only: no IPv4 probe targets"
    assert s.status().uplink("lte").ipv6_only and not s.status().uplink("fibre").ipv6_only
    both(s, {}, {"lte": "gggggg"})
    assert state6(s, "lte") == "UP" and s.state_of("lte") == "DOWN"


def prefix_rules(out) -> set[tuple[str, int]]:
    return {(r.src, r.table) for r in out.routing.rules if r.family == 6 and r.src and "/" in r.src
            and not r.src.endswith("/128")}


def test_lan_prefixes_set_at_run_time_replace_the_configs_and_survive_a_reload():
    from linkwatch.config import loads

    text = DUAL.replace('interface = "up1"\n', 'interface = "up1"\nipv6_prefixes = ["2001:db8:100::/56"]\n')
    s = Scenario(text, facts=FACTS6)
    table = s.state.uplink("fibre").cfg.table
    assert prefix_rules(s.outputs[-1]) == {("2001:db8:100::/56", table)}
    out = s.feed(LanPrefixes("fibre", ["2001:db8:1a00::/56", "2001:db8:1b00::/56"], "dhcpcd"))
    assert out.reply["ok"] and out.reply["prefixes"] == ["2001:db8:1a00::/56", "2001:db8:1b00::/56"]
    assert prefix_rules(out) == {("2001:db8:1a00::/56", table), ("2001:db8:1b00::/56", table)}, "renumbered"
    assert s.status().uplink("fibre").ipv6.prefixes == ("2001:db8:1a00::/56", "2001:db8:1b00::/56")
    s.feed(Reload(loads(text), dict(s.facts_now)))  # a reload keeps what the hook said
    assert s.state.v6.uplink("fibre").cfg.ipv6_prefixes == ("2001:db8:1a00::/56", "2001:db8:1b00::/56")
    out = s.feed(LanPrefixes("fibre", None))  # back to the config's
    assert out.reply["ok"] and prefix_rules(out) == {("2001:db8:100::/56", table)}
    out = s.feed(LanPrefixes("fibre", []))  # the delegation was lost: no prefix at all
    assert out.reply["ok"] and prefix_rules(out) == set()


def test_bad_lan_prefix_requests_are_refused_and_change_nothing():
    s = Scenario(ONLY6, facts=FACTS_ONLY6)
    s.feed(LanPrefixes("lte", ["2001:db8:1a00::/56"]))
    before = (s.state.v6, s.outputs[-1].routing)
    for uplink, prefixes, why in (
            ("nope", ["2001:db8:1::/56"], "unknown uplink 'nope'"),
            (["lte"], ["2001:db8:1::/56"], "unknown uplink"),
            ("lte", "2001:db8:1::/56", "expected a list"),
            ("lte", ["2001:db8:1::1/56"], "host bits"),
            ("lte", ["fe80::/64"], "not a LAN prefix"),
            ("lte", ["198.51.100.0/24"], "IPv6 prefixes a provider delegates"),
            ("lte", [7], "IPv6 prefixes a provider delegates"),
            ("lte", [f"2001:db8:{i:x}::/48" for i in range(17)], "at most 16")):
        out = s.feed(LanPrefixes(uplink, prefixes))
        assert out.reply["ok"] is False and why in out.reply["error"], (uplink, prefixes, out.reply)
        assert (s.state.v6, out.routing) == before
    # another uplink's address or prefix: its from-rule would take that uplink's own traffic
    dual = Scenario(DUAL.replace('interface = "up2"\n', 'interface = "up2"\nipv6_prefixes = ["2001:db8:700::/56"]\n'),
                    facts=FACTS6)
    for prefixes, why in ((["2001:db8::/32"], "holds lte's address 2001:db8:2::2"),
                          (["2001:db8:700:40::/58"], "overlaps lte's prefix 2001:db8:700::/56")):
        out = dual.feed(LanPrefixes("fibre", prefixes))
        assert out.reply["ok"] is False and why in out.reply["error"], out.reply
    assert dual.feed(LanPrefixes("fibre", ["2001:db8:1a00::/56"])).reply["ok"]
    plain = Scenario()  # IPv4 only: no uplink has an IPv6 side
    out = plain.feed(LanPrefixes("fibre", ["2001:db8:1a00::/56"]))
    assert out.reply["ok"] is False and "none has any" in out.reply["error"]
    out = s.feed(LanPrefixes("lte", ["2001:db8:1a00::/56"], "x" * 65))
    assert out.reply["ok"] is False and "source" in out.reply["error"]
