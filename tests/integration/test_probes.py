"""Probes and lab services against the real kernel, in two throwaway network namespaces.

Topology (names end in this process's pid, so parallel runs do not collide)::

    lwtB-<pid>-cli  10.99.0.2 (+10.99.0.3 for one test)  ==veth==  lwtB-<pid>-srv  10.99.0.1
                                                                    DNS 10.99.0.53, .54 (services)
                                                                    echo 10.99.0.7:7007 (services)
                                                                    delayed DNS 10.99.0.55 (test)
    2001:db8:99::2                 ==(same veth)==   2001:db8:99::1, DNS 2001:db8:99::53

The probes run in-process on an asyncio loop in a thread that setns()'d into the client
namespace (setns is per thread), so every socket they open, also when they reopen one, lives
there. Faults are nftables rules in the server namespace. Everything is deleted in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pyroute2.netns import setns

from linkwatch.lab.safety import NotInLabError, require_lab_namespace
from linkwatch.lab.services import dns_reply, serve
from linkwatch.probes import ProbeError, ProbeResult, ProbeSpec, make_probes
from linkwatch.probes.icmp import checksum

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

REPO = Path(__file__).resolve().parents[2]
TAG = f"{os.getpid() % 100000}"
SRV = f"lwtB-{TAG}-srv"
CLI = f"lwtB-{TAG}-cli"
SERVER_IP = "10.99.0.1"
CLIENT_IP = "10.99.0.2"
SPARE_IP = "10.99.0.3"
DNS_IP = "10.99.0.53"
DNS2_IP = "10.99.0.54"
SLOW_DNS_IP = "10.99.0.55"
SPARE_DNS_IP = "10.99.0.56"
ECHO_IP = "10.99.0.7"
ECHO_PORT = 7007
SERVER6_IP = "2001:db8:99::1"
CLIENT6_IP = "2001:db8:99::2"
DNS6_IP = "2001:db8:99::53"
ANSWER = "203.0.113.80"
NFT_TABLE = "lwtb_test"


# --------------------------------------------------------------------------- shell helpers


def sh(*args: str, ns: str | None = None, check: bool = True, stdin: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def sysctl(ns: str, key: str, value: str) -> str:
    """Set ``key`` in namespace ``ns``; returns the old value."""
    old = sh("sysctl", "-n", key, ns=ns).strip()
    sh("sysctl", "-q", "-w", f"{key}={value}", ns=ns)
    return old


@contextlib.contextmanager
def sysctl_set(ns: str, key: str, value: str) -> Iterator[None]:
    old = sysctl(ns, key, value)
    try:
        yield
    finally:
        sysctl(ns, key, old)


@contextlib.contextmanager
def nft_rules(body: str, ns: str = SRV) -> Iterator[None]:
    """Load ``table inet lwtb_test { body }`` into ``ns`` for the duration of the block."""
    sh("nft", "-f", "-", ns=ns, stdin=f"table inet {NFT_TABLE} {{\n{body}\n}}\n")
    try:
        yield
    finally:
        sh("nft", "delete", "table", "inet", NFT_TABLE, ns=ns, check=False)


def nft_counters(ns: str = SRV) -> dict[str, tuple[int, int]]:
    """Named counters of our table: name -> (packets, bytes)."""
    data = json.loads(sh("nft", "-j", "list", "counters", "table", "inet", NFT_TABLE, ns=ns))
    out = {}
    for item in data["nftables"]:
        if "counter" in item:
            c = item["counter"]
            out[c["name"]] = (c["packets"], c["bytes"])
    return out


def subprocess_env(extra_path: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *extra_path])
    return env


# --------------------------------------------------------------------------- namespace threads


class NsLoop:
    """An asyncio loop in a thread that lives in network namespace ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"netns-{name}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        assert self.loop is not None

    def _main(self) -> None:
        try:
            setns(self.name, flags=0)
            require_lab_namespace((self.name,))
            self.loop = asyncio.new_event_loop()
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, coro, timeout: float = 60):
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class DelayedResponder(threading.Thread):
    """A test-only responder in namespace ``ns`` that answers late (or only records).

    kind "icmp": a raw socket that sees echo requests to ``address`` (turn off the kernel's own
    replies with icmp_echo_ignore_all) and answers each after ``delay`` seconds, or records only
    when ``delay`` is None. kind "dns": a UDP server on ``address``:53 answering after ``delay``.
    Bounded: it stops by itself after ``lifetime`` seconds.
    """

    def __init__(self, ns: str, kind: str, address: str, delay: float | None, lifetime: float = 60) -> None:
        super().__init__(daemon=True, name=f"responder-{kind}")
        self.ns, self.kind, self.address, self.delay, self.lifetime = ns, kind, address, delay, lifetime
        self.requests: list[tuple[int, int, int, int]] = []  # icmp: (ident, seq, payload len, ip len)
        self.replies = 0
        self._stop_event = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> DelayedResponder:
        self.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join(5)

    def run(self) -> None:
        try:
            setns(self.ns, flags=0)
            require_lab_namespace((self.ns,))
            if self.kind == "icmp":
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                sock.bind((self.address, 0))
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((self.address, 53))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        pending: list[tuple[float, bytes, tuple[str, int]]] = []
        end = time.monotonic() + self.lifetime
        with sock:
            while not self._stop_event.is_set() and time.monotonic() < end:
                now = time.monotonic()
                for item in [p for p in pending if p[0] <= now]:
                    pending.remove(item)
                    sock.sendto(item[1], item[2])
                    self.replies += 1
                wait = min([p[0] for p in pending], default=now + 0.05) - now
                readable, _, _ = select.select([sock], [], [], max(0.0, min(wait, 0.05)))
                if not readable:
                    continue
                data, addr = sock.recvfrom(4096)
                reply = self._reply(data)
                if reply is not None and self.delay is not None:
                    pending.append((time.monotonic() + self.delay, reply, (addr[0], addr[1] if self.kind == "dns" else 0)))

    def _reply(self, data: bytes) -> bytes | None:
        if self.kind == "dns":
            return dns_reply(data, ANSWER)
        ihl = (data[0] & 0x0F) * 4
        if data[ihl] != 8:  # only echo requests
            return None
        ident, seq = struct.unpack_from("!HH", data, ihl + 4)
        payload = data[ihl + 8 :]
        self.requests.append((ident, seq, len(payload), struct.unpack_from("!H", data, 2)[0]))
        header = struct.pack("!BBHHH", 0, 0, 0, ident, seq)
        return struct.pack("!BBHHH", 0, 0, checksum(header + payload), ident, seq) + payload


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lab() -> Iterator[None]:
    """Two namespaces joined by a veth; deleted even when setup or a test fails."""
    try:
        sh("ip", "netns", "add", SRV)
        sh("ip", "netns", "add", CLI)
        sh("ip", "link", "add", f"lwtB{TAG}s", "netns", SRV, "type", "veth", "peer", "name", f"lwtB{TAG}c", "netns", CLI)
        for address in (SERVER_IP, DNS_IP, DNS2_IP, SLOW_DNS_IP, SPARE_DNS_IP, ECHO_IP):
            sh("ip", "-n", SRV, "addr", "add", f"{address}/24", "dev", f"lwtB{TAG}s")
        sh("ip", "-n", CLI, "addr", "add", f"{CLIENT_IP}/24", "dev", f"lwtB{TAG}c")
        for address in (SERVER6_IP, DNS6_IP):
            sh("ip", "-n", SRV, "addr", "add", f"{address}/64", "dev", f"lwtB{TAG}s", "nodad")
        sh("ip", "-n", CLI, "addr", "add", f"{CLIENT6_IP}/64", "dev", f"lwtB{TAG}c", "nodad")
        for ns, dev in ((SRV, f"lwtB{TAG}s"), (CLI, f"lwtB{TAG}c")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        # no rate limit on ICMP errors, so every nft reject produces one
        sysctl(SRV, "net.ipv4.icmp_ratelimit", "0")
        sysctl(SRV, "net.ipv6.icmp.ratelimit", "0")
        yield
    finally:
        for ns in (SRV, CLI):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def start_services(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", SRV, sys.executable, "-m", "linkwatch.lab.services", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=REPO,
    )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().strip() if readable else ""
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"services did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc


def stop_process(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@pytest.fixture(scope="module")
def services(lab: None) -> Iterator[subprocess.Popen[str]]:
    proc = start_services("--dns", DNS_IP, "--dns", DNS2_IP, "--dns", DNS6_IP, "--echo", f"{ECHO_IP}:{ECHO_PORT}", "--answer", ANSWER)
    try:
        yield proc
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def client(lab: None, services: subprocess.Popen[str]) -> Iterator[NsLoop]:
    loop = NsLoop(CLI)
    try:
        yield loop
    finally:
        loop.stop()


async def rounds(
    specs: Sequence[ProbeSpec],
    n: int,
    timeout: float,
    attempts: int,
    mode: str = "auto",
    source: str = CLIENT_IP,
) -> list[tuple[list[ProbeResult], float]]:
    """Run ``n`` back-to-back rounds of fresh probes; returns (results, elapsed) per round."""
    probes = make_probes(specs, source, mode)
    out = []
    try:
        for _ in range(n):
            start = time.monotonic()
            results = await asyncio.gather(*(p.run(timeout, attempts) for p in probes))
            out.append((list(results), time.monotonic() - start))
    finally:
        for probe in probes:
            probe.close()
    return out


ICMP = ProbeSpec("icmp", SERVER_IP)
DNS = ProbeSpec("dns", DNS_IP)


# --------------------------------------------------------------------------- probes: success


@pytest.mark.parametrize("mode", ["raw", "dgram"])
def test_icmp_ok_with_rtt(client: NsLoop, mode: str) -> None:
    with sysctl_set(CLI, "net.ipv4.ping_group_range", "0 0"):
        out = client.run(rounds([ICMP], 3, timeout=1.0, attempts=3, mode=mode))
    for (result,), elapsed in out:
        assert result.ok and result.error is None, result
        assert result.rtt is not None and 0 < result.rtt < 0.05
        assert (result.sent, result.lost) == (1, 0)
        assert (result.bytes_sent, result.bytes_received) == (28, 28)
        assert elapsed < 0.1


def test_icmp_wire_format_fixed_id_rising_seq_no_payload(client: NsLoop) -> None:
    with DelayedResponder(SRV, "icmp", SERVER_IP, delay=None) as recorder:  # kernel still replies
        out = client.run(rounds([ICMP], 4, timeout=1.0, attempts=1, mode="raw"))
        time.sleep(0.1)
    assert all(r.ok for (r,), _ in out)
    assert len(recorder.requests) == 4
    idents = {ident for ident, _, _, _ in recorder.requests}
    seqs = [seq for _, seq, _, _ in recorder.requests]
    assert len(idents) == 1
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 1, 2, 3]
    assert {(payload, ip_len) for _, _, payload, ip_len in recorder.requests} == {(0, 28)}


def test_dns_ok_on_every_server_address(client: NsLoop) -> None:
    specs = [DNS, ProbeSpec("dns", DNS2_IP, "probe.lab.example")]
    out = client.run(rounds(specs, 2, timeout=1.0, attempts=2))
    for results, _ in out:
        for result in results:
            assert result.ok and result.error is None, result
            assert result.rtt is not None and 0 < result.rtt < 0.05
            assert (result.sent, result.lost) == (1, 0)
    first = out[0][0][0]
    # 20 IP + 8 UDP + 29 query (no EDNS); the answer adds a 16-byte A record
    assert (first.bytes_sent, first.bytes_received) == (57, 73)


def test_probe_results_keep_spec_order(client: NsLoop) -> None:
    specs = [DNS, ICMP, ProbeSpec("icmp", DNS2_IP)]
    ((results, _),) = client.run(rounds(specs, 1, timeout=1.0, attempts=1))
    assert [(r.kind, r.target) for r in results] == [("dns", DNS_IP), ("icmp", SERVER_IP), ("icmp", DNS2_IP)]
    assert all(r.ok for r in results)


# --------------------------------------------------------------------------- IPv6 (issue 12)

ICMP6 = ProbeSpec("icmp", SERVER6_IP)
DNS6 = ProbeSpec("dns", DNS6_IP)


@pytest.mark.parametrize("mode", ["raw", "dgram"])
def test_icmpv6_and_dns_over_ipv6_from_an_ipv6_source(client: NsLoop, mode: str) -> None:
    with sysctl_set(CLI, "net.ipv4.ping_group_range", "0 0"):  # the same sysctl opens ICMPv6 ping sockets
        out = client.run(rounds([ICMP6, DNS6], 3, timeout=1.0, attempts=3, mode=mode, source=CLIENT6_IP))
    for (icmp, dns), elapsed in out:
        for result in (icmp, dns):
            assert result.ok and result.error is None, result
            assert result.rtt is not None and 0 < result.rtt < 0.05
            assert (result.sent, result.lost) == (1, 0)
        assert (icmp.bytes_sent, icmp.bytes_received) == (48, 48)  # 40 IPv6 + 8 ICMPv6, no payload
        assert (dns.bytes_sent, dns.bytes_received) == (77, 93)  # 40 IPv6 + 8 UDP + 29 (+ 16 answer)
        assert elapsed < 0.1


def test_ipv6_probes_leave_from_their_source_and_fail_at_timeout_when_blackholed(client: NsLoop) -> None:
    rules = f"""
    counter seen {{}}
    chain in {{ type filter hook input priority 0; ip6 saddr {CLIENT6_IP} counter name seen drop; }}"""
    with nft_rules(rules):
        out = client.run(rounds([ICMP6, DNS6], 2, timeout=0.3, attempts=2, source=CLIENT6_IP))
        seen = nft_counters()["seen"][0]
    for (icmp, dns), elapsed in out:
        for result in (icmp, dns):
            assert not result.ok and result.error == "timeout" and (result.sent, result.lost) == (2, 2)
        assert 0.29 <= elapsed < 0.45
    assert seen == 2 * 2 * 2, "every attempt reached the server from the IPv6 source"


@pytest.mark.parametrize("mode", ["raw", "dgram"])
def test_icmpv6_unreachable_is_an_error(client: NsLoop, mode: str) -> None:
    reject = ("chain in { type filter hook input priority 0; "
              "icmpv6 type echo-request reject with icmpv6 type addr-unreachable; }")
    with sysctl_set(CLI, "net.ipv4.ping_group_range", "0 0"), nft_rules(reject):
        out = client.run(rounds([ICMP6], 2, timeout=0.4, attempts=2, mode=mode, source=CLIENT6_IP))
    for (result,), elapsed in out:
        assert not result.ok and result.error == "unreachable", result
        assert (result.sent, result.lost) == (2, 2)
        assert result.bytes_received == 2 * 96  # IPv6 + ICMPv6 error + quoted IPv6 + quoted echo header
        assert elapsed < 0.3


def test_dns_over_ipv6_port_unreachable_is_an_error(client: NsLoop) -> None:
    with nft_rules("chain in { type filter hook input priority 0; udp dport 53 reject; }"):
        ((result,), elapsed), = client.run(rounds([DNS6], 1, timeout=0.4, attempts=2, source=CLIENT6_IP))
    assert not result.ok and result.error == "unreachable", result
    assert (result.sent, result.lost) == (2, 2)
    assert 0.19 <= elapsed < 0.3


# --------------------------------------------------------------------------- faults


def test_blackhole_fails_at_timeout(client: NsLoop) -> None:
    with nft_rules(f"chain in {{ type filter hook input priority 0; ip saddr {CLIENT_IP} drop; }}"):
        out = client.run(rounds([ICMP, DNS], 3, timeout=0.3, attempts=3))
    for (icmp, dns), elapsed in out:
        for result in (icmp, dns):
            assert not result.ok and result.error == "timeout" and result.rtt is None
            assert (result.sent, result.lost, result.bytes_received) == (3, 3, 0)
        assert icmp.bytes_sent == 3 * 28 and dns.bytes_sent == 3 * 57
        assert 0.29 <= elapsed < 0.45


@pytest.mark.parametrize("proto", ["icmp", "dns"])
def test_second_attempt_recovers_from_one_drop(client: NsLoop, proto: str) -> None:
    match = "icmp type echo-request" if proto == "icmp" else "udp dport 53"
    spec = ICMP if proto == "icmp" else DNS
    # numgen inc mod 2 == 0 drops the 1st, 3rd, 5th... packet: exactly one of each pair
    drop_every_other = f"chain in {{ type filter hook input priority 0; {match} numgen inc mod 2 == 0 drop; }}"
    with nft_rules(drop_every_other):  # control: one attempt per round loses every other round
        single = client.run(rounds([spec], 6, timeout=0.3, attempts=1))
    assert [r.ok for (r,), _ in single] == [False, True] * 3
    with nft_rules(drop_every_other):
        double = client.run(rounds([spec], 4, timeout=0.4, attempts=2))
    for (result,), elapsed in double:
        assert result.ok, result
        assert (result.sent, result.lost) == (2, 1)
        assert result.rtt is not None and result.rtt < 0.05  # the RTT of the answered attempt
        assert 0.19 <= elapsed < 0.3  # answered right after the retransmission at timeout/2


@pytest.mark.parametrize("mode", ["raw", "dgram"])
def test_icmp_unreachable_is_an_error(client: NsLoop, mode: str) -> None:
    reject = "chain in { type filter hook input priority 0; icmp type echo-request reject with icmp type host-unreachable; }"
    with sysctl_set(CLI, "net.ipv4.ping_group_range", "0 0"), nft_rules(reject):
        out = client.run(rounds([ICMP], 2, timeout=0.4, attempts=2, mode=mode))
    for (result,), elapsed in out:
        assert not result.ok and result.error == "unreachable", result
        assert (result.sent, result.lost) == (2, 2)
        assert result.bytes_received == 2 * 56  # IP + ICMP error + quoted IP + quoted echo header
        assert elapsed < 0.3  # every attempt has failed: no need to wait for the timeout


def test_dns_port_unreachable_is_an_error(client: NsLoop) -> None:
    with nft_rules("chain in { type filter hook input priority 0; udp dport 53 reject; }"):
        ((result,), elapsed), = client.run(rounds([DNS], 1, timeout=0.4, attempts=2))
    assert not result.ok and result.error == "unreachable", result
    assert (result.sent, result.lost) == (2, 2)
    assert 0.19 <= elapsed < 0.3


def test_late_icmp_replies_are_not_counted(client: NsLoop) -> None:
    with sysctl_set(SRV, "net.ipv4.icmp_echo_ignore_all", "1"), nft_rules(
        "counter late {}\nchain in { type filter hook input priority 0; icmp type echo-reply counter name late; }",
        ns=CLI,
    ):
        with DelayedResponder(SRV, "icmp", SERVER_IP, delay=0.25) as responder:
            # control: a timeout longer than the delay sees the (slow) answer
            ((slow,), _), = client.run(rounds([ICMP], 1, timeout=0.6, attempts=1, mode="raw"))
            assert slow.ok and slow.rtt is not None and 0.24 < slow.rtt < 0.4
            # each reply now lands in the next round, which must not take it for its own
            out = client.run(rounds([ICMP], 5, timeout=0.15, attempts=1, mode="raw"))
            time.sleep(0.35)
        late_packets = nft_counters(CLI)["late"][0]
    assert [r.ok for (r,), _ in out] == [False] * 5
    assert all(r.error == "timeout" and r.bytes_received == 0 for (r,), _ in out)
    assert responder.replies >= 6 and late_packets >= 6  # the late replies did arrive


def test_late_dns_replies_are_not_counted(client: NsLoop) -> None:
    spec = ProbeSpec("dns", SLOW_DNS_IP)
    with DelayedResponder(SRV, "dns", SLOW_DNS_IP, delay=0.25) as responder:
        ((slow,), _), = client.run(rounds([spec], 1, timeout=0.6, attempts=1))
        assert slow.ok and slow.rtt is not None and 0.24 < slow.rtt < 0.4
        out = client.run(rounds([spec], 5, timeout=0.15, attempts=1))
        time.sleep(0.35)
    assert [r.ok for (r,), _ in out] == [False] * 5
    assert all(r.error == "timeout" and r.bytes_received == 0 for (r,), _ in out)
    assert responder.replies >= 6


def test_byte_counts_match_nft_counters(client: NsLoop) -> None:
    rules = f"""
    counter icmp_in {{}}
    counter icmp_out {{}}
    counter dns_in {{}}
    counter dns_out {{}}
    chain in {{
        type filter hook input priority 0;
        ip saddr {CLIENT_IP} icmp type echo-request counter name icmp_in
        ip saddr {CLIENT_IP} udp dport 53 counter name dns_in
        ip saddr {CLIENT_IP} numgen inc mod 3 == 0 drop
    }}
    chain out {{
        type filter hook output priority 0;
        ip daddr {CLIENT_IP} icmp type echo-reply counter name icmp_out
        ip daddr {CLIENT_IP} udp sport 53 counter name dns_out
    }}"""
    with nft_rules(rules):
        out = client.run(rounds([ICMP, DNS], 12, timeout=0.3, attempts=3))
        time.sleep(0.05)
        counters = nft_counters()
    icmp = [results[0] for results, _ in out]
    dns = [results[1] for results, _ in out]
    assert sum(r.lost for r in icmp + dns) > 0  # the drop rule did bite
    for name, results in (("icmp", icmp), ("dns", dns)):
        assert counters[f"{name}_in"][1] == sum(r.bytes_sent for r in results)
        assert counters[f"{name}_out"][1] == sum(r.bytes_received for r in results)
        assert counters[f"{name}_out"][0] == sum(r.ok for r in results)


def test_source_address_that_comes_and_goes(client: NsLoop) -> None:
    dev = f"lwtB{TAG}c"

    async def scenario() -> list[list[ProbeResult]]:
        probes = make_probes([ICMP, DNS], SPARE_IP, "raw")  # the address does not exist yet
        seen = []
        try:
            seen.append(list(await asyncio.gather(*(p.run(0.2, 1) for p in probes))))
            await asyncio.to_thread(sh, "ip", "-n", CLI, "addr", "add", f"{SPARE_IP}/24", "dev", dev)
            seen.append(list(await asyncio.gather(*(p.run(0.5, 1) for p in probes))))
            await asyncio.to_thread(sh, "ip", "-n", CLI, "addr", "del", f"{SPARE_IP}/24", "dev", dev)
            seen.append(list(await asyncio.gather(*(p.run(0.2, 1) for p in probes))))
            await asyncio.to_thread(sh, "ip", "-n", CLI, "addr", "add", f"{SPARE_IP}/24", "dev", dev)
            seen.append(list(await asyncio.gather(*(p.run(0.5, 1) for p in probes))))
        finally:
            for probe in probes:
                probe.close()
            await asyncio.to_thread(sh, "ip", "-n", CLI, "addr", "del", f"{SPARE_IP}/24", "dev", dev, check=False)
        return seen

    before, up, gone, back = client.run(scenario())
    assert not any(r.ok for r in before)
    assert all("not available" in (r.error or "") or "assign" in (r.error or "") for r in before), before
    assert all(r.ok for r in up), up
    assert not any(r.ok for r in gone)
    assert all(r.ok for r in back), back


# --------------------------------------------------------------------------- ICMP socket modes


def test_dgram_mode_follows_ping_group_range_as_root(client: NsLoop) -> None:
    async def try_dgram() -> ProbeResult | str:
        try:
            probes = make_probes([ICMP], CLIENT_IP, "dgram")
        except ProbeError as exc:
            return str(exc)
        try:
            return await probes[0].run(1.0, 1)
        finally:
            probes[0].close()

    with sysctl_set(CLI, "net.ipv4.ping_group_range", "1 0"):  # a new namespace's default: nobody
        refused = client.run(try_dgram())
    with sysctl_set(CLI, "net.ipv4.ping_group_range", "0 0"):
        allowed = client.run(try_dgram())
    assert isinstance(refused, str) and "ping_group_range" in refused
    assert isinstance(allowed, ProbeResult) and allowed.ok


UNPRIVILEGED_SCRIPT = """
import asyncio, json, os, sys
from linkwatch.lab.safety import require_lab_namespace
from linkwatch.probes import ProbeError, ProbeSpec, make_probes
require_lab_namespace()
async def main():
    try:
        probes = make_probes([ProbeSpec("icmp", sys.argv[1])], sys.argv[2], "auto")
    except ProbeError as exc:
        return {"error": str(exc), "uid": os.getuid(), "gid": os.getgid()}
    try:
        results = [await probes[0].run(1.0, 2) for _ in range(3)]
        return {"ok": [r.ok for r in results], "mode": probes[0].mode,
                "uid": os.getuid(), "gid": os.getgid()}
    finally:
        probes[0].close()
print(json.dumps(asyncio.run(main())))
"""


def unprivileged_command() -> tuple[list[str], dict[str, str]]:
    """Run as nobody/nogroup with Debian's python3 when it can import our dependencies; else as
    uid 0 with group nogroup and no capabilities at all (the venv's python sits under /root)."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = subprocess_env(site)
    system = "/usr/bin/python3"
    if os.path.exists(system):
        probe = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", system, "-c", "import icmplib, dns, linkwatch.probes"],
            env=env, capture_output=True, cwd="/", timeout=30,
        )
        if probe.returncode == 0:
            return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", system], env
    return [
        "setpriv", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--ambient-caps=-all",
        "--bounding-set=-all", sys.executable,
    ], env


def run_unprivileged() -> dict:
    prefix, env = unprivileged_command()
    done = subprocess.run(
        ["ip", "netns", "exec", CLI, *prefix, "-c", UNPRIVILEGED_SCRIPT, SERVER_IP, CLIENT_IP],
        env=env, capture_output=True, text=True, cwd="/", timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_unprivileged_auto_mode_falls_back_to_dgram(client: NsLoop) -> None:
    with sysctl_set(CLI, "net.ipv4.ping_group_range", "65534 65534"):
        allowed = run_unprivileged()
    with sysctl_set(CLI, "net.ipv4.ping_group_range", "1 0"):
        refused = run_unprivileged()
    assert allowed["gid"] == 65534
    assert allowed["mode"] == "dgram" and allowed["ok"] == [True, True, True], allowed
    assert "ping_group_range" in refused["error"] and "CAP_NET_RAW" in refused["error"], refused


# --------------------------------------------------------------------------- services


def test_echo_payload_names_the_sender(client: NsLoop) -> None:
    async def exchange() -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.bind((CLIENT_IP, 0))
            await loop.sock_sendto(sock, b"hello lab", (ECHO_IP, ECHO_PORT))
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 2)
            return data, sock.getsockname()[1]

    data, port = client.run(exchange())
    assert data == f"{CLIENT_IP}:{port}|hello lab".encode()


def test_dns_service_answers_a_with_the_configured_address(client: NsLoop) -> None:
    import dns.message

    async def ask(rdtype: str) -> dns.message.Message:
        loop = asyncio.get_running_loop()
        query = dns.message.make_query("anything.example", rdtype)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.bind((CLIENT_IP, 0))
            await loop.sock_sendto(sock, query.to_wire(), (DNS2_IP, 53))
            return dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(sock, 2048), 2))

    a = client.run(ask("A"))
    aaaa = client.run(ask("AAAA"))
    assert [(rrset.ttl, [r.address for r in rrset]) for rrset in a.answer] == [(60, [ANSWER])]
    assert aaaa.rcode() == 0 and aaaa.answer == []


def test_services_refuse_to_start_outside_a_lab_namespace(lab: None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "linkwatch.lab.services", "--dns", "127.0.0.1", "--echo", "127.0.0.1:7007"],
        env=subprocess_env(), capture_output=True, text=True, cwd=REPO, timeout=30,
    )
    assert done.returncode == 2
    assert "not inside a lab network namespace" in done.stderr
    with pytest.raises(NotInLabError):
        asyncio.run(serve(["127.0.0.1"], [("127.0.0.1", 7007)], ANSWER))


def test_services_stop_cleanly_on_sigterm(client: NsLoop) -> None:
    proc = start_services("--dns", SPARE_DNS_IP)
    try:
        ((before,), _), = client.run(rounds([ProbeSpec("dns", SPARE_DNS_IP)], 1, timeout=1.0, attempts=1))
    finally:
        code = stop_process(proc)
    ((after,), _), = client.run(rounds([ProbeSpec("dns", SPARE_DNS_IP)], 1, timeout=0.4, attempts=1))
    assert before.ok
    assert code == 0
    assert not after.ok and after.error == "unreachable"  # the port is closed now


# --------------------------------------------------------------------------- cost


def test_cpu_per_probe_run(client: NsLoop, capsys: pytest.CaptureFixture[str]) -> None:
    """500 rounds x 3 probes (2 ICMP on one shared raw socket + 1 DNS), back to back."""

    async def measure() -> tuple[float, float, int, float]:
        probes = make_probes([ICMP, ProbeSpec("icmp", DNS2_IP), DNS], CLIENT_IP, "raw")
        try:
            for _ in range(5):
                await asyncio.gather(*(p.run(1.0, 2) for p in probes))
            cpu0, proc0, wall0 = time.thread_time(), time.process_time(), time.monotonic()
            ok = 0
            for _ in range(500):
                ok += sum(r.ok for r in await asyncio.gather(*(p.run(1.0, 2) for p in probes)))
            return time.thread_time() - cpu0, time.process_time() - proc0, ok, time.monotonic() - wall0
        finally:
            for probe in probes:
                probe.close()

    thread_cpu, process_cpu, ok, wall = client.run(measure(), timeout=120)
    per_run = thread_cpu / 1500
    with capsys.disabled():
        print(
            f"\n[probe cost] 1500 probe runs: loop-thread CPU {per_run * 1e6:.0f} us/run, "
            f"process CPU {process_cpu / 1500 * 1e6:.0f} us/run, wall {wall:.2f} s"
        )
    assert ok == 1500
    assert per_run < 0.001  # 1 ms per run would already be 6 % of a core at 4 uplinks x 3 x 5 Hz


def test_waiting_burns_no_cpu(client: NsLoop) -> None:
    """Against a blackhole every run waits its full timeout: that wait must be idle."""

    async def measure() -> tuple[float, float]:
        cpu0, wall0 = time.thread_time(), time.monotonic()
        await rounds([ICMP, ProbeSpec("icmp", DNS2_IP), DNS], 8, timeout=0.25, attempts=3, mode="raw")
        return time.thread_time() - cpu0, time.monotonic() - wall0

    with nft_rules(f"chain in {{ type filter hook input priority 0; ip saddr {CLIENT_IP} drop; }}"):
        cpu, wall = client.run(measure())
    assert wall >= 8 * 0.25
    assert cpu < 0.02 * wall, f"{cpu:.3f} s CPU in {wall:.2f} s of waiting"
