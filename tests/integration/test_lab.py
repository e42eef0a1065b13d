"""The lab: its plan and checks (pure), and the real thing in network namespaces (root).

Every namespace these tests make is named lw-tC… or lw-tK…; each is deleted by name in teardown.
Every packet stays inside them, except the client and bulk refusal tests, whose target is loopback.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the tree is tested in place, not installed
    sys.path.insert(0, str(REPO))

from linkwatch.commands import lab as cli  # noqa: E402
from linkwatch.lab import client, faults, topology  # noqa: E402
from linkwatch.lab.bulk import start_bulk  # noqa: E402
from linkwatch.lab.client import AddressChange, FlowReport, Reply, summarize  # noqa: E402
from linkwatch.lab.engine_config import engine_config  # noqa: E402
from linkwatch.lab.namespaces import discover, existing_lab_namespaces, namespace_prefixes  # noqa: E402
from linkwatch.lab.plan import (  # noqa: E402
    LAB_RANGES,
    LabError,
    LabSpec,
    build_plan,
    check_no_overlap,
    find_overlaps,
    lab_role,
    provider_ruleset,
    router_nat_ruleset,
    radvd_config,
    sysctl_plan,
    uplink_for_address,
)
from linkwatch.lab.processes import (  # noqa: E402
    child_env,
    process_start_time,
    read_records,
    run_command,
    tcp_listeners,
    udp_listeners,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
root_lab = [needs_root, pytest.mark.root, pytest.mark.lab]

LAB = "tC1"
UP1 = "198.51.100.2"


def run_py(args: list[str], ns: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    argv = [sys.executable, *args]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=child_env())


def lab_namespaces(name: str) -> list[str]:
    return existing_lab_namespaces(name)


def lower_up(ns: str, ifname: str) -> bool:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns) as ipr:
        (link,) = ipr.get_links(ifname=ifname)
        return bool(link["flags"] & 0x10000)  # IFF_LOWER_UP


# --- pure: plan, overlap check, config, faults, flow report ------------------------------------


def test_find_overlaps_ignores_unrelated_prefixes_and_default_routes():
    host = ["192.0.2.2/24", "127.0.0.1/8", "0.0.0.0/0", "fd00::2/64", "10.78.0.0/16", "198.51.101.0/24"]
    assert find_overlaps(LAB_RANGES, host) == []


@pytest.mark.parametrize("existing, hits", [
    ("203.0.113.9/24", ["203.0.113.0/24"]),  # an address counts with its whole network
    ("198.51.100.77/32", ["198.51.100.0/24"]),  # a host route inside a lab range
    ("10.0.0.0/8", ["10.77.0.0/24", "10.200.0.0/16"]),  # a covering route
    ("10.200.3.0/30", ["10.200.0.0/16"]),
])
def test_find_overlaps_reports_each_overlapping_lab_range(existing, hits):
    found = find_overlaps(LAB_RANGES, ["192.0.2.0/24", (existing, "route in table 77")])
    assert [str(o.lab_range) for o in found] == hits
    assert all(o.origin == "route in table 77" for o in found)


def test_check_no_overlap_names_the_prefix_and_where_it_is():
    check_no_overlap([("192.0.2.2/24", "address on eth0")])  # the host's own: fine
    with pytest.raises(LabError, match=r"203\.0\.113\.0/24 overlaps 203\.0\.113\.0/24 \(address on d0\)"):
        check_no_overlap([("192.0.2.2/24", "address on eth0"), ("203.0.113.9/24", "address on d0")])


def test_lab_spec_rejects_bad_names_and_sizes():
    for name in ("", "a-b", "x" * 17, "a b"):
        with pytest.raises(LabError, match="lab name"):
            LabSpec(name)
    for n in (0, 9):
        with pytest.raises(LabError, match=f"uplinks={n}"):
            LabSpec("ok", n)


def test_build_plan_addresses_and_routes_for_three_uplinks():
    spec = LabSpec("pl", 3)
    plan = [" ".join(c) for c in build_plan(spec)]
    assert spec.namespaces == ["lw-pl-router", "lw-pl-p1", "lw-pl-p2", "lw-pl-p3", "lw-pl-inet", "lw-pl-client"]
    assert "ip -n lw-pl-router addr add 198.51.100.18/29 dev up3" in plan
    assert "ip -n lw-pl-p3 addr add 198.51.100.17/29 dev dn" in plan
    assert "ip -n lw-pl-router route add default via 198.51.100.17 dev up3 metric 300" in plan
    assert "ip -n lw-pl-inet route add 198.51.100.16/29 via 10.200.3.1 dev p3" in plan
    assert "ip -n lw-pl-p2 route add default via 10.200.2.2 dev in" in plan
    assert "ip -n lw-pl-client route add default via 10.77.0.1 dev eth0" in plan
    assert ("ip netns exec lw-pl-router sysctl -q -w net.ipv6.conf.up3.accept_ra=2 net.ipv6.conf.up3.autoconf=0 "
            "net.ipv6.conf.up3.ra_defrtr_metric=300") in plan, "the router learns its IPv6 default routes from RAs"
    assert not any("proto ra" in c for c in plan), "no static stand-in for an RA's route"
    # every command acts on the lab's own namespaces, never the caller's
    for cmd in build_plan(spec):
        ns = cmd[3] if cmd[1] == "netns" else cmd[2]
        assert lab_role("pl", ns) is not None, cmd
    assert not any("192.0.2." in c for c in plan)


def test_each_provider_advertises_its_link_local_router_and_prefix():
    conf = radvd_config(LabSpec("pl", 3).uplink_list[2])
    assert conf.startswith("interface dn {") and "AdvSendAdvert on;" in conf and "AdvDefaultLifetime 1800;" in conf
    assert "prefix 2001:db8:3::/64 { AdvOnLink on; AdvAutonomous off; };" in conf
    assert "ip netns exec lw-pl-p2 sysctl -q -w net.ipv6.conf.dn.addr_gen_mode=1" in [
        " ".join(c) for c in build_plan(LabSpec("pl", 2))], \
        "fe80::1 is the provider's only link-local address: the RA's source and the router's gateway"


def test_router_nat_uses_snat_per_uplink():
    rules = router_nat_ruleset(LabSpec("pl", 2))
    assert 'oifname "up1" snat to 198.51.100.2' in rules
    assert 'oifname "up2" snat to 198.51.100.10' in rules
    ipv4, _, ipv6 = rules.partition("table ip6 ")
    assert "masquerade" not in ipv4, "IPv4: snat (DESIGN.md)"
    assert 'oifname "up2" masquerade' in ipv6, "NAT66 by masquerade: it follows a new delegated prefix"
    assert 'iifname { "up1", "up2" } tcp dport 8000-8999 dnat to 10.77.0.2' in rules, "the port forward"


def test_a_provider_drops_what_its_customer_sends_from_another_address():
    rules = provider_ruleset(LabSpec("pl", 2).uplink_list[1])
    assert 'iifname "dn" ip saddr != 198.51.100.8/29 drop' in rules


def test_sysctls_forward_on_router_and_providers_only():
    plan = sysctl_plan(LabSpec("pl", 2))
    assert "net.ipv4.ip_forward=1" in plan["lw-pl-router"] and "net.ipv4.ip_forward=1" in plan["lw-pl-p2"]
    assert "net.ipv4.ip_forward=1" not in plan["lw-pl-client"]
    assert any(s.startswith("net.ipv4.ping_group_range=0 ") for s in plan["lw-pl-router"])


def test_engine_config_is_the_documented_toml():
    spec = LabSpec("cf", 2)
    cfg = tomllib.loads(engine_config(spec, probe_targets=3, overrides={
        "health": {"down_after": 3, "interval": 0.2}, "policy": {"failback_hold": 2.5}},
        extra_toml='[log]\nlevel = "debug"'))
    assert cfg["control"]["socket"] == "/run/linkwatch/lab-cf/control.sock"
    assert cfg["hooks"]["directory"] == "/run/linkwatch/lab-cf/hooks.d"
    assert cfg["uplinks"]["wan2"] == {
        "interface": "up2", "gateway": "auto", "priority": 2, "probes": [
            {"type": "icmp", "target": "203.0.113.1"},
            {"type": "dns", "target": "203.0.113.53", "query": "example.com"},
            {"type": "icmp", "target": "203.0.113.2"}]}
    assert cfg["health"] == {"down_after": 3, "interval": 0.2}
    assert cfg["policy"]["failback_hold"] == 2.5 and cfg["log"]["level"] == "debug"
    per = tomllib.loads(engine_config(spec, overrides={"uplinks": {"wan1": {"weight": 3, "priority": 5}}}))
    assert (per["uplinks"]["wan1"]["weight"], per["uplinks"]["wan1"]["priority"]) == (3, 5)
    assert per["uplinks"]["wan2"]["priority"] == 2 and "weight" not in per["uplinks"]["wan2"]
    one = tomllib.loads(engine_config(spec, probe_targets=1))
    assert [p["type"] for p in one["uplinks"]["wan1"]["probes"]] == ["icmp"]


@pytest.mark.parametrize("kwargs, message", [
    ({"probe_targets": 4}, "probe targets"),
    ({"overrides": {"control": {}}}, "reserved"),
    ({"overrides": {"uplinks": {"wan9": {"weight": 2}}}}, "this lab's uplinks"),
    ({"overrides": {"uplinks": {"wan1": 3}}}, "this lab's uplinks"),
    ({"overrides": {"health": 3}}, "must be a table"),
    ({"extra_toml": "[control]\nsocket = 'x'"}, "not valid TOML"),
])
def test_engine_config_rejects_bad_input(kwargs, message):
    with pytest.raises(LabError, match=message):
        engine_config(LabSpec("cf", 2), **kwargs)


def test_fault_names_parse_and_rulesets():
    assert [faults.parse_uplink(t, 2) for t in ("wan2", "2", "up2", "UP1")] == [2, 2, 2, 1]
    for bad in ("wan0", "eth1", "wan"):
        with pytest.raises(faults.FaultError, match="not understood"):
            faults.parse_uplink(bad, 2)
    with pytest.raises(faults.FaultError, match="does not exist"):
        faults.parse_uplink("wan3", 2)
    assert faults.parse_fault(["loss", "30"]) == faults.Fault("loss", 30)
    assert faults.parse_fault(["no-ra"]) == faults.Fault("no-ra")
    for words, msg in ((["loss"], "needs one"), (["loss", "101"], "out of range"), (["blackhole", "x"], "ipv4 or ipv6"),
                       (["flood"], "not understood")):
        with pytest.raises(faults.FaultError, match=msg):
            faults.parse_fault(words)
    assert "numgen random mod 100 < 30 counter drop" in faults.fault_ruleset(faults.Fault("loss", 30))
    assert "counter drop" in faults.fault_ruleset(faults.Fault("blackhole"))
    assert "chain" not in faults.fault_ruleset(faults.Fault("clear"))


@pytest.mark.parametrize("words, message", [
    (["shape", "10mbit"], r"needs a rate and a queue, e\.g\. `shape 10mbit 400ms`"),
    (["shape", "fast", "400ms"], r"rate 'fast' is not understood: expected a number and kbit, mbit or gbit"),
    (["shape", "10mbps", "400ms"], "rate '10mbps' is not understood"),
    (["shape", "0mbit", "400ms"], "rate '0mbit' is out of range: expected 8kbit to 10gbit"),
    (["shape", "20gbit", "400ms"], "out of range"),
    (["shape", "10mbit", "soon"], "queue 'soon' is not a duration like 400ms or 1s"),
    (["shape", "10mbit", "0ms"], "queue '0ms' must be more than 0"),
    (["shape", "10mbit", "11s"], "queue '11s' is out of range: expected 1ms to 10s"),
    (["flap", "1s", "1s"], r"needs DOWN UP DURATION, e\.g\. `flap 1s 1s 60s`"),
    (["flap", "1s", "50ms", "60s"], "up time 0.05s is out of range: expected 100ms to 600s"),
    (["flap", "1s", "1s", "601s"], "duration 601s is out of range: at most 600s"),
    (["flap", "2s", "1s", "1s"], r"duration 1s is shorter than one down time \(2s\)"),
    (["flap", "1", "1s", "60s"], "down time '1' is not a duration"),
    (["wobble"], r"expected one of blackhole \[ipv4\|ipv6\], loss PCT, carrier-down, shape RATE QUEUE, "
                 "flap DOWN UP DURATION, no-ra, clear"),
])
def test_shape_and_flap_arguments_give_clear_errors(words, message):
    with pytest.raises(faults.FaultError, match=message):
        faults.parse_fault(words)


def test_shape_and_flap_parse_into_tc_and_a_schedule():
    from linkwatch.lab.flapper import flap_schedule

    shape = faults.parse_fault(["shape", "10Mbit", "1s"])
    assert shape == faults.Fault("shape", rate="10mbit", queue="1000ms") and str(shape) == "shape 10mbit 1000ms"
    assert (shape.rate_bps, shape.queue_s) == (10e6, 1.0)
    assert faults.parse_fault(["shape", "2.5mbit", "400ms"]).rate_bps == 2.5e6
    assert faults.shape_command("in", shape) == [
        "tc", "qdisc", "replace", "dev", "in", "root", "tbf", "rate", "10mbit", "burst", "32kbit", "latency", "1000ms"]
    assert faults.SHAPED_LINKS == ("dn", "in")  # towards the router (downloads), towards the internet (uploads)
    flap = faults.parse_fault(["flap", "1s", "500ms", "3s"])
    assert (flap.down, flap.up, flap.duration) == (1.0, 0.5, 3.0)
    assert flap_schedule(1.0, 0.5, 3.0) == [(0.0, "blackhole"), (1.0, "clear"), (1.5, "blackhole"),
                                            (2.5, "clear")]
    assert flap_schedule(1.0, 1.0, 3.0)[-2:] == [(2.0, "blackhole"), (3.0, "clear")]  # cut at DURATION


def test_fault_descriptions_of_tc_and_a_running_flap():
    shown = "qdisc tbf 8003: root refcnt 2 rate 10Mbit burst 4000b lat 400ms \n"
    assert faults.describe_tbf(shown) == "10Mbit 400ms"
    assert faults.describe_tbf("qdisc noqueue 0: root refcnt 2 \n") is None
    argv = ["python3", "-m", "linkwatch.lab.flapper", "--lab", "x", "--uplink", "1", "--down", "1", "--up", "0.5",
            "--duration", "60"]
    assert faults.describe_flap(argv, 17.6) == "flapping 1s down / 0.5s up, 42s left"
    assert faults.describe_flap(argv, None) == "flapping 1s down / 0.5s up"
    assert faults.describe_flap(["junk"], 1.0) == "flapping"


def test_one_way_datagrams_are_counted_not_echoed():
    from linkwatch.lab.services import OneWayTally, echo_reply, parse_tally_answer

    tally = OneWayTally(limit=2)
    wan1 = ("198.51.100.2", 40000)
    assert all(tally.reply(f"1w|{i}|tok".encode(), wan1) is None for i in range(5))
    answer = tally.reply(b"1w?|tok", ("198.51.100.2", 40001))
    assert answer == b"198.51.100.2:40001|1w?|5|198.51.100.2:40000|tok"
    assert parse_tally_answer(answer, "tok") == (5, "198.51.100.2:40000")
    assert parse_tally_answer(answer, "other") is None
    assert parse_tally_answer(tally.reply(b"1w?|never", wan1), "never") == (0, None)
    assert tally.reply(b"7|tok", wan1) == echo_reply(b"7|tok", wan1) == b"198.51.100.2:40000|7|tok"
    assert client.parse_reply(answer, "tok") is None  # a count answer is no echo of datagram "1w?"
    for token in ("a", "b", "c"):
        tally.reply(f"1w|0|{token}".encode(), wan1)
    assert list(tally.counts) == ["b", "c"]  # bounded: the oldest token is forgotten


def test_flow_rate_and_one_way_reports():
    assert client.interval_for(50, 0.01) == pytest.approx(0.02) and client.interval_for(None, 0.01) == 0.01
    for rate in (0.01, 2000):
        with pytest.raises(client.FlowError, match=f"rate {rate:g} packets/s is out of range"):
            client.interval_for(rate, 0.01)
    sent = [i * 0.02 for i in range(50)]
    two_way = summarize(sent, _replies([(i, i * 0.02 + 0.3, "198.51.100.2:9") for i in range(50)], 0.02), 0.02)
    assert two_way.rate_pps == pytest.approx(50.0) and two_way.median_rtt_s == pytest.approx(0.3)
    one = FlowReport(50, 0, 0.02, 0.98, 0.0, 0.0, one_way=True, delivered=49, delivered_via="198.51.100.10:5")
    assert one.loss_pct == pytest.approx(2.0) and one.delivered_uplink == "wan2"
    assert one.summary() == "one-way: sent 50 at 50/s, 49 arrived (2.0% lost), via 198.51.100.10:5 (wan2), 0 answered"
    assert FlowReport.from_dict(one.to_dict()) == one
    unknown = FlowReport(50, 0, 0.02, 0.98, 0.0, 0.0, one_way=True)
    assert "not counted" in unknown.summary() and unknown.loss_pct == 100.0


def test_bulk_reports_the_receivers_count():
    from linkwatch.lab import bulk

    up = bulk.BulkReport("upload", 9_000_000, 4.0, 18e6, 0.1, False, None, written=9_000_000)
    server = {"peer": "198.51.100.10", "bytes": 9_000_000, "seconds": 6.0, "window_bytes": 5_000_000,
              "window_seconds": 4.0, "longest_stall_s": 0.4, "reset": False, "error": None}
    got = bulk.combine(up, server)
    assert (got.bytes, got.rate_bps, got.longest_stall_s, got.written, got.uplink) == (
        5_000_000, 10e6, 0.4, 9_000_000, "wan2")
    assert bulk.combine(up, {**server, "reset": True, "error": "reset"}).reset
    down = bulk.BulkReport("download", 5_000_000, 4.0, 10e6, 0.4, False, None)
    # the download server's end: the client closes with data unread, a reset the transfer never saw
    assert bulk.combine(down, {**server, "reset": True}) == bulk.BulkReport(
        "download", 5_000_000, 4.0, 10e6, 0.4, False, None, seen="198.51.100.10")
    with pytest.raises(bulk.BulkError, match="direction 'sideways'"):
        bulk.check_direction("sideways")
    with pytest.raises(bulk.BulkError, match="duration 601"):
        bulk.check_duration(601)


def test_tcp_listeners_parses_proc_net_tcp():
    text = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
            "   0: 077100CB:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
            "   1: 077100CB:4E20 0200400A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2\n")
    assert tcp_listeners(text) == {("203.0.113.7", 20000)}


def test_udp_listeners_parses_proc_net_udp():
    text = ("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
            "  1: 357100CB:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2\n"
            "  2: 077100CB:1B5F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2\n")
    assert udp_listeners(text) == {("203.0.113.53", 53), ("203.0.113.7", 7007)}


def test_uplink_for_address_maps_router_addresses_only():
    assert uplink_for_address("198.51.100.10:40000").name == "wan2"
    assert uplink_for_address("198.51.100.58").name == "wan8"
    assert uplink_for_address("198.51.100.9") is None  # a gateway, not the router
    assert uplink_for_address("junk") is None


def _replies(spec: list[tuple[int, float, str]], interval: float = 0.01) -> list[Reply]:
    return [Reply(seq, seq * interval, t, seen) for seq, t, seen in spec]


def test_summarize_measures_a_failover_gap_and_the_address_change():
    sent = [i * 0.01 for i in range(100)]
    a, b = "198.51.100.2:4000", "198.51.100.10:4000"
    replies = _replies([(i, i * 0.01 + 0.001, a) for i in range(30)]
                       + [(i, i * 0.01 + 0.001, b) for i in range(80, 100)])
    r = summarize(sent, replies, 0.01)
    assert (r.sent, r.received) == (100, 50)
    assert r.longest_outage_s == pytest.approx(0.50)  # datagrams 30..79 lost: 50 × 10 ms
    assert r.trailing_outage_s == 0
    assert r.changes == (AddressChange(80, pytest.approx(0.801), "198.51.100.2", "198.51.100.10",
                                       pytest.approx(0.50)),)
    assert r.changes[0].before_uplink == "wan1" and r.changes[0].after_uplink == "wan2"
    assert r.uplinks == ["wan1", "wan2"] and r.loss_pct == 50.0


def test_summarize_edges_leading_trailing_none_and_duplicates():
    sent = [i * 0.01 for i in range(10)]
    a = "198.51.100.2:1"
    r = summarize(sent, _replies([(i, i * 0.01 + 0.001, a) for i in range(3, 7)] + [(4, 0.2, a)]), 0.01)
    assert r.received == 4  # the duplicate of 4 is ignored
    assert r.longest_outage_s == pytest.approx(0.03)  # leading 0..2 and trailing 7..9 lost
    assert r.trailing_outage_s == pytest.approx(0.03)
    none = summarize(sent, [], 0.01)
    assert (none.received, none.longest_outage_s, none.loss_pct) == (0, pytest.approx(0.10), 100.0)
    again = FlowReport.from_dict(r.to_dict())
    assert again.to_dict() == r.to_dict() and again.changes == r.changes


def test_flow_bounds_are_enforced():
    with pytest.raises(client.FlowError, match="interval 0.5 ms"):
        client.check_bounds(1.0, 0.0005)
    with pytest.raises(client.FlowError, match="duration 601s"):
        client.check_bounds(601.0, 0.01)
    with pytest.raises(client.FlowError, match="more than 200000"):
        client.check_bounds(500.0, 0.001)
    assert client.check_bounds(1.0, 0.01) == 100


def test_demo_lines_and_change_labels():
    from linkwatch.lab.demo import Mark, Snapshot, label_changes, snapshot_line

    line = snapshot_line(Snapshot(3.5, ("wan2",), (("wan1", "DOWN"), ("wan2", "UP")), "wan1", 0.42))
    assert line.startswith("   3.5s") and "active=wan2" in line and "wan1 DOWN" in line
    assert line.endswith("client via wan1, no reply for 0.42s")
    assert "engine: (no control socket)" in snapshot_line(Snapshot(0.0, (), (), None, None, "no control socket"))
    report = FlowReport(10, 8, 0.01, 0.1, 1.2, 0.0, changes=(
        AddressChange(5, 4.2, "198.51.100.2", "198.51.100.10", 0.7),
        AddressChange(9, 20.0, "198.51.100.10", "198.51.100.2", 0.0),
        AddressChange(12, 20.9, "198.51.100.2", "198.51.100.10", 0.3)), origin=100.0)
    lines = label_changes(report, [Mark(103.5, "blackhole wan1", 1.0), Mark(108.0, "clear wan1"),
                                   Mark(120.5, "carrier-down wan1", 0.2)])
    assert "blackhole wan1" in lines[0] and "wan1 -> wan2" in lines[0] and "outage  700 ms" in lines[0]
    assert lines[0].endswith("(target <= 1000 ms: ok)")
    assert "clear wan1" in lines[1] and "wan2 -> wan1" in lines[1] and "target" not in lines[1]
    assert "carrier-down wan1" in lines[2] and lines[2].endswith("(target <= 200 ms: MISSED)")


# --- root: the lab itself ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    topology.down(LAB)  # leftovers of an interrupted run
    spec = topology.up(LabSpec(LAB, 2), engine=False)
    try:
        yield spec
    finally:
        topology.down(LAB)
        assert lab_namespaces(LAB) == []


@pytest.fixture
def healthy(lab):
    yield lab
    for u in lab.uplink_list:
        faults.apply_fault(LAB, u.name, faults.Fault("clear"))


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_up_down_leaves_no_namespace_and_no_process():
    name = "tC2"
    topology.down(name)
    done = run_py(["-m", "linkwatch.commands.lab", "up", "--name", name, "--no-engine"])
    try:
        assert done.returncode == 0, done.stderr
        assert len(lab_namespaces(name)) == 5
        spec = discover(name)
        flow = client.start_flow(name, duration=30.0, interval=0.05)
        time.sleep(0.5)
        records = read_records(spec.state_dir)
        assert {r.role for r in records} == {"services", "radvd-wan1", "radvd-wan2", f"flow-{flow.pid}"}
        assert all(r.alive for r in records)
    finally:
        down = run_py(["-m", "linkwatch.commands.lab", "down", "--name", name])
    assert down.returncode == 0, down.stderr
    assert lab_namespaces(name) == []
    assert not any(process_start_time(r.pid) == r.start_time for r in records)
    assert not os.path.exists(spec.state_dir)
    again = run_py(["-m", "linkwatch.commands.lab", "down", "--name", name])
    assert again.returncode == 0 and "nothing to tear down" in again.stdout


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_up_refuses_an_existing_lab_and_down_cleans_a_partial_one():
    name = "tC3"
    partial = [f"lw-{name}-router", f"lw-{name}-p1"]
    try:
        for ns in partial:
            subprocess.run(["ip", "netns", "add", ns], check=True)
        with pytest.raises(LabError, match="already exists.*lab down"):
            topology.up(LabSpec(name, 2), engine=False)
        assert lab_namespaces(name) == sorted(partial)  # a refusal touches nothing
        report = topology.down(name)
        assert sorted(report.deleted) == sorted(partial)
        assert lab_namespaces(name) == []
    finally:
        topology.down(name)


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_up_starts_the_engine_in_the_router_and_down_stops_it():
    spec = LabSpec("tC4", 2)
    topology.down(spec.name)
    with topology.running(spec, engine=True, options=topology.EngineOptions(probe_targets=3)):
        with open(spec.config_path, "rb") as f:
            assert len(tomllib.load(f)["uplinks"]["wan1"]["probes"]) == 3
        st = topology.status(spec.name)
        assert [u.name for u in st.engine.uplinks] == ["wan1", "wan2"], st.engine_error
        (engine,) = [rec for rec, alive in st.processes if rec.role == "engine" and alive]
        assert os.stat(f"/run/netns/{spec.router_ns}").st_ino == os.stat(f"/proc/{engine.pid}/ns/net").st_ino
    assert engine.alive is False and lab_namespaces(spec.name) == []


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_client_reaches_the_echo_server_through_wan1(healthy):
    report = client.start_flow(LAB, duration=1.0, interval=0.01).result()
    assert report.sent == 100
    assert report.received >= 95
    assert report.seen_addresses == [UP1]  # the main table's metric-100 default: up1, snat to its address
    assert report.changes == ()


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_new_socket_per_datagram_makes_new_flows(healthy):
    report = client.start_flow(LAB, duration=0.5, interval=0.01, new_socket=True).result()
    assert report.new_socket and report.received >= 45
    assert len({r.seen for r in report.replies}) > 10  # a fresh source port each time
    assert report.seen_addresses == [UP1]
    ports = client.start_flow(LAB, duration=0.5, interval=0.01, new_socket=True, first_port=47000).result()
    assert ports.received >= 45 and len({r.seen for r in ports.replies}) == len(ports.replies), \
        "from first_port on, never a port twice: each datagram is a flow of its own"
    with pytest.raises(client.FlowError, match="first_port"):
        client.run_flow(0.1, 0.01, first_port=80, new_socket=True)


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_blackhole_stops_the_flow_and_clear_restores_it(healthy):
    flow = client.start_flow(LAB, duration=3.0, interval=0.01)
    time.sleep(1.0)
    faults.apply_fault(LAB, "wan1", faults.parse_fault(["blackhole"]))
    faults.apply_fault(LAB, "wan1", faults.parse_fault(["blackhole"]))  # idempotent
    assert faults.describe_faults(healthy) == {"wan1": "blackhole", "wan2": "none"}
    time.sleep(1.0)
    faults.apply_fault(LAB, "wan1", faults.Fault("clear"))
    report = flow.result()
    assert 0.8 <= report.longest_outage_s <= 1.5
    assert report.trailing_outage_s < 0.05  # it came back
    assert 60 <= report.sent - report.received <= 140
    assert report.seen_addresses == [UP1]  # no engine: nothing moved the flow
    assert faults.describe_faults(healthy) == {"wan1": "none", "wan2": "none"}


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_blackhole_on_the_standby_uplink_leaves_the_flow_alone(healthy):
    faults.apply_fault(LAB, "2", faults.Fault("blackhole"))
    report = client.start_flow(LAB, duration=0.5, interval=0.01).result()
    assert report.received >= 47 and report.seen_addresses == [UP1]


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_loss_30_percent_each_way(healthy):
    faults.apply_fault(LAB, "1", faults.parse_fault(["loss", "30"]))
    faults.apply_fault(LAB, "1", faults.parse_fault(["loss", "30"]))
    rules = run_command(["ip", "netns", "exec", healthy.provider_ns(1), "nft", "list", "ruleset"])
    assert rules.count("numgen random mod 100 < 30") == 1
    report = client.start_flow(LAB, duration=3.0, interval=0.005).result()
    # a round trip survives with 0.7 × 0.7 = 49 %: 51 % lost, ± ~5 standard deviations over 600
    assert report.sent == 600
    assert 38.0 <= report.loss_pct <= 64.0


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_carrier_down_takes_lower_up_from_the_router_uplink(healthy):
    router = healthy.router_ns
    assert lower_up(router, "up1")
    faults.apply_fault(LAB, "up1", faults.Fault("carrier-down"))
    deadline = time.monotonic() + 1.0
    while lower_up(router, "up1") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lower_up(router, "up1")
    assert lower_up(router, "up2")
    assert faults.describe_faults(healthy)["wan1"] == "carrier-down"
    faults.apply_fault(LAB, "wan1", faults.Fault("clear"))
    deadline = time.monotonic() + 2.0
    while not lower_up(router, "up1") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lower_up(router, "up1")


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_cli_status_and_fault_errors(healthy, capsys):
    assert cli.main(["status", "--name", LAB]) == 0
    out = capsys.readouterr().out
    assert "namespace lw-tC1-router: present" in out and "services: pid" in out and "running" in out
    assert cli.main(["fault", "--name", LAB, "wan3", "blackhole"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["linkwatch lab fault: uplink 'wan3' does not exist: the lab has 2 uplink(s)"]
    assert cli.main(["status", "--name", "tCnone"]) == 1
    assert "is not up" in capsys.readouterr().err


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_client_only_runs_in_the_named_labs_client_namespace(healthy):
    done = run_py(["-m", "linkwatch.lab.client", "--duration", "0.2", "--lab", LAB], ns=healthy.inet_ns)
    assert done.returncode == 2
    assert "lw-tC1-inet" in done.stderr and "not one of" in done.stderr


# --- root: busy, flapping and one-way uplinks (issue 10's lab faults and traffic) ---------------

TRAFFIC_LAB = "tK1"


@pytest.fixture(scope="module")
def traffic_lab():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    topology.down(TRAFFIC_LAB)
    spec = topology.up(LabSpec(TRAFFIC_LAB, 2), engine=False)
    try:
        yield spec
    finally:
        topology.down(TRAFFIC_LAB)
        assert lab_namespaces(TRAFFIC_LAB) == []


@pytest.fixture
def clean(traffic_lab):
    yield traffic_lab
    for u in traffic_lab.uplink_list:
        faults.apply_fault(TRAFFIC_LAB, u.name, faults.Fault("clear"))


def qdiscs(spec: LabSpec, k: int) -> str:
    return "".join(run_command(["ip", "netns", "exec", spec.provider_ns(k), "tc", "qdisc", "show", "dev", link])
                   for link in faults.SHAPED_LINKS)


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_bulk_transfers_without_faults_are_not_reset(clean):
    for direction in ("download", "upload"):
        report = start_bulk(TRAFFIC_LAB, direction, 1.0).result(timeout=30)
        assert not report.reset and report.error is None, report.summary()
        assert report.uplink == "wan1" and report.seen == UP1, report.summary()
        assert 0.9 <= report.seconds <= 1.2 and report.bytes > 10e6 and report.longest_stall_s < 0.5, report.summary()
    assert not [r for r in read_records(clean.state_dir) if r.role.startswith("bulk")]  # stopped and forgotten


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_shape_limits_the_rate_both_ways_and_queues_under_load(clean):
    idle = client.start_flow(TRAFFIC_LAB, 1.0, rate=20).result()
    assert faults.apply_fault(TRAFFIC_LAB, "wan1", faults.parse_fault(["shape", "10mbit", "400ms"])) == \
        "wan1 (lw-tK1-p1): shape 10mbit 400ms"
    assert faults.describe_faults(clean) == {"wan1": "shape 10Mbit 400ms", "wan2": "none"}
    assert qdiscs(clean, 1).count("qdisc tbf") == 2  # dn (downloads) and in (uploads)
    rates = {}
    for direction in ("download", "upload"):
        flow = client.start_flow(TRAFFIC_LAB, 4.5, rate=20)  # a small flow beside the transfer sees the queue
        report = start_bulk(TRAFFIC_LAB, direction, 4.0).result(timeout=30)
        ping = flow.result()
        assert not report.reset and report.uplink == "wan1", report.summary()
        rates[direction] = report.rate_bps
        assert 8.0e6 <= report.rate_bps <= 10e6, report.summary()  # 9.56: tbf counts headers (1448 of 1514)
        # the echo's way back (download) or out (upload) queues behind the transfer: ≈ the queue
        assert 0.3 <= max(ping.rtts_s) <= 0.5, (direction, max(ping.rtts_s))
        assert ping.received >= 0.95 * ping.sent, ping.summary()  # queued, not dropped
    assert idle.median_rtt_s < 0.02
    faults.apply_fault(TRAFFIC_LAB, "wan1", faults.Fault("clear"))
    assert "tbf" not in qdiscs(clean, 1) and faults.describe_faults(clean)["wan1"] == "none"
    print(f"shape 10mbit 400ms: download {rates['download'] / 1e6:.2f} Mbit/s, upload {rates['upload'] / 1e6:.2f} "
          f"Mbit/s; idle RTT {idle.median_rtt_s * 1000:.1f} ms")


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_shape_combines_with_loss_and_carrier_down(clean):
    faults.apply_fault(TRAFFIC_LAB, "wan2", faults.parse_fault(["shape", "1mbit", "200ms"]))
    faults.apply_fault(TRAFFIC_LAB, "wan2", faults.parse_fault(["loss", "10"]))
    faults.apply_fault(TRAFFIC_LAB, "wan2", faults.Fault("carrier-down"))
    assert faults.describe_faults(clean)["wan2"] == "loss 10%, shape 1Mbit 200ms, carrier-down"
    faults.apply_fault(TRAFFIC_LAB, "wan2", faults.Fault("clear"))
    assert faults.describe_faults(clean)["wan2"] == "none" and "tbf" not in qdiscs(clean, 2)


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_flap_toggles_and_stops_by_itself(clean):
    flow = client.start_flow(TRAFFIC_LAB, 3.2, rate=100)
    time.sleep(0.2)
    faults.apply_fault(TRAFFIC_LAB, "wan1", faults.parse_fault(["flap", "300ms", "300ms", "2.4s"]))
    shown = faults.describe_faults(clean)["wan1"]
    assert "flapping 0.3s down / 0.3s up, 2s left" in shown, shown
    report = flow.result()
    assert not any(r.role == "flap-wan1" for r in read_records(clean.state_dir)), "it forgot itself at the end"
    assert faults.describe_faults(clean)["wan1"] == "none"  # and left the provider clear
    # four 300 ms blackholes in 2.4 s: four gaps of ≈ 0.3 s, half the datagrams of those 2.4 s lost
    gaps = [b.received - a.received for a, b in zip(report.replies, report.replies[1:]) if b.received - a.received > 0.1]
    assert len(gaps) == 4 and all(0.2 <= g <= 0.42 for g in gaps), gaps
    assert 90 <= report.sent - report.received <= 150, report.summary()
    log = open(os.path.join(clean.state_dir, "flap-wan1.log")).read()
    assert log.count(" blackhole") == 4 and "flapped wan1 4 times" in log


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_clear_and_lab_down_stop_a_flap():
    name = "tK2"
    topology.down(name)
    spec = topology.up(LabSpec(name, 2), engine=False)
    try:
        faults.apply_fault(name, "wan2", faults.parse_fault(["flap", "1s", "1s", "60s"]))
        (first,) = [r for r in read_records(spec.state_dir) if r.role == "flap-wan2"]
        assert first.alive and "flapping 1s down / 1s up" in faults.describe_faults(spec)["wan2"]
        faults.apply_fault(name, "wan2", faults.Fault("clear"))
        assert not first.alive and faults.describe_faults(spec)["wan2"] == "none"
        assert not any(r.role == "flap-wan2" for r in read_records(spec.state_dir))
        faults.apply_fault(name, "wan2", faults.parse_fault(["flap", "1s", "1s", "60s"]))
        (second,) = [r for r in read_records(spec.state_dir) if r.role == "flap-wan2"]
        assert second.alive
    finally:
        report = topology.down(name)
    assert not second.alive and f"flap-wan2 {second.pid}" in report.stopped
    assert lab_namespaces(name) == []


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_lan_traffic_at_a_packet_rate_both_ways_and_one_way(clean):
    both = client.start_flow(TRAFFIC_LAB, 1.0, rate=50).result()
    assert both.sent == 50 and both.received >= 48 and both.rate_pps == pytest.approx(50, rel=0.05)
    assert both.uplinks == ["wan1"] and both.longest_outage_s < 0.1
    one = client.start_flow(TRAFFIC_LAB, 1.0, rate=50, one_way=True).result()
    assert one.one_way and one.sent == 50 and one.received == 0 and one.replies == ()  # no echo at all
    assert one.delivered == 50 and one.delivered_uplink == "wan1", one.summary()
    faults.apply_fault(TRAFFIC_LAB, "wan1", faults.Fault("blackhole"))
    lost = client.start_flow(TRAFFIC_LAB, 0.5, rate=50, one_way=True).result()
    assert lost.delivered is None and "not counted" in lost.summary()  # nothing, not even the count, got through


@pytest.mark.root
@pytest.mark.lab
@needs_root
def test_cli_shape_and_flap_errors_are_one_line(clean, capsys):
    assert cli.main(["fault", "--name", TRAFFIC_LAB, "wan1", "shape", "10mbit"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "linkwatch lab fault: fault `shape` needs a rate and a queue, e.g. `shape 10mbit 400ms`"]
    assert cli.main(["fault", "--name", TRAFFIC_LAB, "wan1", "flap", "1s", "1s", "2h"]) == 1
    assert capsys.readouterr().err.strip() == \
        "linkwatch lab fault: duration '2h' is not a duration like 400ms or 1s"
    assert faults.describe_faults(clean) == {"wan1": "none", "wan2": "none"}  # nothing applied
    assert cli.main(["fault", "--name", TRAFFIC_LAB, "wan1", "shape", "5mbit", "1s"]) == 0
    assert capsys.readouterr().out.strip() == "wan1 (lw-tK1-p1): shape 5mbit 1000ms"
    assert cli.main(["status", "--name", TRAFFIC_LAB]) == 0
    assert "fault wan1: shape 5Mbit 1s" in capsys.readouterr().out


# --- root: network-safety refusals -------------------------------------------------------------


@pytest.fixture
def scratch_ns():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = "lw-tCo-scratch"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "add", "d0", "type", "bridge"], ["addr", "add", "203.0.113.9/24", "dev", "d0"],
                    ["link", "set", "d0", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        topology.down("tCo")


@pytest.mark.root
@needs_root
def test_lab_up_refuses_inside_a_namespace_with_an_overlapping_address(scratch_ns):
    assert ("203.0.113.9/24", "address on d0") in namespace_prefixes(scratch_ns)
    done = run_py(["-m", "linkwatch.commands.lab", "up", "--name", "tCo", "--no-engine"], ns=scratch_ns)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linkwatch lab up: refusing to start")
    assert "203.0.113.0/24 overlaps 203.0.113.0/24 (address on d0)" in lines[0]
    assert lab_namespaces("tCo") == []


@pytest.mark.root
@needs_root
def test_services_refuse_outside_a_lab_namespace():
    done = run_py(["-m", "linkwatch.lab.services", "--dns", "203.0.113.53", "--echo", "203.0.113.7:7007"],
                  timeout=15)
    assert done.returncode != 0
    assert "not inside a lab network namespace" in done.stderr


@pytest.mark.root
@needs_root
def test_bulk_refuses_outside_a_lab_namespace_and_connects_nowhere():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sink:
        sink.bind(("127.0.0.1", 0))  # if the guard failed, the client would connect here, on loopback
        sink.listen(1)
        port = sink.getsockname()[1]
        done = run_py(["-m", "linkwatch.lab.bulk", "get", "--duration", "0.5", "--target", f"127.0.0.1:{port}"])
        assert done.returncode == 2
        assert "not inside a lab network namespace" in done.stderr
        assert select.select([sink], [], [], 0.2)[0] == []
    done = run_py(["-m", "linkwatch.lab.bulk", "serve", "--duration", "0.5", "--port", "20999"])
    assert done.returncode == 2 and "not inside a lab network namespace" in done.stderr


@pytest.mark.root
@needs_root
def test_client_refuses_outside_a_lab_namespace_and_sends_nothing():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))  # if the guard failed, the datagrams would land here, on loopback
        port = sink.getsockname()[1]
        done = run_py(["-m", "linkwatch.lab.client", "--duration", "0.2", "--target", f"127.0.0.1:{port}"])
        assert done.returncode == 2
        assert "not inside a lab network namespace" in done.stderr
        assert select.select([sink], [], [], 0.2)[0] == []
