"""The soak's faults beyond linkwatch.lab.faults: an uplink's address or gateway changed (as a DHCP
renewal would), its interface deleted and re-created, the engine and the web UI killed with SIGKILL
and started again, reloads of a good and of a broken config, bounded floods of the control socket,
the web API and the SNMP agent, and a full disk under the history (a small tmpfs of the soak's own).

Every command runs in the lab's namespaces (``ip -n``) or on loopback (the web UI); the SNMP flood
runs snmpget in the lab's client namespace. Floods are bounded in count and time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from linkwatch.lab import radvd, topology
from linkwatch.lab.plan import GATEWAY6, LAN_ROUTER, PROVIDER_LINK, LabSpec, LabUplink
from linkwatch.lab.processes import netns_exec, python_module_argv, read_records, run_command, start_background
from linkwatch.report.control import call

SNMP_PORT = 1161
COMMUNITY = "sk-soak-community"


# --- addresses, gateways, interfaces -------------------------------------------------------------


def other_host(u: LabUplink, taken: str, offset: int) -> str:
    """Another host address of the uplink's /29 (hosts .1-.6)."""
    base = int(u.network.network_address)
    hosts = [str(type(u.network.network_address)(base + i)) for i in range(1, 7)]
    free = [h for h in hosts if h not in (u.gateway, u.address, taken)]
    return free[offset % len(free)]


def change_address(spec: LabSpec, u: LabUplink, new: str) -> None:
    """The router's address on the uplink becomes ``new`` (old one removed), like a DHCP renewal."""
    r = spec.router_ns
    out = run_command(["ip", "-n", r, "-4", "-o", "addr", "show", "dev", u.interface])
    olds = [w.split("/")[0] for line in out.splitlines() for i, w in enumerate(line.split())
            if i > 0 and line.split()[i - 1] == "inet"]
    # the old address goes first: a second address of the same /29 would be a secondary one, which
    # the kernel deletes with the primary (promote_secondaries is off)
    for old in olds:
        if old != new:
            run_command(["ip", "-n", r, "addr", "del", f"{old}/29", "dev", u.interface])
    run_command(["ip", "-n", r, "addr", "replace", f"{new}/29", "dev", u.interface])
    _main_default(spec, u, current_gateway(spec, u))


def current_gateway(spec: LabSpec, u: LabUplink) -> str:
    out = run_command(["ip", "-n", spec.provider_ns(u.index), "-4", "-o", "addr", "show", "dev", PROVIDER_LINK])
    for line in out.splitlines():
        words = line.split()
        if "inet" in words:
            return words[words.index("inet") + 1].split("/")[0]
    return u.gateway


def change_gateway(spec: LabSpec, u: LabUplink, new: str) -> None:
    """The provider's router moves to ``new`` and the router's main default route follows it."""
    p = spec.provider_ns(u.index)
    old = current_gateway(spec, u)
    if old != new:  # first, as in change_address
        run_command(["ip", "-n", p, "addr", "del", f"{old}/29", "dev", PROVIDER_LINK])
    run_command(["ip", "-n", p, "addr", "replace", f"{new}/29", "dev", PROVIDER_LINK])
    _main_default(spec, u, new)


def _main_default(spec: LabSpec, u: LabUplink, gateway: str) -> None:
    r = spec.router_ns
    try:
        run_command(["ip", "-n", r, "route", "replace", "default", "via", gateway, "dev", u.interface,
                     "metric", str(u.metric)])
    except Exception:
        pass  # the interface has no address in that net right now: the restore puts it back


def restore_addresses(spec: LabSpec, u: LabUplink) -> None:
    change_gateway(spec, u, u.gateway)
    change_address(spec, u, u.address)


def delete_interface(spec: LabSpec, u: LabUplink) -> None:
    """The uplink's interface (and with it the provider's end of the veth) disappears."""
    run_command(["ip", "-n", spec.router_ns, "link", "del", u.interface])


def recreate_interface(spec: LabSpec, u: LabUplink) -> None:
    """The same commands the lab builds the link with (linkwatch.lab.plan.build_plan), then radvd."""
    r, p = spec.router_ns, spec.provider_ns(u.index)
    for argv in (
        ["ip", "-n", r, "link", "add", u.interface, "type", "veth", "peer", "name", PROVIDER_LINK, "netns", p],
        ["ip", "netns", "exec", p, "sysctl", "-q", "-w", f"net.ipv6.conf.{PROVIDER_LINK}.addr_gen_mode=1"],
        ["ip", "-n", r, "addr", "add", f"{u.address}/29", "dev", u.interface],
        ["ip", "-n", p, "addr", "add", f"{u.gateway}/29", "dev", PROVIDER_LINK],
        ["ip", "netns", "exec", r, "sysctl", "-q", "-w", f"net.ipv6.conf.{u.interface}.accept_ra=2",
         f"net.ipv6.conf.{u.interface}.autoconf=0", f"net.ipv6.conf.{u.interface}.ra_defrtr_metric={u.metric}"],
        ["ip", "-n", r, "link", "set", u.interface, "up"],
        ["ip", "-n", p, "link", "set", PROVIDER_LINK, "up"],
        ["ip", "-n", r, "route", "replace", "default", "via", u.gateway, "dev", u.interface, "metric", str(u.metric)],
        ["ip", "-n", r, "-6", "addr", "add", f"{u.address6}/64", "dev", u.interface, "nodad"],
        ["ip", "-n", p, "-6", "addr", "add", f"{u.provider_address6}/64", "dev", PROVIDER_LINK, "nodad"],
        ["ip", "-n", p, "-6", "addr", "add", f"{GATEWAY6}/64", "dev", PROVIDER_LINK, "nodad"],
    ):
        run_command(argv)
    radvd.stop(spec, u)
    radvd.start(spec, u)


def interface_exists(spec: LabSpec, u: LabUplink) -> bool:
    return subprocess.run(["ip", "-n", spec.router_ns, "link", "show", u.interface], capture_output=True).returncode == 0


# --- processes ------------------------------------------------------------------------------------


def pid_of(spec: LabSpec, role: str) -> int | None:
    for rec in read_records(spec.state_dir):
        if rec.role == role and rec.alive:
            return rec.pid
    return None


def kill9(spec: LabSpec, role: str) -> int | None:
    pid = pid_of(spec, role)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_of(spec, role) == pid and time.monotonic() < deadline:
            time.sleep(0.02)
    return pid


def start_engine(spec: LabSpec, timeout: float = 20.0) -> float:
    """``linkwatch run`` again with the lab's config (as `lab up` starts it); seconds until it answers."""
    argv = python_module_argv(spec.router_ns, "linkwatch", ["run", "--config", spec.config_path])
    t0 = time.monotonic()
    proc, _ = start_background(spec.state_dir, "engine", argv, spec.engine_log)
    while time.monotonic() - t0 < timeout:
        if topology.engine_status(spec, timeout=0.5)[0] is not None:
            return time.monotonic() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"the engine exited at restart (code {proc.returncode})")
        time.sleep(0.05)
    raise RuntimeError(f"the restarted engine did not answer within {timeout:g}s")


def start_web(spec: LabSpec, runner, listen: str) -> None:
    from linkwatch.lab import web

    web.start(spec, runner, listen)


# --- reloads ---------------------------------------------------------------------------------------


def reload(spec: LabSpec, good_text: str, broken: bool) -> dict:
    """Write the config (the good one with a changed comment, or a broken one), ask for a reload,
    and put the good file back after the engine has read it."""
    text = good_text + f"\n# soak reload {time.time():.3f}\n"
    if broken:
        text += "\n[health]\ninterval = \"not a duration\"\n[[[\n"
    tmp = spec.config_path + ".soak"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, spec.config_path)
    answer = call(spec.control_socket, {"cmd": "reload"}, timeout=2.0)
    time.sleep(1.0)  # the reload runs on the loop: let it read the file before it changes again
    with open(tmp, "w") as f:
        f.write(good_text)
    os.replace(tmp, spec.config_path)
    return answer


# --- floods ----------------------------------------------------------------------------------------


def _flood(one: Callable[[random.Random], str], keys: tuple[str, ...], requests: int, threads: int,
           limit_s: float) -> dict:
    """``requests`` calls of ``one`` (it returns the counter to add one to) from ``threads`` threads,
    for at most ``limit_s`` seconds: how many of each."""
    done = dict.fromkeys(keys, 0)
    lock = threading.Lock()
    deadline = time.monotonic() + limit_s
    per = requests // threads

    def worker(i: int) -> None:
        rng = random.Random(i)
        for _ in range(per):
            if time.monotonic() > deadline:
                return
            key = one(rng)
            with lock:
                done[key] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(limit_s + 5)
    return done


def flood_control(spec: LabSpec, requests: int = 3000, threads: int = 8, limit_s: float = 5.0) -> dict:
    """``requests`` status/ping/garbage requests from ``threads`` threads, at most ``limit_s`` seconds."""
    def one(rng: random.Random) -> str:
        req = rng.choice([{"cmd": "status"}, {"cmd": "ping"}, {"cmd": "nope"}, {"cmd": "set", "uplink": 3}])
        try:
            return "ok" if call(spec.control_socket, req, timeout=2.0).get("ok") else "refused"
        except Exception:
            return "errors"

    return _flood(one, ("ok", "refused", "errors"), requests, threads, limit_s)


def flood_web(base_url: str, requests: int = 1500, threads: int = 6, limit_s: float = 5.0) -> dict:
    """Bounded GETs of the JSON API (good and bad parameters) on the web UI's loopback address."""
    paths = ["api/v1/status", "api/v1/events?since=1h", "api/v1/samples?since=1h", "api/v1/samples?step=abc",
             "api/v1/events?since=0001-01-01", "api/v1/events?uplink=%00", "metrics", "healthz"]

    def one(rng: random.Random) -> str:
        try:
            with urllib.request.urlopen(base_url + rng.choice(paths), timeout=3) as r:
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        except Exception:
            code = 0
        return "errors" if code == 0 else f"{code // 100}xx"

    return _flood(one, ("2xx", "4xx", "5xx", "errors"), requests, threads, limit_s)


def flood_snmp(spec: LabSpec, walks: int = 150, limit_s: float = 6.0) -> dict:
    """``walks`` snmpbulkwalks of the LINKWATCH-MIB from the lab's client namespace (bounded)."""
    ok = failed = 0
    deadline = time.monotonic() + limit_s
    for _ in range(walks):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        argv = netns_exec(spec.client_ns, ["snmpbulkwalk", "-m", "", "-v2c", "-c", COMMUNITY, "-t", "1", "-r", "0",
                                           f"{LAN_ROUTER}:{SNMP_PORT}", "1.3.6.1.4.1"])
        try:
            done = subprocess.run(argv, capture_output=True, timeout=max(1.0, left), text=True)
            ok, failed = (ok + 1, failed) if done.returncode == 0 and done.stdout else (ok, failed + 1)
        except subprocess.TimeoutExpired:
            failed += 1
    return {"walks_ok": ok, "walks_failed": failed}


# --- a full disk under the history -----------------------------------------------------------------


def mount_tmpfs(path: str, size: str = "4m") -> None:
    os.makedirs(path, exist_ok=True)
    run_command(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "sk-soak-history", path])


def unmount(path: str) -> None:
    subprocess.run(["umount", path], capture_output=True)
    try:
        os.rmdir(path)
    except OSError:
        pass


def fill(path: str) -> int:
    """Fill the file system under ``path`` with one file until ENOSPC; the bytes written."""
    written = 0
    block = b"\0" * 65536
    with open(os.path.join(path, "soak-filler"), "wb", buffering=0) as f:
        try:
            while written < 1 << 30:
                written += f.write(block)
        except OSError:
            pass
    try:
        with open(os.path.join(path, "soak-filler"), "ab", buffering=0) as f:
            while True:
                f.write(b"\0" * 512)
                written += 512
    except OSError:
        pass
    return written


def unfill(path: str) -> None:
    try:
        os.unlink(os.path.join(path, "soak-filler"))
    except FileNotFoundError:
        pass


def status_ms(spec: LabSpec) -> float | None:
    t0 = time.perf_counter()
    try:
        answer = call(spec.control_socket, {"cmd": "status"}, timeout=2.0)
    except Exception:
        return None
    return (time.perf_counter() - t0) * 1000 if answer.get("ok") else None


def json_line(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
