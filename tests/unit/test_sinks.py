"""SinkRunner: every event to every sink; failures, hangs and slowness stay contained."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from linkwatch.core.events import ActiveChanged, EngineEvent, QuotaReached, UplinkDampened, UplinkStateChanged, \
    event_to_dict
from linkwatch.sinks.log import LogSink, format_event
from linkwatch.sinks.runner import SinkError, SinkRunner


def ev(i: int) -> EngineEvent:
    return EngineEvent(at=1000.0 + i, mono=float(i), what="started", detail=str(i))


class Recorder:
    """A sink that records events; ``mode`` makes it slow, raise, hang or time out itself."""

    def __init__(self, name: str, timeout: float = 1.0, mode: str = "ok", delay: float = 0.0):
        self.name = name
        self.timeout = timeout
        self.mode = mode
        self.delay = delay
        self.got: list = []
        self.closed = False

    async def handle(self, event) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "raise":
            raise RuntimeError(f"trap receiver unreachable for {event.detail}")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "own_timeout":
            raise TimeoutError("socket timed out")
        self.got.append(event)

    async def close(self) -> None:
        self.closed = True


async def wait_until(cond, limit: float = 5.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_failing_hanging_and_slow_sinks_do_not_hold_back_the_others():
    async def main():
        good = Recorder("good")
        bad = Recorder("bad", mode="raise")
        hung = Recorder("hung", timeout=0.2, mode="hang")
        slow = Recorder("slow", delay=0.02)
        runner = SinkRunner([hung, bad, slow, good])
        await runner.start()
        events = [ev(i) for i in range(5)]
        t0 = time.monotonic()
        for e in events:
            runner.publish(e)
        await wait_until(lambda: len(good.got) == 5, limit=0.15)
        assert time.monotonic() - t0 < 0.15  # the hung sink has not even timed out once yet
        assert runner.stats()["hung"]["timed_out"] == 0
        await wait_until(lambda: runner.stats()["hung"]["timed_out"] == 5)
        await wait_until(lambda: len(slow.got) == 5)
        await runner.stop(drain_timeout=1.0)
        assert good.got == events and slow.got == events
        stats = runner.stats()
        assert stats["good"] == {"handled": 5, "failed": 0, "timed_out": 0, "dropped": 0,
                                 "last_error": None, "queued": 0}
        assert stats["bad"]["failed"] == 5 and stats["bad"]["handled"] == 0
        assert "RuntimeError: trap receiver unreachable for 4" == stats["bad"]["last_error"]
        assert stats["hung"]["timed_out"] == 5 and "timed out after 0.2s" in stats["hung"]["last_error"]
        assert all(s.closed for s in (good, bad, hung, slow))

    asyncio.run(main())


def test_publish_of_1000_events_is_immediate_even_with_stuck_sinks():
    async def main():
        sinks = [Recorder("hung", timeout=30, mode="hang"), Recorder("slow", delay=0.5),
                 Recorder("good")]
        runner = SinkRunner(sinks, queue_size=100)  # the stuck ones overflow too
        await runner.start()
        events = [ev(i) for i in range(1000)]
        t0 = time.perf_counter()
        for e in events:
            runner.publish(e)
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.050, f"publish of 1000 events took {elapsed * 1000:.1f} ms"
        assert runner.stats()["hung"]["dropped"] == 900
        await runner.stop(drain_timeout=0.0)

    asyncio.run(main())


def test_overflow_drops_oldest_counts_and_warns_once_per_burst(caplog):
    async def main():
        rec = Recorder("rec")
        runner = SinkRunner([rec], queue_size=3)
        events = [ev(i) for i in range(10)]
        with caplog.at_level(logging.INFO, logger="linkwatch.sinks.runner"):
            for e in events[:5]:  # not started yet: the queue fills up
                runner.publish(e)
            assert runner.stats()["rec"]["dropped"] == 2
            assert runner.stats()["rec"]["queued"] == 3
            await runner.start()
            await wait_until(lambda: len(rec.got) == 3)
            assert rec.got == events[2:5]  # the oldest two were dropped
            await asyncio.sleep(0.01)  # let the worker see the empty queue: the burst ends
            await runner.stop(drain_timeout=0.0)
        full = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(full) == 1 and full[0].levelno == logging.WARNING
        assert any("2 event(s) dropped" in r.getMessage() for r in caplog.records)

    asyncio.run(main())


def test_a_new_burst_warns_again(caplog):
    async def main():
        rec = Recorder("rec")
        runner = SinkRunner([rec], queue_size=2)
        with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.runner"):
            for i in range(4):
                runner.publish(ev(i))
            for i in range(4):
                runner.publish(ev(i))  # same burst: no new warning
            await runner.start()
            await wait_until(lambda: len(rec.got) == 2)
            await asyncio.sleep(0.01)
            for i in range(4):  # a second burst, after the queue ran empty
                runner.publish(ev(10 + i))
            await runner.stop(drain_timeout=1.0)
        warnings = [r for r in caplog.records if "queue full" in r.getMessage()]
        return warnings, runner.stats()["rec"], rec.got

    warnings, stats, got = asyncio.run(main())
    assert stats["dropped"] == 8
    assert got == [ev(2), ev(3), ev(12), ev(13)]
    assert len(warnings) == 2


def test_stop_drains_queued_events():
    async def main():
        rec = Recorder("rec", delay=0.01)
        runner = SinkRunner([rec])
        await runner.start()
        events = [ev(i) for i in range(20)]
        for e in events:
            runner.publish(e)
        await runner.stop(drain_timeout=5.0)
        return rec, runner.stats()["rec"]

    rec, stats = asyncio.run(main())
    assert rec.got == [ev(i) for i in range(20)]
    assert stats["handled"] == 20 and stats["dropped"] == 0 and rec.closed


def test_stop_gives_up_after_drain_timeout_and_counts_the_rest():
    async def main():
        hung = Recorder("hung", timeout=60, mode="hang")
        runner = SinkRunner([hung])
        await runner.start()
        for i in range(3):
            runner.publish(ev(i))
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await runner.stop(drain_timeout=0.1)
        took = time.monotonic() - t0
        runner.publish(ev(99))  # after stop: ignored, counted, never raises
        return took, hung, runner.stats()["hung"]

    took, hung, stats = asyncio.run(main())
    assert 0.09 <= took < 1.0
    assert stats["dropped"] == 4 and stats["handled"] == 0 and stats["queued"] == 0
    assert hung.closed


def test_a_sinks_own_timeout_error_is_a_failure_not_a_timeout():
    async def main():
        s = Recorder("snmp", timeout=5, mode="own_timeout")
        runner = SinkRunner([s])
        await runner.start()
        runner.publish(ev(1))
        await wait_until(lambda: runner.stats()["snmp"]["failed"] == 1)
        await runner.stop()
        return runner.stats()["snmp"]

    stats = asyncio.run(main())
    assert stats["timed_out"] == 0 and stats["last_error"] == "TimeoutError: socket timed out"


def test_failures_warn_once_per_streak_and_recovery_is_logged(caplog):
    async def main():
        s = Recorder("traps", mode="raise")
        runner = SinkRunner([s])
        await runner.start()
        with caplog.at_level(logging.DEBUG, logger="linkwatch.sinks.runner"):
            for i in range(3):
                runner.publish(ev(i))
            await wait_until(lambda: runner.stats()["traps"]["failed"] == 3)
            s.mode = "ok"
            runner.publish(ev(3))
            await wait_until(lambda: runner.stats()["traps"]["handled"] == 1)
        await runner.stop()

    asyncio.run(main())
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "linkwatch.sinks.runner"]
    warnings = [m for lvl, m in msgs if lvl == logging.WARNING]
    assert warnings == ["sink traps: RuntimeError: trap receiver unreachable for 0"]
    assert (logging.INFO, "sink traps: recovered after 3 failed event(s)") in msgs


def test_publish_before_start_is_delivered_after_start():
    async def main():
        rec = Recorder("rec")
        runner = SinkRunner([rec])
        runner.publish(ev(1))
        await runner.start()
        await runner.stop()
        return rec.got

    assert asyncio.run(main()) == [ev(1)]


@pytest.mark.parametrize(
    "sinks, queue_size, needle",
    [
        ([Recorder("a"), Recorder("a")], 10, "duplicate sink name(s): ['a']"),
        ([Recorder("a")], 0, "queue_size must be >= 1, got 0"),
        ([Recorder("a", timeout=0)], 10, "sink 'a': timeout must be > 0, got 0"),
    ],
)
def test_bad_setup_is_rejected(sinks, queue_size, needle):
    with pytest.raises(SinkError) as info:
        SinkRunner(sinks, queue_size=queue_size)
    assert needle in str(info.value)


# --- LogSink ---------------------------------------------------------------------------------

DOWN = UplinkStateChanged(at=1.0, mono=1.0, uplink="wan1", interface="eth1", old="UP", new="DOWN",
                          reason="3 failed rounds", loss_pct=100.0, rtt_ms=None, jitter_ms=None)


def test_format_uplink_change_matches_style_guide():
    assert format_event(DOWN) == "uplink=wan1 UP -> DOWN loss=100% rtt=- reason=3 failed rounds"


def test_format_uplink_change_with_numbers():
    degraded = UplinkStateChanged(at=1.0, mono=1.0, uplink="lte", interface="wwan0", old="UP",
                                  new="DEGRADED", reason="loss 64% > 40%", loss_pct=64.04,
                                  rtt_ms=87.26, jitter_ms=12.0)
    assert format_event(degraded) == (
        "uplink=lte UP -> DEGRADED loss=64% rtt=87.3ms jitter=12ms reason=loss 64% > 40%")


def test_format_active_and_engine():
    assert format_event(ActiveChanged(1.0, 1.0, ("wan1",), ("wan2",), "wan1 DOWN")) == (
        "active wan1 -> wan2 reason=wan1 DOWN")
    assert format_event(ActiveChanged(1.0, 1.0, ("wan1", "wan2"), (), "all down")) == (
        "active wan1,wan2 -> - reason=all down")
    assert format_event(EngineEvent(1.0, 1.0, "reloaded", "1 uplink changed")) == (
        "engine reloaded detail=1 uplink changed")
    assert format_event(EngineEvent(1.0, 1.0, "started")) == "engine started"


def test_log_sink_logs_at_info(caplog):
    logger = logging.getLogger("test.linkwatch.logsink")
    sink = LogSink(logger)
    with caplog.at_level(logging.INFO, logger="test.linkwatch.logsink"):
        asyncio.run(sink.handle(DOWN))
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("test.linkwatch.logsink", logging.INFO,
         "uplink=wan1 UP -> DOWN loss=100% rtt=- reason=3 failed rounds")]


def test_format_dampening_and_quota():
    assert format_event(UplinkDampened(1.0, 1.0, "wan1", True, 3.5)) == "uplink=wan1 dampened penalty=3.5"
    assert format_event(UplinkDampened(1.0, 1.0, "wan1", False, 0.94)) == (
        "uplink=wan1 no longer dampened penalty=0.9")
    assert format_event(QuotaReached(1.0, 1.0, "lte", 80, 16_000_000_000, 20_000_000_000)) == (
        "uplink=lte quota 80% reached: 16.0GB of 20.0GB")
    assert format_event(QuotaReached(1.0, 1.0, "lte", 100, 512_300_000, 500_000_000)) == (
        "uplink=lte quota 100% reached: 512.3MB of 500.0MB")


def test_history_lists_dampening_and_quota_events_in_the_logs_words():
    from linkwatch.commands.history import format_lines

    rows = [{"id": 1, **event_to_dict(UplinkDampened(1_700_000_000.0, 1.0, "wan1", True, 3.25))},
            {"id": 2, **event_to_dict(QuotaReached(1_700_000_060.0, 2.0, "lte", 80, 16 * 10**9, 20 * 10**9))}]
    lines = format_lines(rows)
    assert lines[0].split("  ", 1)[1].split() == ["dampened", "wan1", "uplink=wan1", "dampened", "penalty=3.2"]
    assert lines[1].endswith("  quota     lte   uplink=lte quota 80% reached: 16.0GB of 20.0GB")


def test_log_sink_warns_when_a_quota_is_used_up(caplog):
    logger = logging.getLogger("test.linkwatch.logsink")
    sink = LogSink(logger)
    with caplog.at_level(logging.INFO, logger="test.linkwatch.logsink"):
        asyncio.run(sink.handle(QuotaReached(1.0, 1.0, "lte", 80, 16 * 10**9, 20 * 10**9)))
        asyncio.run(sink.handle(QuotaReached(1.0, 1.0, "lte", 100, 20 * 10**9, 20 * 10**9)))
        asyncio.run(sink.handle(UplinkDampened(1.0, 1.0, "wan1", True, 3.0)))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "uplink=lte quota 80% reached: 16.0GB of 20.0GB"),
        (logging.WARNING, "uplink=lte quota 100% reached: 20.0GB of 20.0GB"),
        (logging.INFO, "uplink=wan1 dampened penalty=3")]
