"""The SNMP agent in the engine, read by net-snmp's own tools from the lab's management side.

The lab "tA" runs the engine with [snmp.agent] on 10.77.0.1:1161 (a v2c community and a v3
authPriv user); snmpwalk, snmptable, snmpget and snmpset run in the client namespace
(10.77.0.2) and must show what `linkwatch status` shows, before and after a blackhole failover.
Every namespace is lw-tA-…; the module fixture tears the lab down by name even when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from linkwatch.lab import faults, topology
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.plan import LabSpec
from linkwatch.lab.processes import netns_exec
from linkwatch.lab.topology import EngineOptions
from tests.integration.labutil import status, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tA"
REPO = Path(__file__).resolve().parents[2]
AGENT = "10.77.0.1:1161"
COMMUNITY = "lw-lab-monitor"
AUTH_KEY, PRIV_KEY = "lab-auth-passphrase", "lab-priv-passphrase"
SECRETS = (COMMUNITY, AUTH_KEY, PRIV_KEY)
OPTIONS = EngineOptions(overrides={
    "policy": {"failback_hold": "2s"},
    "snmp": {
        "agent": {"enabled": True, "listen": AGENT, "community": COMMUNITY, "users": ["ops"]},
        "users": {"ops": {"auth": "sha256", "auth_key": AUTH_KEY, "priv": "aes", "priv_key": PRIV_KEY}},
    },
})
V2 = ["-v2c", "-c", COMMUNITY]
V3 = ["-v3", "-l", "authPriv", "-u", "ops", "-a", "SHA-256", "-A", AUTH_KEY, "-x", "AES", "-X", PRIV_KEY]
STATE_LABELS = {"INIT": "init", "UP": "up", "FALLING": "falling", "DOWN": "down", "RISING": "rising",
                "DEGRADED": "degraded", "DISABLED": "disabled"}


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


@pytest.fixture(scope="module")
def mib_args() -> list[str]:
    done = subprocess.run(["bash", str(REPO / "scripts" / "fetch-ietf-mibs.sh")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (REPO / "packaging" / "mibs" / "LINKWATCH-MIB.txt").exists()
    return ["-M", f"+{done.stdout.strip()}:{REPO / 'packaging' / 'mibs'}", "-m", "LINKWATCH-MIB"]


def snmp(spec: LabSpec, tool: str, auth: list[str], *args: str, timeout: float = 1.0) -> subprocess.CompletedProcess:
    """A net-snmp tool in the lab's client namespace, against the agent."""
    argv = netns_exec(spec.client_ns, [tool, *auth, "-t", str(timeout), "-r", "1", *args])
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def settled(spec: LabSpec, active: str, down: str | None = None):
    def check():
        st = status(spec)
        states = {u["name"]: u["state"] for u in st["uplinks"]}
        ok = st["active"] == [active] and all(s == ("DOWN" if n == down else "UP") for n, s in states.items())
        return st if ok else None
    return check


def table_rows(spec: LabSpec, mib_args: list[str], auth: list[str]) -> list[dict[str, str]]:
    """lwUplinkTable as snmptable prints it (-Ci: with the index column), one dict per row."""
    done = snmp(spec, "snmptable", auth, *mib_args, "-Ci", "-Cf", "|", AGENT, "LINKWATCH-MIB::lwUplinkTable")
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if "|" in ln]
    header = lines[0].split("|")
    return [dict(zip(header, ln.split("|"))) for ln in lines[1:]]


def walk(spec: LabSpec, mib_args: list[str], auth: list[str], oid: str) -> dict[str, str]:
    """snmpwalk -OQs: {name.index: value}."""
    done = snmp(spec, "snmpwalk", auth, *mib_args, "-OQs", AGENT, oid)
    assert done.returncode == 0, done.stderr
    return dict(ln.split(" = ", 1) for ln in done.stdout.splitlines() if " = " in ln)


def same_as_status(rows: list[dict[str, str]], st: dict) -> None:
    shown = [(r["lwUplinkName"], r["lwUplinkInterface"], r["lwUplinkState"], r["lwUplinkActive"],
              r["lwUplinkPriority"]) for r in rows]
    want = [(u["name"], u["interface"], STATE_LABELS[u["state"]], "true" if u["active"] else "false",
             str(u["priority"])) for u in st["uplinks"]]
    assert shown == want


def test_snmptable_and_snmpwalk_show_the_status_before_and_after_a_failover(lab, mib_args):
    before = wait_for(settled(lab, "wan1"), 20.0, "both uplinks UP, wan1 active")
    time.sleep(0.6)  # older than the agent's 0.5 s snapshot
    rows = table_rows(lab, mib_args, V2)
    same_as_status(rows, status(lab))
    assert [r["index"] for r in rows] == ["1", "2"]
    v3 = walk(lab, mib_args, V3, "LINKWATCH-MIB::lwUplinkTable")
    assert (v3["lwUplinkState.1"], v3["lwUplinkState.2"]) == ("up", "up")
    assert (v3["lwUplinkActive.1"], v3["lwUplinkActive.2"]) == ("true", "false")
    scalars = walk(lab, mib_args, V2, "LINKWATCH-MIB::lwScalars")
    assert scalars["lwActiveUplinks.0"] == "wan1" and scalars["lwVersion.0"] == before["version"]
    assert scalars["lwUplinkCount.0"] == "2"

    faults.apply_fault(LAB, "wan1", faults.parse_fault(["blackhole"]))
    try:
        after = wait_for(settled(lab, "wan2", down="wan1"), 20.0, "wan1 DOWN, wan2 active")
        time.sleep(0.6)
        rows = table_rows(lab, mib_args, V3)
        same_as_status(rows, status(lab))
        assert [(r["lwUplinkState"], r["lwUplinkActive"]) for r in rows] == [("down", "false"), ("up", "true")]
        scalars = walk(lab, mib_args, V2, "LINKWATCH-MIB::lwScalars")
        assert scalars["lwActiveUplinks.0"] == "wan2" and scalars["lwPreviousActiveUplinks.0"] == "wan1"
        assert int(scalars["lwActiveChanges.0"]) == after["active_changes"]
        rows_v2 = table_rows(lab, mib_args, V2)
        assert int(rows_v2[0]["lwUplinkDowns"]) == next(u["downs"] for u in status(lab)["uplinks"]
                                                        if u["name"] == "wan1") >= 1
    finally:
        faults.apply_fault(LAB, "wan1", faults.parse_fault(["clear"]))


def test_wrong_community_times_out_and_is_counted(lab, mib_args):
    before = status(lab)["snmp"]["agent"]["bad_community"]
    done = snmp(lab, "snmpget", ["-v2c", "-c", "public"], *mib_args, AGENT, "LINKWATCH-MIB::lwVersion.0",
                timeout=0.5)
    assert done.returncode != 0 and "Timeout" in done.stderr
    assert status(lab)["snmp"]["agent"]["bad_community"] == before + 2  # the request and its one retry


def test_v3_authpriv_works_and_wrong_keys_get_nothing(lab, mib_args):
    done = snmp(lab, "snmpget", V3, *mib_args, AGENT, "LINKWATCH-MIB::lwUplinkName.2")
    assert done.returncode == 0 and "wan2" in done.stdout, done.stdout + done.stderr
    before = status(lab)["snmp"]["agent"]["bad_user_or_keys"]
    wrong = ["-v3", "-l", "authPriv", "-u", "ops", "-a", "SHA-256", "-A", "not-the-passphrase", "-x", "AES",
             "-X", PRIV_KEY]
    done = snmp(lab, "snmpget", wrong, *mib_args, AGENT, "LINKWATCH-MIB::lwUplinkName.2", timeout=0.5)
    assert done.returncode != 0 and "Timeout" in done.stderr and "wan2" not in done.stdout
    assert status(lab)["snmp"]["agent"]["bad_user_or_keys"] >= before + 1


def test_set_is_refused(lab, mib_args):
    before = status(lab)["snmp"]["agent"]["set_refused"]
    done = snmp(lab, "snmpset", V2, *mib_args, AGENT, "LINKWATCH-MIB::lwUplinkName.1", "s", "hacked")
    assert done.returncode != 0 and "notWritable" in done.stdout + done.stderr
    assert status(lab)["snmp"]["agent"]["set_refused"] == before + 1
    done = snmp(lab, "snmpget", V2, *mib_args, AGENT, "LINKWATCH-MIB::lwUplinkName.1")
    assert "wan1" in done.stdout and "hacked" not in done.stdout


def test_status_shows_the_agent_without_secrets(lab):
    st = status(lab)
    agent = st["snmp"]["agent"]
    assert st["snmp"]["agent_listen"] == AGENT and st["snmp"]["agent_error"] is None
    assert agent["answered"] > 0 and agent["requests"] >= agent["answered"]
    text = json.dumps(st) + Path(lab.engine_log).read_text(errors="replace")
    assert not any(secret in text for secret in SECRETS)
