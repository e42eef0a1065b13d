"""Link facts: pure derivation, one-shot read_facts, and the event-driven LinkMonitor.

    lwtA-nw (router)                       lwtA-nwp (providers)
      wan1 198.51.100.2/24  <-- veth -->     p1 198.51.100.1/24
      wan2 203.0.113.2/24   <-- veth -->     p2 203.0.113.1/24
    main: default via 198.51.100.1 dev wan1 proto dhcp metric 100
          default via 203.0.113.1 dev wan2 proto dhcp metric 200
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nsutil  # noqa: E402

from linkwatch.kernel.facts import (  # noqa: E402
    IFA_F_DEPRECATED,
    IFA_F_TEMPORARY,
    IFA_F_TENTATIVE,
    IFF_LOWER_UP,
    IFF_UP,
    Addr,
    DefaultRoute,
    Link,
    LinkFacts,
    LinkMonitor,
    FactsError,
    facts_from_kernel,
    read_facts,
)

NS, PEER = "lwtA-nw", "lwtA-nwp"
NAMES = ["wan1", "wan2", "wan3"]
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


# --------------------------------------------------------------------------- pure


def test_facts_carrier_needs_up_and_lower_up_and_missing_interface_is_none():
    links = [Link(2, "wan1", IFF_UP | IFF_LOWER_UP), Link(3, "wan2", IFF_UP)]
    facts = facts_from_kernel(["wan1", "wan2", "wan3"], links, [], [], 77)
    assert facts["wan1"].carrier and not facts["wan2"].carrier
    assert facts["wan3"] == LinkFacts("wan3", None, False, None, None, None)


def test_facts_primary_address_and_lowest_metric_gateway_not_ours():
    links = [Link(2, "wan1", IFF_UP | IFF_LOWER_UP)]
    addrs = [Addr(2, "198.51.100.9", 24, secondary=True), Addr(2, "198.51.100.2", 24, secondary=False)]
    routes = [
        DefaultRoute(proto=16, metric=200, hops=(("198.51.100.7", 2),)),
        DefaultRoute(proto=16, metric=100, hops=(("198.51.100.1", 2),)),
        DefaultRoute(proto=77, metric=0, hops=(("198.51.100.66", 2),)),  # linkwatch's own: ignored
        DefaultRoute(proto=16, metric=10, hops=(("203.0.113.1", 3),)),  # another interface
    ]
    (f,) = facts_from_kernel(["wan1"], links, addrs, routes, 77).values()
    assert (f.address, f.prefixlen, f.gateway) == ("198.51.100.2", 24, "198.51.100.1")


def test_facts_gateway_from_a_multipath_default():
    links = [Link(2, "wan1", IFF_UP | IFF_LOWER_UP), Link(3, "wan2", IFF_UP | IFF_LOWER_UP)]
    routes = [DefaultRoute(proto=4, metric=0, hops=(("198.51.100.1", 2), ("203.0.113.1", 3)))]
    facts = facts_from_kernel(["wan1", "wan2"], links, [], routes, 77)
    assert (facts["wan1"].gateway, facts["wan2"].gateway) == ("198.51.100.1", "203.0.113.1")


def test_facts_ipv6_a_usable_global_stable_address_and_the_router_advertisements_gateway():
    v6 = socket.AF_INET6
    links = [Link(2, "wan1", IFF_UP | IFF_LOWER_UP), Link(3, "wan2", IFF_UP | IFF_LOWER_UP)]
    addrs = [
        Addr(2, "fe80::2", 64, False, family=v6, scope=253),  # link-local: never a probe source
        Addr(2, "2001:db8:1::dead", 64, False, family=v6, flags=IFA_F_TENTATIVE),  # DAD not done
        Addr(2, "2001:db8:1::beef", 64, True, family=v6, flags=IFA_F_TEMPORARY),  # privacy address
        Addr(2, "2001:db8:1::5", 64, False, family=v6, flags=IFA_F_DEPRECATED),  # its prefix is leaving
        Addr(2, "2001:db8:1::2", 64, False, family=v6),
        Addr(2, "198.51.100.2", 29, False),
        Addr(3, "2001:db8:2::aaaa", 64, True, family=v6, flags=IFA_F_TEMPORARY),  # the only one: taken
    ]
    routes = [
        DefaultRoute(proto=9, metric=1024, hops=(("fe80::1", 2),), family=v6),  # ra
        DefaultRoute(proto=77, metric=1, hops=(("fe80::66", 2),), family=v6),  # linkwatch's own: ignored
        DefaultRoute(proto=16, metric=100, hops=(("198.51.100.1", 2),)),
        DefaultRoute(proto=9, metric=1024, hops=(("fe80::1", 2), ("fe80::9", 3)), family=v6),  # ECMP siblings
    ]
    facts = facts_from_kernel(["wan1", "wan2"], links, addrs, routes, 77)
    f = facts["wan1"]
    assert (f.address, f.gateway) == ("198.51.100.2", "198.51.100.1")
    assert (f.address6, f.prefixlen6, f.gateway6) == ("2001:db8:1::2", 64, "fe80::1")
    assert (facts["wan2"].address6, facts["wan2"].gateway6, facts["wan2"].address) == ("2001:db8:2::aaaa", "fe80::9", None)


# --------------------------------------------------------------------------- kernel


@pytest.fixture
def lab():
    try:
        nsutil.make_ns(NS)
        nsutil.make_ns(PEER)
        # distinct ifindexes on the two ends: carrier changes are then "urgent" for the kernel
        nsutil.veth(NS, "wan1", PEER, "p1", "198.51.100.2/24", "198.51.100.1/24", index_a=11, index_b=21)
        nsutil.veth(NS, "wan2", PEER, "p2", "203.0.113.2/24", "203.0.113.1/24", index_a=12, index_b=22)
        nsutil.ip(NS, "route", "add", "default", "via", "198.51.100.1", "proto", "dhcp", "metric", "100")
        nsutil.ip(NS, "route", "add", "default", "via", "203.0.113.1", "proto", "dhcp", "metric", "200")
        yield
    finally:
        nsutil.del_ns(NS)
        nsutil.del_ns(PEER)


@root
def test_read_facts_sees_carrier_address_gateway_and_missing(lab):
    # linkwatch's own default in main (protocol 77), lower metric: must be ignored
    nsutil.ip(NS, "route", "add", "default", "via", "198.51.100.66", "dev", "wan1", "proto", "77", "metric", "5")
    nsutil.ip(NS, "addr", "add", "198.51.100.9/24", "dev", "wan1")  # a secondary address
    facts = read_facts(NAMES, netns=NS)
    assert facts["wan1"] == LinkFacts("wan1", nsutil.ifindex(NS, "wan1"), True, "198.51.100.2", 24, "198.51.100.1")
    assert facts["wan2"] == LinkFacts("wan2", nsutil.ifindex(NS, "wan2"), True, "203.0.113.2", 24, "203.0.113.1")
    assert facts["wan3"].ifindex is None and not facts["wan3"].carrier
    nsutil.ip(PEER, "link", "set", "p2", "down")
    assert read_facts(["wan2"], netns=NS)["wan2"].carrier is False


@root
def test_read_facts_inside_a_running_loop_and_missing_namespace(lab):
    async def engine_like():
        return read_facts(["wan1"], netns=NS)

    assert asyncio.run(engine_like())["wan1"].address == "198.51.100.2"
    with pytest.raises(FactsError, match="lwtA-nope"):
        read_facts(["wan1"], netns="lwtA-nope")
    with pytest.raises(FactsError, match="lwtA-nope"):
        asyncio.run(LinkMonitor(["wan1"], netns="lwtA-nope").run(lambda snapshot: None))
    assert not nsutil.ns_exists("lwtA-nope")


class Recorder:
    """Collects (time, snapshot) from on_change and lets a test await a condition."""

    def __init__(self):
        self.calls: list[tuple[float, dict[str, LinkFacts]]] = []
        self.changed = asyncio.Event()

    def __call__(self, snapshot):
        self.calls.append((time.perf_counter(), snapshot))
        self.changed.set()

    async def wait_for(self, predicate, timeout=2.0):
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()  # before looking, so a call that lands meanwhile is not missed
            for when, snap in self.calls:
                if predicate(snap):
                    return when, snap
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"condition not seen within {timeout}s; last: {self.calls[-1:]}")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


async def with_monitor(scenario, names=NAMES):
    """Run LinkMonitor in NS, wait for the first snapshot, run ``scenario(rec, mon)``, stop."""
    mon = LinkMonitor(names, netns=NS)
    rec = Recorder()
    task = asyncio.create_task(mon.run(rec))
    try:
        await rec.wait_for(lambda s: True)
        return await scenario(rec, mon)
    finally:
        mon.close()
        await asyncio.wait_for(task, 2.0)  # close() makes run() return promptly


async def ip_async(ns, *args):
    await asyncio.to_thread(nsutil.ip, ns, *args)


@root
def test_monitor_first_snapshot_then_carrier_loss_quickly(lab):
    peer = ThreadPoolExecutor(max_workers=1)  # a pyroute2 socket in the peer ns, off the loop

    def open_peer():
        from pyroute2 import IPRoute

        ipr = IPRoute(netns=PEER, flags=0)
        return ipr, ipr.link_lookup(ifname="p1")[0]

    ipr, p1 = peer.submit(open_peer).result()

    async def scenario(rec, mon):
        first = rec.calls[0][1]
        assert first["wan1"].carrier and first["wan3"].ifindex is None
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(peer, lambda: ipr.link("set", index=p1, state="down"))
        when, snap = await rec.wait_for(lambda s: not s["wan1"].carrier)
        latency = (when - t0) * 1000
        print(f"carrier loss -> on_change: {latency:.2f} ms (netlink message -> callback "
              f"{mon.last_event_latency_ms:.2f} ms)")
        assert snap["wan2"].carrier and snap["wan1"].address == "198.51.100.2"
        assert latency < 50  # target < 10 ms (measured 2-3 ms); headroom for a loaded CI machine
        await asyncio.get_running_loop().run_in_executor(peer, lambda: ipr.link("set", index=p1, state="up"))
        await rec.wait_for(lambda s: s["wan1"].carrier and len(rec.calls) >= 3)

    try:
        asyncio.run(with_monitor(scenario))
    finally:
        peer.submit(ipr.close).result()
        peer.shutdown()


@root
def test_monitor_sees_address_change(lab):
    async def scenario(rec, mon):
        await ip_async(NS, "addr", "del", "203.0.113.2/24", "dev", "wan2")
        await rec.wait_for(lambda s: s["wan2"].address is None)
        await ip_async(NS, "addr", "add", "203.0.113.50/25", "dev", "wan2")
        _, snap = await rec.wait_for(lambda s: s["wan2"].address == "203.0.113.50")
        assert snap["wan2"].prefixlen == 25

    asyncio.run(with_monitor(scenario))


@root
def test_monitor_sees_dhcp_gateway_change(lab):
    async def scenario(rec, mon):
        # a DHCP renewal with a new router: the default route via wan1 is replaced
        await ip_async(NS, "route", "replace", "default", "via", "198.51.100.254", "dev", "wan1",
                       "proto", "dhcp", "metric", "100")
        await rec.wait_for(lambda s: s["wan1"].gateway == "198.51.100.254")
        await ip_async(NS, "route", "del", "default", "via", "198.51.100.254", "dev", "wan1", "metric", "100")
        _, snap = await rec.wait_for(lambda s: s["wan1"].gateway is None)
        assert snap["wan2"].gateway == "203.0.113.1"

    asyncio.run(with_monitor(scenario))


@root
def test_read_facts_and_monitor_follow_ipv6_address_and_gateway(lab):
    nsutil.ip(NS, "-6", "addr", "add", "2001:db8:1::2/64", "dev", "wan1", "nodad")
    nsutil.ip(NS, "-6", "route", "add", "default", "via", "fe80::1", "dev", "wan1", "proto", "ra", "metric", "1024")
    f = read_facts(["wan1"], netns=NS)["wan1"]
    assert (f.address6, f.prefixlen6, f.gateway6, f.address) == ("2001:db8:1::2", 64, "fe80::1", "198.51.100.2")

    async def scenario(rec, mon):
        # a new delegated prefix: the new address appears, the old one goes
        await ip_async(NS, "-6", "addr", "add", "2001:db8:7::2/64", "dev", "wan2", "nodad")
        await rec.wait_for(lambda s: s["wan2"].address6 == "2001:db8:7::2")
        await ip_async(NS, "-6", "addr", "change", "2001:db8:1::2/64", "dev", "wan1", "preferred_lft", "0")
        await rec.wait_for(lambda s: s["wan1"].address6 is None)  # deprecated: no longer a source
        await ip_async(NS, "-6", "route", "replace", "default", "via", "fe80::2", "dev", "wan1", "proto", "ra",
                       "metric", "1024")
        await rec.wait_for(lambda s: s["wan1"].gateway6 == "fe80::2")
        await ip_async(NS, "-6", "route", "del", "default", "via", "fe80::2", "dev", "wan1", "metric", "1024")
        _, snap = await rec.wait_for(lambda s: s["wan1"].gateway6 is None)
        assert snap["wan1"].gateway == "198.51.100.1"

    asyncio.run(with_monitor(scenario))


@root
def test_monitor_ignores_routes_with_our_protocol_and_other_tables(lab):
    async def scenario(rec, mon):
        before = len(rec.calls)
        await ip_async(NS, "route", "add", "default", "via", "198.51.100.1", "table", "101", "proto", "77")
        await ip_async(NS, "route", "add", "default", "via", "198.51.100.66", "dev", "wan1", "proto", "77",
                       "metric", "1")
        await asyncio.sleep(0.15)
        assert len(rec.calls) == before  # linkwatch's own routes never look like a DHCP change
        # ... while a real change right after is still delivered
        await ip_async(NS, "route", "del", "default", "via", "203.0.113.1", "metric", "200")
        await rec.wait_for(lambda s: s["wan2"].gateway is None)

    asyncio.run(with_monitor(scenario))


@root
def test_monitor_sees_an_interface_that_appears_later(lab):
    async def scenario(rec, mon):
        assert rec.calls[-1][1]["wan3"].ifindex is None
        await asyncio.to_thread(nsutil.veth, NS, "wan3", PEER, "p3", "10.77.3.2/24", "10.77.3.1/24")
        _, snap = await rec.wait_for(lambda s: s["wan3"].carrier and s["wan3"].address == "10.77.3.2")
        assert snap["wan3"].ifindex == nsutil.ifindex(NS, "wan3")
        await ip_async(NS, "link", "del", "wan3")
        await rec.wait_for(lambda s: s["wan3"].ifindex is None)

    asyncio.run(with_monitor(scenario))


@root
def test_monitor_callback_error_does_not_stop_it(lab):
    async def scenario():
        mon = LinkMonitor(["wan1"], netns=NS)
        seen: list[dict[str, LinkFacts]] = []

        def flaky(snapshot):
            seen.append(snapshot)
            if len(seen) == 1:
                raise RuntimeError("boom")

        task = asyncio.create_task(mon.run(flaky))
        try:
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            await ip_async(PEER, "link", "set", "p1", "down")
            for _ in range(200):
                if len(seen) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert len(seen) >= 2 and not seen[-1]["wan1"].carrier
        finally:
            mon.close()
            await asyncio.wait_for(task, 2.0)

    asyncio.run(scenario())


@root
def test_monitor_says_when_linkwatchs_own_routes_or_rules_change_and_only_then(lab):
    """on_owned: once when the monitor starts listening; then for a route or rule of protocol 77
    added, changed or deleted (by anyone), a route of any protocol in one of linkwatch's tables
    (``ip route replace`` over its own) and a rule at one of its priorities; a foreign route or rule
    says nothing. The engine repairs on it instead of dumping the kernel every 2 s."""
    async def scenario():
        # watching no interface of NS: its address events (IPv6 link-local after an earlier test's
        # carrier loss) would rightly count as well, and come at any time
        mon = LinkMonitor(["lwnone0"], netns=NS, tables=(152,), priorities=(1000, 1100))
        rec, owned = Recorder(), asyncio.Event()
        task = asyncio.create_task(mon.run(rec, owned.set))
        try:
            await rec.wait_for(lambda s: True)
            await asyncio.wait_for(owned.wait(), 1.0)  # the start: what happened before is unknown

            async def says(*args) -> bool:
                owned.clear()
                await ip_async(NS, *args)
                try:
                    await asyncio.wait_for(owned.wait(), 1.0)
                    return True
                except asyncio.TimeoutError:
                    return False

            assert not await says("route", "add", "198.51.100.64/28", "via", "198.51.100.1", "table", "150")
            assert not await says("rule", "add", "from", "198.51.100.64/28", "lookup", "150", "priority", "3000")
            assert await says("route", "add", "198.51.100.80/28", "via", "198.51.100.1", "table", "151",
                              "proto", "77")
            assert await says("route", "del", "198.51.100.80/28", "table", "151"), "someone deletes ours"
            assert await says("rule", "add", "from", "198.51.100.80/28", "lookup", "151", "priority", "3001",
                              "proto", "77")
            assert await says("rule", "del", "priority", "3001"), "someone deletes our rule"
            assert await says("route", "replace", "198.51.100.96/28", "via", "198.51.100.1", "table", "152"), \
                "a route of another protocol in linkwatch's table"
            assert await says("rule", "add", "from", "198.51.100.96/28", "lookup", "152", "priority", "1050"), \
                "a rule of another protocol at linkwatch's priorities"
            await ip_async(NS, "rule", "del", "priority", "1050")
            await ip_async(NS, "route", "del", "198.51.100.96/28", "table", "152")
            await ip_async(NS, "rule", "del", "priority", "3000")
            await ip_async(NS, "route", "del", "198.51.100.64/28", "table", "150")
        finally:
            mon.close()
            await asyncio.wait_for(task, 2.0)

    asyncio.run(scenario())
