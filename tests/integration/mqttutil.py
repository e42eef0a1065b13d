"""Debian's mosquitto as a test fixture: a broker and a subscriber (mosquitto_sub), each started on
loopback or in a lab namespace and stopped by pid; a throwaway CA made with ``cryptography``.

    with Broker(tmp_path, port) as broker, Subscriber(port, "linkwatch/#", tmp_path) as sub:
        ...  # make the engine publish
        sub.wait_for(lambda m: m.get("linkwatch/gw/active") == "lte", timeout=5)

The subscriber writes every message with its receipt time (``%U``: Unix time, ns) to a file;
:meth:`Subscriber.messages` reads them back in order and :meth:`Subscriber.latest` gives the last
payload per topic. Also used by bench/bench_mqtt.py (in the lab's client namespace).
"""

from __future__ import annotations

import datetime
import ipaddress
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0


class MqttFixtureError(RuntimeError):
    """The broker did not start, or the messages waited for did not come."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _netns(ns: str | None) -> list[str]:
    return ["ip", "netns", "exec", ns] if ns else []


@dataclass(frozen=True)
class Tls:
    """PEM files of a throwaway CA and a server certificate it signed."""

    ca: Path
    cert: Path
    key: Path


def make_ca(directory: Path, name: str, server_names: Sequence[str] = ("localhost",),
            server_ips: Sequence[str] = ("127.0.0.1",)) -> Tls:
    """A CA and a server certificate for ``server_names`` / ``server_ips`` (EC P-256, 1 day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key, issuer: str, issuer_key, ca: bool, sans=None):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans is not None:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert(f"{name} test CA", ca_key, f"{name} test CA", ca_key, True)
    sans = [x509.DNSName(n) for n in server_names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in server_ips]
    server = cert(server_names[0], key, f"{name} test CA", ca_key, False, sans)
    out = Tls(directory / f"{name}-ca.pem", directory / f"{name}-server.pem", directory / f"{name}-server.key")
    out.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return out


class Broker:
    """mosquitto on ``address``:``port`` (in namespace ``ns``), without persistence (a restart
    starts empty) unless ``persistence``: then it keeps its retained messages in a file across a
    restart (:meth:`forget` deletes it). ``users``: name -> password (a password file; no
    anonymous clients then)."""

    def __init__(self, directory: Path, port: int, address: str = "127.0.0.1", ns: str | None = None,
                 users: dict[str, str] | None = None, tls: Tls | None = None, persistence: bool = False):
        self.dir, self.port, self.address, self.ns = Path(directory), port, address, ns
        self.conf = self.dir / f"mosquitto-{port}.conf"
        self.db = self.dir / f"mosquitto-{port}.db"
        lines = ["user root", "log_dest stderr", "log_type error", "log_type warning",
                 f"listener {port} {address}", f"allow_anonymous {'false' if users else 'true'}"]
        lines += (["persistence true", f"persistence_location {self.dir}/", f"persistence_file {self.db.name}"]
                  if persistence else ["persistence false"])
        if users:
            pw = self.dir / f"mosquitto-{port}.passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True,
                               capture_output=True, timeout=10)
            lines.append(f"password_file {pw}")
        if tls:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None  # time.time() when it first accepted a connection

    def start(self) -> Broker:
        self.log = open(self.dir / f"mosquitto-{self.port}.log", "ab")
        self.proc = subprocess.Popen(_netns(self.ns) + [MOSQUITTO, "-c", str(self.conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MqttFixtureError(f"mosquitto exited with {self.proc.returncode}: {self.log_text()}")
            if self._accepts():
                self.started_at = time.time()
                return self
            time.sleep(0.01)
        self.stop()
        raise MqttFixtureError(f"mosquitto did not listen on {self.address}:{self.port} in {START_TIMEOUT}s")

    def _accepts(self) -> bool:
        if self.ns is None:
            try:
                socket.create_connection((self.address, self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        ss = subprocess.run(_netns(self.ns) + ["ss", "-Htln", f"sport = :{self.port}"], capture_output=True,
                            text=True, timeout=5)
        return bool(ss.stdout.strip())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def forget(self) -> None:
        """Delete what a persistent broker kept (while it is stopped)."""
        self.db.unlink(missing_ok=True)

    def log_text(self) -> str:
        path = self.dir / f"mosquitto-{self.port}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Subscriber:
    """mosquitto_sub on ``topics`` of the broker at ``address``:``port``, every message with its
    receipt time in a file. ``user``/``password`` and ``ca`` as the broker needs them."""

    def __init__(self, port: int, topics: Sequence[str] | str, directory: Path, address: str = "127.0.0.1",
                 ns: str | None = None, user: str | None = None, password: str | None = None,
                 ca: Path | None = None, name: str = "sub"):
        self.out = Path(directory) / f"{name}-{port}-{time.monotonic_ns()}.txt"
        args = ["mosquitto_sub", "-h", address, "-p", str(port), "-F", "%U\t%r\t%t\t%p", "-q", "1"]
        for t in [topics] if isinstance(topics, str) else topics:
            args += ["-t", t]
        if user:
            args += ["-u", user, "-P", password or ""]
        if ca:
            args += ["--cafile", str(ca)]
        self.args = _netns(ns) + args
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Subscriber:
        self.file = open(self.out, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.file, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(STOP_TIMEOUT)
        self.file.close()

    def messages(self) -> list[tuple[float, bool, str, str]]:
        """(receipt time, retained?, topic, payload) of every whole line so far, in order."""
        out = []
        for line in self.out.read_text(errors="replace").split("\n")[:-1]:
            parts = line.split("\t", 3)
            if len(parts) == 4:
                try:
                    out.append((float(parts[0]), parts[1] == "1", parts[2], parts[3]))
                except ValueError:
                    continue
        return out

    def latest(self) -> dict[str, str]:
        """The last payload seen on each topic."""
        return {topic: payload for _, _, topic, payload in self.messages()}

    def wait_for(self, pred: Callable[[dict[str, str]], bool], timeout: float, what: str = "messages") -> float:
        """time.time() when ``pred(latest())`` first held (polled every 10 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.latest()):
                return time.time()
            if self.proc is not None and self.proc.poll() is not None:
                raise MqttFixtureError(f"mosquitto_sub exited: {self.out.read_text(errors='replace')[-500:]}")
            time.sleep(0.01)
        raise MqttFixtureError(f"timed out after {timeout}s waiting for {what}; latest: {self.latest()}")

    def first_time(self, topic: str, payload: str, after: float = 0.0) -> float | None:
        """Receipt time of the first message ``payload`` on ``topic`` received after ``after``."""
        return next((t for t, _, top, p in self.messages() if top == topic and p == payload and t > after), None)
