"""Debian 12 booted with systemd as PID 1 (systemd-nspawn) inside a lab's router namespace, with
the linkwatch package installed by apt: the fixture of test_systemd.py and bench/bench_systemd.py.

The root is the cached ``bookworm-systemd`` debootstrap tarball (debutil.base_tarball). nspawn
runs with ``--register=no --keep-unit`` (this machine has no host systemd to register with),
``--network-namespace-path=/run/netns/<router>`` (the container's network is the lab router's)
and ``--capability=CAP_NET_ADMIN`` (nspawn keeps CAP_NET_ADMIN only for a network namespace it
made itself, so without it the engine's route changes are refused with EPERM). Commands go in
with ``nsenter -t <container init> -a``. Everything started here is stopped by pid, the machine's
directories removed, and nothing deleted while mounted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from linkwatch.lab.engine_config import engine_config
from linkwatch.lab.plan import LabSpec
from tests.integration.debutil import BuiltDeb, base_tarball, mounts_under, remove_tree, run
from tests.integration.labutil import wait_for

# what the container needs beyond minbase: systemd as init, and the package's dependencies, so
# apt installs the .deb without a mirror (the container's network is the lab's)
SYSTEMD_INCLUDE = ("systemd", "systemd-sysv", "dbus", "adduser", "libnftables1", "procps", "python3.11",
                   "iproute2")
PACKAGE_CONFIG = "/etc/linkwatch/linkwatch.toml"
PACKAGE_SOCKET = "/run/linkwatch/control.sock"
PACKAGE_HISTORY = "/var/lib/linkwatch/history.db"
WEB_LISTEN = ("10.77.0.1", 8080)  # the router's LAN address: the lab's client reaches it
PROTO = 77


def systemd_tarball() -> Path:
    return base_tarball("systemd", SYSTEMD_INCLUDE)


def package_config(spec: LabSpec) -> str:
    """The lab's engine config with the package's paths (control socket, hooks, history) and the
    web UI on the router's LAN address, readable without a login."""
    text = engine_config(spec, overrides={"history": {"path": PACKAGE_HISTORY}},
                         web={"listen": f"{WEB_LISTEN[0]}:{WEB_LISTEN[1]}", "public_read": True},
                         socket_group="linkwatch")
    for lab_path, pkg_path in ((spec.control_socket, PACKAGE_SOCKET), (spec.hooks_dir, "/etc/linkwatch/hooks.d")):
        text = text.replace(f'"{lab_path}"', f'"{pkg_path}"')
    assert PACKAGE_SOCKET in text and spec.state_dir not in text, text
    return text


@dataclass
class Machine:
    """A booted container: ``sh()`` runs a command in it (all its namespaces)."""

    spec: LabSpec
    root: Path
    name: str
    nspawn: subprocess.Popen
    init_pid: int = 0
    log: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = ["nsenter", "-t", str(self.init_pid), "-a", "/bin/sh", "-c", script]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
               "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "HOME": "/root"}
        if check:
            return run(cmd, timeout, env=env)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show -p {','.join(props)} {unit}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def socket_path(self) -> str:
        """The engine's control socket, reached from the host through the container's root."""
        return f"/proc/{self.init_pid}/root{PACKAGE_SOCKET}"


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _is_init(pid: int) -> bool:
    """``pid`` is the container's systemd already (not nspawn's child before its exec)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False


def boot(spec: LabSpec, workdir: Path, name: str) -> Machine:
    """Unpack the root, boot it in the lab's router namespace and wait until systemd says the
    system is running. The caller must call ``shutdown`` (also when this raises)."""
    t0 = time.monotonic()
    root = workdir / "root"
    root.mkdir(parents=True)
    run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(systemd_tarball())], 600)
    (root / "etc" / "hostname").write_text(name + "\n")
    log = workdir / "nspawn.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "-D", str(root), "-b", "--register=no", "--keep-unit",
             f"--machine={name}", f"--network-namespace-path=/run/netns/{spec.router_ns}",
             "--capability=CAP_NET_ADMIN", "--console=pipe"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    m = Machine(spec, root, name, proc, log=log)
    deadline = time.monotonic() + 30
    while not m.init_pid and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {proc.returncode}: {log.read_text()[-3000:]}")
        m.init_pid = next((pid for pid in _children(proc.pid) if _is_init(pid)), 0)
        time.sleep(0.05)
    assert m.init_pid, f"no container init under systemd-nspawn {proc.pid}"
    m.timings["unpack_and_spawn_s"] = time.monotonic() - t0
    state = ""
    while time.monotonic() < deadline + 60 and state not in ("running", "degraded"):
        # before systemd's private bus is up systemctl prints nothing and fails: ask again
        state = m.sh("systemctl is-system-running --wait", check=False, timeout=90).stdout.strip()
        time.sleep(0.1)
    assert state in ("running", "degraded"), f"system state {state!r}: " + m.sh(
        "systemctl --failed --no-legend", check=False).stdout
    m.timings["boot_s"] = time.monotonic() - t0
    return m


def install_package(m: Machine, deb: BuiltDeb) -> str:
    """apt installs the .deb (its dependencies are in the root already) and the lab's config."""
    (m.root / "root" / deb.path.name).write_bytes(deb.path.read_bytes())  # /tmp is the container's tmpfs
    out = m.sh(f"cd /root && apt-get install -y -q ./{deb.path.name}", timeout=300).stdout
    (m.root / PACKAGE_CONFIG.lstrip("/")).write_text(package_config(m.spec))  # the conffile, replaced
    m.sh(f"linkwatch check-config {PACKAGE_CONFIG}")
    return out


def shutdown(m: Machine) -> None:
    """Power the container off (nspawn's SIGTERM: an orderly halt), then by pid if it hangs."""
    if m.nspawn.poll() is None:
        m.nspawn.send_signal(signal.SIGTERM)
        try:
            m.nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            if m.init_pid:
                try:
                    os.kill(m.init_pid, signal.SIGKILL)  # PID 1 of the container: its namespace dies with it
                except ProcessLookupError:
                    pass
            m.nspawn.kill()
            m.nspawn.wait(timeout=30)
    for target in reversed(mounts_under(m.root)):
        subprocess.run(["umount", "-l", target], capture_output=True)
    remove_tree(m.root)
    # nspawn leaves its (empty) propagation directory behind when it cannot register
    propagate = Path("/run/systemd/nspawn/propagate") / m.name
    if propagate.is_dir() and not any(propagate.iterdir()):
        propagate.rmdir()


def owned_objects(spec: LabSpec) -> tuple[list[tuple], list[tuple]]:
    """linkwatch's rules and routes (protocol 77, both families) in the router namespace, each as
    a tuple of what identifies it, sorted; a duplicate shows up twice."""
    from pyroute2 import IPRoute

    rules, routes = [], []
    with IPRoute(netns=spec.router_ns) as ipr:
        for family in (2, 10):
            for r in ipr.get_rules(family=family):
                if r.get_attr("FRA_PROTOCOL") == PROTO:
                    rules.append((family, r.get_attr("FRA_PRIORITY"), r.get_attr("FRA_TABLE"),
                                  r.get_attr("FRA_SRC"), r["src_len"], r.get_attr("FRA_FWMARK"),
                                  r.get_attr("FRA_FWMASK"), r.get_attr("FRA_SUPPRESS_PREFIXLEN")))
            for r in ipr.route("dump", family=family):
                if r["proto"] == PROTO:
                    routes.append((family, r.get_attr("RTA_TABLE"), r.get_attr("RTA_DST"), r["dst_len"],
                                   r["type"], r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF"),
                                   r.get_attr("RTA_PRIORITY"), r.get_attr("RTA_PREFSRC")))
    return sorted(rules, key=repr), sorted(routes, key=repr)


def active_route(spec: LabSpec) -> str:
    """linkwatch's route(s) in its active table 100 ("" also when the table does not exist yet)."""
    proc = subprocess.run(["ip", "-n", spec.router_ns, "route", "show", "table", "100", "protocol", str(PROTO)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 or "table does not exist" in proc.stderr, proc.stderr
    return proc.stdout.strip() if proc.returncode == 0 else ""


EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d)")


def security_scores(m: Machine, *units: str) -> dict[str, float]:
    """``systemd-analyze security`` inside the booted system (the running units, not --offline)."""
    scores = {}
    for unit in units:
        out = m.sh(f"systemd-analyze security --no-pager {unit}", check=False).stdout
        found = EXPOSURE.search(out)
        assert found, out[-2000:]
        scores[found.group(1)] = float(found.group(2))
    return scores


# ---- the checks, as measurements (the test asserts on them, bench/bench_systemd.py repeats them) ----

def _mono(m: Machine, unit: str, prop: str) -> float:
    """A systemd *TimestampMonotonic property in seconds (CLOCK_MONOTONIC: the host's too)."""
    return int(m.show(unit, prop)[prop]) / 1e6


class RouteWatch:
    """``ip monitor route`` in the router namespace: when linkwatch's active route (table 100)
    first showed up, by the host's monotonic clock."""

    def __init__(self, spec: LabSpec):
        import threading

        self.first: float | None = None
        self.proc = subprocess.Popen(["ip", "-n", spec.router_ns, "monitor", "route"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.3)  # subscribed before anything happens

    def _read(self) -> None:
        for line in self.proc.stdout:
            if self.first is None and "table 100" in line and not line.startswith("Deleted"):
                self.first = time.monotonic()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.thread.join(timeout=5)




def restarted(m: Machine, before: int):
    """A predicate: the engine was restarted (NRestarts above ``before``) and is active again."""
    def check():
        p = m.show("linkwatch", "NRestarts", "ActiveState", "SubState", "MainPID")
        return p if int(p["NRestarts"]) > before and p["ActiveState"] == "active" and p["SubState"] == "running" \
            else None
    return check


def measure_start(m: Machine) -> dict:
    """`systemctl start linkwatch` with no route of linkwatch's in the kernel: the time to READY
    (from the start job, ExecStartPre's check-config included, and from the main process's
    exec) and when the active route appeared, against READY."""
    assert m.show("linkwatch", "ActiveState")["ActiveState"] in ("inactive", "failed")
    assert active_route(m.spec) == "", "a route of an earlier run is in the kernel: nothing to measure"
    watch = RouteWatch(m.spec)
    try:
        t0 = time.monotonic()
        m.sh("systemctl start linkwatch", timeout=60)  # returns once READY=1 arrived
        t_return = time.monotonic()
    finally:
        time.sleep(0.05)
        watch.stop()
    p = m.show("linkwatch", "InactiveExitTimestampMonotonic", "ExecMainStartTimestampMonotonic",
               "ActiveEnterTimestampMonotonic")
    begin, main, ready = (int(p[k]) / 1e6 for k in ("InactiveExitTimestampMonotonic",
                                                    "ExecMainStartTimestampMonotonic",
                                                    "ActiveEnterTimestampMonotonic"))
    assert t0 <= begin <= ready <= t_return, (t0, begin, ready, t_return)
    return {"ready_s": ready - begin, "ready_from_exec_s": ready - main,
            "route_before_ready_s": None if watch.first is None else ready - watch.first,
            "route_at_ready": active_route(m.spec)}


def flow_moves(report) -> int:
    return len(report.changes)


def measure_reload(m: Machine, flow_seconds: float = 8.0) -> dict:
    """`systemctl reload linkwatch` under a LAN flow at 50 packets/s: traffic moves, the flow's
    longest gap, and whether the engine kept its process and its uplinks' state."""
    from linkwatch.lab import client
    from linkwatch.report.control import call

    before = call(m.socket_path(), {"cmd": "status"}, timeout=2)["status"]
    props = m.show("linkwatch", "MainPID", "NRestarts")
    flow = client.start_flow(m.spec.name, flow_seconds, rate=50)
    time.sleep(flow_seconds / 3)
    t0 = time.monotonic()
    m.sh("systemctl reload linkwatch")
    reload_s = time.monotonic() - t0
    report = flow.result(timeout=flow_seconds + 30)
    after = call(m.socket_path(), {"cmd": "status"}, timeout=2)["status"]
    return {"moves": flow_moves(report), "longest_gap_s": report.longest_outage_s, "loss_pct": report.loss_pct,
            "uplinks": report.uplinks, "reload_s": reload_s,
            "same_pid": m.show("linkwatch", "MainPID", "NRestarts") == props,
            "states_before": {u["name"]: u["state"] for u in before["uplinks"]},
            "states_after": {u["name"]: u["state"] for u in after["uplinks"]},
            "active_before": before["active"], "active_after": after["active"]}


WATCHDOG_DROPIN = "/etc/systemd/system/linkwatch.service.d/50-test-watchdog.conf"


def set_watchdog(m: Machine, seconds: int | None) -> None:
    """A drop-in with a shorter WatchdogSec (None: remove it); takes effect at the next start."""
    path = m.root / WATCHDOG_DROPIN.lstrip("/")
    if seconds is None:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"[Service]\nWatchdogSec={seconds}\n")
    m.sh("systemctl daemon-reload")


def measure_watchdog(m: Machine, watchdog_s: int, flow_seconds: float | None = None) -> dict:
    """SIGSTOP the engine's main process (a hung engine: no more WATCHDOG=1) under a LAN flow:
    the time until systemd has a new engine READY, and what the flow saw meanwhile."""
    from linkwatch.lab import client

    flow_seconds = flow_seconds or watchdog_s + 15
    p = m.show("linkwatch", "MainPID", "NRestarts", "WatchdogUSec")
    assert p["WatchdogUSec"] == f"{watchdog_s}s", p
    flow = client.start_flow(m.spec.name, flow_seconds, rate=50)
    time.sleep(1.0)
    t_stop = time.monotonic()
    m.sh(f"kill -STOP {p['MainPID']}")
    new = wait_for(restarted(m, int(p["NRestarts"])), watchdog_s + 120, "the engine restarted", step=0.1)
    ready = _mono(m, "linkwatch", "ActiveEnterTimestampMonotonic")
    report = flow.result(timeout=flow_seconds + 30)
    journal = m.sh("journalctl -u linkwatch --no-pager -o cat", check=False).stdout
    return {"replaced_s": ready - t_stop, "old_pid": int(p["MainPID"]), "new_pid": int(new["MainPID"]),
            "moves": flow_moves(report), "longest_gap_s": report.longest_outage_s, "loss_pct": report.loss_pct,
            "flow_covered_s": report.duration_s, "flow_end_after_ready_s": t_stop - 1.0 + report.duration_s - ready,
            "watchdog_logged": "Watchdog timeout" in journal}


def measure_kill9(m: Machine) -> dict:
    """`kill -9` of the engine: restarted by systemd; linkwatch's rules and routes before and after."""
    objects_before = owned_objects(m.spec)
    p = m.show("linkwatch", "MainPID", "NRestarts")
    t0 = time.monotonic()
    m.sh(f"kill -9 {p['MainPID']}")
    new = wait_for(restarted(m, int(p["NRestarts"])), 60, "the engine restarted after kill -9", step=0.1)
    ready = _mono(m, "linkwatch", "ActiveEnterTimestampMonotonic")
    time.sleep(2.5)  # past a repair round of the new engine
    objects_after = owned_objects(m.spec)
    return {"restarted_s": ready - t0, "old_pid": int(p["MainPID"]), "new_pid": int(new["MainPID"]),
            "before": objects_before, "after": objects_after}
