"""The lab's life cycle: build it, start its services and engine, report on it, tear it down.

:func:`up` builds the namespaces of :mod:`linkwatch.lab.plan` with the ``ip`` and ``nft``
commands (the engine itself never uses them), starts radvd in each provider namespace (the
router's IPv6 default routes come from its advertisements), ``linkwatch.lab.services`` (DNS and
UDP echo) in the inet namespace and, unless told not to, the engine in the router namespace (config from
:mod:`linkwatch.lab.engine_config`, web UI from :mod:`linkwatch.lab.web`); :func:`down` undoes it;
:func:`status` reports namespaces, processes, faults and the engine's own view.

Network safety: ``up`` refuses when a lab range overlaps an address or a route of the namespace
it is started from (:func:`~linkwatch.lab.plan.find_overlaps` is the pure check), and when the
lab already exists. Everything the lab starts is recorded by pid (and process start time, so a
reused pid is never signalled) under ``/run/linkwatch/lab-N/`` and stopped by pid at ``down``
(:mod:`linkwatch.lab.processes`); ``down`` then deletes the lab's namespaces by name. ``down`` is
idempotent and safe after a partial ``up``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from linkwatch.core.status import Status, StatusError, status_from_dict
from linkwatch.report.control import call
from linkwatch.lab import radvd, web
from linkwatch.lab.engine_config import engine_config
from linkwatch.lab.faults import describe_faults
from linkwatch.lab.namespaces import (
    discover,
    existing_lab_namespaces,
    namespace_exists,
    namespace_pids,
    namespace_prefixes,
)
from linkwatch.lab.plan import (
    DNS_SERVER,
    ECHO_PORT,
    ECHO_SERVER,
    LabError,
    LabSpec,
    build_plan,
    check_no_overlap,
    provider_ruleset,
    router_nat_ruleset,
    services_argv,
    sysctl_plan,
)
from linkwatch.lab.processes import (
    ProcessRecord,
    forget_process,
    netns_exec,
    process_start_time,
    python_module_argv,
    read_records,
    run_command,
    start_background,
    stop_pid,
    tail,
    udp_listeners,
    wait_until,
)

READY_TIMEOUT = 5.0  # services must listen within this
ENGINE_TIMEOUT = 10.0  # the engine's control socket must answer within this
KEEPALIVED_RUN = "/run/keepalived"


# --- readiness ---------------------------------------------------------------------------------


def _services_listening(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/net/udp") as f:
            bound = udp_listeners(f.read())
    except OSError:
        return False
    need = [(DNS_SERVER, 53), (ECHO_SERVER, ECHO_PORT)]
    return all(addr in bound or ("0.0.0.0", addr[1]) in bound for addr in need)


def engine_status(spec: LabSpec, timeout: float = 1.0) -> tuple[Status | None, str | None]:
    """(status, None) from the engine's control socket, or (None, why not)."""
    try:
        answer = call(spec.control_socket, {"cmd": "status"}, timeout=timeout)
    except Exception as e:  # ControlError and anything a half-written engine might raise
        return None, str(e)
    if not answer.get("ok"):
        return None, f"engine said: {answer.get('error', answer)}"
    try:
        return status_from_dict(answer.get("status")), None
    except StatusError as e:
        return None, f"unreadable status: {e}"


# --- up / down / status ------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineOptions:
    """What `lab up` passes to the engine's config."""

    probe_targets: int = 2
    overrides: Mapping[str, Mapping] | None = None
    extra_toml: str = ""
    timeout: float = ENGINE_TIMEOUT
    web: str | None = None  # address:port on the host's loopback for the lab's web UI; None = no web UI
    ipv6: bool = False  # IPv6 probe targets too: the engine watches both families


def preflight(spec: LabSpec) -> None:
    """Refuse to build when the calling namespace overlaps a lab range or the lab exists already."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network namespaces)")
    check_no_overlap(namespace_prefixes())
    present = existing_lab_namespaces(spec.name)
    if present:
        raise LabError(f"lab {spec.name!r} already exists (namespaces {', '.join(present)}); "
                       f"run `linkwatch lab down --name {spec.name}` first")
    running = [f"{r.role} (pid {r.pid})" for r in read_records(spec.state_dir) if r.alive]
    if running:
        raise LabError(f"lab {spec.name!r} still has processes running ({', '.join(running)}); "
                       f"run `linkwatch lab down --name {spec.name}` first")
    if not shutil.which("ip") or not shutil.which("nft"):
        raise LabError("the lab needs the `ip` (iproute2) and `nft` (nftables) commands")
    if radvd.binary() is None:
        raise LabError("the lab needs radvd (its providers advertise IPv6 default routes): apt install radvd")
    if importlib.util.find_spec("linkwatch.lab.services") is None:
        raise LabError("linkwatch.lab.services is missing: the lab cannot serve DNS and echo")


def up(spec: LabSpec, engine: bool = True, options: EngineOptions | None = None) -> LabSpec:
    """Build lab ``spec`` (and start its services and, unless ``engine`` is False, the engine).

    All or nothing: on any failure what was built is torn down again and LabError raised.
    """
    preflight(spec)
    os.makedirs(spec.state_dir, exist_ok=True)
    try:
        _build(spec)
        radvd.start_all(spec)
        start_services(spec)
        if engine:
            start_engine(spec, options or EngineOptions())
    except BaseException as e:
        try:
            down(spec.name)
        except LabError as cleanup:
            raise LabError(f"{e}; cleaning up also failed: {cleanup}") from e
        raise
    return spec


@contextlib.contextmanager
def running(spec: LabSpec, engine: bool = True, options: EngineOptions | None = None) -> Iterator[LabSpec]:
    """``with running(LabSpec("tB1")) as lab: ...``: the lab is up inside, down afterwards (always)."""
    up(spec, engine, options)
    try:
        yield spec
    finally:
        down(spec.name)


def _build(spec: LabSpec) -> None:
    plan = build_plan(spec)
    n_ns = len(spec.namespaces)
    for argv in plan[:n_ns]:  # namespaces first, then their sysctls, then links
        run_command(argv)
    for ns, settings in sysctl_plan(spec).items():
        run_command(netns_exec(ns, ["sysctl", "-q", "-w", *settings]))
    for argv in plan[n_ns:]:
        run_command(argv)
    run_command(netns_exec(spec.router_ns, ["nft", "-f", "-"]), input_text=router_nat_ruleset(spec))
    for u in spec.uplink_list:
        run_command(netns_exec(spec.provider_ns(u.index), ["nft", "-f", "-"]), input_text=provider_ruleset(u))


def start_services(spec: LabSpec) -> ProcessRecord:
    argv = python_module_argv(spec.inet_ns, "linkwatch.lab.services", services_argv())
    proc, rec = start_background(spec.state_dir, "services", argv, spec.services_log)
    if not wait_until(lambda: _services_listening(proc.pid), READY_TIMEOUT, proc):
        raise LabError(f"lab services did not listen on {DNS_SERVER}:53 and {ECHO_SERVER}:{ECHO_PORT} "
                       f"within {READY_TIMEOUT:g}s: {tail(spec.services_log)}")
    return rec


def start_engine(spec: LabSpec, options: EngineOptions) -> ProcessRecord:
    """Write the config, start ``linkwatch run`` in the router namespace, wait for its socket.

    With ``options.web`` the web UI follows (see :mod:`linkwatch.lab.web`)."""
    web_table, group, web_argv = None, None, None
    if options.web:
        web_table, group, web_argv = web.prepare(spec, options.web)
    text = engine_config(spec, options.probe_targets, options.overrides, options.extra_toml, web_table, group,
                         options.ipv6)
    os.makedirs(spec.hooks_dir, exist_ok=True)
    with open(spec.config_path, "w") as f:
        f.write(text)
    argv = python_module_argv(spec.router_ns, "linkwatch", ["run", "--config", spec.config_path])
    proc, rec = start_background(spec.state_dir, "engine", argv, spec.engine_log)
    why = "no answer"

    def answers() -> bool:
        nonlocal why
        status, why = engine_status(spec, timeout=0.5)
        return status is not None

    if not wait_until(answers, options.timeout, proc):
        if proc.poll() is not None:
            raise LabError(f"the engine exited (code {proc.returncode}): {tail(spec.engine_log)}")
        raise LabError(f"the engine's control socket {spec.control_socket} did not answer within "
                       f"{options.timeout:g}s ({why}); log: {tail(spec.engine_log)}")
    if web_argv is not None:
        web.start(spec, web_argv, options.web)
    return rec


@dataclass
class DownReport:
    stopped: list[str] = field(default_factory=list)  # "role pid"
    deleted: list[str] = field(default_factory=list)  # namespace names


def down(name: str) -> DownReport:
    """Stop everything lab ``name`` started (by pid) and delete its namespaces. Idempotent."""
    state_dir = LabSpec(name).state_dir  # validates the name
    report = DownReport()
    for rec in read_records(state_dir):
        if stop_pid(rec.pid, rec.start_time):
            report.stopped.append(f"{rec.role} {rec.pid}")
        forget_process(state_dir, rec.role)
    namespaces = existing_lab_namespaces(name)
    for ns in namespaces:  # anything left inside the lab's namespaces was started in the lab
        for pid in namespace_pids(ns):
            if pid != os.getpid() and stop_pid(pid, process_start_time(pid)):
                report.stopped.append(f"stray {pid} in {ns}")
    for ns in namespaces:
        try:
            run_command(["ip", "netns", "del", ns])
            report.deleted.append(ns)
        except LabError:
            if namespace_exists(ns):
                raise
    shutil.rmtree(state_dir, ignore_errors=True)
    for ns in namespaces:  # keepalived --namespace (a router pair) leaves an empty directory per namespace
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(KEEPALIVED_RUN, ns))
    return report


@dataclass(frozen=True)
class LabStatus:
    spec: LabSpec
    namespaces: dict[str, bool]
    processes: list[tuple[ProcessRecord, bool]]
    engine: Status | None
    engine_error: str | None
    faults: dict[str, str]


def status(name: str) -> LabStatus:
    """What exists of lab ``name``: namespaces, recorded processes, faults, the engine's status."""
    spec = discover(name)
    namespaces = {ns: namespace_exists(ns) for ns in spec.namespaces}
    procs = [(rec, rec.alive) for rec in read_records(spec.state_dir)]
    engine, err = engine_status(spec) if os.path.exists(spec.control_socket) else (None, "no control socket")
    return LabStatus(spec, namespaces, procs, engine, err, describe_faults(spec))
