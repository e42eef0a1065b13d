"""The providers' router advertisements: radvd in each provider namespace (Debian's radvd).

The router accepts RAs on its uplinks (``accept_ra=2``: it forwards, as a CPE does) and the kernel
installs ``default via fe80::1 dev upk proto ra metric 100*k`` from them, as it would from a real
ISP's router; the engine learns its IPv6 gateways from those routes. :func:`stop` is the ``no-ra``
fault: radvd's last advertisement has a router lifetime of 0, so the router withdraws the route at
once (a provider whose IPv6 router stops advertising); :func:`start` is its ``clear``.
"""

from __future__ import annotations

import os
import shutil

from linkwatch.lab.plan import LabError, LabSpec, LabUplink, radvd_config
from linkwatch.lab.processes import (
    forget_process,
    netns_exec,
    read_records,
    run_command,
    start_background,
    stop_pid,
    tail,
    wait_until,
)

READY_TIMEOUT = 5.0  # the router must have each RA's default route within this


def binary() -> str | None:
    """radvd's path (root's PATH may lack /usr/sbin when started from a service), else None."""
    return shutil.which("radvd") or next((p for p in ("/usr/sbin/radvd", "/sbin/radvd") if os.access(p, os.X_OK)),
                                         None)


def role(u: LabUplink) -> str:
    return f"radvd-{u.name}"


def running(spec: LabSpec, u: LabUplink) -> bool:
    return any(rec.role == role(u) and rec.alive for rec in read_records(spec.state_dir))


def routes(spec: LabSpec) -> set[str]:
    """The router's uplinks that have an IPv6 default route from a router advertisement."""
    shown = run_command(["ip", "-n", spec.router_ns, "-6", "-o", "route", "show", "default", "proto", "ra"])
    return {words[words.index("dev") + 1] for words in map(str.split, shown.splitlines()) if "dev" in words}


def start(spec: LabSpec, u: LabUplink) -> None:
    """radvd for provider ``u`` (unless it runs already)."""
    if running(spec, u):
        return
    path = binary()
    if path is None:
        raise LabError("the lab needs radvd (its providers advertise IPv6 default routes): apt install radvd")
    conf = spec.radvd_file(u.index, "conf")
    with open(conf, "w") as f:
        f.write(radvd_config(u))
    os.chmod(conf, 0o644)  # radvd refuses a config that others may write
    argv = netns_exec(spec.provider_ns(u.index), [path, "--config", conf, "--pidfile", spec.radvd_file(u.index, "pidfile"),
                                                   "--nodaemon", "--logmethod", "stderr"])
    start_background(spec.state_dir, role(u), argv, spec.radvd_file(u.index, "log"))


def stop(spec: LabSpec, u: LabUplink) -> None:
    """Stop provider ``u``'s radvd: its last RA (lifetime 0) withdraws the router's default route."""
    for rec in read_records(spec.state_dir):
        if rec.role == role(u):
            stop_pid(rec.pid, rec.start_time)
            forget_process(spec.state_dir, rec.role)


def start_all(spec: LabSpec) -> None:
    """radvd for every provider; wait until the router has learned each default route."""
    for u in spec.uplink_list:
        start(spec, u)
    wanted = {u.interface for u in spec.uplink_list}
    if not wait_until(lambda: wanted <= routes(spec), READY_TIMEOUT):
        missing = sorted(wanted - routes(spec))
        k = next(u.index for u in spec.uplink_list if u.interface == missing[0]) if missing else 1
        raise LabError(f"no router advertisement reached {', '.join(missing)} within {READY_TIMEOUT:g}s: "
                       f"{tail(spec.radvd_file(k, 'log'))}")
