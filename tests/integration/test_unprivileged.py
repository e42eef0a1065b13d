"""The engine needs CAP_NET_ADMIN and CAP_NET_RAW only, not root (DESIGN.md, packaging/linkwatch.service).

The lab's engine is started here as user nobody with exactly those two capabilities (setpriv), and
must still install its routes and rules, probe (raw ICMP sockets), fail over on a blackhole and
flush the conntrack entries of the failed uplink. The interpreter is the system's python3 with a
copy of linkwatch and its netlink/ICMP/DNS dependencies in a directory nobody can read (the
test's virtualenv may live under root's home, which nobody cannot enter).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from linkwatch.lab import client, faults, topology
from linkwatch.lab.engine_config import engine_config
from linkwatch.lab.plan import LabSpec
from linkwatch.lab.processes import netns_exec, record_process, run_command

SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is needed to drop privileges"),
    pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"{SYSTEM_PYTHON} is needed to run as nobody"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tU"
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13


def readable_tree() -> str:
    """A world-readable directory holding linkwatch and the engine's third-party packages."""
    root = tempfile.mkdtemp(prefix="linkwatch-nobody-", dir="/tmp")
    os.chmod(root, 0o755)
    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "linkwatch", Path(root) / "linkwatch", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyroute2", "icmplib", "dns"):
        src = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(src, Path(root) / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in Path(root).rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def version_ok() -> bool:
    out = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                         capture_output=True, text=True)
    return out.stdout.strip() == "True"


@pytest.fixture(scope="module")
def lab():
    if not version_ok():
        pytest.skip(f"{SYSTEM_PYTHON} is older than 3.11")
    topology.down(LAB)
    spec = topology.up(LabSpec(LAB), engine=False)
    tree = readable_tree()
    try:
        config = Path(tree) / "linkwatch.toml"
        config.write_text(engine_config(spec, 2, {"policy": {"failback_hold": "2s"}}))
        config.chmod(0o644)
        shutil.chown(spec.state_dir, "nobody", "nogroup")  # the engine creates its control socket there
        argv = ["ip", "netns", "exec", spec.router_ns, "setpriv", "--reuid=nobody", "--regid=nogroup",
                "--clear-groups", "--inh-caps=-all,+net_admin,+net_raw", "--ambient-caps=-all,+net_admin,+net_raw",
                "--bounding-set=-all,+net_admin,+net_raw", SYSTEM_PYTHON, "-m", "linkwatch", "run",
                "--config", str(config)]
        with open(Path(tree) / "engine.log", "w") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd="/",
                                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": tree})
        record_process(spec.state_dir, "engine", proc.pid, argv)  # `lab down` stops it by pid
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            st, _ = topology.engine_status(spec, timeout=0.5)
            if st and all(u.state == "UP" for u in st.uplinks) and st.active == ("wan1",):
                break
            assert proc.poll() is None, (Path(tree) / "engine.log").read_text()[-2000:]
            time.sleep(0.2)
        else:
            raise AssertionError("unprivileged engine did not settle: " + (Path(tree) / "engine.log").read_text()[-2000:])
        yield spec, proc, tree
    finally:
        topology.down(LAB)
        shutil.rmtree(tree, ignore_errors=True)


def capabilities(pid: int) -> tuple[int, int]:
    uid = cap = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            if line.startswith("CapEff:"):
                cap = int(line.split()[1], 16)
    return uid, cap


def test_runs_as_nobody_with_two_capabilities_and_does_its_job(lab):
    spec, proc, tree = lab
    st, _ = topology.engine_status(spec)
    uid, cap = capabilities(st.pid)
    assert uid == 65534, "the engine runs as nobody"
    assert cap == (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW), hex(cap)
    with IPRoute(netns=spec.router_ns) as ipr:
        prios = sorted(r.get_attr("FRA_PRIORITY") for r in ipr.get_rules(family=2) if r.get_attr("FRA_PROTOCOL") == 77)
    assert prios == [1000, 1001, 1001, 1002, 1002, 1100], "per uplink: from its address, and its flows' mark"
    assert "table ip linkwatch" in run_command(netns_exec(spec.router_ns, ["nft", "list", "tables"])), \
        "CAP_NET_ADMIN is enough for the flow table too"
    flow = client.start_flow(LAB, duration=5.0, interval=0.01)
    time.sleep(1.0)
    faults.apply_fault(LAB, "wan1", faults.parse_fault(["blackhole"]))
    report = flow.result(timeout=20)
    assert [c.after for c in report.changes] == ["198.51.100.10"], report.summary()
    st, _ = topology.engine_status(spec)
    assert st.active == ("wan2",)
    flushes = st.conntrack_flushes
    assert flushes and flushes[-1].uplink == "wan1" and flushes[-1].deleted >= 1, flushes
    log = (Path(tree) / "engine.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
