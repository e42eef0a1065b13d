"""SNMP traps of a real failover, received and decoded BY NAME by net-snmp's snmptrapd.

Lab tS (namespaces lw-tS-*): the engine in the router namespace sends to snmptrapd instances in the
client (management) namespace, 10.77.0.2, all loaded with LINKWATCH-MIB:

    :9162 v2c trap             :9163 v3 authPriv (SHA-256 + AES-128) trap, and a v3 inform
    :9164 v3 trap, snmptrapd configured with WRONG keys (must decode nothing)
    :9165 v2c inform           :9166 a v2c inform to a port where nothing listens (an nftables
                                     counter in the client namespace counts its retransmissions)

Then wan2 flaps (carrier-down / clear) within one storm window: the receivers get at most
trap_burst + 1 notifications about it, the last being lwUplinkFlapping. The lab and every
snmptrapd are stopped by pid / deleted by name even when a test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from linkwatch.lab import faults, topology
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.plan import LabSpec
from linkwatch.lab.topology import EngineOptions
from tests.integration.labutil import status, wait_for
from tests.integration.trapd import Trapd, snmp_toml, value

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tS"
ROOT = Path(__file__).resolve().parents[2]
ENGINE_ID = "80001f88806c772d74532d6c6162"  # the engine's [snmp] engine_id; v3 trap receivers need it
COMMUNITY = "tS-community-5731"
USER, AUTH, PRIV = "lwops", "tS-auth-passphrase-1", "tS-priv-passphrase-2"
BURST, WINDOW = 3, 10.0
V2C, V3, WRONG, INFORM, DEAD = 9162, 9163, 9164, 9165, 9166
DEAD_TIMEOUT, DEAD_RETRIES = 0.3, 2
COUNT_TABLE = "lwtscount"

SNMP_TOML = snmp_toml(USER, AUTH, PRIV, COMMUNITY, [
    {"port": V2C, "version": "2c"},
    {"port": V3, "version": "3"},
    {"port": WRONG, "version": "3"},
    {"port": INFORM, "version": "2c", "kind": "inform"},
    {"port": V3, "version": "3", "kind": "inform"},
    {"port": DEAD, "version": "2c", "kind": "inform", "timeout": f"{DEAD_TIMEOUT}s", "retries": DEAD_RETRIES},
])
OPTIONS = EngineOptions(
    overrides={"policy": {"failback_hold": "2s"},
               "health": {"standby_interval": "250ms", "up_after": 3},
               "snmp": {"engine_id": ENGINE_ID, "trap_burst": BURST, "trap_window": f"{WINDOW:g}s"}},
    extra_toml=SNMP_TOML)
RECEIVER = {(V2C, "trap"): 0, (V3, "trap"): 1, (WRONG, "trap"): 2, (INFORM, "inform"): 3, (V3, "inform"): 4,
            (DEAD, "inform"): 5}  # index in [[snmp.traps]]


def ietf_mib_dir() -> str:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "fetch-ietf-mibs.sh")], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    return out.strip().splitlines()[-1]


def trap_stats(spec: LabSpec) -> dict:
    return status(spec)["sinks"]["snmp-traps"]["detail"]


def receiver(spec: LabSpec, port: int, kind: str) -> dict:
    rx = trap_stats(spec)["receivers"][RECEIVER[(port, kind)]]
    assert (rx["port"], rx["kind"]) == (port, kind)
    return rx


def named(name: str, **objects: str):
    """Matches a trap decoded as LINKWATCH-MIB::<name> whose objects have these values."""
    return lambda t: t["oid"] == f"LINKWATCH-MIB::{name}" and all(value(t, k) == v for k, v in objects.items())


def dead_port_packets(spec: LabSpec) -> int:
    out = subprocess.run(["ip", "netns", "exec", spec.client_ns, "nft", "list", "table", "inet", COUNT_TABLE],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    return int(re.search(r"counter packets (\d+)", out).group(1))


def fault(spec: LabSpec, uplink: str, *words: str) -> None:
    faults.apply_fault(spec.name, uplink, faults.parse_fault(list(words)))


def settled(spec: LabSpec) -> bool:
    st = status(spec)
    return st["active"] == ["wan1"] and all(u["state"] == "UP" for u in st["uplinks"])


class Lab:
    def __init__(self, spec: LabSpec, trapds: dict[int, Trapd]):
        self.spec = spec
        self.trapds = trapds
        self.failover_s: float | None = None


@pytest.fixture(scope="module")
def lab():
    topology.down(LAB)
    spec = LabSpec(LAB, 2)
    mib_dirs = [ietf_mib_dir(), "/usr/share/snmp/mibs", str(ROOT / "packaging" / "mibs")]
    create = f"createUser -e 0x{ENGINE_ID} {USER} SHA-256 {AUTH} AES {PRIV}"
    confs = {
        V2C: [f"authCommunity log,execute,net {COMMUNITY}"],
        V3: [create, f"createUser {USER} SHA-256 {AUTH} AES {PRIV}",  # the second: informs (its own engine ID)
             f"authUser log,execute {USER} priv"],
        WRONG: [f"createUser -e 0x{ENGINE_ID} {USER} SHA-256 wrong-auth-passphrase AES wrong-priv-passphrase",
                f"authUser log,execute {USER} priv"],
        INFORM: [f"authCommunity log,execute,net {COMMUNITY}"],
    }
    trapds: dict[int, Trapd] = {}
    try:
        topology.up(spec, engine=False)
        for port, conf in confs.items():
            trapds[port] = Trapd(spec.client_ns, port, conf, mib_dirs).start()
        counter = (f"table inet {COUNT_TABLE} {{\n  chain input {{\n"
                   f"    type filter hook input priority 0; policy accept;\n    udp dport {DEAD} counter\n  }}\n}}\n")
        subprocess.run(["ip", "netns", "exec", spec.client_ns, "nft", "-f", "-"], input=counter, text=True,
                       check=True, timeout=10)
        topology.start_engine(spec, OPTIONS)
        yield Lab(spec, trapds)
    finally:
        for t in trapds.values():
            t.cleanup()
        topology.down(LAB)
    assert not existing_lab_namespaces(LAB)


@pytest.fixture(scope="module")
def failover(lab):
    """One real failover (blackhole wan1), timed; every test below looks at what it caused."""
    wait_for(lambda: settled(lab.spec), 20.0, "both uplinks UP and wan1 active")
    t0 = time.monotonic()
    fault(lab.spec, "wan1", "blackhole")
    wait_for(lambda: status(lab.spec)["active"] == ["wan2"], 5.0, "failover to wan2")
    lab.failover_s = time.monotonic() - t0
    yield lab


def test_v2c_and_v3_authpriv_traps_of_a_failover_are_decoded_by_name(failover):
    for port in (V2C, V3):
        trapd = failover.trapds[port]
        down = trapd.wait_for(named("lwUplinkDown", lwUplinkName="wan1"), 5.0, "lwUplinkDown for wan1")
        assert value(down, "lwUplinkInterface") == "up1"
        assert value(down, "lwUplinkState") == "down", down  # the enum label from LINKWATCH-MIB
        assert value(down, "lwActiveUplinks") == "wan2", "the active set after the change (LINKWATCH-MIB)"
        assert any(k.startswith("LINKWATCH-MIB::lwUplinkName.1") for k in down["varbinds"]), down
        moved = trapd.wait_for(named("lwActiveChanged", lwActiveUplinks="wan2"), 5.0, "lwActiveChanged to wan2")
        assert value(moved, "lwPreviousActiveUplinks") == "wan1"
        assert moved["received"] >= down["received"], "what broke first, then where traffic went"
        assert down["uptime"] and down["source"].startswith("10.77.0.1:")
    st = trap_stats(failover.spec)
    assert receiver(failover.spec, V2C, "trap")["failed"] == 0
    assert COMMUNITY not in repr(st) and AUTH not in repr(st) and PRIV not in repr(st)


def test_a_receiver_with_wrong_v3_keys_decodes_nothing(failover):
    failover.trapds[V3].wait_for(named("lwUplinkDown", lwUplinkName="wan1"), 5.0)  # it was sent, to both
    time.sleep(0.3)
    wrong = failover.trapds[WRONG]
    assert receiver(failover.spec, WRONG, "trap")["sent"] >= 2, "the engine did send to it"
    assert [t for t in wrong.traps() if "lwUplinkDown" in t["oid"]] == []
    assert wrong.traps() == [], wrong.traps()
    assert "lwUplinkDown" not in wrong.log_text()
    assert f"Authentication failed for {USER}" in wrong.log_text(), "net-snmp says why it decoded nothing"


def test_informs_are_acknowledged_and_a_dead_inform_receiver_is_retried_without_delaying_failover(failover):
    spec = failover.spec
    assert failover.failover_s is not None and failover.failover_s < 4.0, \
        f"failover took {failover.failover_s:.2f}s with a dead inform receiver"
    failover.trapds[INFORM].wait_for(named("lwUplinkDown", lwUplinkName="wan1"), 5.0)
    v2c = wait_for(lambda: (rx := receiver(spec, INFORM, "inform"))["acknowledged"] >= 2 and rx, 5.0,
                   "v2c informs acknowledged")
    assert v2c["failed"] == 0
    v3 = wait_for(lambda: (rx := receiver(spec, V3, "inform"))["acknowledged"] >= 2 and rx, 5.0,
                  "v3 authPriv informs acknowledged (engine ID discovered)")
    assert v3["failed"] == 0
    dead = wait_for(lambda: (rx := receiver(spec, DEAD, "inform"))["in_flight"] == 0 and rx["failed"] >= 2 and rx,
                    (DEAD_TIMEOUT * (DEAD_RETRIES + 1) + 3) * 2, "the dead receiver's informs to fail")
    assert dead["acknowledged"] == 0 and dead["failed"] == dead["sent"]
    assert "no answer" in dead["last_error"] or "No SNMP response" in dead["last_error"], dead["last_error"]
    assert dead_port_packets(spec) == dead["sent"] * (DEAD_RETRIES + 1), "each inform sent 1 + retries times"
    assert receiver(spec, V2C, "trap")["sent"] == dead["sent"], "the other receivers got the same notifications"


def test_a_flapping_uplink_causes_at_most_burst_plus_one_traps(lab):
    spec = lab.spec
    fault(spec, "wan1", "clear")
    wait_for(lambda: settled(spec), 25.0, "failback to wan1, both UP")
    flaps = 5
    t_first = time.monotonic()
    for _ in range(flaps):
        fault(spec, "wan2", "carrier-down")
        wait_for(lambda: next(u for u in status(spec)["uplinks"] if u["name"] == "wan2")["state"] == "DOWN", 3.0,
                 "wan2 DOWN")
        fault(spec, "wan2", "clear")
        wait_for(lambda: next(u for u in status(spec)["uplinks"] if u["name"] == "wan2")["state"] == "UP", 5.0,
                 "wan2 UP again")
    took = time.monotonic() - t_first
    assert took < WINDOW - 1.0, f"the {flaps} flaps took {took:.1f}s: not within one {WINDOW:g}s window"
    trapd = lab.trapds[V2C]
    summary = trapd.wait_for(named("lwUplinkFlapping", lwUplinkName="wan2"), WINDOW + 3.0, "lwUplinkFlapping")
    time.sleep(0.5)
    about_wan2 = [t for t in trapd.traps() if value(t, "lwUplinkName") == "wan2"]
    names = [t["oid"].split("::")[-1] for t in about_wan2]
    assert len(about_wan2) <= BURST + 1, names
    assert names[-1] == "lwUplinkFlapping" and names.count("lwUplinkFlapping") == 1, names
    assert names[:BURST] == ["lwUplinkDown", "lwUplinkUp", "lwUplinkDown"], names
    st = status(spec)
    wan2 = next(u for u in st["uplinks"] if u["name"] == "wan2")
    held = st["sinks"]["snmp-traps"]["detail"]["suppressed"]["wan2"]
    assert wan2["dampened"], "5 carrier losses in seconds: a flapping uplink (penalty past 3)"
    assert held == 2 * flaps - BURST + 1, "every DOWN and UP beyond the burst was held back, and the dampening trap"
    assert value(summary, "lwUplinkSuppressedTraps") == str(held)
    assert value(summary, "lwUplinkTransitions") == str(wan2["transitions"]), "the same count the engine shows"
    assert value(summary, "lwUplinkState") == "up"
    assert summary["received"] - about_wan2[0]["received"] == pytest.approx(WINDOW, abs=1.0), \
        "the summary comes when the window ends, by the timer"
    assert st["active"] == ["wan1"]
