"""Issue 11 against the real kernel, in a lab running the engine in balance mode (wan1 weight 3, wan2
weight 1): new flows are spread by weight and keep their uplink; an uplink that dies loses only its
own flows, all at once (one conntrack delete by flow mark). Short versions of bench/bench_flows.py.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter

import pytest

from linkwatch.core.flows import MOVABLE, flow_mark
from linkwatch.lab import client, faults, topology, tunlink
from linkwatch.lab.bulk import start_bulk
from linkwatch.lab.manyflows import flows_by_uplink, run_in_lab
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.plan import FORWARD_PORTS, LabSpec
from linkwatch.lab.processes import netns_exec, run_command
from linkwatch.lab.topology import EngineOptions
from tests.integration.labutil import status, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tF"
# Two policy rules on source port ranges of the LAN client's flows (the balanced flows use 20000 on):
# 40000.. go to wan2 while it works, else wan1; 41000.. only ever to wan2, dropped while it is down.
RULES = """
[[rules]]
name = "calls"
proto = "udp"
sport = "40000-40999"
uplinks = ["wan2", "wan1"]

[[rules]]
name = "only-wan2"
proto = "udp"
sport = "41000-41999"
uplinks = ["wan2"]
fallback = "drop"
"""
OPTIONS = EngineOptions(overrides={"policy": {"mode": "balance", "dampening": False, "failback_hold": "2s"},
                                   "uplinks": {"wan1": {"weight": 3, "priority": 1},
                                               "wan2": {"weight": 1, "priority": 1}}},
                        extra_toml=RULES)
FLOWS = 1200


def a_lab(name: str, options: EngineOptions):
    """A lab of its own for the module's tests, torn down (and checked gone) afterwards."""
    topology.down(name)
    spec = LabSpec(name)
    try:
        topology.up(spec, engine=True, options=options)
        yield spec
    finally:
        topology.down(name)
    assert not existing_lab_namespaces(name)


@pytest.fixture(scope="module")
def lab():
    yield from a_lab(LAB, OPTIONS)


def both_active(spec: LabSpec) -> None:
    for up in ("wan1", "wan2"):
        faults.apply_fault(spec.name, up, faults.parse_fault(["clear"]))
    wait_for(lambda: status(spec)["active"] == ["wan1", "wan2"], 60.0, "both UP and active")


def marks_by_uplink(spec: LabSpec, ports: range = range(20000, 40000)) -> Counter:
    """Uplink -> how many of the client's flows (from these source ports) it carries."""
    return flows_by_uplink(spec.name, status(spec)["uplinks"], ports)


def test_balance_spreads_new_flows_by_weight_and_a_dying_uplink_resets_only_its_own(lab):
    both_active(lab)
    before = marks_by_uplink(lab)
    assert run_in_lab(lab.name, FLOWS) == FLOWS
    split = marks_by_uplink(lab) - before
    assert sum(split.values()) == FLOWS and set(split) == {"wan1", "wan2"}, split
    share = 100.0 * split["wan1"] / FLOWS
    print(f"balance 3:1, {FLOWS} new flows: {dict(split)} ({share:.1f} % on wan1)")
    assert 70.0 <= share <= 80.0, f"3:1 should give 75 % on wan1 (± 5 points), got {share:.1f} %: {split}"

    flushes = len(status(lab)["conntrack_flushes"])
    kept = marks_by_uplink(lab)["wan1"]
    faults.apply_fault(lab.name, "wan2", faults.parse_fault(["blackhole"]))
    wait_for(lambda: status(lab)["active"] == ["wan1"], 10.0, "wan2 out of the set")
    f = wait_for(lambda: [f for f in status(lab)["conntrack_flushes"][flushes:] if f["uplink"] == "wan2"], 30.0,
                 "the reset of wan2's flows")[0]
    assert f["mark"] == flow_mark(uplink_table(lab, "wan2")), "by its flow mark, in one operation"
    after = marks_by_uplink(lab)
    print(f"wan2 out of the set: reset {f['deleted']} entries in {f['ms']} ms; left {dict(after)}")
    assert after["wan2"] == 0, f"every flow of wan2 was reset: {after}"
    assert after["wan1"] == kept, "not one flow of wan1 was disturbed"
    assert all(f["uplink"] != "wan1" for f in status(lab)["conntrack_flushes"][flushes:])
    both_active(lab)


def test_a_deleted_flow_table_is_put_back_at_the_next_tick(lab):
    """No netlink event tells when someone deletes linkwatch's nftables table (a firewall reload
    with ``flush ruleset`` does): the engine looks at it at every 2 s tick (one listing) and puts it
    back whole."""
    both_active(lab)
    listing = ["nft", "list", "table", "ip", "linkwatch"]
    before = run_command(netns_exec(lab.router_ns, listing))
    run_command(netns_exec(lab.router_ns, ["nft", "delete", "table", "ip", "linkwatch"]))
    t0 = time.monotonic()

    def back() -> str | None:
        try:
            return run_command(netns_exec(lab.router_ns, listing))
        except Exception:
            return None

    after = wait_for(back, 3.0, "linkwatch's nftables table back")
    print(f"nftables table back {1000 * (time.monotonic() - t0):.0f} ms after it was deleted")
    strip = lambda text: re.sub(r"handle \d+", "", text)  # noqa: E731
    assert strip(after) == strip(before), "the same table as before"


def uplink_table(spec: LabSpec, name: str) -> int:
    return next(u["table"] for u in status(spec)["uplinks"] if u["name"] == name)


def test_policy_rules_send_matching_flows_their_way_and_fall_back_as_configured(lab):
    both_active(lab)
    rules = {r["name"]: r for r in status(lab)["rules"]}
    assert rules["calls"]["now"] == ["wan2"] and rules["only-wan2"]["now"] == ["wan2"]
    assert rules["calls"]["matches"] == "udp sport 40000-40999"
    run_in_lab(lab.name, 100, first_port=40000)
    run_in_lab(lab.name, 100, first_port=41000)
    assert marks_by_uplink(lab, range(40000, 40100)) == Counter(wan2=100), "rule calls: wan2 while it works"
    assert marks_by_uplink(lab, range(41000, 41100)) == Counter(wan2=100)

    faults.apply_fault(lab.name, "wan2", faults.parse_fault(["blackhole"]))
    wait_for(lambda: status(lab)["active"] == ["wan1"], 10.0, "wan2 out of the set")
    wait_for(lambda: {r["name"]: r["now"] for r in status(lab)["rules"]} == {"calls": ["wan1"], "only-wan2": []},
             10.0, "the rules' targets follow wan2's health")
    wait_for(lambda: not marks_by_uplink(lab, range(40000, 42000)), 10.0, "wan2's flows reset")
    run_in_lab(lab.name, 100, first_port=40200)
    run_in_lab(lab.name, 100, first_port=41200)
    assert marks_by_uplink(lab, range(40200, 40300)) == Counter(wan1=100), "calls fall back to the next uplink"
    assert marks_by_uplink(lab, range(41200, 41300)) == Counter(), "only-wan2 drops while wan2 is down"
    run_in_lab(lab.name, 20, first_port=41600, to_router=True)  # review finding 2: only what leaves an uplink
    assert marks_by_uplink(lab, range(41600, 41620)) == Counter({"mark 0x0": 20}), \
        "the router itself stays reachable (and a flow to it gets no uplink's mark)"
    both_active(lab)
    run_in_lab(lab.name, 100, first_port=41400)
    assert marks_by_uplink(lab, range(41400, 41500)) == Counter(wan2=100), "and sends again once it is back"


METERED = EngineOptions(overrides={"policy": {"failback_hold": "2s", "dampening": False},
                                   "uplinks": {"wan2": {"move_flows_after": "4s"}}})


@pytest.fixture(scope="module")
def metered_lab():
    yield from a_lab("tG", METERED)


def test_a_metered_backup_keeps_the_flows_left_on_it_after_a_failback_only_for_move_flows_after(metered_lab):
    lab = metered_lab
    wait_for(lambda: status(lab)["active"] == ["wan1"] and all(u["state"] == "UP" for u in status(lab)["uplinks"]),
             60.0, "wan1 active, both UP")
    faults.apply_fault(lab.name, "wan1", faults.parse_fault(["blackhole"]))
    wait_for(lambda: status(lab)["active"] == ["wan2"], 10.0, "failover to wan2")
    run_in_lab(lab.name, 200, first_port=30000)
    assert marks_by_uplink(lab, range(30000, 30200)) == Counter(wan2=200)
    flushes = len(status(lab)["conntrack_flushes"])
    faults.apply_fault(lab.name, "wan1", faults.parse_fault(["clear"]))
    wait_for(lambda: status(lab)["active"] == ["wan1"], 30.0, "failback to wan1")
    left = wait_for(lambda: uplink_of(lab, "wan2")["flows_move_in_s"], 5.0, "the countdown in status")
    assert 0 < left <= 4.0
    assert marks_by_uplink(lab, range(30000, 30200)) == Counter(wan2=200), "the failback moved none of them"
    # a connection from the internet to the LAN through wan2's port forward belongs to wan2 (review
    # finding 3: it was reset with the left-behind flows)
    faults.apply_fault(lab.name, "wan2", faults.parse_fault(["shape", "10mbit", "100ms"]))
    inbound = start_bulk(lab.name, "download", 8.0, inbound_via="wan2")
    ids = wait_for(lambda: forwarded_flow_ids(lab), 5.0, "the inbound connection's conntrack entry")
    f = wait_for(lambda: [f for f in status(lab)["conntrack_flushes"][flushes:] if f["uplink"] == "wan2"], 10.0,
                 "wan2's left-behind flows reset after move_flows_after")[0]
    assert f["mark"] == flow_mark(uplink_table(lab, "wan2")) | MOVABLE and f["deleted"] >= 200, f
    assert marks_by_uplink(lab, range(30000, 30200)) == Counter(), "they start again on wan1 with their next packet"
    assert uplink_of(lab, "wan2")["flows_move_in_s"] is None
    assert ids <= forwarded_flow_ids(lab), "the inbound connection's entry was not deleted"
    report = inbound.result()
    faults.apply_fault(lab.name, "wan2", faults.parse_fault(["clear"]))
    assert not report.reset and report.error is None and report.bytes > 200_000, report


def forwarded_flow_ids(spec: LabSpec) -> set[int]:
    """The conntrack ids of the router's TCP entries to the port-forward range (connections in)."""
    out = run_command(netns_exec(spec.router_ns, ["conntrack", "-L", "-p", "tcp", "-o", "id"]), timeout=30.0)
    return {int(m.group(2)) for line in out.splitlines()
            if (m := re.search(r"\bdport=(\d+)\b.*\bid=(\d+)", line)) and FORWARD_PORTS[0] <= int(m.group(1))
            <= FORWARD_PORTS[1]}


def uplink_of(spec: LabSpec, name: str) -> dict:
    return next(u for u in status(spec)["uplinks"] if u["name"] == name)


# ---- a point-to-point uplink that comes and goes (the lab's stand-in for a PPPoE session) ---------

PTP = EngineOptions(overrides={"policy": {"failback_hold": "2s", "dampening": False}}, extra_toml=tunlink.UPLINK_TOML)


@pytest.fixture(scope="module")
def ptp_lab():
    yield from a_lab("tP", PTP)


def test_a_point_to_point_uplink_is_followed_as_it_connects_drops_and_reconnects_renumbered(ptp_lab):
    lab = ptp_lab
    wait_for(lambda: uplink_of(lab, "ptp")["state"] == "DOWN" and status(lab)["active"] == ["wan1"], 60.0,
             "ptp0 missing: wan1 carries the traffic")
    assert "ptp0 missing" in uplink_of(lab, "ptp")["reason"]
    session = tunlink.start(lab.name, 2, "10.64.0.2", "10.64.0.1")  # the session comes up
    try:
        wait_for(lambda: status(lab)["active"] == ["ptp"], 30.0, "traffic on the point-to-point uplink")
        ptp = uplink_of(lab, "ptp")
        assert ptp["address"] == "10.64.0.2" and ptp["gateway"] is None
        flow = client.start_flow(lab.name, duration=4.0, interval=0.01)
        time.sleep(1.5)
        session.stop()  # the session drops: ptp0 vanishes
        report = flow.result(timeout=30)
        assert status(lab)["active"] == ["wan1"]
        assert [c.after for c in report.changes] == ["198.51.100.2"], report.summary()
        print(f"point-to-point session dropped: client outage {report.longest_outage_s * 1000:.0f} ms")
        # the vanished interface moves traffic at once, not at the probes' pace (seconds); the 0.2 s
        # target is bench/bench_flows.py's (70 ms here); this bound holds on a slow Pi too
        assert report.longest_outage_s <= 1.0, report.summary()
    finally:
        session.stop()
    session = tunlink.start(lab.name, 2, "10.64.0.6", "10.64.0.5")  # it reconnects with a new address
    try:
        wait_for(lambda: status(lab)["active"] == ["ptp"], 30.0, "the reconnected uplink takes traffic back")
        assert uplink_of(lab, "ptp")["address"] == "10.64.0.6", "followed without a restart"
        report = client.start_flow(lab.name, duration=0.5, interval=0.01).result(timeout=30)
        assert report.received >= 40 and report.seen_addresses == ["10.200.2.1"], report.summary()
    finally:
        session.stop()
