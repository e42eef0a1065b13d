"""Issue 12 against the real kernel: a dual-stack lab (lab up --ipv6), the engine probing both
families, faults of one family or both, a prefix change, and the LAN client's own IPv4 and IPv6
flows (NAT66 at the router) showing what a user sees. Generous bounds; the numbers are measured by
bench/bench_ipv6.py. Namespaces lw-tV6-…, torn down by name even when a test fails."""

from __future__ import annotations

import os
import time

import pytest

from linkwatch.lab import client, faults, topology
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.plan import ECHO6_SERVER, ECHO_PORT, LabSpec
from linkwatch.lab.processes import netns_exec, run_command
from linkwatch.lab.topology import EngineOptions
from tests.integration.labutil import status, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tV6"
TARGET6 = f"[{ECHO6_SERVER}]:{ECHO_PORT}"
OPTIONS = EngineOptions(ipv6=True, overrides={"policy": {"failback_hold": "2s", "dampening": False}})


def fault(spec: LabSpec, up: str, *words: str) -> None:
    faults.apply_fault(spec.name, up, faults.parse_fault(list(words)))


def uplink(st: dict, name: str) -> dict:
    return next(u for u in st["uplinks"] if u["name"] == name)


def sh(ns: str, *argv: str) -> str:
    return run_command(netns_exec(ns, list(argv)))


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


def settled(spec: LabSpec) -> bool:
    st = status(spec)
    return (st["active"] == ["wan1"] and st["active_ipv6"] == ["wan1"]
            and all(u["state"] == "UP" and u["ipv6"]["state"] == "UP" for u in st["uplinks"]))


@pytest.fixture
def healthy(lab):
    for up in ("wan1", "wan2"):
        fault(lab, up, "clear")
    wait_for(lambda: settled(lab), 20.0, "both uplinks UP in both families, wan1 active in both")
    yield lab
    for up in ("wan1", "wan2"):
        fault(lab, up, "clear")


def test_both_families_are_probed_and_routed_through_the_active_uplink(healthy):
    st = status(healthy)
    six = uplink(st, "wan1")["ipv6"]
    assert six["address"] == "2001:db8:1::2" and six["gateway"] == "fe80::1" and six["rtt_ms"] is not None
    assert uplink(st, "wan1")["address"] == "198.51.100.2", "the IPv4 fields are as they were"
    table100 = sh(healthy.router_ns, "ip", "-6", "route", "show", "table", "100")
    assert "default via fe80::1 dev up1 proto 77" in table100
    rules = sh(healthy.router_ns, "ip", "-6", "rule", "show")
    assert "from 2001:db8:2::2 lookup 102 proto 77" in rules and "lookup main suppress_prefixlength 0" in rules
    main6 = sh(healthy.router_ns, "ip", "-6", "route", "show", "table", "main")
    assert "default via fe80::1 dev up1 proto ra metric 100" in main6, "the RA's routes are not touched"
    with client.start_flow(healthy.name, duration=1.0, interval=0.02, target=TARGET6) as flow:
        report = flow.result(timeout=20)
    assert report.received > 40 and report.seen_addresses == ["2001:db8:1::2"], report.summary()


def test_ipv6_broken_on_the_active_uplink_moves_only_ipv6(healthy):
    flow6 = client.start_flow(healthy.name, duration=8.0, interval=0.02, target=TARGET6)
    flow4 = client.start_flow(healthy.name, duration=8.0, interval=0.02)
    time.sleep(2.0)
    fault(healthy, "wan1", "blackhole", "ipv6")
    r6, r4 = flow6.result(timeout=30), flow4.result(timeout=30)
    assert [c.after for c in r6.changes] == ["2001:db8:2::2"] and r6.trailing_outage_s == 0, r6.summary()
    assert r6.changes[0].gap_s < 1.5, r6.summary()
    assert r4.seen_addresses == ["198.51.100.2"] and r4.longest_outage_s < 0.2, "IPv4 did not move: " + r4.summary()
    st = status(healthy)
    assert st["active"] == ["wan1"] and st["active_ipv6"] == ["wan2"]
    assert uplink(st, "wan1")["state"] == "UP" and uplink(st, "wan1")["ipv6"]["state"] == "DOWN"
    fault(healthy, "wan1", "clear")  # IPv6 comes back to wan1 after the failback hold (2 s here)
    wait_for(lambda: status(healthy)["active_ipv6"] == ["wan1"], 15.0, "IPv6 back on wan1")
    with client.start_flow(healthy.name, duration=0.5, interval=0.02, target=TARGET6) as flow:
        assert flow.result(timeout=20).seen_addresses == ["2001:db8:1::2"]


def test_ipv4_broken_while_ipv6_works_moves_only_ipv4(healthy):
    fault(healthy, "wan1", "blackhole", "ipv4")
    wait_for(lambda: status(healthy)["active"] == ["wan2"], 5.0, "IPv4 on wan2")
    st = status(healthy)
    assert st["active_ipv6"] == ["wan1"] and uplink(st, "wan1")["ipv6"]["state"] == "UP"
    with client.start_flow(healthy.name, duration=0.5, interval=0.02, target=TARGET6) as flow:
        assert flow.result(timeout=20).seen_addresses == ["2001:db8:1::2"]


def test_a_provider_that_stops_advertising_moves_only_ipv6_and_back(healthy):
    """The provider's radvd stops: its last RA (lifetime 0) withdraws the router's IPv6 default
    route via up1 (learned from RAs, not configured). The engine sees the gateway gone and moves
    IPv6 only; when the RAs come back, IPv6 fails back after the hold."""
    main6 = sh(healthy.router_ns, "ip", "-6", "route", "show", "default")
    assert "default via fe80::1 dev up1 proto ra metric 100 expires" in main6, "learned from an RA, with a lifetime"
    flow4 = client.start_flow(healthy.name, duration=4.0, interval=0.02)
    fault(healthy, "wan1", "no-ra")
    assert "dev up1" not in sh(healthy.router_ns, "ip", "-6", "route", "show", "default"), "the route is withdrawn"
    wait_for(lambda: status(healthy)["active_ipv6"] == ["wan2"], 3.0, "IPv6 on wan2")
    st = status(healthy)
    assert uplink(st, "wan1")["ipv6"]["state"] == "DOWN" and "gateway" in uplink(st, "wan1")["ipv6"]["reason"]
    assert faults.describe_faults(healthy)["wan1"] == "no-ra"
    with client.start_flow(healthy.name, duration=0.5, interval=0.02, target=TARGET6) as flow:
        assert flow.result(timeout=20).seen_addresses == ["2001:db8:2::2"]
    r4 = flow4.result(timeout=30)
    assert r4.seen_addresses == ["198.51.100.2"] and r4.longest_outage_s < 0.2, "IPv4 did not move: " + r4.summary()
    fault(healthy, "wan1", "clear")  # radvd again: the route comes back with its first RA
    wait_for(lambda: status(healthy)["active_ipv6"] == ["wan1"], 15.0, "IPv6 back on wan1")


def test_carrier_loss_moves_both_families_at_once(healthy):
    flow6 = client.start_flow(healthy.name, duration=4.0, interval=0.01, target=TARGET6)
    time.sleep(1.5)
    fault(healthy, "wan1", "carrier-down")
    r6 = flow6.result(timeout=30)
    assert [c.after for c in r6.changes] == ["2001:db8:2::2"] and r6.changes[0].gap_s < 0.5, r6.summary()
    st = status(healthy)
    assert st["active"] == ["wan2"] and st["active_ipv6"] == ["wan2"]


def test_a_new_delegated_prefix_is_followed_without_a_restart(healthy):
    """The provider hands out a new prefix: the uplink's IPv6 address changes. The engine's rules,
    routes and probes follow it, and the LAN's IPv6 traffic flows with the new address."""
    r, p, i = healthy.router_ns, healthy.provider_ns(1), healthy.inet_ns
    pid = status(healthy)["pid"]
    sh(p, "ip", "-6", "addr", "add", "2001:db8:1a::1/64", "dev", "dn", "nodad")
    sh(i, "ip", "-6", "route", "add", "2001:db8:1a::/64", "via", "2001:db8:f0:1::1", "dev", "p1")
    run_command(netns_exec(p, ["nft", "-f", "-"]), input_text=(
        "flush chain ip6 lwprovider forward\n"
        'add rule ip6 lwprovider forward iifname "dn" ip6 saddr != { 2001:db8:1::/64, 2001:db8:1a::/64 } drop\n'))
    try:
        flow6 = client.start_flow(healthy.name, duration=6.0, interval=0.02, target=TARGET6)
        time.sleep(1.0)
        renumbered = time.monotonic()
        sh(r, "ip", "-6", "addr", "add", "2001:db8:1a::2/64", "dev", "up1", "nodad")
        sh(r, "ip", "-6", "addr", "del", "2001:db8:1::2/64", "dev", "up1")
        wait_for(lambda: uplink(status(healthy), "wan1")["ipv6"]["address"] == "2001:db8:1a::2", 3.0,
                 "the engine sees the new address")
        report = flow6.result(timeout=30)
        moved = [c for c in report.changes if c.after == "2001:db8:1a::2"]
        assert moved and report.trailing_outage_s == 0, report.summary()
        assert moved[0].at - (renumbered - report.origin) < 3.0, "traffic flows with the new prefix within 3 s"
        st = status(healthy)
        assert st["pid"] == pid and st["active_ipv6"] == ["wan1"], "no restart, no failover"
        assert "from 2001:db8:1a::2 lookup 101 proto 77" in sh(r, "ip", "-6", "rule", "show")
        assert "2001:db8:1::2" not in sh(r, "ip", "-6", "rule", "show")
    finally:
        sh(r, "ip", "-6", "addr", "flush", "dev", "up1", "scope", "global")
        sh(r, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "up1", "nodad")


def test_an_ipv6_only_uplink_takes_ipv6_and_never_ipv4(healthy):
    """wan2 made IPv6-only by a reload (its IPv4 probes removed; its interface keeps an IPv4
    address): IPv6 fails over to it, IPv4 never does, not even when wan1's IPv4 dies too."""
    from linkwatch.report.control import call

    with open(healthy.config_path) as f:
        original = f.read()
    head, _, wan2 = original.partition("[uplinks.wan2]")
    only6 = "\n\n".join(part for part in wan2.split("\n\n")
                        if not ('target = "203.0.113.' in part and "[[uplinks.wan2.probes]]" in part))
    assert only6.count("[[uplinks.wan2.probes]]") == 2 and "203.0.113." not in only6
    try:
        with open(healthy.config_path, "w") as f:
            f.write(head + "[uplinks.wan2]" + only6)
        assert call(healthy.control_socket, {"cmd": "reload"})["ok"]
        wait_for(lambda: uplink(status(healthy), "wan2")["reason"].startswith("IPv6 only"), 3.0, "wan2 IPv6 only")
        wait_for(lambda: uplink(status(healthy), "wan2")["ipv6"]["state"] == "UP", 10.0, "wan2's IPv6 UP")
        fault(healthy, "wan1", "blackhole", "ipv6")
        wait_for(lambda: status(healthy)["active_ipv6"] == ["wan2"], 5.0, "IPv6 on the IPv6-only wan2")
        with client.start_flow(healthy.name, duration=0.5, interval=0.02, target=TARGET6) as flow:
            assert flow.result(timeout=20).seen_addresses == ["2001:db8:2::2"]
        fault(healthy, "wan1", "blackhole")  # now IPv4 too: it has nowhere to go
        wait_for(lambda: uplink(status(healthy), "wan1")["state"] == "DOWN", 5.0, "wan1 DOWN")
        st = status(healthy)
        assert "wan2" not in st["active"] and uplink(st, "wan2")["state"] == "DOWN", st["active"]
        assert "default via 198.51.100.9" not in sh(healthy.router_ns, "ip", "route", "show", "table", "100")
    finally:
        with open(healthy.config_path, "w") as f:
            f.write(original)
        assert call(healthy.control_socket, {"cmd": "reload"})["ok"]


def test_delegated_lan_prefixes_follow_a_dhcpv6_hook_and_survive_an_engine_restart(healthy):
    """`linkwatch prefixes` (what a DHCPv6 client's hook runs when prefix delegation renumbers):
    the from-rule follows at once, without a reload; a kill -9 and restart keep it; no PREFIX
    goes back to the config's (none here)."""
    import signal
    import subprocess
    import sys

    from linkwatch.lab.processes import child_env, forget_process

    def cli(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "linkwatch", "prefixes", "--socket", healthy.control_socket,
                               *words], capture_output=True, text=True, env=child_env(), timeout=30)

    def rules() -> str:
        return sh(healthy.router_ns, "ip", "-6", "rule", "show")

    saved = os.path.join(healthy.state_dir, "control.prefixes.json")
    try:
        done = cli("wan1", "2001:db8:1a00::/56")
        assert done.returncode == 0 and "wan1: LAN prefixes 2001:db8:1a00::/56" in done.stdout, done.stderr
        assert "from 2001:db8:1a00::/56 lookup 101 proto 77" in rules(), "in the kernel when the command returns"
        done = cli("wan1", "2001:db8:1b00::/56")  # renumbered
        assert "from 2001:db8:1b00::/56 lookup 101" in rules() and "2001:db8:1a00::" not in rules()
        with open(saved) as f:
            assert f.read() == '{"wan1": ["2001:db8:1b00::/56"]}'
        bad = cli("wan1", "2001:db8:1b00::1/56")
        assert bad.returncode == 1 and "host bits" in bad.stderr and "from 2001:db8:1b00::/56" in rules()
        os.kill(status(healthy)["pid"], signal.SIGKILL)
        forget_process(healthy.state_dir, "engine")
        topology.start_engine(healthy, OPTIONS)
        assert uplink(status(healthy), "wan1")["ipv6"]["prefixes"] == ["2001:db8:1b00::/56"], "kept across a restart"
        wait_for(lambda: "from 2001:db8:1b00::/56" in rules(), 3.0, "the rule after the restart's first apply")
        assert rules().count("from 2001:db8:1b00::/56") == 1, "no duplicate rule"
        # a hook that runs while no engine answers (at boot, before it): the request waits in the file
        os.kill(status(healthy)["pid"], signal.SIGKILL)
        forget_process(healthy.state_dir, "engine")
        done = cli("wan1", "2001:db8:1c00::/56")
        assert done.returncode == 0 and "saved in" in done.stdout, done.stdout + done.stderr
        topology.start_engine(healthy, OPTIONS)
        assert uplink(status(healthy), "wan1")["ipv6"]["prefixes"] == ["2001:db8:1c00::/56"], "taken at start"
        wait_for(lambda: "from 2001:db8:1c00::/56 lookup 101" in rules(), 3.0, "the saved request's rule")
        assert "2001:db8:1b00::" not in rules()
        done = cli("wan1", "--none")  # the delegation is gone
        assert done.returncode == 0 and "LAN prefixes none (from dhcp" not in done.stdout
        assert "LAN prefixes none (from cli)" in done.stdout and "2001:db8:1c00::" not in rules()
    finally:
        done = cli("wan1")  # back to the config's: none
    assert done.returncode == 0 and "LAN prefixes none (from the config)" in done.stdout, done.stdout + done.stderr
    assert "2001:db8:1c00::" not in rules()
    with open(saved) as f:
        assert f.read() == "{}"
