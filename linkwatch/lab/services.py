"""The lab's internet-side services: a DNS server and a UDP echo server.

Run inside the lab's "internet" namespace::

    python -m linkwatch.lab.services --dns 203.0.113.53 --echo 203.0.113.7:7007 [--answer 203.0.113.80]

- DNS (dnspython, asyncio UDP): every A query, whatever the name, gets the ``--answer`` address
  with TTL 60; other types get NOERROR and no answer; malformed packets are ignored. ``--dns``
  may be given several times.
- UDP echo: each datagram comes back prefixed with its sender as the server saw it
  (``"198.51.100.2:40000|" + payload``), so a LAN client learns which uplink its packets took.
  One-way datagrams (``"1w|<seq>|<token>"``, an upload with no replies) get no echo: the server
  only counts them per token (a bounded table), and answers the question ``"1w?|<token>"`` with
  ``"<sender>|1w?|<count>|<address the last one came from>|<token>"``, which a one-way client
  asks once it has stopped sending.

The process refuses to start outside a lab namespace, prints ``ready`` once every socket is bound
and exits cleanly (status 0) on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from linkwatch.lab.safety import NotInLabError, require_lab_namespace

DEFAULT_ANSWER = "203.0.113.80"
ANSWER_TTL = 60
DNS_PORT = 53


class ServicesError(Exception):
    """Bad service arguments (an address or endpoint that does not parse)."""


# --------------------------------------------------------------------------- pure replies


def dns_reply(data: bytes, answer: str) -> bytes | None:
    """The wire response to the DNS query ``data``, or None to ignore it (malformed, a response)."""
    try:
        query = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError):
        return None
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query)
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response.to_wire()
    response.flags |= dns.flags.AA
    for question in query.question:
        if question.rdtype == dns.rdatatype.A and question.rdclass == dns.rdataclass.IN:
            response.answer.append(
                dns.rrset.from_text(question.name, ANSWER_TTL, dns.rdataclass.IN, dns.rdatatype.A, answer)
            )
    return response.to_wire()


ONE_WAY = b"1w|"  # a datagram starting so gets no echo: one-way traffic (an upload with no replies)
ONE_WAY_QUERY = b"1w?|"  # "1w?|<token>": how many one-way datagrams of <token> arrived, and from where
MAX_TALLIES = 256  # one-way tokens remembered (the oldest is forgotten first)


def echo_reply(data: bytes, sender: tuple[str, int]) -> bytes | None:
    """The echo server's reply: ``"<addr>:<port>|"`` + the original payload; None for one-way data."""
    if data.startswith(ONE_WAY):
        return None
    return f"{sender[0]}:{sender[1]}|".encode() + data


class OneWayTally:
    """Counts one-way datagrams per token and answers the count query; bounded. Pure (no I/O)."""

    def __init__(self, limit: int = MAX_TALLIES) -> None:
        self.limit = limit
        self.counts: dict[str, tuple[int, str]] = {}  # token -> (datagrams, "addr:port" of the last one)

    def reply(self, data: bytes, sender: tuple[str, int]) -> bytes | None:
        """The server's answer to ``data`` (echo, count answer, or None: one-way data is only counted)."""
        seen = f"{sender[0]}:{sender[1]}"
        if data.startswith(ONE_WAY_QUERY):
            token = data[len(ONE_WAY_QUERY):].decode("ascii", errors="replace")
            count, last = self.counts.get(token, (0, "-"))
            return f"{seen}|1w?|{count}|{last}|{token}".encode()
        if data.startswith(ONE_WAY):
            token = data.rsplit(b"|", 1)[-1].decode("ascii", errors="replace")
            count, _ = self.counts.pop(token, (0, ""))
            self.counts[token] = (count + 1, seen)  # re-inserted: the newest last
            while len(self.counts) > self.limit:
                del self.counts[next(iter(self.counts))]
            return None
        return echo_reply(data, sender)


def parse_tally_answer(data: bytes, token: str) -> tuple[int, str | None] | None:
    """(one-way datagrams counted, the address the last came from) from a count answer. Pure."""
    parts = data.decode("ascii", errors="replace").split("|")
    if len(parts) != 5 or parts[1] != "1w?" or parts[4] != token or not parts[2].isdigit():
        return None
    return int(parts[2]), (parts[3] if parts[3] != "-" else None)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"203.0.113.7:7007"`` -> ("203.0.113.7", 7007), ``"[2001:db8::7]:7007"`` too; raises
    ServicesError naming the value."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ServicesError(f"echo endpoint must be ADDRESS:PORT, got {text!r}")
    return check_address(host, "echo address"), check_port(port, text)


def check_address(text: str, what: str) -> str:
    """An IPv4 or IPv6 address (``[2001:db8::7]`` too: the form of an endpoint's host)."""
    try:
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        raise ServicesError(f"{what} must be an IPv4 or IPv6 address, got {text!r}") from None


def check_port(text: str, endpoint: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ServicesError(f"echo port must be 1-65535, got {text!r} in {endpoint!r}")
    return port


# --------------------------------------------------------------------------- asyncio servers


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = dns_reply(data, self.answer)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors for our replies: ignore
        pass


class _EchoProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.tally = OneWayTally()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.tally.reply(data, addr)
        if self.transport is not None and reply is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass


@dataclass
class Services:
    """Running servers; ``close()`` stops them."""

    transports: list[asyncio.BaseTransport] = field(default_factory=list)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.transports.clear()


async def start(dns: Sequence[str], echo: Sequence[tuple[str, int]], answer: str = DEFAULT_ANSWER) -> Services:
    """Bind every server (refuses outside a lab namespace); returns them running."""
    require_lab_namespace()
    dns = [check_address(a, "dns address") for a in dns]
    echo = [(check_address(a, "echo address"), check_port(str(p), f"{a}:{p}")) for a, p in echo]
    answer = check_address(answer, "answer")
    loop = asyncio.get_running_loop()
    services = Services()
    try:
        for address in dns:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DnsProtocol(answer), local_addr=(address, DNS_PORT)
            )
            services.transports.append(transport)
        for address, port in echo:
            transport, _ = await loop.create_datagram_endpoint(_EchoProtocol, local_addr=(address, port))
            services.transports.append(transport)
    except BaseException:
        services.close()
        raise
    return services


async def serve(dns: list[str], echo: list[tuple[str, int]], answer: str = DEFAULT_ANSWER) -> None:
    """Run the servers until cancelled (refuses outside a lab namespace)."""
    services = await start(dns, echo, answer)
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        services.close()


# --------------------------------------------------------------------------- process entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m linkwatch.lab.services",
        description="The lab's DNS and UDP echo servers (run inside the lab's internet namespace).",
    )
    parser.add_argument("--dns", action="append", default=[], metavar="ADDRESS", help="DNS server address (repeatable)")
    parser.add_argument(
        "--echo", action="append", default=[], metavar="ADDRESS:PORT", help="UDP echo endpoint (repeatable)"
    )
    parser.add_argument("--answer", default=DEFAULT_ANSWER, help=f"A record for every name (default {DEFAULT_ANSWER})")
    args = parser.parse_args(argv)
    if not args.dns and not args.echo:
        parser.error("nothing to serve: give --dns and/or --echo")
    return args


async def _main(args: argparse.Namespace) -> None:
    echo = [parse_endpoint(e) for e in args.echo]
    services = await start(args.dns, echo, args.answer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        services.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_lab_namespace()
        asyncio.run(_main(args))
    except (NotInLabError, ServicesError) as exc:
        print(f"linkwatch.lab.services: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"linkwatch.lab.services: cannot bind: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
