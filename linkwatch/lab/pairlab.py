"""A router pair's life cycle (issue 15): build it, start its services, engines and keepalived,
say which router holds the virtual gateway, kill and restart an engine, tear it down.

The pure plan is :mod:`linkwatch.lab.pair`; this module runs it with the single lab's tools
(:mod:`linkwatch.lab.topology` for the safety preflight, the services and ``down``;
:mod:`linkwatch.lab.processes` for processes recorded by pid). ``linkwatch lab down --name N``
tears a pair down like any lab: its processes by pid, then its namespaces by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator

from linkwatch.core.status import Status
from linkwatch.lab import radvd, topology
from linkwatch.lab.engine_config import engine_config
from linkwatch.lab.pair import (
    VIRTUAL_GATEWAY,
    PairRouter,
    PairSpec,
    build_pair_plan,
    keepalived_argv,
    keepalived_config,
    pair_sysctls,
)
from linkwatch.lab.plan import LabError, provider_ruleset, router_nat_ruleset
from linkwatch.lab.processes import (
    ProcessRecord,
    forget_process,
    netns_exec,
    read_records,
    run_command,
    start_background,
    tail,
    wait_until,
)

MASTER_TIMEOUT = 15.0  # ra must hold the virtual gateway within this of `up`


def keepalived_binary() -> str | None:
    found = shutil.which("keepalived")
    if found is None and os.access("/usr/sbin/keepalived", os.X_OK):
        found = "/usr/sbin/keepalived"
    return found


def preflight(spec: PairSpec) -> None:
    topology.preflight(spec.lab)
    if keepalived_binary() is None:
        raise LabError("the router pair needs keepalived (VRRP): apt install keepalived")


def up(spec: PairSpec, options: topology.EngineOptions | None = None, wait_master: bool = True) -> PairSpec:
    """Build pair ``spec``: namespaces, services, one engine and one keepalived per router; by
    default wait until ``ra`` holds the virtual gateway. All or nothing, like ``topology.up``."""
    preflight(spec)
    for r in spec.routers:
        os.makedirs(r.state_dir, exist_ok=True)
    try:
        _build(spec)
        for u in spec.lab.uplink_list:
            radvd.start(spec.lab, u)  # `lab fault … clear` restarts it: the providers match the single lab's
        topology.start_services(spec.lab)
        for r in spec.routers:
            start_engine(spec, r, options or topology.EngineOptions())
        for r in spec.routers:
            start_keepalived(spec, r)
        if wait_master and not wait_until(lambda: holder(spec) == "ra", MASTER_TIMEOUT):
            raise LabError(f"ra did not take the virtual gateway {VIRTUAL_GATEWAY} within {MASTER_TIMEOUT:g}s "
                           f"(holder: {holder(spec)}); keepalived: {tail(spec.router('ra').keepalived_log)}")
    except BaseException as e:
        try:
            topology.down(spec.name)
        except LabError as cleanup:
            raise LabError(f"{e}; cleaning up also failed: {cleanup}") from e
        raise
    return spec


@contextlib.contextmanager
def running(spec: PairSpec, options: topology.EngineOptions | None = None) -> Iterator[PairSpec]:
    """``with running(PairSpec("kp1")) as pair: ...``: the pair is up inside, down afterwards."""
    up(spec, options)
    try:
        yield spec
    finally:
        topology.down(spec.name)


def _build(spec: PairSpec) -> None:
    plan = build_pair_plan(spec)
    n_ns = len(spec.namespaces)
    for argv in plan[:n_ns]:
        run_command(argv)
    for ns, settings in pair_sysctls(spec).items():
        run_command(netns_exec(ns, ["sysctl", "-q", "-w", *settings]))
    for argv in plan[n_ns:]:
        run_command(argv)
    for r in spec.routers:
        run_command(netns_exec(r.ns, ["nft", "-f", "-"]), input_text=router_nat_ruleset(r))
    for u in spec.lab.uplink_list:
        run_command(netns_exec(spec.lab.provider_ns(u.index), ["nft", "-f", "-"]), input_text=provider_ruleset(u))


# --- engines -----------------------------------------------------------------------------------


def engine_status(router: PairRouter, timeout: float = 1.0) -> tuple[Status | None, str | None]:
    """(status, None) from the router's engine, or (None, why not)."""
    return topology.engine_status(router, timeout)  # it needs only the control socket


def start_engine(spec: PairSpec, router: PairRouter, options: topology.EngineOptions) -> ProcessRecord:
    """Write the router's config (with its [keepalived] track file), start its engine, wait for
    its socket. Also what a supervisor's restart does after :func:`kill_engine`."""
    extra = f'[keepalived]\ntrack_file = "{router.track_file}"\n' + options.extra_toml
    text = engine_config(router, options.probe_targets, options.overrides, extra)
    os.makedirs(router.hooks_dir, exist_ok=True)
    with open(router.config_path, "w") as f:
        f.write(text)
    argv = netns_exec(router.ns, router.engine_argv())
    proc, rec = start_background(spec.lab.state_dir, router.engine_role, argv, router.engine_log)
    if not wait_until(lambda: engine_status(router, 0.5)[0] is not None, options.timeout, proc):
        if proc.poll() is not None:
            raise LabError(f"the engine of {router.role} exited (code {proc.returncode}): {tail(router.engine_log)}")
        raise LabError(f"the engine of {router.role} did not answer on {router.control_socket} within "
                       f"{options.timeout:g}s: {tail(router.engine_log)}")
    return rec


def engine_record(spec: PairSpec, router: PairRouter) -> ProcessRecord | None:
    return next((rec for rec in read_records(spec.lab.state_dir) if rec.role == router.engine_role and rec.alive), None)


def kill_engine(spec: PairSpec, router: PairRouter) -> int:
    """SIGKILL the router's engine (a crash: no clean stop, the track file keeps its last value);
    returns its pid. LabError when it is not running."""
    rec = engine_record(spec, router)
    if rec is None:
        raise LabError(f"the engine of {router.role} is not running")
    os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while rec.alive and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(rec.pid, os.WNOHANG)
        time.sleep(0.01)
    forget_process(spec.lab.state_dir, router.engine_role)
    return rec.pid


# --- keepalived --------------------------------------------------------------------------------


def start_keepalived(spec: PairSpec, router: PairRouter) -> ProcessRecord:
    """keepalived for ``router``, in the foreground, recorded by pid like every lab process."""
    with open(router.keepalived_conf, "w") as f:
        f.write(keepalived_config(spec, router))
    argv = keepalived_argv(router, keepalived_binary() or "keepalived")
    run_command(netns_exec(router.ns, [argv[0], "--config-test", f"--use-file={router.keepalived_conf}"]))
    proc, rec = start_background(spec.lab.state_dir, router.keepalived_role, argv, router.keepalived_log)
    if not wait_until(lambda: "Entering" in _read(router.keepalived_log), 5.0, proc):
        raise LabError(f"keepalived of {router.role} did not enter a VRRP state: {tail(router.keepalived_log)}")
    return rec


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def holds_gateway(router: PairRouter) -> bool:
    """The router has the virtual gateway address on its LAN interface now."""
    shown = run_command(["ip", "-n", router.ns, "-4", "-o", "addr", "show", "dev", "lan0"])
    return f" {VIRTUAL_GATEWAY}/" in shown


def holder(spec: PairSpec) -> str | None:
    """``ra``, ``rb``, None (nobody) or ``both`` (split brain): who has the virtual gateway."""
    have = [r.role for r in spec.routers if holds_gateway(r)]
    return have[0] if len(have) == 1 else ("both" if have else None)


def discover_pair(name: str) -> PairSpec | None:
    """The spec of an existing pair (its uplinks per router from its providers), None when lab
    ``name`` is not a pair."""
    from linkwatch.lab.namespaces import discover, namespace_exists

    if not namespace_exists(f"lw-{name}-ra"):
        return None
    return PairSpec(name, max(1, discover(name).uplinks // 2))


def describe(spec: PairSpec) -> str:
    """`linkwatch lab status` of a pair: per router its engine, track file, VRRP role."""
    from linkwatch.sinks.keepalived import read_value

    lines = [f"router pair {spec.name!r}, {spec.uplinks} uplink(s) per router, state in {spec.lab.state_dir}"]
    records = {rec.role: rec for rec in read_records(spec.lab.state_dir)}
    for r in spec.routers:
        engine, ka = records.get(r.engine_role), records.get(r.keepalived_role)
        st, err = engine_status(r) if engine is not None and engine.alive else (None, "not running")
        states = ", ".join(f"{u.name} {u.state.value}" for u in st.uplinks) if st else f"engine: {err}"
        lines.append(f"  {r.role} ({r.ns}, priority {r.priority}): {states}; track file "
                     f"{read_value(r.track_file)}; keepalived {'running' if ka and ka.alive else 'NOT RUNNING'}; "
                     f"{'holds' if holds_gateway(r) else 'does not hold'} {VIRTUAL_GATEWAY}")
    return "\n".join(lines)
