"""flush_nat against real conntrack entries, in a 3-namespace chain with nft `snat to` per uplink.

    lwtA-ctc (client)            lwtA-ctr (router, nft snat)             lwtA-cts (server)
      lan0 10.77.0.2/24 <-> lan 10.77.0.1/24
                                 up1 198.51.100.2/24  <-> s1 198.51.100.1/24   lo 10.99.0.1
                                 up2 203.0.113.2/24   <-> s2 203.0.113.1/24    lo 10.99.0.2

The router sends 10.99.0.1 through up1 and 10.99.0.2 through up2, so the client's flows to the
first are NATed to 198.51.100.2 and those to the second to 203.0.113.2.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nsutil  # noqa: E402

from linkwatch.core.flows import FLOW_MASK, MOVABLE, flow_mark, ruleset  # noqa: E402
from linkwatch.kernel.conntrack import ConntrackError, FlowKey, flush_marked, flush_nat, is_natted_to  # noqa: E402

CL, RT, SV = "lwtA-ctc", "lwtA-ctr", "lwtA-cts"
UP1, UP2 = "198.51.100.2", "203.0.113.2"
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

NAT = """
table ip lwtA_nat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "up1" snat to 198.51.100.2
        oifname "up2" snat to 203.0.113.2
    }
}
"""


def test_is_natted_to_is_reply_destination_but_not_original_source():
    assert is_natted_to(FlowKey(orig_src="10.77.0.2", reply_dst=UP1), UP1)
    assert not is_natted_to(FlowKey(orig_src="10.77.0.2", reply_dst=UP2), UP1)
    assert not is_natted_to(FlowKey(orig_src=UP1, reply_dst=UP1), UP1)  # the router's own flow


def test_a_bad_mark_is_a_conntrack_error():
    for mark, mask in ((0, FLOW_MASK), (0x10000, 0), (0x1_0000_0000, 0xFFFF_FFFF), (0x0100_0000, FLOW_MASK)):
        with pytest.raises(ConntrackError, match="mark="):
            flush_marked(mark, mask)


def test_bad_address_is_a_conntrack_error():
    with pytest.raises(ConntrackError, match="198.51.100.256"):
        flush_nat("198.51.100.256")


@pytest.fixture
def chain():
    try:
        for ns in (CL, RT, SV):
            nsutil.make_ns(ns)
        nsutil.sysctl(RT, "net.ipv4.ip_forward", "1")
        nsutil.veth(CL, "lan0", RT, "lan", "10.77.0.2/24", "10.77.0.1/24")
        nsutil.veth(RT, "up1", SV, "s1", "198.51.100.2/24", "198.51.100.1/24")
        nsutil.veth(RT, "up2", SV, "s2", "203.0.113.2/24", "203.0.113.1/24")
        nsutil.ip(CL, "route", "add", "default", "via", "10.77.0.1")
        nsutil.ip(SV, "addr", "add", "10.99.0.1/32", "dev", "lo")
        nsutil.ip(SV, "addr", "add", "10.99.0.2/32", "dev", "lo")
        nsutil.ip(RT, "route", "add", "10.99.0.1/32", "via", "198.51.100.1")
        nsutil.ip(RT, "route", "add", "10.99.0.2/32", "via", "203.0.113.1")
        nsutil.nft(RT, NAT)
        yield
    finally:
        for ns in (CL, RT, SV):
            nsutil.del_ns(ns)


_ENTRY = re.compile(r"src=(\S+) dst=(\S+) .*?src=(\S+) dst=(\S+)")


def udp_entries(ns):
    """(orig src, reply dst) of every UDP conntrack entry, read with the conntrack CLI."""
    out = nsutil.run_in(ns, "conntrack", "-L", "-p", "udp", check=False).stdout
    found = []
    for line in out.splitlines():
        m = _ENTRY.search(line)
        if m:
            found.append((m.group(1), m.group(4)))
    return found


def count(entries, orig_src, reply_dst):
    return sum(1 for e in entries if e == (orig_src, reply_dst))


def make_flows(n_client=20, n_local=5):
    nsutil.send_udp(CL, "10.99.0.1", 40000, n_client)  # NATed to UP1
    nsutil.send_udp(CL, "10.99.0.2", 40000, n_client)  # NATed to UP2
    nsutil.send_udp(RT, "10.99.0.1", 41000, n_local, src=UP1)  # the router's own flows from UP1
    entries = udp_entries(RT)
    assert count(entries, "10.77.0.2", UP1) == n_client
    assert count(entries, "10.77.0.2", UP2) == n_client
    assert count(entries, UP1, UP1) == n_local


@root
def test_flush_nat_deletes_only_entries_natted_to_that_address(chain):
    make_flows()
    t0 = time.perf_counter()
    deleted = flush_nat(UP1, netns=RT)
    print(f"flush_nat: {deleted} entries in {(time.perf_counter() - t0) * 1000:.1f} ms")
    assert deleted == 20
    entries = udp_entries(RT)
    assert count(entries, "10.77.0.2", UP1) == 0
    assert count(entries, "10.77.0.2", UP2) == 20  # the other uplink's flows are kept
    assert count(entries, UP1, UP1) == 5  # the router's own flows from that address too
    assert flush_nat(UP1, netns=RT) == 0


@root
def test_flush_nat_in_worker_threads_concurrently_is_safe(chain):
    make_flows()
    results: list[int] = []
    errors: list[BaseException] = []

    def worker():
        try:
            results.append(flush_nat(UP2, netns=RT))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    # entries deleted by one thread vanish under the other: that is not an error
    assert errors == [] and sum(results) == 20
    entries = udp_entries(RT)
    assert count(entries, "10.77.0.2", UP2) == 0 and count(entries, "10.77.0.2", UP1) == 20


@root
def test_flush_nat_from_an_event_loop_thread_and_via_to_thread(chain):
    make_flows()

    async def engine_like():
        first = await asyncio.to_thread(flush_nat, UP1, RT)  # how the engine should call it
        second = flush_nat(UP2, netns=RT)  # called on the loop thread by mistake: still works
        return first, second

    assert asyncio.run(engine_like()) == (20, 20)
    assert count(udp_entries(RT), UP1, UP1) == 5


@root
def test_flush_nat_many_entries_timing(chain):
    n = 500
    nsutil.send_udp(CL, "10.99.0.1", 20000, n)
    nsutil.send_udp(CL, "10.99.0.2", 20000, 50)
    t0 = time.perf_counter()
    deleted = flush_nat(UP1, netns=RT)
    ms = (time.perf_counter() - t0) * 1000
    print(f"flush_nat: {deleted} of {n + 50} entries in {ms:.0f} ms ({ms / max(deleted, 1):.3f} ms/entry)")
    assert deleted == n
    assert count(udp_entries(RT), "10.77.0.2", UP2) == 50


@root
def test_missing_namespace_is_a_conntrack_error():
    with pytest.raises(ConntrackError, match="lwtA-nope"):
        flush_nat(UP1, netns="lwtA-nope")
    assert not nsutil.ns_exists("lwtA-nope")


def marked(ns):
    """ct mark of every UDP conntrack entry: {(orig src, reply dst, mark)}: count."""
    out = nsutil.run_in(ns, "conntrack", "-L", "-p", "udp", check=False).stdout
    found: dict = {}
    for line in out.splitlines():
        m, mark = _ENTRY.search(line), re.search(r"\bmark=(\d+)", line)
        if m:
            key = (m.group(1), m.group(4), int(mark.group(1)) if mark else 0)
            found[key] = found.get(key, 0) + 1
    return found


@pytest.fixture
def sticky(chain):
    """The chain with linkwatch's flow-marking table (up1: table 101's mark, up2: table 102's), and a
    rule of someone else's that sets a bit of its own in the ct mark of flows to port 40000."""
    nsutil.nft(RT, ruleset([("up1", flow_mark(101)), ("up2", flow_mark(102))], name="lwtA_flows"))
    nsutil.nft(RT, "table ip lwtA_other {\n chain c {\n type filter hook postrouting priority 100;\n"
                   " udp dport 40000 ct mark set ct mark or 0x1\n }\n}\n")
    yield


@root
def test_flush_marked_deletes_every_flow_of_one_uplink_in_one_operation(sticky):
    make_flows()
    m1, m2 = flow_mark(101) | MOVABLE, flow_mark(102) | MOVABLE  # left through the uplink: movable
    before = marked(RT)
    assert before[("10.77.0.2", UP1, m1)] == 19 and before[("10.77.0.2", UP1, m1 | 1)] == 1, before
    assert before[(UP1, UP1, m1)] == 5, "the router's own flows out of up1 carry the mark too"
    assert flush_marked(flow_mark(101), FLOW_MASK, RT) == 25, "the table shrank by the 25 flows of up1"
    after = marked(RT)
    assert not [k for k in after if k[2] & FLOW_MASK == flow_mark(101)], "every flow of up1 went, other bits or not"
    assert after[("10.77.0.2", UP2, m2)] == 19 and after[("10.77.0.2", UP2, m2 | 1)] == 1, "up2's flows stay"
    assert flush_marked(flow_mark(101), FLOW_MASK, RT) == 0


@root
def test_flush_marked_10000_entries_timing(sticky):
    n = 10_000
    nsutil.send_udp(CL, "10.99.0.1", 20000, n)
    nsutil.send_udp(CL, "10.99.0.2", 20000, 50)
    t0 = time.perf_counter()
    deleted = flush_marked(flow_mark(101), FLOW_MASK, RT)
    ms = (time.perf_counter() - t0) * 1000
    print(f"flush_marked: {deleted} of {n + 50} entries in {ms:.0f} ms")
    assert deleted == n
    assert count(udp_entries(RT), "10.77.0.2", UP2) == 50
    assert ms < 1000, "one kernel operation (about 20 ms here; entry by entry it takes about 5 s)"


_SEND_ONE = r"""
import os, socket, sys
ns, dst, sport, dport, tos = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if os.stat("/proc/self/ns/net").st_ino != os.stat("/run/netns/" + ns).st_ino:
    sys.exit("refusing to send: not inside namespace " + ns)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
s.bind(("0.0.0.0", sport))
s.sendto(b"linkwatch-test", (dst, dport))
"""


def send_one(dst: str, sport: int, dport: int, dscp: int = 0) -> None:
    nsutil.run_in(CL, sys.executable, "-c", _SEND_ONE, CL, dst, str(sport), str(dport), str(dscp << 2))


@root
def test_every_kind_of_policy_rule_match_marks_exactly_the_flows_it_describes(chain):
    """Each match key of a [[rules]] entry, rendered by linkwatch and loaded into the real kernel:
    a flow that matches gets the rule's uplink mark; one that differs only in that key does not."""
    from linkwatch.config import loads

    uplink = '[uplinks.{0}]\ninterface = "{1}"\n[[uplinks.{0}.probes]]\ntype = "icmp"\ntarget = "203.0.113.1"\n'
    text = uplink.format("a", "up1") + uplink.format("b", "up2") + """
[[rules]]
name = "by-src"
src = "10.77.0.2/32"
proto = "udp"
dport = 50001
uplinks = ["b"]
[[rules]]
name = "by-dst"
dst = "10.99.0.1"
proto = "udp"
dport = 50002
uplinks = ["b"]
[[rules]]
name = "by-sport"
proto = "udp"
sport = "51000-51009"
uplinks = ["b"]
[[rules]]
name = "by-iif"
iif = "lan"
proto = "udp"
dport = 50004
uplinks = ["b"]
[[rules]]
name = "by-dscp"
dscp = "ef"
uplinks = ["b"]
[[rules]]
name = "by-mark"
mark = "0x20/0xf0"
uplinks = ["b"]
"""
    rules = loads(text).rules
    mark = flow_mark(103)  # the rules' uplink: a mark of its own, apart from the two a flow gets by leaving
    nsutil.nft(RT, ruleset([("up1", flow_mark(101)), ("up2", flow_mark(102))], name="lwtA_flows",
                           policy=[(r, [(mark, 1)]) for r in rules]))
    # another firewall's mark on one flow (what rules match with "mark"), set before linkwatch looks
    nsutil.nft(RT, "table ip lwtA_other {\n chain c {\n type filter hook prerouting priority -200;\n"
                   " udp dport 50006 meta mark set 0x21\n }\n}\n")
    sent = {  # (dst, sport, dport, dscp) -> does a rule match it?
        ("10.99.0.1", 40001, 50001, 0): True,  # by-src
        ("10.99.0.1", 40002, 50002, 0): True,  # by-dst
        ("10.99.0.2", 40012, 50002, 0): False,  # another dst
        ("10.99.0.1", 51005, 50003, 0): True,  # by-sport
        ("10.99.0.1", 51010, 50003, 0): False,  # a port beside the range
        ("10.99.0.1", 40004, 50004, 0): True,  # by-iif
        ("10.99.0.1", 40005, 50005, 46): True,  # by-dscp (EF)
        ("10.99.0.1", 40015, 50005, 34): False,  # AF41
        ("10.99.0.1", 40006, 50006, 0): True,  # by-mark
        ("10.99.0.1", 40007, 50007, 0): False,  # nothing matches: the uplink it leaves by (up1)
    }
    for dst, sport, dport, dscp in sent:
        send_one(dst, sport, dport, dscp)
    out = nsutil.run_in(RT, "conntrack", "-L", "-p", "udp", check=False).stdout
    got = {}
    for line in out.splitlines():
        m = re.search(r"dst=(\S+) sport=(\d+) dport=(\d+).*?mark=(\d+)", line)
        if m and m.group(1) in ("10.99.0.1", "10.99.0.2"):
            got[(m.group(1), int(m.group(2)), int(m.group(3)))] = int(m.group(4)) & FLOW_MASK
    for (dst, sport, dport, _), matches in sent.items():
        expected = mark if matches else (flow_mark(101) if dst == "10.99.0.1" else flow_mark(102))
        assert got.get((dst, sport, dport)) == expected, (dst, sport, dport, got.get((dst, sport, dport)))
