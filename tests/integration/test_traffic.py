"""Issue 10 against the real kernel: a busy uplink (tbf: a modem's queue) with a TCP download stays
put, a blackhole under LAN traffic is seen from the traffic itself, one-way traffic fails nothing
over, a flapping uplink gets its traffic back at most once and shows as dampened, a standby
uplink costs little. Short versions of what bench/bench_traffic.py measures in full; bounds here
are generous (this machine's timing is noisy), the numbers are the benchmark's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from linkwatch.lab import client, faults, topology
from linkwatch.lab.bulk import start_bulk
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.plan import LabSpec
from linkwatch.lab.processes import netns_exec, read_records, run_command
from linkwatch.lab.topology import EngineOptions
from tests.integration.labutil import status, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tT"
# standby 1 s (default 10 s): a DOWN uplink is probed often enough for a flap to show in 20 s
OPTIONS = EngineOptions(overrides={"policy": {"failback_hold": "3s"}, "health": {"standby_interval": "1s"}})


def fault(spec: LabSpec, up: str, *words: str) -> str:
    return faults.apply_fault(spec.name, up, faults.parse_fault(list(words)))


def uplink(st: dict, name: str) -> dict:
    return next(u for u in st["uplinks"] if u["name"] == name)


def events_of(spec: LabSpec, since_changes: int) -> int:
    return status(spec)["active_changes"] - since_changes


@pytest.fixture(scope="module")
def lab():
    topology.down(LAB)
    spec = LabSpec(LAB)
    try:
        topology.up(spec, engine=True, options=OPTIONS)
        yield spec
    finally:
        topology.down(LAB)
    assert not existing_lab_namespaces(LAB)


@pytest.fixture
def healthy(lab):
    for up in ("wan1", "wan2"):
        fault(lab, up, "clear")
    wait_for(lambda: all(u["state"] == "UP" for u in status(lab)["uplinks"]) and status(lab)["active"] == ["wan1"]
             and not uplink(status(lab), "wan1")["dampened"], 60.0, "both UP, wan1 active, nothing dampened")
    yield lab
    for up in ("wan1", "wan2"):
        fault(lab, up, "clear")


def test_shape_fault_limits_the_rate_and_queues_and_clears(healthy):
    spec = healthy
    assert "shape 10mbit 400ms" in fault(spec, "wan1", "shape", "10mbit", "400ms")
    text = run_command(netns_exec(spec.provider_ns(1), ["tc", "qdisc", "show", "dev", "dn"]))
    assert "tbf" in text and "10Mbit" in text
    assert faults.describe_faults(spec)["wan1"].startswith("shape 10Mbit")
    fault(spec, "wan1", "clear")
    assert "tbf" not in run_command(netns_exec(spec.provider_ns(1), ["tc", "qdisc", "show", "dev", "dn"]))
    with pytest.raises(faults.FaultError, match="rate"):
        faults.parse_fault(["shape", "fast", "400ms"])
    with pytest.raises(faults.FaultError, match="queue"):
        faults.parse_fault(["shape", "10mbit", "soon"])


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_a_busy_uplink_with_a_deep_queue_keeps_its_traffic_and_its_flows(healthy, direction):
    spec = healthy
    before = status(spec)
    fault(spec, "wan1", "shape", "10mbit", "1s")
    flow = client.start_flow(spec.name, duration=12.0, interval=0.1)  # a small flow beside it sees the queue
    report = start_bulk(spec.name, direction, 12.0).result(timeout=60)
    ping = flow.result(timeout=30)
    after = status(spec)
    fault(spec, "wan1", "clear")
    assert not report.reset and report.error is None, report.summary()
    assert report.uplink == "wan1", report.summary()
    assert report.rate_bps >= 0.85 * 10e6, report.summary()
    assert max(r.received - r.sent for r in ping.replies) > 0.3, "the queue really filled up"
    assert after["active"] == ["wan1"] and after["active_changes"] == before["active_changes"], "no traffic moved"
    assert uplink(after, "wan1")["downs"] == uplink(before, "wan1")["downs"], "never DOWN"
    assert after["conntrack_flushes"] == before["conntrack_flushes"], "no flow was reset"


def test_a_blackhole_under_lan_traffic_is_seen_from_the_traffic(healthy):
    spec = healthy
    time.sleep(3.5)  # late replies of an earlier busy test are older than late_window (a slow link waits it out)
    flow = client.start_flow(spec.name, duration=6.0, interval=0.02)  # 50 packets/s each way
    time.sleep(3.0)
    assert uplink(status(spec), "wan1")["proven"], "the call's traffic proves wan1"
    fault(spec, "wan1", "blackhole")
    report = flow.result(timeout=30)
    st = status(spec)
    assert st["active"] == ["wan2"]
    assert uplink(st, "wan1")["state"] == "DOWN", st
    down = [line for line in Path(spec.engine_log).read_text(errors="replace").splitlines()
            if "uplink=wan1" in line and "-> DOWN" in line][-1]
    assert "nothing came in for" in down, f"the traffic saw it, not three failed rounds: {down}"
    assert report.longest_outage_s < 0.8, report.summary()  # the benchmark holds the 0.35 s median


def test_a_failback_leaves_the_backups_flows_on_it_and_sends_new_ones_home(healthy):
    """Sticky flows (issue 10 item 5): wan1 dies, a UDP call and a TCP download start on wan2; wan1
    comes back and takes traffic back after the hold: the call and the download stay on wan2 (same
    NAT address, no gap, no reset, no flush); a flow started after the failback leaves through wan1."""
    spec = healthy
    fault(spec, "wan1", "blackhole")
    wait_for(lambda: status(spec)["active"] == ["wan2"], 10.0, "failover to wan2")
    flushes_of_wan2 = [f for f in status(spec)["conntrack_flushes"] if f["uplink"] == "wan2"]
    fault(spec, "wan2", "shape", "10mbit", "200ms")  # a bounded download, not gigabits over veth
    call = client.start_flow(spec.name, duration=12.0, interval=0.02)
    download = start_bulk(spec.name, "download", 12.0)
    time.sleep(1.5)
    fault(spec, "wan1", "clear")
    wait_for(lambda: status(spec)["active"] == ["wan1"], 15.0, "failback to wan1")
    new = client.start_flow(spec.name, duration=1.5, interval=0.02).result(timeout=30)
    call_report, dl = call.result(timeout=40), download.result()
    assert {r.address for r in new.replies} == {"198.51.100.2"}, "a new flow takes the preferred uplink"
    assert call_report.changes == () and {r.address for r in call_report.replies} == {"198.51.100.10"}, \
        call_report.summary()
    assert call_report.longest_outage_s < 0.3 and call_report.trailing_outage_s == 0, call_report.summary()
    assert not dl.reset and dl.error is None and dl.seen == "198.51.100.10", dl
    assert dl.longest_stall_s < 1.0, dl
    assert [f for f in status(spec)["conntrack_flushes"] if f["uplink"] == "wan2"] == flushes_of_wan2, \
        "wan2's flows were not flushed at the failback (wan1's flush of its own failover may land late)"


def test_a_port_forward_on_the_backup_is_answered_through_the_backup(healthy):
    """wan1 carries the traffic; a host in the internet connects to wan2's address and the router
    forwards it to the LAN client: the replies leave through wan2 (its provider drops anything from
    wan2's address arriving elsewhere, as real providers do), so the transfer works, and it keeps
    working through a failover of wan1 to wan2 and back (wan2 never stops working)."""
    spec = healthy
    fault(spec, "wan2", "shape", "10mbit", "100ms")  # a bounded transfer, not gigabits over veth
    inbound = start_bulk(spec.name, "download", 3.0, inbound_via="wan2").result()
    assert not inbound.reset and inbound.error is None and inbound.bytes > 200_000, inbound
    fault(spec, "wan1", "blackhole")
    wait_for(lambda: status(spec)["active"] == ["wan2"], 10.0, "failover to wan2")
    transfer = start_bulk(spec.name, "download", 8.0, inbound_via="wan2")
    time.sleep(1.0)
    fault(spec, "wan1", "clear")
    wait_for(lambda: status(spec)["active"] == ["wan1"], 15.0, "failback to wan1")
    inbound = transfer.result()
    assert not inbound.reset and inbound.error is None and inbound.longest_stall_s < 1.0, inbound


def test_one_way_traffic_fails_nothing_over(healthy):
    spec = healthy
    before = status(spec)
    flow = client.start_flow(spec.name, duration=8.0, interval=0.02, one_way=True)
    report = flow.result(timeout=30)
    after = status(spec)
    assert report.sent > 300 and not report.replies, "the echo server answers none of them"
    assert after["active"] == ["wan1"] and after["active_changes"] == before["active_changes"]
    assert uplink(after, "wan1")["downs"] == uplink(before, "wan1")["downs"]


def test_flap_is_stopped_by_clear(healthy):
    spec = healthy
    fault(spec, "wan2", "flap", "500ms", "500ms", "60s")
    fault(spec, "wan2", "clear")
    assert not any(r.role == "flap-wan2" for r in read_records(spec.state_dir))
    assert faults.describe_faults(spec)["wan2"] == "none"


def test_a_standby_uplink_probes_on_a_budget(healthy):
    spec = healthy
    st = uplink(status(spec), "wan2")
    assert st["interval_ms"] == 1000
    # every probe of wan2 is counted by the provider's own nftables counter (both ways)
    table = ("table inet lwcount {\n    chain forward {\n        type filter hook forward priority filter; policy accept;\n"
             "        counter\n    }\n}\n")
    ns = spec.provider_ns(2)
    run_command(netns_exec(ns, ["nft", "-f", "-"]), input_text=table)
    try:
        time.sleep(30.0)
        text = run_command(netns_exec(ns, ["nft", "list", "table", "inet", "lwcount"]))
    finally:
        run_command(netns_exec(ns, ["nft", "delete", "table", "inet", "lwcount"]))
    counted = int(text.split("bytes")[1].split()[0])
    per_day = counted / 30.0 * 86400
    assert per_day <= 10 * 1.5e6, f"{per_day / 1e6:.2f} MB/day (at a 1 s standby interval: 10 x the default's)"


# last: a dampened uplink stays dampened for minutes (the penalty decays with a 1 min half-life)
def test_a_flapping_uplink_gets_traffic_back_at_most_twice_and_shows_as_dampened(healthy):
    """At this lab's short failback_hold (3 s, default 10 s: then it never gets traffic back while it
    flaps 1 s / 1 s) and 1 s standby probing, wan1 is seen UP for 3 s between blackouts now and
    then: each outage adds 1 to its penalty, each dip 0.5, so it is dampened (3) after at most
    three outages: away, back, away, back, away."""
    spec = healthy
    before = status(spec)["active_changes"]
    assert "flap" in fault(spec, "wan1", "flap", "1s", "1s", "20s")
    assert "flapping" in faults.describe_faults(spec)["wan1"]
    time.sleep(21.0)
    assert not any(r.role.startswith("flap") and r.alive for r in read_records(spec.state_dir)), "stopped by itself"
    st = status(spec)
    assert events_of(spec, before) <= 5, "at most: away, back, away, back, away"
    assert uplink(st, "wan1")["dampened"] and uplink(st, "wan1")["flap_penalty"] >= 3
    assert st["active"] == ["wan2"], "dampened: no traffic back while it flaps"
