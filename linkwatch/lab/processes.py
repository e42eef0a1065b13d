"""Processes the lab starts: commands, children recorded by pid and start time, stopped by pid.

Everything the lab starts in the background is recorded under the lab's state directory as
``<role>.pid`` (pid plus kernel start time, so a reused pid is never signalled) and stopped by pid.
Also the lab's command runner (``ip``, ``nft``, ``sysctl``; a failure becomes a LabError) and the
small waiting helpers that readiness checks share.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from linkwatch.lab.plan import LabError

STOP_TIMEOUT = 3.0  # SIGTERM grace before SIGKILL

PYTHON_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the linkwatch package


# --- commands ----------------------------------------------------------------------------------


def run_command(argv: Sequence[str], input_text: str | None = None, timeout: float = 10.0) -> str:
    """Run a lab tool command; its failure becomes a LabError quoting the command and stderr."""
    try:
        done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"command not found: {argv[0]} (the lab needs iproute2 and nftables)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(f"`{' '.join(argv)}` failed: {detail[-1] if detail else f'exit {done.returncode}'}")
    return done.stdout


def netns_exec(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def python_module_argv(ns: str, module: str, args: Sequence[str]) -> list[str]:
    """``ip netns exec <ns> <this python> -m <module> <args>`` (exec, no fork: the pid is python's)."""
    return netns_exec(ns, [sys.executable, "-m", module, *args])


def child_env() -> dict[str, str]:
    """Environment for lab children: they import linkwatch from this very tree."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = PYTHON_ROOT + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- processes, recorded by pid ----------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRecord:
    """A process the lab started: pid plus kernel start time, so a reused pid is never signalled."""

    role: str
    pid: int
    start_time: int
    argv: tuple[str, ...] = ()

    @property
    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start_time


def process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def record_process(state_dir: str, role: str, pid: int, argv: Sequence[str] = ()) -> ProcessRecord:
    start = process_start_time(pid)
    if start is None:
        raise LabError(f"{role} (pid {pid}) exited right after it started")
    rec = ProcessRecord(role, pid, start, tuple(argv))
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, f"{role}.pid")
    with open(path + ".tmp", "w") as f:
        json.dump({"role": role, "pid": pid, "start_time": start, "argv": list(argv)}, f)
    os.replace(path + ".tmp", path)
    return rec


def read_records(state_dir: str) -> list[ProcessRecord]:
    records = []
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return []
    for fname in names:
        if not fname.endswith(".pid"):
            continue
        try:
            with open(os.path.join(state_dir, fname)) as f:
                d = json.load(f)
            records.append(ProcessRecord(d["role"], int(d["pid"]), int(d["start_time"]), tuple(d.get("argv", ()))))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a torn file: nothing trustworthy to signal
    return records


def forget_process(state_dir: str, role: str) -> None:
    try:
        os.unlink(os.path.join(state_dir, f"{role}.pid"))
    except FileNotFoundError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it


def stop_pid(pid: int, start_time: int | None, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; only while the pid is still the same process.

    Returns True when the process was running and is gone now.
    """
    def same() -> bool:
        _reap(pid)
        now = process_start_time(pid)
        return now is not None and (start_time is None or now == start_time)

    if not same():
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not same():
                return True
            time.sleep(0.02)
    raise LabError(f"pid {pid} survived SIGKILL")


def start_background(state_dir: str, role: str, argv: list[str],
                     log_path: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, ProcessRecord]:
    """Start ``argv`` detached (own session), output to ``log_path``, and record its pid."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env or child_env(), cwd="/", start_new_session=True)
    try:
        return proc, record_process(state_dir, role, proc.pid, argv)
    except LabError:
        proc.wait(timeout=STOP_TIMEOUT)
        raise LabError(f"{role} exited at once (exit {proc.returncode}): {tail(log_path)}") from None


def tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            text = f.read()[-4000:]
    except OSError:
        return "(no log)"
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(last) if last else "(empty log)"


# --- readiness ---------------------------------------------------------------------------------


def udp_listeners(proc_net_udp: str) -> set[tuple[str, int]]:
    """(address, port) of every UDP socket in /proc/<pid>/net/udp text. Pure."""
    found = set()
    for line in proc_net_udp.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 2 or ":" not in parts[1]:
            continue
        hex_ip, hex_port = parts[1].split(":")
        ip = socket.inet_ntoa(int(hex_ip, 16).to_bytes(4, "little"))
        found.add((ip, int(hex_port, 16)))
    return found


def tcp_listeners(proc_net_tcp: str) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in /proc/<pid>/net/tcp text. Pure."""
    found = set()
    for line in proc_net_tcp.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[1] or parts[3] != "0A":  # 0A: TCP_LISTEN
            continue
        hex_ip, hex_port = parts[1].split(":")
        found.add((socket.inet_ntoa(int(hex_ip, 16).to_bytes(4, "little")), int(hex_port, 16)))
    return found


def wait_until(check: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; False at once when ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.03)
    return check()
