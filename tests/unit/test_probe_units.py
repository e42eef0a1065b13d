"""Pure parts of the probes and lab services: matching, tallies, parsing, scheduling (no network)."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from collections import deque

import dns.message
import dns.rcode
import dns.rrset
import pytest
from icmplib import ICMPv4Socket

from linkwatch.lab.services import ServicesError, dns_reply, echo_reply, parse_endpoint
from linkwatch.probes import ProbeError, ProbeSpec, make_probes
from linkwatch.probes.base import (
    IP_RECVERR,
    IPV6_RECVERR,
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    SO_EE_ORIGIN_LOCAL,
    RoundProbe,
    RoundTracker,
    check_run_args,
    parse_queued_error,
)
from linkwatch.probes.dns import classify_response, fresh_id, query_template, with_id
from linkwatch.probes.icmp import (
    checksum,
    echo_request,
    icmp6_filter,
    icmp_filter_mask,
    parse_icmp,
    parse_icmp6,
    quoted_echo_seq,
)

# --------------------------------------------------------------------------- RoundTracker


def test_first_attempt_answered() -> None:
    t = RoundTracker(3)
    t.sent(10, now=1.0, nbytes=28)
    assert t.answer(10, now=1.02, nbytes=28)
    r = t.result("icmp", "198.51.100.1")
    assert (r.ok, r.sent, r.lost, r.bytes_sent, r.bytes_received, r.error) == (True, 1, 0, 28, 28, None)
    assert r.rtt == pytest.approx(0.02)


def test_answer_to_retransmission_counts_the_earlier_attempt_lost() -> None:
    t = RoundTracker(3)
    t.sent(10, 1.0, 28)
    t.sent(11, 1.1, 28)
    assert t.answer(11, 1.13, 28)
    r = t.result("icmp", "x")
    assert (r.ok, r.sent, r.lost, r.bytes_sent) == (True, 2, 1, 56)
    assert r.rtt == pytest.approx(0.03)  # from the answered attempt's own send time


def test_slow_answer_to_first_attempt_leaves_later_attempts_uncounted() -> None:
    t = RoundTracker(3)
    t.sent(10, 1.0, 28)
    t.sent(11, 1.1, 28)
    assert t.answer(10, 1.15, 28)  # attempt 2 is still in flight: not counted
    r = t.result("icmp", "x")
    assert (r.sent, r.lost) == (1, 0)
    assert r.rtt == pytest.approx(0.15)


def test_unknown_key_is_a_late_reply_and_never_counts() -> None:
    previous, current = RoundTracker(1), RoundTracker(1)
    previous.sent(41, 0.0, 28)
    current.sent(42, 1.0, 28)
    assert not current.answer(41, 1.01, 28)  # the reply to the previous round's attempt
    assert not current.owns(41) and current.owns(42)
    r = current.result("icmp", "x")
    assert (r.ok, r.error, r.bytes_received) == (False, "timeout", 0)


def test_only_the_first_answer_counts() -> None:
    t = RoundTracker(2)
    t.sent(1, 0.0, 28)
    t.sent(2, 0.1, 28)
    assert t.answer(2, 0.11, 28)
    assert not t.answer(1, 0.12, 28)
    assert not t.answer(2, 0.13, 28)
    assert t.result("icmp", "x").rtt == pytest.approx(0.01)


def test_all_lost_is_a_timeout() -> None:
    t = RoundTracker(3)
    for key in range(3):
        t.sent(key, key * 0.1, 57)
    assert not t.done
    r = t.result("dns", "x")
    assert (r.ok, r.rtt, r.sent, r.lost, r.bytes_sent, r.error) == (False, None, 3, 3, 171, "timeout")


def test_errors_fail_attempts_and_the_last_error_is_reported() -> None:
    t = RoundTracker(2)
    t.sent(1, 0.0, 28)
    assert t.fail(1, "unreachable", 56)
    assert not t.done  # attempt 2 not made yet
    t.send_failed("network is unreachable")
    assert t.done
    r = t.result("icmp", "x")
    assert (r.ok, r.sent, r.lost, r.bytes_sent, r.bytes_received) == (False, 2, 2, 28, 56)
    assert r.error == "network is unreachable"


def test_failed_attempt_then_answer() -> None:
    t = RoundTracker(3)
    t.sent(1, 0.0, 57)
    t.fail(1, "rcode SERVFAIL", 57)
    t.sent(2, 0.1, 57)
    t.answer(2, 0.12, 73)
    r = t.result("dns", "x")
    assert (r.ok, r.sent, r.lost, r.bytes_received, r.error) == (True, 2, 1, 130, None)


def test_error_for_later_attempt_counts_even_when_an_earlier_one_is_answered() -> None:
    t = RoundTracker(2)
    t.sent(1, 0.0, 28)
    t.sent(2, 0.1, 28)
    t.fail(2, "unreachable", 56)
    t.answer(1, 0.15, 28)
    r = t.result("icmp", "x")
    assert (r.ok, r.sent, r.lost) == (True, 2, 1)


@pytest.mark.parametrize(
    ("timeout", "attempts"), [(0, 1), (-1.0, 2), ("1", 1), (None, 1), (1.0, 0), (1.0, 1.5), (1.0, True)]
)
def test_run_arguments_are_checked(timeout: object, attempts: object) -> None:
    with pytest.raises(ProbeError) as info:
        check_run_args(timeout, attempts)  # type: ignore[arg-type]
    assert repr(timeout) in str(info.value) or repr(attempts) in str(info.value)


# --------------------------------------------------------------------------- run() scheduling


class FakeProbe(RoundProbe):
    """A probe without sockets: records send times; the test answers through ``reply``."""

    kind = "fake"

    def __init__(self, open_error: OSError | None = None, send_error: OSError | None = None) -> None:
        super().__init__("192.0.2.0")  # never used as an address: no socket exists
        self.sends: list[tuple[int, float]] = []
        self.open_error, self.send_error = open_error, send_error
        self.drops = 0
        self.released = False
        self._key = 0

    def _ensure_open(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.open_error is not None:
            raise self.open_error

    def _send(self, tracker: RoundTracker, now: float) -> None:
        if self.send_error is not None:
            raise self.send_error
        self._key += 1
        self.sends.append((self._key, now))
        tracker.sent(self._key, now, 10)

    def _drop_socket(self) -> None:
        self.drops += 1

    def _release(self) -> None:
        self.released = True

    def reply(self, key: int, error: str | None = None) -> None:
        if error:
            self._fail(key, error, 5)
        else:
            self._answer(key, time.monotonic(), 10)


async def _timed(coro):
    start = time.monotonic()
    result = await coro
    return result, time.monotonic() - start


def test_attempts_are_spread_over_the_timeout_and_the_run_fails_at_timeout() -> None:
    async def scenario():
        probe = FakeProbe()
        result, elapsed = await _timed(probe.run(0.3, 3))
        return probe, result, elapsed

    probe, result, elapsed = asyncio.run(scenario())
    start = probe.sends[0][1]
    offsets = [t - start for _, t in probe.sends]
    assert offsets[0] == 0 and offsets[1] == pytest.approx(0.1, abs=0.02) and offsets[2] == pytest.approx(0.2, abs=0.02)
    assert 0.3 <= elapsed < 0.4
    assert (result.ok, result.sent, result.lost, result.error) == (False, 3, 3, "timeout")


def test_run_returns_at_the_first_answer_and_sends_nothing_more() -> None:
    async def scenario():
        probe = FakeProbe()
        loop = asyncio.get_running_loop()
        loop.call_later(0.15, probe.reply, 2)  # answers attempt 2 (sent at 0.1)
        result, elapsed = await _timed(probe.run(0.4, 4))
        await asyncio.sleep(0.3)  # the remaining attempts must have been cancelled
        return probe, result, elapsed

    probe, result, elapsed = asyncio.run(scenario())
    assert len(probe.sends) == 2
    assert result.ok and (result.sent, result.lost) == (2, 1)
    assert result.rtt == pytest.approx(0.05, abs=0.02)
    assert 0.14 <= elapsed < 0.25


def test_answer_of_an_earlier_round_is_ignored() -> None:
    async def scenario():
        probe = FakeProbe()
        first = await probe.run(0.1, 1)  # key 1, never answered
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, probe.reply, 1)  # ...until during round 2
        second = await probe.run(0.1, 1)
        return first, second

    first, second = asyncio.run(scenario())
    assert not first.ok and not second.ok, "a late reply does not answer the round it arrives in"
    assert second.bytes_received == 0 and second.late == 0, "without a late window it is not heard at all"


def test_a_late_reply_within_the_late_window_is_reported_with_the_next_result() -> None:
    async def scenario():
        probe = FakeProbe()
        first = await probe.run(0.1, 1, late_window=1.0)  # key 1, unanswered in time
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, probe.reply, 1)  # 0.15 s after it was sent: late
        second = await probe.run(0.1, 1, late_window=1.0)
        third = await probe.run(0.1, 1, late_window=1.0)
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert (first.ok, first.late) == (False, 0)
    assert not second.ok and second.late == 1 and second.late_rtt == pytest.approx(0.15, abs=0.03)
    assert second.bytes_received == 10 and not second.refused
    assert third.late == 0, "reported once"


def test_a_reply_later_than_the_late_window_is_not_counted_and_refusals_are_flagged() -> None:
    async def scenario():
        probe = FakeProbe()
        await probe.run(0.05, 1, late_window=0.1)
        await asyncio.sleep(0.15)
        probe.reply(1)  # 0.2 s after sending: beyond the window
        second = await probe.run(0.05, 1, late_window=0.1)
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, probe.reply, 3, "unreachable")
        third = await probe.run(0.1, 1, late_window=0.1)
        return second, third

    second, third = asyncio.run(scenario())
    assert second.late == 0 and not second.refused
    assert third.refused and third.error == "unreachable"


def test_run_ends_early_when_every_attempt_has_failed() -> None:
    async def scenario():
        probe = FakeProbe()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, probe.reply, 1, "unreachable")
        loop.call_later(0.16, probe.reply, 2, "unreachable")
        return await _timed(probe.run(0.3, 2))

    result, elapsed = asyncio.run(scenario())
    assert (result.ok, result.sent, result.lost, result.error) == (False, 2, 2, "unreachable")
    assert elapsed < 0.25


def test_transient_send_errors_keep_the_socket_and_dead_ones_drop_it() -> None:
    async def scenario(exc: OSError):
        probe = FakeProbe(send_error=exc)
        result, elapsed = await _timed(probe.run(0.2, 2))
        return probe, result, elapsed

    probe, result, elapsed = asyncio.run(scenario(OSError(errno.ENETUNREACH, "Network is unreachable")))
    assert (result.ok, result.sent, result.lost, result.error) == (False, 2, 2, "network is unreachable")
    assert probe.drops == 0
    assert elapsed < 0.18  # both attempts failed at once: over after the second one
    probe, result, _ = asyncio.run(scenario(OSError(errno.EBADF, "Bad file descriptor")))
    assert probe.drops == 2 and result.error == "bad file descriptor"


def test_open_failure_is_a_failed_attempt_not_an_exception() -> None:
    probe = FakeProbe(open_error=OSError(errno.EADDRNOTAVAIL, "source address 198.51.100.9 not available"))
    result = asyncio.run(probe.run(0.1, 1))
    assert (result.ok, result.sent, result.error) == (False, 1, "source address 198.51.100.9 not available")


def test_overlapping_runs_each_get_their_own_answers() -> None:
    """Rounds overlap when a faster interval starts one before the last timed out: an answer
    belongs to the run that sent its key, never to another one."""
    async def scenario():
        probe = FakeProbe()
        first = asyncio.ensure_future(probe.run(0.3, 1))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(probe.run(0.3, 1))
        await asyncio.sleep(0.01)
        assert [k for k, _ in probe.sends] == [1, 2]
        probe.reply(2)  # only the second run's attempt is answered
        r2 = await asyncio.wait_for(second, 0.1)
        r1 = await asyncio.wait_for(first, 0.5)
        return r1, r2

    r1, r2 = asyncio.run(scenario())
    assert r2.ok and (r2.sent, r2.lost) == (1, 0)
    assert not r1.ok and r1.error == "timeout"


def test_run_after_close_is_refused_and_close_ends_running_rounds() -> None:
    async def scenario():
        probe = FakeProbe()
        tasks = [asyncio.ensure_future(probe.run(0.5, 1)) for _ in range(2)]
        await asyncio.sleep(0)
        probe.close()  # ends the running rounds at once
        results = [await asyncio.wait_for(t, 0.1) for t in tasks]
        with pytest.raises(ProbeError, match="closed"):
            await probe.run(0.2, 1)
        return probe, results

    probe, results = asyncio.run(scenario())
    assert probe.released and not any(r.ok for r in results)


# --------------------------------------------------------------------------- ICMP packets


def ip_header(src: str, dst: str, proto: int, payload_len: int) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )


def test_echo_request_matches_icmplib_and_has_a_valid_checksum() -> None:
    packet = echo_request(0x1234, 0xFFFF)
    assert len(packet) == 8
    assert checksum(packet) == 0
    unopened = ICMPv4Socket.__new__(ICMPv4Socket)  # icmplib's packet builder, without a socket
    unopened._sock = None
    icmplib_packet = unopened._create_packet(0x1234, 0xFFFF, b"")
    assert packet == icmplib_packet


def test_parse_raw_echo_reply() -> None:
    icmp = struct.pack("!BBHHH", 0, 0, 0, 777, 5)
    message = parse_icmp(ip_header("198.51.100.1", "198.51.100.2", 1, 8) + icmp, with_ip_header=True)
    assert message is not None
    assert (message.type, message.ident, message.seq, message.source, message.size) == (0, 777, 5, "198.51.100.1", 28)


def test_parse_dgram_echo_reply_counts_the_ip_header() -> None:
    message = parse_icmp(struct.pack("!BBHHH", 0, 0, 0, 40000, 9), with_ip_header=False)
    assert message is not None
    assert (message.ident, message.seq, message.source, message.size) == (40000, 9, None, 28)


def test_parse_unreachable_quoting_our_echo_request() -> None:
    quoted = ip_header("198.51.100.2", "203.0.113.9", 1, 8) + echo_request(777, 6)
    error = struct.pack("!BBHI", 3, 1, 0, 0) + quoted
    message = parse_icmp(ip_header("198.51.100.254", "198.51.100.2", 1, len(error)) + error, with_ip_header=True)
    assert message is not None
    assert (message.type, message.code, message.ident, message.seq) == (3, 1, 777, 6)
    assert (message.source, message.quoted_dst, message.size) == ("198.51.100.254", "203.0.113.9", 56)


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45\x00",
        ip_header("1.1.1.1", "2.2.2.2", 1, 8) + echo_request(1, 1),  # an echo request, not a reply
        ip_header("1.1.1.1", "2.2.2.2", 1, 8) + struct.pack("!BBHI", 3, 3, 0, 0)
        + ip_header("2.2.2.2", "3.3.3.3", 17, 8) + b"\x00" * 8,  # error quoting UDP
        ip_header("1.1.1.1", "2.2.2.2", 1, 8) + struct.pack("!BBHI", 3, 3, 0, 0) + b"\x45",  # truncated
    ],
)
def test_parse_ignores_what_is_not_ours(packet: bytes) -> None:
    assert parse_icmp(packet, with_ip_header=True) is None


def test_icmp_filter_lets_only_replies_and_errors_through() -> None:
    mask = icmp_filter_mask()
    passes = {t for t in range(32) if not mask & (1 << t)}
    assert passes == {0, 3, 11, 12}


def test_quoted_echo_seq() -> None:
    assert quoted_echo_seq(echo_request(1, 4242)) == 4242
    assert quoted_echo_seq(b"\x00" * 8) is None
    assert quoted_echo_seq(b"\x08\x00") is None


def sock_extended_err(ee_errno: int, origin: int, ee_type: int, ee_code: int) -> bytes:
    return struct.pack("=IBBBBII", ee_errno, origin, ee_type, ee_code, 0, 0, 0) + b"\x00" * 16


def test_parse_queued_icmp_error() -> None:
    payload = echo_request(1, 2)
    queued = parse_queued_error(
        payload, [(socket.IPPROTO_IP, IP_RECVERR, sock_extended_err(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP, 3, 1))]
    )
    assert queued is not None
    assert (queued.text, queued.payload, queued.size) == ("unreachable", payload, 56)


def test_parse_queued_local_error_and_foreign_ancillary() -> None:
    local = parse_queued_error(
        b"", [(socket.IPPROTO_IP, IP_RECVERR, sock_extended_err(errno.EMSGSIZE, SO_EE_ORIGIN_LOCAL, 0, 0))]
    )
    assert local is not None and local.text == "message too long"
    assert parse_queued_error(b"", [(socket.SOL_SOCKET, 1, b"\x00" * 32)]) is None


def ip6_header(src: str, dst: str, next_header: int, payload_len: int) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, payload_len, next_header, 64)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst))


def test_icmpv6_echo_reply_and_error_are_parsed_without_an_ip_header() -> None:
    reply = parse_icmp6(struct.pack("!BBHHH", 129, 0, 0, 777, 5), "2001:db8::1")
    assert reply is not None
    assert (reply.type, reply.ident, reply.seq, reply.source, reply.size) == (129, 777, 5, "2001:db8::1", 48)
    request = echo_request(777, 6, family=6)
    assert request[0] == 128 and len(request) == 8, "type 128, the kernel fills the checksum"
    error = struct.pack("!BBHI", 1, 3, 0, 0) + ip6_header("2001:db8::2", "2001:db8::9", 58, 8) + request
    message = parse_icmp6(error, "2001:db8::fe")
    assert message is not None
    assert (message.type, message.code, message.ident, message.seq) == (1, 3, 777, 6)
    assert (message.source, message.quoted_dst, message.size) == ("2001:db8::fe", "2001:db8::9", 96)
    assert quoted_echo_seq(request, family=6) == 6 and quoted_echo_seq(request) is None


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        echo_request(1, 1, family=6),  # a request, not a reply
        struct.pack("!BBHHH", 135, 0, 0, 0, 0),  # neighbour solicitation
        struct.pack("!BBHI", 1, 4, 0, 0) + ip6_header("2001:db8::2", "2001:db8::9", 17, 8) + b"\x00" * 8,  # UDP
        struct.pack("!BBHI", 1, 4, 0, 0) + ip6_header("2001:db8::2", "2001:db8::9", 58, 8)[:20],  # truncated
    ],
)
def test_icmpv6_parse_ignores_what_is_not_ours(packet: bytes) -> None:
    assert parse_icmp6(packet, "2001:db8::1") is None


def test_icmp6_filter_lets_only_replies_and_errors_through() -> None:
    words = struct.unpack("=8I", icmp6_filter())
    passes = {t for t in range(256) if not words[t >> 5] & (1 << (t & 31))}
    assert passes == {1, 2, 3, 4, 129}


def test_parse_queued_icmpv6_error() -> None:
    payload = echo_request(1, 2, family=6)
    queued = parse_queued_error(
        payload,
        [(socket.IPPROTO_IPV6, IPV6_RECVERR, sock_extended_err(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP6, 1, 3))],
    )
    assert queued is not None
    assert (queued.text, queued.size) == ("unreachable", 96)


def test_make_probes_checks_families() -> None:
    with pytest.raises(ProbeError, match="not of the family"):
        make_probes([ProbeSpec("dns", "2001:db8::53")], "198.51.100.2")
    with pytest.raises(ProbeError, match="IPv4 or IPv6"):
        make_probes([ProbeSpec("dns", "not-an-address")], "198.51.100.2")
    with pytest.raises(ProbeError, match="link-local"):
        make_probes([ProbeSpec("icmp", "fe80::1")], "2001:db8::2")


# --------------------------------------------------------------------------- DNS


def response_to(query: dns.message.Message, rcode: int = dns.rcode.NOERROR) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    return response


def test_query_has_no_edns_and_is_small() -> None:
    query = query_template("example.com")
    assert query.edns < 0 and not query.opt
    assert len(query.to_wire()) == 29
    assert query.question[0].rdtype == 1


@pytest.mark.parametrize("bad", ["", ".", "a..b", "x" * 64 + ".com"])
def test_bad_query_names_are_refused(bad: str) -> None:
    with pytest.raises(ProbeError) as info:
        query_template(bad)
    assert repr(bad)[:20] in str(info.value)


@pytest.mark.parametrize(
    ("rcode", "verdict"),
    [(dns.rcode.NOERROR, ""), (dns.rcode.NXDOMAIN, ""), (dns.rcode.SERVFAIL, "rcode SERVFAIL"), (dns.rcode.REFUSED, "rcode REFUSED")],
)
def test_classify_rcodes(rcode: int, verdict: str) -> None:
    template = query_template("example.com")
    wire = with_id(response_to(template, rcode).to_wire(), 4321)
    assert classify_response(template, 4321, wire) == verdict


def test_classify_ignores_mismatches_and_garbage() -> None:
    template = query_template("example.com")
    good = response_to(template)
    assert classify_response(template, template.id ^ 1, good.to_wire()) is None  # wrong id
    other = response_to(query_template("example.org"))
    assert classify_response(template, other.id, other.to_wire()) is None  # other question
    assert classify_response(template, template.id, template.to_wire()) is None  # a query, not a response
    assert classify_response(template, template.id, good.to_wire()[:20]) is None  # truncated
    assert classify_response(template, template.id, b"\x00" * 3) is None


def test_servfail_without_question_still_matches() -> None:
    template = query_template("example.com")
    response = response_to(template, dns.rcode.SERVFAIL)
    response.question = []
    assert classify_response(template, response.id, response.to_wire()) == "rcode SERVFAIL"


def test_fresh_ids_avoid_recent_ones() -> None:
    class Scripted:
        def __init__(self, values: list[int]) -> None:
            self.values = values

        def randrange(self, stop: int) -> int:
            assert stop == 0x10000
            return self.values.pop(0)

    recent: deque[int] = deque([5, 6], maxlen=3)
    assert fresh_id(recent, Scripted([5, 6, 5, 7])) == 7  # type: ignore[arg-type]
    assert list(recent) == [5, 6, 7]
    assert fresh_id(recent, Scripted([9])) == 9  # type: ignore[arg-type]
    assert list(recent) == [6, 7, 9]  # the oldest id becomes usable again


def test_with_id_rewrites_only_the_id() -> None:
    wire = query_template("example.com").to_wire()
    rewritten = with_id(wire, 0xBEEF)
    assert rewritten[:2] == b"\xbe\xef" and rewritten[2:] == wire[2:]


# --------------------------------------------------------------------------- make_probes validation


@pytest.mark.parametrize(
    ("specs", "source", "mode", "needle"),
    [
        ([ProbeSpec("http", "198.51.100.1")], "198.51.100.2", "auto", "'http'"),
        ([ProbeSpec("icmp", "example.com")], "198.51.100.2", "auto", "'example.com'"),
        ([ProbeSpec("icmp", "198.51.100.1")], "198.51.100.300", "auto", "'198.51.100.300'"),
        ([ProbeSpec("icmp", "198.51.100.1")], "198.51.100.2", "fast", "'fast'"),
        ([ProbeSpec("dns", "198.51.100.1", "bad..name")], "198.51.100.2", "auto", "'bad..name'"),
    ],
)
def test_make_probes_rejects_bad_input(specs, source, mode, needle) -> None:
    with pytest.raises(ProbeError) as info:
        make_probes(specs, source, mode)
    assert needle in str(info.value)


# --------------------------------------------------------------------------- lab services (pure)


def test_dns_reply_answers_any_a_query() -> None:
    query = dns.message.make_query("whatever.invalid", "A")
    response = dns.message.from_wire(dns_reply(query.to_wire(), "203.0.113.80"))
    assert query.is_response(response) and response.rcode() == dns.rcode.NOERROR
    assert response.answer == [dns.rrset.from_text("whatever.invalid.", 60, "IN", "A", "203.0.113.80")]
    assert response.answer[0].ttl == 60


def test_dns_reply_other_types_noerror_empty() -> None:
    query = dns.message.make_query("whatever.invalid", "MX")
    response = dns.message.from_wire(dns_reply(query.to_wire(), "203.0.113.80"))
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []


def test_dns_reply_ignores_malformed_and_responses() -> None:
    query = dns.message.make_query("x.invalid", "A")
    assert dns_reply(b"\x01\x02garbage", "203.0.113.80") is None
    assert dns_reply(dns.message.make_response(query).to_wire(), "203.0.113.80") is None


def test_echo_reply_names_the_sender() -> None:
    assert echo_reply(b"ping", ("198.51.100.2", 40000)) == b"198.51.100.2:40000|ping"


def test_parse_endpoint() -> None:
    assert parse_endpoint("203.0.113.7:7007") == ("203.0.113.7", 7007)
    for bad in ("203.0.113.7", "203.0.113.7:0", "203.0.113.7:x", "host:53"):
        with pytest.raises(ServicesError) as info:
            parse_endpoint(bad)
        assert bad in str(info.value) or repr(bad.rpartition(":")[0]) in str(info.value)
