"""The history database: schema migrations, the batching rule (pure and with real SQLite under fake
time), retention and file size, a failing disk that never delays the event loop, the read-only
reader, parse_since and the `linkwatch history` command. No root needed: every file is on tmp_path."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sqlite3
import struct
import time
from pathlib import Path

import pytest

from linkwatch.config import HistoryConfig
from linkwatch.core.events import (ActiveChanged, AdminAction, EngineEvent, QuotaReached, UplinkDampened, UplinkSamples,
                                   UplinkStateChanged)
from linkwatch.history import (
    MIGRATION_SET,
    SAMPLE_COLUMNS,
    Batch,
    BatchPolicy,
    Batcher,
    HistoryError,
    HistoryReader,
    HistoryStore,
    Prune,
    applied_migrations,
    choose_step,
    commit_delay,
    event_row,
    parse_since,
    round_step,
    sample_row,
)
from linkwatch.sinks.history import HistorySink
from linkwatch.sinks.runner import SinkRunner

BASE = 1_764_000_000.0  # a wall time divisible by 3600 (and by 240)
MIGRATIONS = ["m001_events_and_samples", "m002_uplink_indexes_and_meta", "m003_interface_traffic",
              "m004_sample_family"]


# ---------------------------------------------------------------------------------------------
# helpers


def state(at: float, uplink: str = "wan1", old: str = "UP", new: str = "DOWN", reason: str = "3 failed rounds",
          loss: float | None = 100.0) -> UplinkStateChanged:
    return UplinkStateChanged(at=at, mono=at - BASE, uplink=uplink, interface="eth1", old=old, new=new,
                              reason=reason, loss_pct=loss, rtt_ms=None, jitter_ms=None)


def engine(at: float, detail: str = "") -> EngineEvent:
    return EngineEvent(at=at, mono=at - BASE, what="reloaded", detail=detail)


def sample(start: float, uplink: str = "wan1", period: float = 60.0, sent: int = 10, lost: int = 0,
           rtt: float | None = 10.0, rmin: float | None = None, rmax: float | None = None,
           jitter: float | None = 1.0) -> UplinkSamples:
    return UplinkSamples(at=start + period, mono=start - BASE, uplink=uplink, start=start, sent=sent, lost=lost,
                         loss_pct=100.0 * lost / sent if sent else None, rtt_avg_ms=rtt,
                         rtt_min_ms=rtt if rmin is None else rmin, rtt_max_ms=rtt if rmax is None else rmax,
                         jitter_ms=jitter)


def recent(i: int, uplink: str = "wan1") -> UplinkSamples:
    """A sample from the last hour (older ones would be pruned by the default keep_samples)."""
    return sample(time.time() - 3600 + i, uplink)


def wal_commits(path: str | Path) -> int:
    """Commit frames in the current generation of the -wal file (read from the file format, not
    from any counter of ours): a frame whose 'database size after commit' field is non-zero."""
    wal = Path(str(path) + "-wal")
    if not wal.exists():
        return 0
    data = wal.read_bytes()
    if len(data) < 32:
        return 0
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    count, off = 0, 32
    while off + 24 + page_size <= len(data):
        header = data[off:off + 24]
        if header[8:16] != salt:
            break  # a frame of an older generation: the log ends here
        if struct.unpack(">I", header[4:8])[0] != 0:
            count += 1
        off += 24 + page_size
    return count


class DataVersion:
    """A second connection that notices every commit made by another connection."""

    def __init__(self, path: str | Path):
        self.conn = sqlite3.connect(str(path))
        self.last = self.read()

    def read(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def changed(self) -> bool:
        now = self.read()
        changed, self.last = now != self.last, now
        return changed

    def close(self) -> None:
        self.conn.close()


def count(path: str | Path, table: str) -> int:
    with sqlite3.connect(str(path)) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def simulate(batcher: Batcher, store: HistoryStore, arrivals: list[tuple[float, object]], until: float,
             watcher: DataVersion | None = None, start: float = 0.0) -> list[dict]:
    """Drive a Batcher and a real store with fake time: events arrive at their times, a commit
    happens exactly when due_in() says so. Returns one record per commit."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    commits: list[dict] = []
    now, i = start, 0
    while True:
        next_arrival = arrivals[i][0] if i < len(arrivals) else math.inf
        delay = batcher.due_in(now)
        due_at = now + delay if delay is not None else math.inf
        t = min(next_arrival, due_at)
        if t > until:
            return commits
        now = t
        if next_arrival <= due_at:
            while i < len(arrivals) and arrivals[i][0] <= now:
                batcher.add(arrivals[i][1], now)
                i += 1
            continue
        batch = batcher.take(now, BASE + now)
        result = store.write(batch)
        batcher.committed(batch, result, now, BASE + now)
        commits.append({"t": now, "events": len(batch.events), "samples": len(batch.samples),
                        "prune": batch.prune, "seen": watcher.changed() if watcher else None})


async def wait_for(cond, limit: float = 5.0, step: float = 0.01) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < limit, "condition not reached in time"
        await asyncio.sleep(step)
    return time.monotonic() - t0


class LoopLag:
    """A ticker task: how late the event loop wakes it (the engine's view of a stalled loop)."""

    def __init__(self, tick: float = 0.01):
        self.tick = tick
        self.worst = 0.0
        self.ticks = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.tick)
            self.worst = max(self.worst, time.perf_counter() - t - self.tick)
            self.ticks += 1

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()


def hcfg(path, **kw) -> HistoryConfig:
    return HistoryConfig(path=str(path), **kw)


# ---------------------------------------------------------------------------------------------
# schema and migrations


def test_fresh_database_gets_the_schema_wal_and_incremental_auto_vacuum(tmp_path):
    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    assert store.migrated == MIGRATIONS
    c = store.conn
    assert c.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"events", "samples", "meta", "_sqlite_migrations"} <= tables
    indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_at", "events_uplink_at", "events_kind_at", "samples_start", "samples_uplink_start"} <= indexes
    assert applied_migrations(c) == MIGRATIONS
    names = [r[0] for r in c.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?", (MIGRATION_SET,))]
    assert names == MIGRATIONS
    store.close()


def test_opening_again_applies_nothing_and_commits_nothing(tmp_path):
    path = tmp_path / "h.db"
    HistoryStore(str(path)).close()
    assert not Path(str(path) + "-wal").exists()  # a clean close leaves rollback mode for readers
    first = HistoryStore(str(path))
    assert first.migrated == []
    watcher, wal_before = DataVersion(path), wal_commits(path)
    again = HistoryStore(str(path))  # a second open while the first is in use
    assert again.migrated == []
    assert wal_commits(path) == wal_before and not watcher.changed()  # no write at all
    assert applied_migrations(again.conn) == MIGRATIONS  # still one record each
    again.close()
    first.close()
    watcher.close()


def test_a_database_with_only_the_first_migration_is_upgraded_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    old = HistoryStore(str(path), stop_before=MIGRATIONS[1])
    assert old.migrated == MIGRATIONS[:1]
    old.conn.execute("INSERT INTO events (at, kind, uplink, data) VALUES (?, ?, ?, ?)", event_row(state(BASE)))
    old.conn.execute("INSERT INTO samples (uplink, start, at, sent, lost, loss_pct, rtt_avg_ms, rtt_min_ms, "
                     "rtt_max_ms, jitter_ms) VALUES (?,?,?,?,?,?,?,?,?,?)", sample_row(sample(BASE))[:10])
    old.close()
    reader = HistoryReader(str(path), clock=lambda: BASE + 3600)
    assert reader.sample_period() == 60.0  # no meta table yet: from the newest row
    assert [e["kind"] for e in reader.events()] == ["uplink_state"]
    reader.close()
    store = HistoryStore(str(path))
    assert store.migrated == MIGRATIONS[1:]
    assert applied_migrations(store.conn) == MIGRATIONS
    assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert store.conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 1
    assert store.conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 0
    assert store.conn.execute("SELECT rx_bytes, tx_bytes FROM samples").fetchone() == (0, 0), "old rows: 0 bytes"
    assert store.conn.execute("SELECT family FROM samples").fetchone() == (4,), "old rows are IPv4's"
    store.close()


def test_ipv6_samples_are_rows_of_their_own_and_read_apart(tmp_path):
    """A dual-stack uplink's IPv6 probes (family 6) neither mix into IPv4's points nor go missing;
    a reader of a database from before the family column reads its rows as IPv4's."""
    from dataclasses import replace

    old_path = tmp_path / "m003.db"
    old = HistoryStore(str(old_path), stop_before="m004_sample_family")
    old.conn.execute(f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS[:-1])}) VALUES "
                     f"({', '.join('?' * (len(SAMPLE_COLUMNS) - 1))})", sample_row(sample(BASE))[:-1])
    old.conn.commit()
    old.close()
    with HistoryReader(str(old_path), clock=lambda: BASE + 600) as r:
        assert list(r.samples(BASE, step=60)["uplinks"]) == ["wan1"]
        assert r.samples(BASE, step=60, family=6)["uplinks"] == {}
    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    four = sample(BASE, "wan1", sent=10, lost=0, rtt=10.0, rmin=8.0, rmax=12.0, jitter=1.0)
    six = replace(sample(BASE, "wan1", sent=10, lost=5, rtt=40.0, rmin=30.0, rmax=50.0, jitter=3.0), family=6)
    store.write(Batch(samples=[sample_row(four), sample_row(six)], meta={"sample_period": "60.0"}))
    store.close()
    with HistoryReader(str(path), clock=lambda: BASE + 600) as r:
        v4, v6 = r.samples(BASE, step=60)["uplinks"]["wan1"], r.samples(BASE, step=60, family=6)["uplinks"]["wan1"]
        assert (v4[0]["lost"], v4[0]["rtt_avg_ms"]) == (0, 10.0)
        assert (v6[0]["lost"], v6[0]["loss_pct"], v6[0]["rtt_avg_ms"]) == (5, 50.0, 40.0)


def test_the_months_traffic_is_summed_from_the_samples(tmp_path):
    from dataclasses import replace

    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    rows = [sample_row(replace(sample(BASE + 60 * i), rx_bytes=1000 * i, tx_bytes=10)) for i in range(3)]
    store.conn.executemany(f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(SAMPLE_COLUMNS))})", rows)
    store.conn.commit()
    store.close()
    with HistoryReader(str(path)) as reader:
        assert reader.traffic_since(BASE) == {rows[0][0]: 3000 + 30}
        assert reader.traffic_since(BASE + 61) == {rows[0][0]: 2000 + 10}


# ---------------------------------------------------------------------------------------------
# the batching rule (pure)

P = BatchPolicy(commit_interval=10.0, event_delay=2.0)


def delay(**kw):
    args = dict(pending_events=0, pending_samples=0, first_event_at=None, first_sample_at=None,
                last_commit_at=None, failures=0, last_failure_at=None, now=100.0)
    args.update(kw)
    return commit_delay(P, **args)


def test_commit_delay_rules():
    assert delay() is None  # nothing pending: sleep until something arrives
    # samples: commit_interval after the first one, and commit_interval after the last commit
    assert delay(pending_samples=4, first_sample_at=100.0) == 10.0
    assert delay(pending_samples=4, first_sample_at=95.0, last_commit_at=50.0) == 5.0
    assert delay(pending_samples=4, first_sample_at=95.0, last_commit_at=99.0) == 9.0
    assert delay(pending_samples=4, first_sample_at=80.0, last_commit_at=60.0) == 0.0
    # an event: event_delay less a margin after it arrived, whatever the last commit was
    assert P.event_wait == pytest.approx(1.8)
    assert delay(pending_events=1, first_event_at=100.0, last_commit_at=99.9) == pytest.approx(1.8)
    assert delay(pending_events=1, pending_samples=3, first_event_at=99.0, first_sample_at=91.0,
                 last_commit_at=91.0) == pytest.approx(0.8)
    assert delay(pending_events=1, pending_samples=3, first_event_at=99.5, first_sample_at=90.0,
                 last_commit_at=90.5) == pytest.approx(0.5)  # the samples were due first
    # failing: everything waits for the backoff, events too
    assert delay(pending_events=1, first_event_at=100.0, failures=1, last_failure_at=99.0) == 9.0
    assert delay(pending_events=1, first_event_at=100.0, failures=3, last_failure_at=99.0) == 39.0
    assert delay(pending_samples=1, first_sample_at=0.0, failures=9, last_failure_at=40.0) == 0.0


def test_retry_delay_doubles_from_the_commit_interval_and_is_capped():
    assert [P.retry_delay(n) for n in range(1, 6)] == [10.0, 20.0, 40.0, 60.0, 60.0]
    fast = BatchPolicy(commit_interval=0.2, event_delay=0.1)
    assert fast.retry_delay(10) == pytest.approx(1.2)
    assert BatchPolicy(event_delay=0.0).event_wait == 0.0


def test_buffer_is_bounded_samples_go_first_events_last():
    b = Batcher(BatchPolicy(max_pending_samples=5, max_pending_events=3))
    for i in range(8):
        b.add(sample(BASE + 60 * i), now=float(i))
    assert b.pending_samples == 5 and b.dropped_samples == 3  # samples alone: at most 5
    for i in range(3):
        b.add(engine(BASE + i, f"e{i}"), now=10.0)
    assert (b.pending_samples, b.pending_events, b.dropped_events) == (5, 3, 0)  # 8 rows: the budget
    for i in range(3, 9):
        b.add(engine(BASE + i, f"e{i}"), now=10.0)
    assert b.pending_samples == 0 and b.dropped_samples == 8  # every sample went before any event
    assert (b.pending_events, b.dropped_events) == (8, 1)
    batch = b.take(now=11.0, wall=BASE)
    assert [json.loads(r[3])["detail"] for r in batch.events] == [f"e{i}" for i in range(1, 9)]  # oldest dropped
    assert batch.samples == []


def test_a_failed_batch_goes_back_in_front_in_order_and_is_retried_with_its_prune():
    b = Batcher(BatchPolicy(commit_interval=10.0, event_delay=2.0, prune_interval=3600.0))
    b.add(engine(BASE, "a"), now=0.0)
    b.add(sample(BASE), now=0.0)
    first = b.take(now=2.0, wall=BASE + 2)
    assert first.prune is not None and first.meta == {"sample_period": "60.0"}  # prune at start
    b.add(engine(BASE + 3, "b"), now=3.0)
    assert b.pending_events == 2  # the one in flight counts as pending
    assert b.failed(first, "OperationalError: disk I/O error", now=4.0) is True
    assert b.failed(b.take(now=14.0, wall=BASE + 14), "again", now=15.0) is False  # same streak
    assert b.stats()["last_error"] == "again" and b.failures == 2
    assert b.due_in(now=15.0) == 20.0  # backoff: commit_interval * 2
    retry = b.take(now=35.0, wall=BASE + 35)
    assert [json.loads(r[3])["detail"] for r in retry.events] == ["a", "b"]
    assert retry.prune is not None and retry.meta  # neither was written yet
    from linkwatch.history import WriteResult
    rec = b.committed(retry, WriteResult(2, 1), now=35.1, wall=BASE + 35.1)
    assert rec is not None and (rec.failures, rec.events, rec.samples) == (2, 2, 1)
    b.add(engine(BASE + 40), now=40.0)
    later = b.take(now=42.0, wall=BASE + 42)
    assert later.prune is None and later.meta == {}  # the next prune is an hour later
    b.committed(later, WriteResult(1, 0), now=42.0, wall=BASE + 42)
    b.add(engine(BASE + 3700), now=3640.0)
    assert b.take(now=3642.0, wall=BASE + 3642).prune == Prune(BASE + 3642 - 30 * 86400, BASE + 3642 - 365 * 86400,
                                                               100_000)
    stats = b.stats()
    assert (stats["commits"], stats["events_written"], stats["samples_written"], stats["failed_commits"]) == (
        2, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# batching with real SQLite under fake time


def test_a_simulated_minute_of_samples_makes_at_most_one_commit_per_commit_interval(tmp_path):
    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    store.checkpoint()  # an empty -wal: from here on it holds exactly the commits made below
    watcher = DataVersion(path)
    policy = BatchPolicy(commit_interval=10.0, event_delay=2.0, sample_period=5.0)
    batcher = Batcher(policy)
    arrivals = [(float(t) + 0.001 * u, sample(BASE + t, f"wan{u}", period=5.0))
                for t in range(0, 60, 5) for u in range(4)]  # 48 samples over a minute
    commits = simulate(batcher, store, arrivals, until=60.0, watcher=watcher)
    assert len(commits) <= math.ceil(60 / policy.commit_interval)
    assert len(commits) >= 4  # and they are written, not held back
    gaps = [b["t"] - a["t"] for a, b in zip(commits, commits[1:])]
    assert min(gaps) >= policy.commit_interval
    assert all(c["seen"] for c in commits)  # the second connection saw each commit ...
    assert not watcher.changed()  # ... and nothing else
    assert wal_commits(path) == len(commits)  # the WAL holds exactly that many commits
    assert sum(c["samples"] for c in commits) == count(path, "samples")
    rest = batcher.take(60.0, BASE + 60)  # the final flush writes the rest
    store.write(rest)
    assert count(path, "samples") == 48
    store.close()
    watcher.close()


def test_simulated_events_are_written_within_event_delay_and_a_burst_shares_one_commit(tmp_path):
    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    watcher = DataVersion(path)
    policy = BatchPolicy(commit_interval=10.0, event_delay=2.0)
    batcher = Batcher(policy)
    arrivals = [(t, sample(BASE + t)) for t in range(0, 120, 60)]
    arrivals.append((12.3, state(BASE + 12.3)))  # a lone event
    arrivals += [(30.0 + 0.05 * i, engine(BASE + 30 + 0.05 * i, f"burst{i}")) for i in range(20)]  # 1 s burst
    commits = simulate(batcher, store, arrivals, until=100.0, watcher=watcher)
    lone = next(c for c in commits if c["t"] > 12.3)
    assert lone["events"] == 1 and lone["t"] - 12.3 <= policy.event_delay
    burst = [c for c in commits if 30.0 <= c["t"] < 40.0]
    assert len(burst) == 1 and burst[0]["events"] == 20 and burst[0]["t"] - 30.0 <= policy.event_delay
    assert all(c["seen"] for c in commits) and not watcher.changed()
    assert [(c["t"], c["events"], c["samples"]) for c in commits] == [
        (10.0, 0, 1), (pytest.approx(14.1), 1, 0), (pytest.approx(31.8), 20, 0), (70.0, 0, 1)]
    assert count(path, "events") == 21
    store.close()
    watcher.close()


# ---------------------------------------------------------------------------------------------
# retention and file size


def test_prune_by_age_and_by_count_in_the_same_commit_gives_pages_back(tmp_path):
    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    store.write(Batch(events=[event_row(engine(BASE + 60 * i, f"e{i}")) for i in range(100)],
                      samples=[sample_row(sample(BASE + 60 * i, f"wan{u}")) for i in range(100) for u in range(2)]))
    store.checkpoint()
    watcher = DataVersion(path)
    result = store.write(Batch(events=[event_row(engine(BASE + 6000, "new"))],
                               prune=Prune(samples_before=BASE + 60 * 50, events_before=BASE + 60 * 20,
                                           max_events=30)))
    assert watcher.changed() and wal_commits(path) == 1  # insert, deletes, vacuum: one commit
    assert (result.pruned_samples, result.pruned_events) == (100, 20 + 51)  # by age, then beyond 30
    c = store.conn
    assert c.execute("SELECT min(start), count(*) FROM samples").fetchone() == (BASE + 60 * 50, 100)
    details = [json.loads(r[0])["detail"] for r in c.execute("SELECT data FROM events ORDER BY id")]
    assert details == [f"e{i}" for i in range(71, 100)] + ["new"]  # the 30 newest
    assert c.execute("PRAGMA freelist_count").fetchone()[0] == 0  # incremental_vacuum ran
    assert result.freed_pages > 0
    store.close()
    watcher.close()


def test_file_size_stays_bounded_over_three_times_the_retention_and_shrinks_when_keep_drops(tmp_path):
    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    hours = 3600.0
    policy = BatchPolicy(commit_interval=60.0, event_delay=2.0, sample_period=10.0, keep_samples=2 * hours,
                         keep_events=2 * hours, max_events=100, prune_interval=600.0)
    batcher = Batcher(policy)
    arrivals = [(float(t), sample(BASE + t, f"wan{u}", period=10.0)) for t in range(0, 6 * 3600, 10) for u in range(4)]
    arrivals += [(float(t), state(BASE + t, "wan1")) for t in range(5, 6 * 3600, 120)]
    sizes, prunes, t0 = {}, 0, 0.0
    for end_hour in (2, 4, 6):  # 1x, 2x, 3x the retention; the batcher and the store carry over
        part = [a for a in arrivals if t0 <= a[0] < end_hour * hours]
        commits = simulate(batcher, store, part, until=end_hour * hours, start=t0)
        prunes += sum(1 for c in commits if c["prune"] is not None)
        t0 = end_hour * hours
        store.checkpoint()
        sizes[end_hour] = os.path.getsize(path)
        assert store.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] <= (2 * hours + 600 + 60) / 120 + 1
    assert prunes == pytest.approx(6 * hours / 600, abs=2)  # about once per prune_interval, not per commit
    assert sizes[6] <= sizes[2] * 1.25 and sizes[4] <= sizes[2] * 1.25, sizes
    kept = store.conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert kept <= 4 * (2 * hours + 600 + 60) / 10  # the retention plus one prune interval
    # a smaller keep_samples: the next prune hands the space back to the file system
    small = Batcher(BatchPolicy(commit_interval=60.0, sample_period=10.0, keep_samples=20 * 60,
                                keep_events=2 * hours, max_events=100))
    small.add(sample(BASE + 6 * hours), now=0.0)
    batch = small.take(now=0.0, wall=BASE + 6 * hours)
    store.write(batch)
    store.checkpoint()
    assert os.path.getsize(path) < sizes[6] * 0.5
    store.close()


# ---------------------------------------------------------------------------------------------
# the sink, in real time (small intervals)


def test_sink_writes_an_event_within_event_delay_and_a_burst_in_one_commit(tmp_path):
    path = tmp_path / "h.db"
    HistoryStore(str(path)).close()  # schema in place: the sink's commits are the only ones

    async def main():
        sink = HistorySink(hcfg(path, commit_interval=2.0, event_delay=0.4))
        t0 = time.monotonic()
        await sink.handle(state(time.time()))
        took = await wait_for(lambda: sink.stats()["events_written"] == 1)
        assert took < 0.4, f"event written after {took:.3f}s"
        assert count(path, "events") == 1  # visible to another connection at that moment
        assert wal_commits(path) == 1
        for i in range(20):
            await sink.handle(engine(time.time(), f"burst{i}"))
            await asyncio.sleep(0.005)
        await wait_for(lambda: sink.stats()["events_written"] == 21)
        assert time.monotonic() - t0 < 2.0
        await asyncio.sleep(0.3)
        stats = sink.stats()
        assert stats["commits"] == 2 and wal_commits(path) == 2
        assert stats["pending_events"] == 0 and stats["last_error"] is None
        assert abs(stats["last_commit_at"] - time.time()) < 2
        await sink.close()

    asyncio.run(main())
    assert count(path, "events") == 21


def test_sink_with_a_missing_directory_never_delays_the_loop_and_catches_up(tmp_path, caplog):
    path = tmp_path / "missing" / "h.db"

    async def main():
        sink = HistorySink(hcfg(path, commit_interval=0.2, event_delay=0.1))
        with LoopLag() as lag:
            t = time.perf_counter()
            for i in range(500):
                await sink.handle(engine(time.time(), f"e{i}"))
                await sink.handle(recent(i, "wan1"))
            took = time.perf_counter() - t
            assert took < 0.050, f"1000 handle() calls took {took * 1000:.1f} ms"
            await asyncio.sleep(1.0)
            st = sink.stats()
            assert st["commits"] == 0 and st["failed_commits"] >= 2
            assert "No such file or directory" in st["last_error"]
            assert (st["pending_events"], st["pending_samples"]) == (500, 500)
            path.parent.mkdir()  # fixed
            await wait_for(lambda: sink.stats()["pending_events"] == 0, limit=3.0)
            assert lag.ticks > 50 and lag.worst < 0.050, f"loop lag {lag.worst * 1000:.1f} ms"
        st = sink.stats()
        assert (st["events_written"], st["samples_written"], st["last_error"]) == (500, 500, None)
        await sink.close()

    with caplog.at_level(logging.DEBUG, logger="linkwatch.sinks.history"):
        asyncio.run(main())
    assert count(path, "events") == 500 and count(path, "samples") == 500
    records = [r for r in caplog.records if r.name == "linkwatch.sinks.history"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write" in warnings[0].getMessage()  # once per streak
    assert sum(1 for r in records if r.levelno == logging.DEBUG and "cannot write" in r.getMessage()) >= 1
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "caught up 500 event(s) and 500 sample(s)" in infos[0]


def test_sink_with_a_locked_database_never_delays_the_loop_and_catches_up(tmp_path):
    path = tmp_path / "h.db"
    HistoryStore(str(path)).close()
    locker = sqlite3.connect(str(path), isolation_level=None)
    locker.execute("PRAGMA journal_mode=WAL")
    locker.execute("BEGIN EXCLUSIVE")

    async def main():
        sink = HistorySink(hcfg(path, commit_interval=0.2, event_delay=0.1))  # busy_timeout 1 s
        with LoopLag() as lag:
            t = time.perf_counter()
            for i in range(1000):
                await sink.handle(engine(time.time(), f"e{i}") if i % 10 == 0 else recent(i, "wan2"))
            assert time.perf_counter() - t < 0.050
            await wait_for(lambda: sink.stats()["failed_commits"] >= 1, limit=3.0)
            assert "database is locked" in sink.stats()["last_error"]
            assert sink.stats()["commits"] == 0 and sink.stats()["pending_samples"] == 900
            locker.execute("ROLLBACK")
            await wait_for(lambda: sink.stats()["pending_samples"] == 0, limit=4.0)
            assert lag.worst < 0.050, f"loop lag {lag.worst * 1000:.1f} ms while the database was locked"
        assert sink.stats()["events_written"] == 100
        await sink.close()

    try:
        asyncio.run(main())
    finally:
        locker.close()
    assert count(path, "events") == 100 and count(path, "samples") == 900


def test_close_flushes_what_is_pending_through_the_sink_runner(tmp_path):
    path = tmp_path / "h.db"

    async def main():
        sink = HistorySink(hcfg(path, commit_interval=60.0, event_delay=30.0))
        runner = SinkRunner([sink])
        await runner.start()
        for i in range(5):
            runner.publish(state(time.time() + i, f"wan{i}"))
            runner.publish(recent(i, f"wan{i}"))
        await asyncio.sleep(0.05)
        assert sink.stats()["commits"] == 0  # nothing due for half a minute
        t = time.monotonic()
        await runner.stop(drain_timeout=1.0)
        assert time.monotonic() - t < 1.0
        assert runner.stats()["history"]["handled"] == 10
        assert sink.stats()["events_written"] == 5 and sink.stats()["samples_written"] == 5
        await sink.handle(engine(time.time()))  # after close: counted, not buffered
        assert sink.stats()["dropped_events"] == 1

    asyncio.run(main())
    assert count(path, "events") == 5 and count(path, "samples") == 5
    assert not Path(str(path) + "-wal").exists()  # closed cleanly, back in rollback mode


def test_close_is_bounded_when_the_database_stays_locked(tmp_path, caplog):
    path = tmp_path / "h.db"
    HistoryStore(str(path)).close()
    locker = sqlite3.connect(str(path), isolation_level=None)
    locker.execute("PRAGMA journal_mode=WAL")
    locker.execute("BEGIN EXCLUSIVE")

    async def main():
        sink = HistorySink(hcfg(path, commit_interval=60.0, event_delay=30.0))
        for i in range(3):
            await sink.handle(state(time.time(), "wan1"))
        t = time.monotonic()
        await sink.close()
        took = time.monotonic() - t
        assert took < sink.timeout and took < 2.0
        assert sink.stats()["pending_events"] == 3 and "locked" in sink.stats()["last_error"]

    try:
        with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.history"):
            asyncio.run(main())
    finally:
        locker.close()
    assert any("closing with 3 event(s)" in r.getMessage() for r in caplog.records)


def test_sink_is_built_without_io_even_for_an_impossible_path_and_reports_its_stats(tmp_path):
    sink = HistorySink(HistoryConfig(path="/proc/linkwatch-no/such/dir/h.db"))
    assert sink.name == "history" and sink.timeout == 5.0 and "samples" in sink.kinds
    st = sink.stats()
    for key in ("commits", "events_written", "samples_written", "pending_events", "pending_samples",
                "dropped_samples", "dropped_events", "last_error", "last_commit_at"):
        assert key in st
    assert st["last_error"] is None and st["last_commit_at"] is None
    with pytest.raises(HistoryError, match="path"):
        HistorySink(HistoryConfig(path=None))


# ---------------------------------------------------------------------------------------------
# the reader


@pytest.fixture
def filled(tmp_path) -> Path:
    """Hand-made rows: wan1 and wan2 samples (period 60) and six events."""
    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    samples = [
        sample(BASE, "wan1", sent=10, lost=0, rtt=10.0, rmin=8.0, rmax=12.0, jitter=1.0),
        sample(BASE + 60, "wan1", sent=10, lost=5, rtt=40.0, rmin=30.0, rmax=50.0, jitter=3.0),
        sample(BASE + 120, "wan1", sent=10, lost=10, rtt=None, rmin=None, rmax=None, jitter=None),
        sample(BASE + 180, "wan1", sent=0, lost=0, rtt=None, rmin=None, rmax=None, jitter=None),
        sample(BASE + 240, "wan1", sent=0, lost=0, rtt=None, rmin=None, rmax=None, jitter=None),
        sample(BASE, "wan2", sent=20, lost=1, rtt=5.0, rmin=4.0, rmax=9.0, jitter=0.5),
        sample(BASE + 60, "wan2", sent=20, lost=3, rtt=6.0, rmin=3.0, rmax=7.0, jitter=1.5),
    ]
    events = [
        EngineEvent(at=BASE, mono=0.0, what="started"),
        state(BASE + 100, "wan1", "UP", "DOWN", "3 failed rounds", 100.0),
        ActiveChanged(at=BASE + 100.1, mono=100.1, old=("wan1",), new=("wan2",), reason="wan1 DOWN"),
        AdminAction(at=BASE + 200, mono=200.0, action="disable", uplink="wan2", source="cli", result="disabled"),
        state(BASE + 300, "wan1", "DOWN", "UP", "5 good rounds", 0.0),
        ActiveChanged(at=BASE + 300.1, mono=300.1, old=("wan2",), new=("wan1",), reason="failback"),
    ]
    store.write(Batch(events=[event_row(e) for e in events], samples=[sample_row(s) for s in samples],
                      meta={"sample_period": "60.0"}))
    store.close()
    return path


def test_reader_events_newest_first_flat_and_filtered(filled):
    with HistoryReader(str(filled)) as r:
        all_ = r.events()
        assert [e["kind"] for e in all_] == ["active_changed", "uplink_state", "admin", "active_changed",
                                             "uplink_state", "engine"]
        top = all_[1]
        assert {k: top[k] for k in ("at", "kind", "uplink", "old", "new", "reason", "loss_pct", "rtt_ms",
                                    "jitter_ms")} == {
            "at": BASE + 300, "kind": "uplink_state", "uplink": "wan1", "old": "DOWN", "new": "UP",
            "reason": "5 good rounds", "loss_pct": 0.0, "rtt_ms": None, "jitter_ms": None}
        assert isinstance(top["id"], int) and all_[0]["uplink"] is None and all_[0]["new"] == ["wan1"]
        assert all_[2]["action"] == "disable" and all_[2]["source"] == "cli" and all_[5]["what"] == "started"
        # uplink: its own events plus the failovers that name it
        assert [(e["kind"], e["at"]) for e in r.events(uplink="wan2")] == [
            ("active_changed", BASE + 300.1), ("admin", BASE + 200), ("active_changed", BASE + 100.1)]
        assert [e["at"] for e in r.events(since=BASE + 100.1, until=BASE + 300)] == [BASE + 300, BASE + 200,
                                                                                     BASE + 100.1]
        assert [e["kind"] for e in r.events(kinds=["admin", "engine"])] == ["admin", "engine"]
        assert [e["at"] for e in r.events(kinds="uplink_state", uplink="wan1", limit=1)] == [BASE + 300]
        assert len(r.events(limit=2)) == 2 and len(r.events(limit=None)) == 6
        with pytest.raises(HistoryError, match="unknown event kind.*'samples'"):
            r.events(kinds=["samples"])
        with pytest.raises(HistoryError, match="bad limit 0"):
            r.events(limit=0)
        assert r.uplinks() == ["wan1", "wan2"]


def test_reader_samples_bucketed_in_sql_with_weighted_rtt_and_loss(filled):
    with HistoryReader(str(filled)) as r:
        res = r.samples(BASE, BASE + 300, step=120)
        assert res["step"] == 120.0
        wan1 = res["uplinks"]["wan1"]
        assert wan1 == [
            {"t": BASE, "sent": 20, "lost": 5, "loss_pct": 25.0, "rtt_avg_ms": pytest.approx(20.0),
             "rtt_min_ms": 8.0, "rtt_max_ms": 50.0, "jitter_ms": 2.0},  # rtt (10*10 + 40*5) / 15
            {"t": BASE + 120, "sent": 10, "lost": 10, "loss_pct": 100.0, "rtt_avg_ms": None,
             "rtt_min_ms": None, "rtt_max_ms": None, "jitter_ms": None},
            {"t": BASE + 240, "sent": 0, "lost": 0, "loss_pct": None, "rtt_avg_ms": None,
             "rtt_min_ms": None, "rtt_max_ms": None, "jitter_ms": None},
        ]
        wan2 = res["uplinks"]["wan2"]
        assert len(wan2) == 1 and wan2[0]["sent"] == 40 and wan2[0]["lost"] == 4 and wan2[0]["loss_pct"] == 10.0
        assert wan2[0]["rtt_avg_ms"] == pytest.approx((5.0 * 19 + 6.0 * 17) / 36)
        assert (wan2[0]["rtt_min_ms"], wan2[0]["rtt_max_ms"], wan2[0]["jitter_ms"]) == (3.0, 9.0, 1.0)
        one = r.samples(BASE + 60, BASE + 180, step=1, uplink="wan1")  # step rounds up to one period
        assert one["step"] == 60.0 and list(one["uplinks"]) == ["wan1"]
        assert [p["t"] for p in one["uplinks"]["wan1"]] == [BASE + 60, BASE + 120]
        day = r.samples(BASE, BASE + 86400)  # default step: <= 500 points, a multiple of 60 s
        assert day["step"] == 180.0 and day["period"] == 60.0
        assert r.samples(BASE, step=60)["until"] == pytest.approx(time.time(), abs=5)


def test_event_rows_are_strict_json_even_with_a_nan():
    row = event_row(state(BASE, loss=float("nan")))
    assert row[:3] == (BASE, "uplink_state", "wan1") and json.loads(row[3])["loss_pct"] is None
    assert json.loads(event_row(state(BASE, loss=12.5))[3])["loss_pct"] == 12.5


def test_choose_step_and_round_step():
    assert choose_step(3600, 60) == 60  # 61 buckets at most
    assert choose_step(86400, 60) == 180
    assert choose_step(30 * 86400, 60) == 5220
    for span in (3600, 86400, 7 * 86400, 30 * 86400, 500 * 60, 499 * 60):
        step = choose_step(span, 60)
        assert span / step + 1 <= 500 and (step == 60 or span / (step - 60) + 1 > 500)
    assert round_step(61, 60) == 120 and round_step(120, 60) == 120
    with pytest.raises(HistoryError, match="bad step -1"):
        round_step(-1, 60)


def test_reader_is_read_only(filled):
    before = filled.read_bytes()
    r = HistoryReader(str(filled))
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
        r._conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    r._conn.execute("PRAGMA query_only=0")  # opened with mode=ro: still no way to write
    with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
        r._conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    r.close()
    assert filled.read_bytes() == before
    assert not Path(str(filled) + "-wal").exists()


def test_reader_errors_are_clear(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(HistoryError) as e:
        HistoryReader(str(missing))
    assert str(e.value) == f"no history database at {missing} (is [history] path set and the engine running?)"
    assert not missing.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(HistoryError, match="not a linkwatch history database"):
        HistoryReader(str(garbage))
    other = tmp_path / "other.db"
    sqlite3.connect(str(other)).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(HistoryError, match=r"other.db is not a linkwatch history database \(no events"):
        HistoryReader(str(other))


# ---------------------------------------------------------------------------------------------
# parse_since

NOW = 1_795_670_000.0


@pytest.fixture
def tz():
    """Run with a given local time zone, restored afterwards."""
    old = os.environ.get("TZ")

    def set_tz(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    yield set_tz
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.parametrize("text, expected", [
    ("1h", NOW - 3600), ("30m", NOW - 1800), ("2d", NOW - 2 * 86400), ("1h30m", NOW - 5400), (" 90s ", NOW - 90),
    ("1795651200", 1795651200.0), ("1795651200.5", 1795651200.5),
    ("2026-11-26T10:00:00+00:00", 1795651200.0 + 36000),
])
def test_parse_since_accepts(text, expected):
    assert parse_since(text, NOW) == expected


def test_parse_since_reads_dates_in_local_time(tz):
    tz("UTC")
    assert parse_since("2026-11-26", NOW) == 1795651200.0
    assert parse_since("2026-11-26T10:00", NOW) == 1795651200.0 + 36000
    tz("XXX-02")  # two hours east of UTC
    assert parse_since("2026-11-26", NOW) == 1795651200.0 - 7200
    assert parse_since("2026-11-26 10:00", NOW) == 1795651200.0 + 36000 - 7200


@pytest.mark.parametrize("text", ["", "yesterday", "1 hour", "-1h", "2026-13-01", "1h ago", "90",
                                  "0001-01-01"])  # year 1 in local time: a ValueError (web 500) before
def test_parse_since_rejects_naming_the_value_and_the_forms(text):
    with pytest.raises(HistoryError) as e:
        parse_since(text, NOW)
    assert repr(text) in str(e.value) and "1h" in str(e.value) and "2026-11-26" in str(e.value)
    if text == "90":
        assert "90s" in str(e.value)  # the likely intent


# ---------------------------------------------------------------------------------------------
# `linkwatch history`

from linkwatch.commands import history as history_cli  # noqa: E402


def test_history_command_prints_oldest_first_one_line_per_event(filled, tz, capsys):
    tz("UTC")
    assert history_cli.main(["--db", str(filled), "--since", str(int(BASE + 100))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "2025-11-24 16:01:40  uplink_state    wan1  uplink=wan1 UP -> DOWN loss=100% rtt=- reason=3 failed rounds",
        "2025-11-24 16:01:40  active_changed  -     active wan1 -> wan2 reason=wan1 DOWN",
        "2025-11-24 16:03:20  admin           wan2  admin disable uplink=wan2 source=cli result=disabled",
        "2025-11-24 16:05:00  uplink_state    wan1  uplink=wan1 DOWN -> UP loss=0% rtt=- reason=5 good rounds",
        "2025-11-24 16:05:00  active_changed  -     active wan2 -> wan1 reason=failback",
    ]
    assert history_cli.main(["--db", str(filled), "--uplink", "wan2", "--kind", "admin,engine", "--limit", "5"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2025-11-24 16:03:20  admin  wan2  admin disable uplink=wan2 source=cli result=disabled"]


def test_history_keeps_and_lists_dampening_and_quota_events(tmp_path, tz, capsys):
    tz("UTC")
    path = tmp_path / "h.db"
    store = HistoryStore(str(path))
    events = [state(BASE, "wan1", "UP", "DOWN"),
              UplinkDampened(at=BASE + 1, mono=1.0, uplink="wan1", dampened=True, penalty=3.04),
              QuotaReached(at=BASE + 2, mono=2.0, uplink="lte", percent=80, used=16_100_000_000, quota=20 * 10**9),
              UplinkDampened(at=BASE + 100, mono=100.0, uplink="wan1", dampened=False, penalty=0.99)]
    store.write(Batch(events=[event_row(e) for e in events], samples=[], meta={}))
    store.close()
    with HistoryReader(str(path)) as r:
        assert [(e["kind"], e["uplink"]) for e in r.events(kinds=["dampened", "quota"])] == [
            ("dampened", "wan1"), ("quota", "lte"), ("dampened", "wan1")]
        assert [e["at"] for e in r.events(uplink="wan1", kinds="dampened")] == [BASE + 100, BASE + 1]
    assert history_cli.main(["--db", str(path), "--kind", "dampened,quota"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2025-11-24 16:00:01  dampened  wan1  uplink=wan1 dampened penalty=3",
        "2025-11-24 16:00:02  quota     lte   uplink=lte quota 80% reached: 16.1GB of 20.0GB",
        "2025-11-24 16:01:40  dampened  wan1  uplink=wan1 no longer dampened penalty=1",
    ]


def test_history_command_json_and_limit(filled, capsys):
    assert history_cli.main(["--db", str(filled), "--json", "--limit", "2", "--kind", "uplink_state",
                             "--kind", "active_changed"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["at"]) for r in rows] == [("uplink_state", BASE + 300), ("active_changed", BASE + 300.1)]
    assert rows[1]["old"] == ["wan2"] and rows[0]["reason"] == "5 good rounds"


def test_history_command_errors_are_one_line_with_exit_codes(tmp_path, filled, capsys):
    assert history_cli.main(["--db", str(tmp_path / "none.db")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("linkwatch history: no history database at ")
    assert history_cli.main(["--db", str(filled), "--since", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'yesterday'" in err
    assert history_cli.main(["--db", str(filled), "--kind", "samples"]) == 2
    assert "unknown --kind samples" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        history_cli.main(["--db", str(filled), "--limit", "0"])
    assert e.value.code == 2


CONFIG = """
[history]
{line}

[uplinks.fibre]
interface = "eth1"

[[uplinks.fibre.probes]]
type = "icmp"
target = "198.51.100.10"
"""


def test_history_command_finds_the_database_through_the_config(tmp_path, filled, capsys):
    conf = tmp_path / "linkwatch.toml"
    conf.write_text(CONFIG.format(line=f'path = "{filled}"'))
    assert history_cli.main(["--config", str(conf), "--kind", "engine"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("engine started")
    conf.write_text(CONFIG.format(line=""))
    assert history_cli.main(["--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[history] path is not set" in err
    conf.write_text(CONFIG.format(line="path = 5\nkeep_samples = true"))
    assert history_cli.main(["--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "history.path" in err and "+1 more" in err
    assert history_cli.main(["--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_register_adds_the_history_command_like_the_other_commands():
    import argparse

    from linkwatch.commands import common

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    history_cli.register(sub)
    assert sub.choices["history"].description and history_cli.HELP == "print the event log from the history database"
    args = parser.parse_args(["history", "--since", "1h"])
    assert args.func is history_cli.cmd_history and args.config == common.DEFAULT_CONFIG == history_cli.DEFAULT_CONFIG
    assert args.limit == 200 and args.db is None
