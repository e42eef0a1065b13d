"""The lab's web UI: `linkwatch web` for the lab's engine.

It listens either on the host's loopback (127.0.0.1 or ::1: the demo, for a browser on this
machine) or on the lab router's LAN address 10.77.0.1 inside the router namespace, where a
browser in the lab's client namespace reaches it like a LAN user would (the browser test: every
packet the browser sends stays inside the lab).

It runs the way a router should run it: as user ``nobody`` (no capabilities, no new privileges),
reaching the engine through the control socket (group ``nogroup``) and reading the history
read-only. Where this interpreter cannot be run by nobody (e.g. a Python under /root), it says so
and runs as root instead, so the demo still works.

The lab's login password is :data:`LAB_PASSWORD` (the lab lives on loopback and is torn down).
"""

from __future__ import annotations

import ipaddress
import os
import site
import subprocess
import sys

from linkwatch.lab.plan import LAN_ROUTER, LabError, LabSpec
from linkwatch.lab.processes import PYTHON_ROOT, child_env, netns_exec, start_background, tail, wait_until

LAB_PASSWORD = "linkwatch-lab"
UNPRIVILEGED = ("nobody", "nogroup")
WEB_TIMEOUT = 20.0
SYSTEM_PYTHON = "/usr/bin/python3"


def check_listen(listen: str) -> tuple[str, int]:
    """The lab's web UI listens on the host's loopback or the router's LAN address; else LabError."""
    from linkwatch.config import parse_listen

    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise LabError(f"web address {listen!r} is not address:port{': ' + str(e) if str(e) else ''}") from None
    if not ipaddress.ip_address(host).is_loopback and host != LAN_ROUTER:
        raise LabError(f"the lab's web UI listens on loopback (127.0.0.1, ::1) or on the router's LAN "
                       f"address {LAN_ROUTER}, not {host}")
    return host, port


def in_router(listen: str) -> bool:
    """True when the web UI runs in the router namespace (LAN side), False on the host's loopback."""
    return check_listen(listen)[0] == LAN_ROUTER


def _unprivileged_env() -> dict[str, str]:
    paths = [PYTHON_ROOT] + [p for p in site.getsitepackages() if os.path.isdir(p)]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": os.pathsep.join(paths),
           "PYTHONUNBUFFERED": "1", "HOME": "/nonexistent"}
    # bench/soak.py: the web UI traces its allocations too (--trace-memory, daemon/memtrace.py) and
    # trims its malloc arenas as the engine does (LINKWATCH_MALLOC_TRIM, daemon/memory.py)
    passed = ("LINKWATCH_TRACEMALLOC", "LINKWATCH_MALLOC_TRIM")
    env.update({k: v for k, v in os.environ.items() if k.startswith(passed)})
    return env


def unprivileged_python() -> tuple[list[str], dict[str, str]] | str:
    """(argv prefix, env) that runs this tree's linkwatch as nobody, or why that is not possible."""
    user, group = UNPRIVILEGED
    env = _unprivileged_env()
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    check = f"import sys; assert '%d.%d' % sys.version_info[:2] == '{want}', sys.version; import linkwatch.webui.app"
    why = "setpriv not found"
    for python in dict.fromkeys((sys.executable, SYSTEM_PYTHON)):
        prefix = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", "--no-new-privs",
                  "--inh-caps=-all", "--bounding-set=-all", python]
        try:
            done = subprocess.run(prefix + ["-c", check], env=env, capture_output=True, text=True, timeout=30,
                                  cwd="/")
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"{python}: {e}"
            continue
        if done.returncode == 0:
            return prefix, env
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = f"{python}: {lines[-1] if lines else f'exit {done.returncode}'}"
    return why


def prepare(spec: LabSpec, listen: str) -> tuple[dict, str | None, tuple[list[str], dict[str, str]]]:
    """([web] table for the engine config, control socket group or None, (argv, env) of the web UI)."""
    from linkwatch.webui.security import hash_password

    check_listen(listen)
    table = {"listen": listen, "public_read": True, "password_hash": hash_password(LAB_PASSWORD),
             "refresh": "500ms"}
    args = ["-m", "linkwatch", "web", "--config", spec.config_path, "--listen", listen]
    wrap = (lambda argv: netns_exec(spec.router_ns, argv)) if in_router(listen) else (lambda argv: argv)
    runner = unprivileged_python()
    if isinstance(runner, str):
        print(f"lab: the web UI runs as root: nobody cannot run this Python ({runner})", file=sys.stderr)
        return table, None, (wrap([sys.executable, *args]), child_env())
    prefix, env = runner
    return table, UNPRIVILEGED[1], (wrap(prefix + args), env)


def tcp_listening(pid: int, host: str, port: int) -> bool:
    """True when the network namespace of ``pid`` has a TCP socket listening on host:port
    (read from /proc/PID/net/tcp and tcp6, so it works for any namespace)."""
    want_port = f"{port:04X}"
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(":" + want_port):
                return True
    return False


def start(spec: LabSpec, runner: tuple[list[str], dict[str, str]], listen: str):
    """Start the web UI (recorded as role ``web``) and wait until it answers HTTP."""
    os.chmod(spec.state_dir, 0o755)  # nobody must reach the socket and the history inside
    argv, env = runner
    proc, rec = start_background(spec.state_dir, "web", argv, spec.web_log, env=env)
    host, port = check_listen(listen)
    if not wait_until(lambda: tcp_listening(proc.pid, host, port), WEB_TIMEOUT, proc):
        raise LabError(f"the web UI did not answer on {listen} within {WEB_TIMEOUT:g}s: {tail(spec.web_log)}")
    return rec


def url(listen: str) -> str:
    host, port = check_listen(listen)
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}/"


