"""The sample packaging/keepalived/keepalived.conf against Debian's keepalived and a real
``linkwatch run``: keepalived finds the engine by its process name ``linkwatchd`` and follows the
track file (issue 15). A real router has one engine per PID namespace, which the lab's pair cannot
show (docs/keepalived.md), so this runs one keepalived and one engine.

keepalived's VRRP instance sits alone on a port-less bridge in namespace lw-kpn-router (its adverts
reach nothing), so it is always master; what is checked is its effective priority, logged as
"Changing effective priority from A to B": 150 with the engine running and the file at 0, 50 when
either is missing. Torn down by name (`topology.down`) even when a test fails.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import pytest

from linkwatch.daemon.procname import ENGINE_NAME, process_name
from linkwatch.lab import pairlab, topology
from linkwatch.lab.namespaces import existing_lab_namespaces
from linkwatch.lab.plan import LabSpec
from linkwatch.lab.processes import netns_exec, run_command, start_background, wait_until
from linkwatch.sinks.keepalived import write_atomically
from tests.integration.labutil import wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(pairlab.keepalived_binary() is None, reason="keepalived is not installed"),
    pytest.mark.root,
    pytest.mark.lab,
]

SPEC = LabSpec("kpn")
NS = SPEC.router_ns
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "packaging", "keepalived", "keepalived.conf")
ENGINE = """
[control]
socket = "{dir}/control.sock"

[uplinks.wan1]
interface = "up1"
gateway = "198.51.100.1"

[[uplinks.wan1.probes]]
type = "icmp"
target = "203.0.113.1"
"""


def others_named_linkwatchd() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and process_name(p) == ENGINE_NAME]


@pytest.fixture
def keepalived():
    if others_named_linkwatchd():
        pytest.skip(f"another {ENGINE_NAME} runs on this machine: it would count as ours")
    topology.down(SPEC.name)
    os.makedirs(SPEC.state_dir, exist_ok=True)
    track = os.path.join(SPEC.state_dir, "keepalived.track")
    write_atomically(track, 0)
    with open(SAMPLE) as f:
        conf = f.read()
    conf = conf.replace("/var/lib/linkwatch/keepalived.track", track).replace("eth0", "br0")
    conf = conf.replace("192.168.1.1/24", "10.77.0.1/24")
    assert track in conf and "process linkwatchd" in conf
    path = os.path.join(SPEC.state_dir, "keepalived.conf")
    with open(path, "w") as f:
        f.write(conf)
    log = os.path.join(SPEC.state_dir, "keepalived.log")
    try:
        run_command(["ip", "netns", "add", NS])
        for argv in (["link", "set", "lo", "up"], ["link", "add", "br0", "type", "bridge"],
                     ["addr", "add", "10.77.0.3/24", "dev", "br0"], ["link", "set", "br0", "up"]):
            run_command(["ip", "-n", NS, *argv])
        binary = pairlab.keepalived_binary()
        run_command(netns_exec(NS, [binary, "--config-test", f"--use-file={path}"]))
        start_background(SPEC.state_dir, "keepalived", [
            binary, "--dont-fork", "--log-console", "--vrrp", "--no-syslog", f"--namespace={NS}", f"--use-file={path}",
            f"--pid={SPEC.state_dir}/keepalived.pidfile", f"--vrrp_pid={SPEC.state_dir}/vrrp.pidfile"], log)
        yield track, log
    finally:
        topology.down(SPEC.name)
        assert existing_lab_namespaces(SPEC.name) == []


def priorities(log: str) -> list[tuple[int, int]]:
    with open(log) as f:
        return [(int(a), int(b)) for a, b in re.findall(r"Changing effective priority from (\d+) to (\d+)", f.read())]


def test_the_sample_follows_the_engine_by_name_and_the_track_file(keepalived, tmp_path):
    track, log = keepalived
    wait_for(lambda: "Entering MASTER STATE" in open(log).read(), 5.0, "keepalived master (alone on its bridge)")
    assert priorities(log) == [(150, 50)]  # no linkwatchd yet: 150 - 100
    config = tmp_path / "linkwatch.toml"
    config.write_text(ENGINE.format(dir=tmp_path))
    proc, _ = start_background(SPEC.state_dir, "engine", netns_exec(NS, [
        sys.executable, "-m", "linkwatch", "run", "--config", str(config)]),
        str(tmp_path / "engine.log"))
    wait_for(lambda: process_name(proc.pid) == ENGINE_NAME, 15.0, "the engine renames itself")
    wait_for(lambda: priorities(log)[-1:] == [(50, 150)], 5.0, "keepalived sees linkwatchd (priority 150)")
    write_atomically(track, 1)
    wait_for(lambda: priorities(log)[-1:] == [(150, 50)], 5.0, "keepalived reads 1 from the track file")
    write_atomically(track, 0)
    wait_for(lambda: priorities(log)[-1:] == [(50, 150)], 5.0, "keepalived reads 0 again")
    os.kill(proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: priorities(log)[-1:] == [(150, 50)], 5.0, "keepalived sees linkwatchd die")
    assert time.monotonic() - t0 < 2.0
    proc.wait(5)
    assert wait_until(lambda: not others_named_linkwatchd(), 2.0)
