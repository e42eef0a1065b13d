"""The package under a real service manager: Debian 12 booted with systemd as PID 1
(systemd-nspawn) in a lab's router namespace, linkwatch installed from the .deb with apt, its two
units enabled and started by systemd.

Checked there: READY only once the active route is in the kernel (and within 5 s); never while
the kernel refuses the routes; `systemctl reload` keeps state and moves no traffic; a hung engine
(SIGSTOP) is killed by the watchdog and replaced while a LAN flow keeps flowing (the routes stay:
fail-static) — with WatchdogSec=5 through a drop-in, to keep the test short; `kill -9` is
restarted with no duplicate kernel objects; `systemd-analyze security` gives the scores
docs/operations.md claims; the web UI answers the LAN client; the engine logs to the journal.

Lab tS (namespaces lw-tS-*), built without its engine. The booted root is the debootstrap tarball
.cache/deb-test/bookworm-systemd-<arch>.tar (made once, about 50 s, from the Debian mirror).
The figures are printed (pytest -s) and measured over several trials by bench/bench_systemd.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from linkwatch.lab import topology
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.plan import LabSpec
from linkwatch.lab.processes import child_env, netns_exec
from tests.integration.debutil import REPO
from tests.integration.sysdutil import (
    WEB_LISTEN,
    active_route,
    boot,
    install_package,
    measure_kill9,
    measure_reload,
    measure_start,
    measure_watchdog,
    owned_objects,
    security_scores,
    set_watchdog,
    shutdown,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, debootstrap, systemd-nspawn"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None,
                       reason="systemd-nspawn missing (scripts/bootstrap.sh --test-tools installs systemd-container)"),
]

LAB = "tS"
WATCHDOG_S = 5  # the unit says 30; a drop-in shortens it for the watchdog test


def figure(name: str, value) -> None:
    print(f"\n[systemd] {name}: {value}")


@pytest.fixture(scope="module")
def machine(built_deb, tmp_path_factory):
    topology.down(LAB)
    spec = LabSpec(LAB, 2)
    m = None
    try:
        topology.up(spec, engine=False)
        m = boot(spec, tmp_path_factory.mktemp("nspawn"), "lwtest-ts")
        install_package(m, built_deb)
        m.sh("systemctl enable linkwatch linkwatch-web")
        figure("boot", m.timings)
        yield m
    finally:
        if m is not None:
            shutdown(m)
        topology.down(LAB)
    assert not existing_lab_namespaces(LAB)


def test_no_ready_while_the_kernel_refuses_the_routes(machine):
    """Without CAP_NET_ADMIN every route change is refused: the engine must not say READY=1."""
    dropin = machine.root / "etc/systemd/system/linkwatch.service.d/40-test-no-net-admin.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    # an empty assignment first: these lists add up across drop-ins otherwise
    dropin.write_text("[Service]\nAmbientCapabilities=\nAmbientCapabilities=CAP_NET_RAW\n"
                      "CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_NET_RAW\n")
    machine.sh("systemctl daemon-reload")
    try:
        machine.sh("systemctl start --no-block linkwatch")
        time.sleep(5)
        state = machine.show("linkwatch", "ActiveState", "StatusText")
        assert state == {"ActiveState": "activating", "StatusText": "waiting: the kernel refused the routes"}
        assert active_route(machine.spec) == ""
    finally:
        machine.sh("systemctl stop linkwatch")
        dropin.unlink()
        machine.sh("systemctl daemon-reload")
    assert owned_objects(machine.spec) == ([], [])


def test_ready_only_once_the_route_is_in_the_kernel(machine):
    got = measure_start(machine)
    figure("start", got)
    assert got["route_before_ready_s"] is not None, "the active route never appeared"
    assert got["route_before_ready_s"] > 0, "READY=1 came before the active route was in the kernel"
    assert "via 198.51.100.1 dev up1" in got["route_at_ready"]
    assert got["ready_s"] <= 5.0


def test_web_ui_answers_the_lan_client(machine):
    machine.sh("systemctl start linkwatch-web")
    code = ("import json, sys, time, urllib.request\n"
            "for i in range(100):\n"
            "    try:\n"
            f"        r = urllib.request.urlopen('http://{WEB_LISTEN[0]}:{WEB_LISTEN[1]}/api/v1/status', timeout=2)\n"
            "        break\n"
            "    except OSError:\n"
            "        time.sleep(0.1)\n"
            "print(json.dumps(json.load(r)))\n")
    out = subprocess.run(netns_exec(machine.spec.client_ns, [sys.executable, "-c", code]), capture_output=True,
                         text=True, timeout=60, env=child_env())
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout)
    status = answer.get("status", answer)
    assert sorted(u["name"] for u in status["uplinks"]) == ["wan1", "wan2"]
    props = machine.show("linkwatch-web", "ActiveState", "User")
    assert props == {"ActiveState": "active", "User": "linkwatch-web"}


def test_reload_keeps_state_and_moves_no_traffic(machine):
    got = measure_reload(machine)
    figure("reload", got)
    assert got["moves"] == 0 and got["uplinks"] == ["wan1"]
    assert got["same_pid"], "a reload must not restart the engine"
    assert got["states_after"] == got["states_before"] == {"wan1": "UP", "wan2": "UP"}
    assert got["active_after"] == got["active_before"] == ["wan1"]
    assert got["loss_pct"] <= 2.0
    assert machine.show("linkwatch", "ActiveState")["ActiveState"] == "active"


def test_hung_engine_is_killed_by_the_watchdog_and_replaced(machine):
    set_watchdog(machine, WATCHDOG_S)
    try:
        machine.sh("systemctl restart linkwatch", timeout=60)
        got = measure_watchdog(machine, WATCHDOG_S)
    finally:
        machine.sh(f"kill -CONT $(systemctl show -p MainPID --value linkwatch) 2>/dev/null; true", check=False)
        set_watchdog(machine, None)
    figure(f"watchdog (WatchdogSec={WATCHDOG_S})", got)
    assert got["watchdog_logged"]
    assert got["new_pid"] != got["old_pid"]
    assert got["replaced_s"] <= WATCHDOG_S + 5
    # fail-static: the kernel kept the routes while no engine ran
    assert got["moves"] == 0 and got["longest_gap_s"] < 0.5, got


def test_kill_9_is_restarted_without_duplicates(machine):
    got = measure_kill9(machine)
    figure("kill -9", {k: got[k] for k in ("restarted_s", "old_pid", "new_pid")})
    assert got["new_pid"] != got["old_pid"]
    assert got["after"] == got["before"], "kernel objects differ after the restart"
    rules, routes = got["after"]
    assert len(rules) == len(set(rules)) and len(routes) == len(set(routes))
    assert any(r[2] == 100 for r in rules) and any(r[1] == 100 for r in routes)


def claimed_scores() -> dict[str, float]:
    text = (REPO / "docs" / "operations.md").read_text()
    found = re.search(r"`linkwatch\.service` (\d+\.\d), `linkwatch-web\.service`\s+(\d+\.\d)", text)
    assert found, "docs/operations.md no longer states the hardening scores"
    return {"linkwatch.service": float(found.group(1)), "linkwatch-web.service": float(found.group(2))}


def test_hardening_scores_are_no_worse_than_the_docs_say(machine):
    scores = security_scores(machine, "linkwatch.service", "linkwatch-web.service")
    claimed = claimed_scores()
    figure("systemd-analyze security", {"measured": scores, "claimed": claimed})
    for unit, claim in claimed.items():
        assert scores[unit] <= claim, f"{unit}: {scores[unit]} under the real systemd, the docs say {claim}"


def test_engine_logs_land_in_the_journal(machine):
    journal = machine.sh("journalctl -u linkwatch --no-pager -o cat").stdout
    assert "engine started: 2 uplinks" in journal
    assert re.search(r"uplink=wan1 INIT -> UP", journal)
    assert "routing applied" in journal
    web = machine.sh("journalctl -u linkwatch-web --no-pager -o cat").stdout
    assert web.strip(), "the web UI logged nothing to the journal"


def test_malloc_trim_runs_under_the_units_syscall_filter(machine):
    """Both processes call malloc_trim (madvise, brk) from a thread: the units' SystemCallFilter
    must allow it, or seccomp kills them with SIGSYS at the first trim (a minute after the start).
    Once a second here, with debug logs, for a few seconds: same PIDs, no restart, the trims logged."""
    units = {"linkwatch": "run", "linkwatch-web": "web"}
    dropins = []
    for unit, command in units.items():
        dropin = machine.root / f"etc/systemd/system/{unit}.service.d/40-test-malloc-trim.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("[Service]\nEnvironment=LINKWATCH_MALLOC_TRIM=1\nExecStart=\n"
                          f"ExecStart=/usr/bin/linkwatch {command} --config /etc/linkwatch/linkwatch.toml "
                          "--log-level debug\n")
        dropins.append(dropin)
    machine.sh("systemctl daemon-reload")
    try:
        machine.sh("systemctl restart linkwatch linkwatch-web", timeout=60)
        before = {unit: machine.show(unit, "MainPID", "NRestarts") for unit in units}
        time.sleep(4.5)
        after = {unit: machine.show(unit, "MainPID", "NRestarts", "ActiveState") for unit in units}
        for unit in units:
            assert after[unit]["ActiveState"] == "active", after
            assert after[unit]["MainPID"] == before[unit]["MainPID"], (before, after)
            assert after[unit]["NRestarts"] == before[unit]["NRestarts"], (before, after)
            journal = machine.sh(f"journalctl -u {unit} --no-pager -o cat --since=-10s").stdout
            assert len(re.findall(r"malloc_trim\(0\) took [\d.]+ ms", journal)) >= 2, (unit, journal[-2000:])
    finally:
        for dropin in dropins:
            dropin.unlink()
        machine.sh("systemctl daemon-reload")
        machine.sh("systemctl restart linkwatch linkwatch-web", timeout=60)
