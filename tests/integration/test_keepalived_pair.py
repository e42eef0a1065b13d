"""A router pair with keepalived (issue 15), against the real kernel: two lab routers (ra, priority
150; rb, 100), one uplink each, a LAN bridge with the client, the virtual gateway 10.77.0.1, one
linkwatch engine and one keepalived per router (linkwatch.lab.pairlab).

What a LAN user sees decides: the client's UDP flow names the NAT address that carried it (wan1:
ra, wan2: rb). Bounds are generous; bench/bench_keepalived.py measures the times. Every namespace
is named lw-kp1-…; the module fixture tears the pair down by name even when a test fails.
"""

from __future__ import annotations

import os

import pytest

from linkwatch.daemon.procname import ENGINE_NAME, process_name
from linkwatch.lab import client, faults, pairlab, topology
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.pair import PairSpec, keepalived_config
from linkwatch.lab.topology import EngineOptions
from linkwatch.sinks.keepalived import read_value
from tests.integration.labutil import wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(pairlab.keepalived_binary() is None, reason="keepalived is not installed"),
    pytest.mark.root,
    pytest.mark.lab,
]

NAME = "kp1"
OPTIONS = EngineOptions(overrides={"policy": {"dampening": False}})  # ra's uplink fails on purpose, again and again


@pytest.fixture(scope="module")
def pair():
    spec = PairSpec(NAME)
    topology.down(NAME)
    pairlab.up(spec, OPTIONS)
    try:
        yield spec
    finally:
        topology.down(NAME)
        assert existing_lab_namespaces(NAME) == []


@pytest.fixture
def healthy(pair):
    """Each test starts with ra holding the gateway, both engines running, every fault cleared."""
    ra = pair.router("ra")
    if pairlab.engine_record(pair, ra) is None:
        pairlab.start_engine(pair, ra, OPTIONS)
    for u in pair.lab.uplink_list:
        faults.apply_fault(NAME, u.name, faults.parse_fault(["clear"]))
    wait_for(lambda: read_value(ra.track_file) == 0 and pairlab.holder(pair) == "ra", 20.0, "ra healthy and master")
    return pair


def routers_seen(report) -> list[str | None]:
    return [PairSpec(NAME).router_of_uplink(u) for u in report.uplinks]


def test_ra_holds_the_gateway_and_the_client_goes_through_it(healthy):
    ra, rb = healthy.routers
    assert pairlab.holder(healthy) == "ra"
    assert read_value(ra.track_file) == 0 and read_value(rb.track_file) == 0
    report = client.start_flow(NAME, duration=1.0, interval=0.02).result(timeout=20)
    assert report.received > 0 and report.trailing_outage_s == 0, report.summary()
    assert routers_seen(report) == ["ra"], report.summary()
    # what keepalived's track_process sees: the engine renamed itself, its command line names its config
    rec = pairlab.engine_record(healthy, ra)
    assert process_name(rec.pid) == ENGINE_NAME
    with open(f"/proc/{rec.pid}/cmdline", "rb") as f:
        assert ra.config_path.encode() in f.read()
    assert ra.config_path in keepalived_config(healthy, ra) and rb.config_path not in keepalived_config(healthy, ra)


def test_the_master_losing_its_last_uplink_moves_the_client_to_the_other_router_and_back(healthy):
    ra = healthy.router("ra")
    flow = client.start_flow(NAME, duration=6.0, interval=0.01, progress=0.1)
    wait_for(lambda: (flow.progress() or {}).get("received", 0) > 20, 5.0, "the client's flow answered")
    faults.apply_fault(NAME, "wan1", faults.parse_fault(["blackhole"]))
    wait_for(lambda: read_value(ra.track_file) == 1, 10.0, "ra's engine writes 1: no working uplink")
    wait_for(lambda: pairlab.holder(healthy) == "rb", 10.0, "rb takes the virtual gateway")
    report = flow.result(timeout=30)
    assert routers_seen(report) == ["ra", "rb"], report.summary()
    assert report.trailing_outage_s == 0, report.summary()
    # the uplink comes back: ra's engine proves it, writes 0, and ra takes the gateway back (preempt)
    faults.apply_fault(NAME, "wan1", faults.parse_fault(["clear"]))
    wait_for(lambda: read_value(ra.track_file) == 0, 20.0, "ra's engine writes 0 again")
    wait_for(lambda: pairlab.holder(healthy) == "ra", 10.0, "ra takes the virtual gateway back")
    report = client.start_flow(NAME, duration=0.5, interval=0.02).result(timeout=20)
    assert routers_seen(report) == ["ra"], report.summary()


def test_a_killed_engine_moves_the_gateway_and_its_restart_brings_it_back(healthy):
    ra = healthy.router("ra")
    pairlab.kill_engine(healthy, ra)
    assert read_value(ra.track_file) == 0  # its last word stays: only the process tracking can tell
    wait_for(lambda: pairlab.holder(healthy) == "rb", 10.0, "rb takes the virtual gateway from ra's dead engine")
    report = client.start_flow(NAME, duration=0.5, interval=0.02).result(timeout=20)
    assert routers_seen(report) == ["rb"], report.summary()
    pairlab.start_engine(healthy, ra, OPTIONS)  # what systemd's Restart= does
    wait_for(lambda: pairlab.holder(healthy) == "ra", 20.0, "ra takes the virtual gateway back")
    assert read_value(ra.track_file) == 0
    report = client.start_flow(NAME, duration=0.5, interval=0.02).result(timeout=20)
    assert routers_seen(report) == ["ra"], report.summary()


def test_when_both_routers_lose_every_uplink_the_master_keeps_the_gateway(healthy):
    """The reason for weight -100 rather than FAULT: ra 150 -> 50 beats rb 100 -> 1, so the LAN
    keeps a gateway (and gets traffic again the moment an uplink returns)."""
    ra, rb = healthy.routers
    faults.apply_fault(NAME, "wan1", faults.parse_fault(["blackhole"]))
    wait_for(lambda: pairlab.holder(healthy) == "rb", 10.0, "rb takes the virtual gateway")
    faults.apply_fault(NAME, "wan2", faults.parse_fault(["blackhole"]))
    wait_for(lambda: read_value(rb.track_file) == 1, 10.0, "rb's engine writes 1 too")
    wait_for(lambda: pairlab.holder(healthy) == "ra", 10.0, "ra (50) takes the gateway back from rb (1)")
    faults.apply_fault(NAME, "wan2", faults.parse_fault(["clear"]))  # rb's uplink returns first: rb (100) wins
    wait_for(lambda: pairlab.holder(healthy) == "rb", 20.0, "rb, the router with an uplink, holds the gateway")
    report = client.start_flow(NAME, duration=0.5, interval=0.02).result(timeout=20)
    assert routers_seen(report) == ["rb"], report.summary()
