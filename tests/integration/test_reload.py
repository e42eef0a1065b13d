"""SIGHUP reload in the lab, with a LAN client's traffic flowing: a good reload changes nothing
for the client (loss no higher than the noise floor measured without a reload) and keeps the
unchanged uplinks' state and probe history; a bad file is refused and the running config stays;
a reload that removes an uplink removes its kernel objects.

Lab tR (namespaces lw-tR-*) with 3 uplinks, torn down by name even when a test fails.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from linkwatch.lab import client, topology
from linkwatch.lab.engine_config import engine_config
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.plan import LabSpec
from linkwatch.lab.topology import EngineOptions
from tests.integration.labutil import status, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tR"
PROTO = 77
OVERRIDES = {"policy": {"failback_hold": "2s"}}
FLOW_S, INTERVAL = 6.0, 0.01


def config_text(spec: LabSpec) -> str:
    return engine_config(spec, 2, OVERRIDES)


def owned(spec: LabSpec) -> tuple[list, list]:
    with IPRoute(netns=spec.router_ns) as ipr:
        rules = [r for r in ipr.get_rules(family=2) if r.get_attr("FRA_PROTOCOL") == PROTO]
        routes = [r for r in ipr.route("dump", family=2) if r["proto"] == PROTO]
    return rules, routes


def reload_with(spec: LabSpec, text: str) -> None:
    Path(spec.config_path).write_text(text)
    os.kill(status(spec)["pid"], signal.SIGHUP)


def uplinks(st: dict) -> dict[str, dict]:
    return {u["name"]: u for u in st["uplinks"]}


def flow_loss(during=None) -> client.FlowReport:
    """A client flow of FLOW_S seconds; ``during`` runs in its middle."""
    flow = client.start_flow(LAB, duration=FLOW_S, interval=INTERVAL)
    time.sleep(FLOW_S / 2)
    if during is not None:
        during()
    return flow.result(timeout=30)


@pytest.fixture(scope="module")
def lab():
    topology.down(LAB)
    spec = LabSpec(LAB, 3)
    try:
        topology.up(spec, options=EngineOptions(overrides=OVERRIDES))
        wait_for(lambda: [u["state"] for u in status(spec)["uplinks"]] == ["UP"] * 3, 20, "3 uplinks UP")
        yield spec
    finally:
        topology.down(LAB)
    assert not existing_lab_namespaces(LAB)


def test_good_reload_under_traffic_loses_nothing_and_keeps_state(lab):
    baseline = flow_loss()
    noise = baseline.sent - baseline.received
    before = status(lab)
    changed = config_text(lab).replace('[uplinks.wan2]\ninterface = "up2"\ngateway = "auto"\npriority = 2',
                                       '[uplinks.wan2]\ninterface = "up2"\ngateway = "auto"\npriority = 5')
    assert changed != config_text(lab)
    report = flow_loss(lambda: reload_with(lab, changed))
    time.sleep(0.5)
    after = status(lab)
    lost = report.sent - report.received
    assert lost <= noise + 2, f"reload lost {lost} of {report.sent} datagrams (noise floor {noise})"
    assert report.changes == () and report.longest_outage_s < 0.2, report.summary()
    assert after["active"] == ["wan1"] and after["active_changes"] == before["active_changes"], "no failover"
    old, new = uplinks(before), uplinks(after)
    for kept in ("wan1", "wan3"):  # unchanged: state, since and probe history carried over
        assert new[kept]["state"] == "UP" and new[kept]["since"] == old[kept]["since"]
        assert new[kept]["rounds"] > old[kept]["rounds"] and new[kept]["transitions"] == old[kept]["transitions"]
    assert new["wan2"]["priority"] == 5 and new["wan2"]["since"] > old["wan2"]["since"], "wan2 was rebuilt (a standby: few rounds either way)"


def test_bad_config_is_refused_and_the_running_one_stays(lab):
    good = config_text(lab)
    before = status(lab)
    try:
        reload_with(lab, good.replace("[uplinks.wan1]", "[uplinks.wan1]\nprioritty = 1", 1))
        wait_for(lambda: "reload refused" in Path(lab.engine_log).read_text(), 5, "the refusal in the log")
        log_line = [line for line in Path(lab.engine_log).read_text().splitlines() if "reload refused" in line][-1]
        assert "uplinks.wan1.prioritty" in log_line and 'did you mean "priority"' in log_line
        after = status(lab)
        assert after["pid"] == before["pid"] and after["active"] == before["active"]
        assert [u["name"] for u in after["uplinks"]] == [u["name"] for u in before["uplinks"]]
    finally:
        reload_with(lab, good)
        time.sleep(1.0)


def test_reload_that_removes_an_uplink_removes_its_kernel_objects(lab):
    text = config_text(lab)
    u3 = lab.uplink_list[2]
    rules, routes = owned(lab)
    table3 = {r.get_attr("FRA_TABLE") for r in rules if r.get_attr("FRA_SRC") == u3.address}
    assert len(table3) == 1, "wan3 has its rule before the reload"
    table3 = table3.pop()
    assert any(r.get_attr("RTA_TABLE") == table3 for r in routes)
    try:
        report = flow_loss(lambda: reload_with(lab, text[:text.index("\n[uplinks.wan3]")] + "\n"))
        wait_for(lambda: [u["name"] for u in status(lab)["uplinks"]] == ["wan1", "wan2"], 5, "wan3 gone")
        rules, routes = owned(lab)
        assert not [r for r in rules if r.get_attr("FRA_SRC") == u3.address or r.get_attr("FRA_TABLE") == table3]
        assert not [r for r in routes if r.get_attr("RTA_TABLE") == table3]
        assert status(lab)["active"] == ["wan1"] and report.changes == ()
    finally:
        reload_with(lab, text)
        wait_for(lambda: len(status(lab)["uplinks"]) == 3, 5, "wan3 back")
