"""SNMP traps: the storm rule with made-up time, and the sink with a fake sender (it never waits for
the network, bounds what is pending, sends the summaries on a timer, never shows a secret), plus
one real pysnmp v2c trap to a socket on loopback, decoded."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time

import pytest

from linkwatch.config import SnmpConfig, SnmpUserConfig, TrapReceiverConfig
from linkwatch.core.events import ActiveChanged, EngineEvent, QuotaReached, UplinkDampened, UplinkStateChanged
from linkwatch.sinks import snmp_traps as traps
from linkwatch.snmp import mib
from linkwatch.sinks.snmp_traps import (
    IN_FLIGHT_LIMIT,
    SNMP_TRAP_OID,
    SYS_UPTIME,
    Held,
    PysnmpSender,
    StormGate,
    TrapError,
    TrapSink,
    notification_varbinds,
    scrub,
    secrets_of,
    send_deadline,
    uptime_ticks,
)

COMMUNITY = "c0mmunity-Secret-17"
AUTH_KEY = "authKey-Secret-29"
PRIV_KEY = "privKey-Secret-41"


def change(uplink: str, old: str, new: str, reason: str = "3 failed rounds") -> UplinkStateChanged:
    return UplinkStateChanged(at=time.time(), mono=0.0, uplink=uplink, interface=f"if-{uplink}", old=old, new=new,
                              reason=reason, loss_pct=100.0 if new == "DOWN" else 0.0, rtt_ms=None, jitter_ms=None)


def moved(old: tuple[str, ...], new: tuple[str, ...]) -> ActiveChanged:
    return ActiveChanged(at=time.time(), mono=0.0, old=old, new=new, reason="test")


def config(*receivers: TrapReceiverConfig, burst: int = 3, window: float = 60.0) -> SnmpConfig:
    return SnmpConfig(engine_id="8000000001020304", trap_burst=burst, trap_window=window,
                      users=(SnmpUserConfig("ops", "sha256", AUTH_KEY, "aes", PRIV_KEY),),
                      traps=receivers or (TrapReceiverConfig("10.77.0.2", 162, "2c", community=COMMUNITY),))


V2C = TrapReceiverConfig("10.77.0.2", 162, "2c", community=COMMUNITY)
V3 = TrapReceiverConfig("10.77.0.2", 163, "3", user="ops", level="authPriv")
INFORM = TrapReceiverConfig("10.77.0.2", 164, "2c", community=COMMUNITY, kind="inform", timeout=0.05, retries=0)


class FakeSender:
    """Records what would go on the wire; receivers in ``hang`` never answer, in ``fail`` raise."""

    def __init__(self, hang: frozenset[int] = frozenset(), fail: dict[int, Exception] | None = None):
        self.hang = hang
        self.fail = fail or {}
        self.sent: list[tuple[int, mib.Notification, int]] = []
        self.closed = False
        self._never = asyncio.Event()

    async def send(self, receiver: int, notification: mib.Notification, ticks: int) -> None:
        self.sent.append((receiver, notification, ticks))
        if receiver in self.fail:
            raise self.fail[receiver]
        if receiver in self.hang:
            await self._never.wait()

    async def close(self) -> None:
        self.closed = True

    def names(self, receiver: int = 0) -> list[str]:
        return [n.name for r, n, _ in self.sent if r == receiver]

    def notifications(self, name: str, receiver: int = 0) -> list[mib.Notification]:
        return [n for r, n, _ in self.sent if r == receiver and n.name == name]


def values(n: mib.Notification) -> dict[str, object]:
    """{"lwUplinkName": "wan1", ...}: the notification's objects by name."""
    layout = mib.Layout.from_text(mib_base())
    names = {layout.scalar(s): s for s in mib.SCALARS} | {layout.notify_object(o): o for o in mib.NOTIFY_OBJECTS}
    out = {}
    for oid, (_, v) in n.varbinds:
        if oid in names:
            out[names[oid]] = v
        else:
            column = next(c for c, sub in mib.COLUMNS.items() if oid[:-1] == layout.column(c))
            out[column] = v
    return out


def mib_base() -> str:
    return SnmpConfig().base_oid


async def settle(sink: TrapSink, seconds: float = 0.0) -> None:
    """Let the send tasks run (and ``seconds`` pass)."""
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


# --- the storm gate (pure, made-up time) ---------------------------------------------------------


def test_gate_sends_a_burst_then_holds_back_and_reports_once():
    gate = StormGate(burst=3, window=60.0)
    assert [gate.offer("wan1", t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)] == [True, True, True, False, False]
    assert gate.suppressed() == {"wan1": 2}
    assert gate.next_end() == 60.0
    assert gate.expire(59.9) == []
    assert gate.expire(60.0) == [Held("wan1", 2, 0.0, 60.0)]
    assert gate.expire(61.0) == []  # each ended window once
    assert gate.next_end() is None


def test_gate_window_starts_at_the_first_notification_after_the_previous_ended():
    gate = StormGate(burst=1, window=10.0)
    assert gate.offer("k", 0.0) is True
    assert gate.offer("k", 9.9) is False
    assert gate.offer("k", 15.0) is True  # the old window ended at 10; a new one starts at 15
    # offer() noticed the first window's end itself (the timer was late): its summary is due, not lost
    assert gate.next_end() == 10.0
    assert gate.expire(15.0) == [Held("k", 1, 0.0, 10.0)]
    assert gate.next_end() == 25.0
    assert gate.offer("k", 24.0) is False
    assert gate.expire(25.0) == [Held("k", 1, 15.0, 25.0)]


def test_gate_a_window_without_held_back_notifications_ends_silently():
    gate = StormGate(burst=2, window=5.0)
    assert gate.offer("k", 0.0) and gate.offer("k", 1.0)
    assert gate.expire(10.0) == []
    assert gate.suppressed() == {}


@pytest.mark.parametrize("burst, window, bad", [(0, 60.0, "trap_burst"), (True, 60.0, "trap_burst"),
                                                (3, 0.0, "trap_window"), (3, -1.0, "trap_window")])
def test_gate_refuses_bad_settings_naming_them(burst, window, bad):
    with pytest.raises(TrapError, match=bad):
        StormGate(burst, window)


def simulate(gate: StormGate, offers: list[tuple[float, str]]) -> tuple[list, list]:
    """Drive the gate as the sink does (a timer at next_end(), expire() before each offer).
    Returns (sent: [(t, key)], summaries: [(t, Held)])."""
    sent, summaries = [], []
    for t, key in offers:
        while (end := gate.next_end()) is not None and end <= t:
            summaries += [(end, h) for h in gate.expire(end)]
        summaries += [(t, h) for h in gate.expire(t)]
        if gate.offer(key, t):
            sent.append((t, key))
    while (end := gate.next_end()) is not None:
        summaries += [(end, h) for h in gate.expire(end)]
    return sent, summaries


def windows_from(sent_times: list[float], window: float) -> list[float]:
    """Window starts, from the outside: a window starts with the first send at or after the previous end."""
    starts: list[float] = []
    for t in sent_times:
        if not starts or t >= starts[-1] + window:
            starts.append(t)
    return starts


def test_gate_bound_holds_under_1000_flaps():
    rnd = random.Random(4)
    burst, window = 3, 60.0
    gate = StormGate(burst, window)
    t, offers = 0.0, []
    for _ in range(1000):  # a flap = DOWN then UP; flaps come in storms with quiet gaps in between
        t += rnd.uniform(60, 300) if rnd.random() < 0.05 else rnd.expovariate(2.0)
        offers += [(t, "wan1"), (t + rnd.uniform(0.1, 2.0), "wan1")]
    offers.sort()
    sent, summaries = simulate(gate, offers)
    times = [s for s, _ in sent]
    starts = windows_from(times, window)
    assert len(starts) > 20, "the simulation should span many windows"
    for i, start in enumerate(starts):
        end = start + window
        next_start = starts[i + 1] if i + 1 < len(starts) else float("inf")
        in_window = [s for s in times if start <= s < end]
        offered = [o for o, _ in offers if start <= o < end]
        held_here = [h for when, h in summaries if end <= when <= next_start and h.start == start]
        assert len(in_window) <= burst
        assert len(held_here) <= 1
        # a summary exactly when something was held back, carrying how much
        assert (len(offered) > len(in_window)) == bool(held_here)
        if held_here:
            assert held_here[0].held == len(offered) - len(in_window)
            assert held_here[0].end == end
        assert len(in_window) + len(held_here) <= burst + 1
    assert len(sent) + len(summaries) <= len(starts) * (burst + 1)
    assert len(sent) + len(summaries) < len(offers) / 5, "the storm limit must actually limit"
    assert gate.suppressed()["wan1"] == len(offers) - len(sent) == sum(h.held for _, h in summaries)


def test_gate_a_quiet_uplink_is_not_affected_by_a_flapping_one():
    gate = StormGate(burst=2, window=60.0)
    offers = [(i * 0.1, "wan1") for i in range(500)] + [(10.0, "wan2"), (30.0, "wan2")]
    sent, summaries = simulate(gate, sorted(offers))
    assert [t for t, k in sent if k == "wan2"] == [10.0, 30.0]
    assert {h.key for _, h in summaries} == {"wan1"}
    assert "wan2" not in gate.suppressed()
    assert len([1 for _, k in sent if k == "wan1"]) == 2 * 1  # 50 s of flapping fits one window


# --- small pure helpers -----------------------------------------------------------------------------


def test_varbinds_start_with_uptime_and_trap_oid():
    layout = mib.Layout.from_text(mib_base())
    n = mib.notification_for(layout, change("wan1", "UP", "DOWN"), 1, ("wan2",))
    binds = notification_varbinds(n, 4242)
    assert binds[0] == (SYS_UPTIME, ("TimeTicks", 4242))
    assert binds[1] == (SNMP_TRAP_OID, ("ObjectIdentifier", layout.notification("lwUplinkDown")))
    assert tuple(binds[2:]) == n.varbinds
    assert uptime_ticks(12.345) == 1234 and uptime_ticks(2**32 / 100 + 1) == 100


def test_scrub_and_secrets_of():
    cfg = config(V2C, V3)
    assert set(secrets_of(cfg)) == {COMMUNITY, AUTH_KEY, PRIV_KEY}
    assert scrub(f"bad {COMMUNITY} and {PRIV_KEY}!", secrets_of(cfg)) == "bad *** and ***!"


def test_send_deadline_covers_every_inform_retry():
    assert send_deadline(TrapReceiverConfig("10.0.0.1", kind="inform", community="x", timeout=1.5, retries=2)) \
        == pytest.approx(1.5 * 3 + traps.INFORM_MARGIN)
    assert send_deadline(V2C) == traps.TRAP_DEADLINE


# --- the sink with a fake sender ----------------------------------------------------------------------


def test_sink_protocol_attributes():
    sink = TrapSink(config(), ["wan1"], sender=FakeSender())
    assert sink.name == "snmp-traps"
    assert sink.kinds == frozenset({"uplink_state", "active_changed", "dampened", "quota"})
    assert 0 < sink.timeout <= 2.0


def test_sink_sends_every_notification_to_every_receiver_with_uptime():
    async def run():
        now = [100.0]
        fake = FakeSender()
        sink = TrapSink(config(V2C, V3), ["wan1", "wan2"], sender=fake, clock=lambda: now[0])
        await sink.handle(moved((), ("wan1",)))
        now[0] = 112.5
        await sink.handle(change("wan1", "UP", "DOWN"))
        await sink.handle(change("wan2", "INIT", "UP"))  # start-up: no notification
        await sink.handle(EngineEvent(time.time(), 0.0, "started"))  # not a kind it sends
        await settle(sink)
        await sink.close()
        return fake, sink

    fake, sink = asyncio.run(run())
    assert fake.names(0) == fake.names(1) == ["lwActiveChanged", "lwUplinkDown"]
    down = fake.notifications("lwUplinkDown")[0]
    assert values(down)["lwUplinkName"] == "wan1"
    assert values(down)["lwActiveUplinks"] == "wan1"  # the active set the sink tracked
    assert down.varbinds[0][0][-1] == 1, "row index: wan1 is the first uplink"
    assert [ticks for _, n, ticks in fake.sent if n.name == "lwUplinkDown"] == [1250, 1250]
    st = sink.stats()
    assert [r["sent"] for r in st["receivers"]] == [2, 2]
    assert st["notifications"] == 2 and st["failed"] == 0 and fake.closed


def test_an_uplink_notification_carries_the_active_set_after_the_change_and_keeps_the_order():
    async def run():
        fake = FakeSender()
        sink = TrapSink(config(V2C), ["wan1", "wan2"], sender=fake)
        await sink.handle(moved((), ("wan1",)))
        await settle(sink)
        # what the engine publishes in one loop step when wan1 fails (the worker handles both in a row)
        await sink.handle(change("wan1", "UP", "DOWN"))
        await sink.handle(moved(("wan1",), ("wan2",)))
        await settle(sink)
        # wan2 fails later with nothing left to move to: the active set stays
        await sink.handle(change("wan2", "UP", "DOWN"))
        await settle(sink)
        await sink.close()
        return fake

    fake = asyncio.run(run())
    assert fake.names() == ["lwActiveChanged", "lwUplinkDown", "lwActiveChanged", "lwUplinkDown"]
    first, second = fake.notifications("lwUplinkDown")
    assert values(first)["lwActiveUplinks"] == "wan2", "after the change, as LINKWATCH-MIB says"
    assert values(second)["lwActiveUplinks"] == "wan2"


def test_handle_returns_at_once_when_a_receiver_hangs_and_pending_sends_are_bounded():
    async def run():
        fake = FakeSender(hang=frozenset({1}))
        sink = TrapSink(config(V2C, INFORM, burst=100), ["wan1"], sender=fake)
        slowest = 0.0
        for i in range(3 * IN_FLIGHT_LIMIT // 2):
            t0 = time.perf_counter()
            await sink.handle(change("wan1", "UP" if i % 2 == 0 else "DOWN", "DOWN" if i % 2 == 0 else "UP"))
            slowest = max(slowest, time.perf_counter() - t0)
            await asyncio.sleep(0)
        await settle(sink)
        during = sink.stats()
        t0 = time.perf_counter()
        await sink.close()
        return fake, during, sink.stats(), slowest, time.perf_counter() - t0

    fake, during, after, slowest, closing = asyncio.run(run())
    total = 3 * IN_FLIGHT_LIMIT // 2
    assert slowest < 0.01, f"handle() took {slowest * 1000:.1f} ms"
    good, dead = during["receivers"]
    assert good["sent"] == total and good["in_flight"] == 0, "the other receiver got everything at once"
    assert dead["in_flight"] == IN_FLIGHT_LIMIT
    assert dead["sent"] == IN_FLIGHT_LIMIT and dead["dropped"] == total - IN_FLIGHT_LIMIT
    assert closing < traps.CLOSE_GRACE + 0.5
    assert after["receivers"][1]["failed"] == IN_FLIGHT_LIMIT and after["receivers"][1]["in_flight"] == 0


def test_an_unanswered_inform_fails_after_its_deadline(monkeypatch):
    monkeypatch.setattr(traps, "INFORM_MARGIN", 0.05)

    async def run():
        sink = TrapSink(config(INFORM), ["wan1"], sender=FakeSender(hang=frozenset({0})))
        await sink.handle(change("wan1", "UP", "DOWN"))
        await settle(sink, 0.3)
        st = sink.stats()
        await sink.close()
        return st

    st = asyncio.run(run())["receivers"][0]
    assert st["failed"] == 1 and st["acknowledged"] == 0 and st["in_flight"] == 0
    assert "lwUplinkDown: no answer within 0.1s" == st["last_error"]


def test_acknowledged_informs_are_counted():
    async def run():
        sink = TrapSink(config(INFORM), ["wan1"], sender=FakeSender())
        await sink.handle(change("wan1", "UP", "DOWN"))
        await sink.handle(change("wan1", "DOWN", "UP"))
        await settle(sink)
        await sink.close()
        return sink.stats()

    st = asyncio.run(run())
    assert st["receivers"][0]["acknowledged"] == 2 and st["acknowledged"] == 2


def test_storm_summary_is_sent_by_the_timer_with_the_counters():
    async def run():
        fake = FakeSender()
        sink = TrapSink(config(V2C, burst=2, window=0.3), ["wan1", "wan2"], sender=fake)
        await sink.handle(change("wan2", "INIT", "UP"))  # a transition without a notification
        for _ in range(4):  # DOWN, UP, DOWN, ...: once a DOWN is held back, the UP after it is no news
            await sink.handle(change("wan2", "UP", "DOWN"))
            await sink.handle(change("wan2", "DOWN", "RISING"))  # counted, no notification
            await sink.handle(change("wan2", "RISING", "UP"))
        await sink.handle(change("wan1", "UP", "DOWN"))  # the quiet uplink
        await settle(sink)
        before_end = list(fake.names())
        await settle(sink, 0.5)  # no further event: the timer must act
        await sink.close()
        return fake, sink, before_end

    fake, sink, before_end = asyncio.run(run())
    assert before_end == ["lwUplinkDown", "lwUplinkUp", "lwUplinkDown"]
    assert fake.names() == before_end + ["lwUplinkFlapping"]
    summary = values(fake.notifications("lwUplinkFlapping")[0])
    assert summary == {"lwUplinkName": "wan2", "lwUplinkState": mib.STATE_VALUES["UP"],
                       "lwUplinkTransitions": 13, "lwUplinkSuppressedTraps": 3}
    assert sink.suppressed() == {"wan1": 0, "wan2": 3}  # the three DOWNs after the first two traps
    assert sink.stats()["summaries"] == 1


def test_traffic_moves_have_their_own_budget_and_summary():
    async def run():
        fake = FakeSender()
        sink = TrapSink(config(V2C, burst=1, window=0.3), ["wan1", "wan2"], sender=fake)
        await sink.handle(moved((), ("wan1",)))
        await sink.handle(change("wan1", "UP", "DOWN"))  # another budget: sent
        await sink.handle(moved(("wan1",), ("wan2",)))  # held back
        await sink.handle(moved(("wan2",), ("wan1",)))  # held back
        await sink.handle(moved(("wan1",), ("wan2",)))  # held back
        await settle(sink, 0.5)
        await sink.close()
        return fake, sink

    fake, sink = asyncio.run(run())
    assert fake.names() == ["lwActiveChanged", "lwUplinkDown", "lwActiveChanged"]
    summary = values(fake.notifications("lwActiveChanged")[1])
    assert summary["lwActiveUplinks"] == "wan2"
    assert summary["lwPreviousActiveUplinks"] == "wan1", "previous = what the receivers last heard"
    assert "3 traffic move(s) held back" in summary["lwActiveReason"]
    assert sink.stats()["suppressed_active"] == 3 and sink.suppressed() == {"wan1": 0, "wan2": 0}


def dampened(uplink: str, on: bool, penalty: float) -> UplinkDampened:
    return UplinkDampened(at=time.time(), mono=0.0, uplink=uplink, dampened=on, penalty=penalty)


def quota(uplink: str, percent: int, used: int, limit: int) -> QuotaReached:
    return QuotaReached(at=time.time(), mono=0.0, uplink=uplink, percent=percent, used=used, quota=limit)


def test_dampening_and_quota_notifications():
    async def run():
        fake = FakeSender()
        sink = TrapSink(config(V2C, V3, burst=10), ["wan1", "lte"], sender=fake)
        await sink.handle(moved((), ("wan1",)))
        await sink.handle(change("wan1", "UP", "DOWN"))
        await sink.handle(moved(("wan1",), ("lte",)))
        await sink.handle(dampened("wan1", True, 3.5))  # as the engine publishes it: after the DOWN
        await sink.handle(change("wan1", "DOWN", "RISING"))
        await sink.handle(change("wan1", "RISING", "UP"))  # still news after the dampening: it was DOWN
        await sink.handle(quota("lte", 80, 16_000_000_000, 20_000_000_000))
        await sink.handle(dampened("wan1", False, 0.98))
        await settle(sink)
        await sink.close()
        return fake, sink

    fake, sink = asyncio.run(run())
    assert fake.names(0) == fake.names(1) == ["lwActiveChanged", "lwUplinkDown", "lwActiveChanged",
                                              "lwUplinkDampenedChange", "lwUplinkUp", "lwUplinkQuotaReached",
                                              "lwUplinkDampenedChange"]
    on, off = fake.notifications("lwUplinkDampenedChange")
    assert values(on) == {"lwUplinkName": "wan1", "lwUplinkState": mib.STATE_VALUES["DOWN"],
                          "lwUplinkDampened": mib.TRUE, "lwUplinkFlapPenalty": 350, "lwActiveUplinks": "lte"}
    assert values(off) == {"lwUplinkName": "wan1", "lwUplinkState": mib.STATE_VALUES["UP"],
                           "lwUplinkDampened": mib.FALSE, "lwUplinkFlapPenalty": 98, "lwActiveUplinks": "lte"}
    assert on.varbinds[0][0][-1] == 1  # wan1's row
    reached = fake.notifications("lwUplinkQuotaReached")[0]
    assert values(reached) == {"lwUplinkName": "lte", "lwQuotaThreshold": 80, "lwUplinkMonthTraffic": 16_000,
                               "lwUplinkQuota": 20_000, "lwActiveUplinks": "lte"}
    assert reached.varbinds[0][0][-1] == 2  # lte's row
    assert sink.stats()["notifications"] == 7


def test_dampening_and_quota_notifications_share_the_uplinks_storm_budget():
    async def run():
        fake = FakeSender()
        sink = TrapSink(config(V2C, burst=2, window=0.3), ["wan1", "lte"], sender=fake)
        await sink.handle(change("wan1", "UP", "DOWN"))
        await sink.handle(dampened("wan1", True, 3.0))
        await sink.handle(quota("wan1", 100, 20_000_000_000, 20_000_000_000))  # held back: third in the window
        await sink.handle(quota("lte", 80, 1, 1))  # another uplink, another budget
        await settle(sink)
        before_end = list(fake.names())
        await settle(sink, 0.5)
        await sink.close()
        return fake, sink, before_end

    fake, sink, before_end = asyncio.run(run())
    assert before_end == ["lwUplinkDown", "lwUplinkDampenedChange", "lwUplinkQuotaReached"]
    assert fake.names() == before_end + ["lwUplinkFlapping"]
    assert values(fake.notifications("lwUplinkQuotaReached")[0])["lwUplinkName"] == "lte"
    assert values(fake.notifications("lwUplinkFlapping")[0]) == {
        "lwUplinkName": "wan1", "lwUplinkState": mib.STATE_VALUES["DOWN"], "lwUplinkTransitions": 1,
        "lwUplinkSuppressedTraps": 1}
    assert sink.suppressed() == {"wan1": 1, "lte": 0}


def test_events_of_unknown_uplinks_are_ignored():
    async def run():
        fake = FakeSender()
        sink = TrapSink(config(), ["wan1"], sender=fake)
        await sink.handle(change("ghost", "UP", "DOWN"))
        await sink.handle(dampened("ghost", True, 4.0))
        await sink.handle(quota("ghost", 80, 8, 10))
        await settle(sink)
        await sink.close()
        return fake

    assert asyncio.run(run()).sent == []


def test_stats_and_logs_never_contain_a_secret(caplog):
    caplog.set_level(logging.DEBUG)

    async def run():
        leak = TrapError(f"library said: community {COMMUNITY} key {AUTH_KEY}/{PRIV_KEY}")
        fake = FakeSender(fail={0: leak, 1: RuntimeError(PRIV_KEY)})
        sink = TrapSink(config(V2C, V3, burst=1, window=0.2), ["wan1"], sender=fake)
        for _ in range(3):
            await sink.handle(change("wan1", "UP", "DOWN"))
            await sink.handle(change("wan1", "DOWN", "UP"))
        await settle(sink, 0.4)
        st = sink.stats()
        await sink.close()
        return st

    st = asyncio.run(run())
    assert st["failed"] == 4, "both receivers failed the first send and the summary"
    assert "***" in st["receivers"][0]["last_error"]
    text = repr(st) + caplog.text + repr(config(V2C, V3))
    assert "snmp receiver 10.77.0.2:162 (v2c trap): lwUplinkDown: library said" in caplog.text, "errors are logged"
    for secret in (COMMUNITY, AUTH_KEY, PRIV_KEY):
        assert secret not in text


# --- the real sender, on loopback -------------------------------------------------------------------------


def test_pysnmp_sender_puts_a_v2c_trap_on_the_wire():
    from pyasn1.codec.ber import decoder
    from pysnmp.proto import api

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    port = sock.getsockname()[1]
    rx = TrapReceiverConfig("127.0.0.1", port, "2c", community=COMMUNITY)

    async def run():
        sink = TrapSink(config(rx), ["wan1", "wan2"])
        assert isinstance(sink._sender, PysnmpSender)
        await sink.handle(change("wan2", "UP", "DOWN"))
        data = await asyncio.get_running_loop().run_in_executor(None, sock.recv, 65535)
        await sink.close()
        return data, sink.stats()

    try:
        data, st = asyncio.run(run())
    finally:
        sock.close()
    proto = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    msg, _ = decoder.decode(data, asn1Spec=proto.Message())
    assert bytes(proto.apiMessage.get_community(msg)) == COMMUNITY.encode()
    pdu = proto.apiMessage.get_pdu(msg)
    assert pdu.tagSet == proto.SNMPv2TrapPDU.tagSet
    binds = [(tuple(oid), val) for oid, val in proto.apiPDU.get_varbinds(pdu)]
    layout = mib.Layout.from_text(mib_base())
    assert binds[0][0] == SYS_UPTIME and binds[1] == (SNMP_TRAP_OID, binds[1][1])
    assert tuple(binds[1][1]) == layout.notification("lwUplinkDown")
    assert binds[2] == (layout.column("lwUplinkName", 2), binds[2][1]) and str(binds[2][1]) == "wan2"
    assert int(dict(binds)[layout.column("lwUplinkState", 2)]) == mib.STATE_VALUES["DOWN"]
    assert st["receivers"][0]["sent"] == 1 and st["failed"] == 0
    assert COMMUNITY not in repr(st)


def test_pysnmp_sender_puts_a_quota_trap_with_gauges_on_the_wire():
    from pyasn1.codec.ber import decoder
    from pysnmp.proto import api, rfc1902

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    rx = TrapReceiverConfig("127.0.0.1", sock.getsockname()[1], "2c", community=COMMUNITY)

    async def run():
        sink = TrapSink(config(rx), ["wan1", "lte"])
        await sink.handle(quota("lte", 100, 20_123_456_789, 20_000_000_000))
        data = await asyncio.get_running_loop().run_in_executor(None, sock.recv, 65535)
        await sink.close()
        return data

    try:
        data = asyncio.run(run())
    finally:
        sock.close()
    proto = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    msg, _ = decoder.decode(data, asn1Spec=proto.Message())
    binds = dict((tuple(oid), val) for oid, val in proto.apiPDU.get_varbinds(proto.apiMessage.get_pdu(msg)))
    layout = mib.Layout.from_text(mib_base())
    assert tuple(binds[SNMP_TRAP_OID]) == layout.notification("lwUplinkQuotaReached")
    assert int(binds[layout.notify_object("lwQuotaThreshold")]) == 100
    traffic, limit = binds[layout.column("lwUplinkMonthTraffic", 2)], binds[layout.column("lwUplinkQuota", 2)]
    assert isinstance(traffic, rfc1902.Gauge32) and isinstance(limit, rfc1902.Gauge32)
    assert (int(traffic), int(limit)) == (20_123, 20_000)


def test_pysnmp_sender_reports_a_v3_user_missing_from_the_config():
    rx = TrapReceiverConfig("127.0.0.1", 9, "3", user="nobody", level="authPriv")

    async def run():
        sink = TrapSink(config(rx), ["wan1"])
        await sink.handle(change("wan1", "UP", "DOWN"))
        for _ in range(250):  # the set-up imports pysnmp first
            if sink.stats()["failed"]:
                break
            await asyncio.sleep(0.02)
        await sink.close()
        return sink.stats()

    st = asyncio.run(run())["receivers"][0]
    assert st["failed"] == 1 and "'nobody' is not in [snmp.users]" in st["last_error"]


def test_up_is_sent_when_the_receivers_last_heard_down_or_degraded():
    """Whatever way the uplink comes back (RISING, FALLING after DEGRADED, INIT after a disable),
    UP is sent once the receivers heard DOWN or DEGRADED, and never otherwise."""
    async def run():
        fake = FakeSender()
        sink = TrapSink(config(V2C, burst=100), ["wan1", "wan2"], sender=fake)
        for old, new in (("INIT", "UP"), ("UP", "FALLING"), ("FALLING", "UP"),  # a scare: nothing
                         ("UP", "DEGRADED"), ("DEGRADED", "FALLING"), ("FALLING", "UP"),  # Degraded, Up
                         ("UP", "FALLING"), ("FALLING", "DOWN"), ("DOWN", "RISING"), ("RISING", "UP"),  # Down, Up
                         ("UP", "DISABLED"), ("DISABLED", "INIT"), ("INIT", "UP")):  # nothing heard: nothing
            await sink.handle(change("wan1", old, new))
        await settle(sink)
        await sink.close()
        return fake

    fake = asyncio.run(run())
    assert fake.names(0) == ["lwUplinkDegraded", "lwUplinkUp", "lwUplinkDown", "lwUplinkUp"]
