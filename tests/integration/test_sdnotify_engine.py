"""The engine under a systemd-like supervisor: READY=1 only once the routes are in the kernel,
WATCHDOG=1 pings at half the watchdog interval, RELOADING=1/READY=1 around SIGHUP, STOPPING=1.

Lab tN (namespaces lw-tN-*): the lab is built without its engine; the test starts `linkwatch run`
itself with NOTIFY_SOCKET pointing at a datagram socket it listens on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from pyroute2 import IPRoute

from linkwatch.lab import topology
from linkwatch.lab.engine_config import engine_config
from linkwatch.lab.plan import LabSpec
from linkwatch.lab.processes import child_env, netns_exec

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tN"


def receive(sock: socket.socket, until: str, timeout: float) -> list[tuple[float, str]]:
    """Messages (arrival time, text) until one contains ``until``."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append((time.monotonic(), data))
        if until in data:
            return got
    raise AssertionError(f"no {until!r} within {timeout}s; got {got}")


def active_route_present(spec: LabSpec) -> bool:
    with IPRoute(netns=spec.router_ns) as ipr:
        return bool(ipr.get_routes(table=100, proto=77))


def test_ready_after_the_first_reconcile_watchdog_reload_and_stop(tmp_path):
    spec = LabSpec(LAB, 2)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    proc = None
    try:
        topology.up(spec, engine=False)
        with open(spec.config_path, "w") as f:
            f.write(engine_config(spec, 2))
        env = child_env()
        env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="2000000")
        argv = netns_exec(spec.router_ns, [sys.executable, "-m", "linkwatch", "run", "--config",
                                           spec.config_path])
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready = receive(sock, "READY=1", 15)
        assert active_route_present(spec), "READY=1 came before the active route was in the kernel"
        assert "STATUS=active: wan1" in ready[-1][1]
        pings = [t for t, m in receive(sock, "WATCHDOG=1", 3) if "WATCHDOG=1" in m]
        pings += [t for t, m in receive(sock, "WATCHDOG=1", 3) if "WATCHDOG=1" in m]
        assert len(pings) == 2 and 0.5 <= pings[1] - pings[0] <= 1.5, "a ping per half watchdog interval"
        proc.send_signal(signal.SIGHUP)
        texts = [m for _, m in receive(sock, "READY=1", 10)]
        assert any("RELOADING=1" in m for m in texts) and "READY=1" in texts[-1]
        proc.send_signal(signal.SIGTERM)
        assert any("STOPPING=1" in m for _, m in receive(sock, "STOPPING=1", 10))
        assert proc.wait(timeout=10) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        sock.close()
        topology.down(LAB)


def test_no_ready_while_the_kernel_refuses_the_routes(tmp_path):
    """Without CAP_NET_ADMIN every route change is refused (EPERM): the engine keeps running and
    retrying, but must not tell systemd it is ready (found booting the package under a real
    systemd, whose nspawn container first lacked the capability: READY=1 came with no route)."""
    spec = LabSpec(LAB, 2)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    proc = None
    try:
        topology.up(spec, engine=False)
        with open(spec.config_path, "w") as f:
            f.write(engine_config(spec, 2))
        env = child_env()
        env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
        argv = netns_exec(spec.router_ns, ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin",
                                           sys.executable, "-m", "linkwatch", "run", "--config", spec.config_path])
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        got = []
        with pytest.raises(AssertionError, match="no 'READY=1'"):
            got = receive(sock, "READY=1", 6)
        assert proc.poll() is None, "the engine gave up instead of retrying"
        assert not active_route_present(spec)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert got == []
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        sock.close()
        topology.down(LAB)
