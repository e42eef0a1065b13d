"""net-snmp's snmptrapd as a test fixture: started in a namespace, stopped by pid, its traps parsed.

    with Trapd("lw-tS-client", 9162, ["authCommunity log,execute,net public"], mib_dirs) as trapd:
        ...  # make the engine send something
        trap = trapd.wait_for(lambda t: t["oid"].endswith("lwUplinkDown"), timeout=5)

Every trap goes through a ``traphandle default`` script that appends ``date +%s.%N`` (the receipt
time, ns resolution; it runs a few ms after the packet arrived, so latencies measured with it are
slightly pessimistic) and the trap text to a file. :meth:`Trapd.traps` parses that file into
``{"received": epoch float, "oid": the snmpTrapOID value, "varbinds": {name: value}, "port": the
port it arrived on, "source": "ip:port"}``; names and values are printed by snmptrapd (by name when
the MIB is loaded), quotes around strings removed. Also used by bench/bench_snmp_traps.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

START_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0
HANDLER = """#!/bin/sh
t=$(date +%s.%N)
{{ printf '@@TRAP %s\\n' "$t"; cat; printf '@@END\\n'; }} >> {out}
"""
_ADDRESS = re.compile(r"\[(?P<src>[0-9.]+)\]:(?P<sport>\d+)->\[(?P<dst>[0-9.]+)\]:(?P<dport>\d+)")


LAN_RECEIVER = "10.77.0.2"  # the lab's client namespace: where snmptrapd listens


def snmp_toml(user: str, auth_key: str, priv_key: str, community: str, receivers: Sequence[dict]) -> str:
    """The engine's [snmp.users.USER] (SHA-256 + AES) and one [[snmp.traps]] per receiver dict
    (port, version "2c" or "3" and any other TrapReceiverConfig key); host, the community (v2c) and
    the user at authPriv (v3) are filled in."""
    from linkwatch.lab.engine_config import toml_value

    lines = [f"[snmp.users.{user}]", 'auth = "sha256"', f"auth_key = {toml_value(auth_key)}", 'priv = "aes"',
             f"priv_key = {toml_value(priv_key)}"]
    for r in receivers:
        fill = {"community": community} if r.get("version", "2c") == "2c" else {"user": user, "level": "authPriv"}
        lines += ["", "[[snmp.traps]]"] + [f"{k} = {toml_value(v)}" for k, v in
                                           {"host": LAN_RECEIVER, **r, **fill}.items()]
    return "\n".join(lines) + "\n"


class TrapdError(RuntimeError):
    """snmptrapd did not start, or no matching trap arrived in time."""


def parse_traps(text: str) -> list[dict]:
    """The traps in the handler's output file (see the module docstring). Pure."""
    traps = []
    for block in text.split("@@TRAP ")[1:]:
        body = block.split("@@END", 1)[0]
        lines = body.splitlines()
        if len(lines) < 3:
            continue  # a torn write: the handler is still appending
        received = float(lines[0].strip())
        m = _ADDRESS.search(lines[2])
        binds: list[tuple[str, str]] = []
        for line in lines[3:]:
            name, _, value = line.strip().partition(" ")
            if name:
                binds.append((name, _unquote(value.strip())))
        traps.append({
            "received": received,
            "oid": binds[1][1] if len(binds) > 1 else "",  # snmpTrapOID.0 is always the second varbind
            "uptime": binds[0][1] if binds else "",
            "varbinds": dict(binds[2:]),
            "port": int(m.group("dport")) if m else None,
            "source": f"{m.group('src')}:{m.group('sport')}" if m else lines[2],
        })
    return traps


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def value(trap: dict, name: str) -> str | None:
    """A varbind's value by object name, whatever module prefix and index snmptrapd printed:
    ``value(trap, "lwUplinkName")`` matches ``LINKWATCH-MIB::lwUplinkName.1``."""
    for key, v in trap["varbinds"].items():
        obj = key.split("::", 1)[-1].split(".", 1)[0]
        if obj == name:
            return v
    return None


class Trapd:
    """One snmptrapd listening on ``address:port`` (in namespace ``netns``, or the caller's when None)."""

    def __init__(self, netns: str | None, port: int, conf_lines: Sequence[str], mib_dirs: Sequence[str],
                 address: str = "10.77.0.2", mibs: str = "LINKWATCH-MIB", workdir: str | None = None):
        self.netns = netns
        self.port = port
        self.address = address
        self.mibs = mibs
        self.mib_dirs = [str(d) for d in mib_dirs]
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"lw-trapd-{port}-"))
        self.conf = self.dir / "snmptrapd.conf"
        self.out = self.dir / "traps.txt"
        self.log = self.dir / "snmptrapd.log"
        self.handler = self.dir / "handler.sh"
        self.conf_lines = list(conf_lines)
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        cmd = ["snmptrapd", "-f", "-n", "-C", "-c", str(self.conf), "-Lf", str(self.log),
               "-M", ":".join(self.mib_dirs), "-m", self.mibs, "-p", str(self.dir / "snmptrapd.pid"),
               f"udp:{self.address}:{self.port}"]
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    def start(self) -> Trapd:
        (self.dir / "persist").mkdir(parents=True, exist_ok=True)
        self.handler.write_text(HANDLER.format(out=self.out))
        self.handler.chmod(0o755)
        self.conf.write_text("\n".join([*self.conf_lines, "doNotRetainNotificationLogs yes",
                                        f"traphandle default {self.handler}", ""]))
        self.out.touch()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "SNMP_PERSISTENT_DIR": str(self.dir / "persist"), "SNMPCONFPATH": str(self.dir),
               "HOME": str(self.dir)}  # nothing of the machine's net-snmp set-up is read or written
        with open(self.dir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, cwd=str(self.dir), start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TrapdError(f"snmptrapd exited at once (code {self.proc.returncode}): {self.log_text()[-500:]}")
            if self._listening():
                return self
            time.sleep(0.02)
        self.stop()
        raise TrapdError(f"snmptrapd did not listen on {self.address}:{self.port} within {START_TIMEOUT}s")

    def _listening(self) -> bool:
        try:
            with open(f"/proc/{self.proc.pid}/net/udp") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            return False
        want = f":{self.port:04X}"
        return any(line.split()[1].endswith(want) for line in lines if len(line.split()) > 1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, by pid; keeps the files until :meth:`cleanup`."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Trapd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def traps(self) -> list[dict]:
        try:
            return parse_traps(self.out.read_text(errors="replace"))
        except FileNotFoundError:
            return []

    def log_text(self) -> str:
        parts = []
        for p in (self.log, self.dir / "stdout.log"):
            try:
                parts.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def wait_for(self, pred: Callable[[dict], bool], timeout: float, what: str = "a matching trap") -> dict:
        """The first trap for which ``pred`` is true, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for trap in self.traps():
                if pred(trap):
                    return trap
            if time.monotonic() >= deadline:
                got = [(t["oid"], t["varbinds"]) for t in self.traps()][-5:]
                raise TrapdError(f"snmptrapd :{self.port} got no {what} within {timeout}s (last: {got!r})")
            time.sleep(0.02)
