"""The history database: events and per-uplink samples in SQLite, written in batches, read read-only.

Three layers, from pure to I/O:

* :func:`commit_delay` and :class:`Batcher` (pure, time passed in): the batching rule and the
  in-memory buffer. Samples are committed at most once per ``commit_interval``; an event within
  ``event_delay`` of its arrival (a burst in that time shares one commit); after a failed commit
  the next try waits a backoff. Retention (prune) rides inside a normal batch commit, at most once
  per ``prune_interval`` and in the first batch of a run.
* :class:`HistoryStore`: one SQLite connection, used by one thread: schema migrations
  (sqlite-utils :class:`~sqlite_utils.migrations.Migrations`), WAL, ``auto_vacuum=INCREMENTAL``,
  one transaction per batch.
* :class:`HistorySink`: the asyncio sink. ``handle`` only appends to the buffer (no I/O, ever);
  all SQLite work runs in one dedicated worker thread. Failures (disk full, locked database,
  missing directory) are logged once per streak, the buffer is kept (bounded) and retried; a
  kill -9 loses at most the samples since the last commit and no event counted in
  ``stats()["events_written"]``.

:class:`HistoryReader` opens the file read-only (``mode=ro``) for the CLI and the web UI, which
runs as another, unprivileged user. For that user the writer makes the database file mode 0644
whatever its umask (SQLite gives ``-wal`` and ``-shm`` the database file's mode and owner), and on a
clean close switches the file back to rollback-journal mode so that a reader who may not create
``-wal``/``-shm`` in the directory can still open it while the engine is stopped.

This module imports only the standard library and :mod:`linkwatch.core.events` at the top, so the
reader also works under a plain system Python (sqlite-utils is imported when migrating).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from linkwatch.core.events import EVENT_TYPES, Event, UplinkSamples, event_to_dict

if TYPE_CHECKING:  # pragma: no cover
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

    from linkwatch.config import HistoryConfig

log = logging.getLogger(__name__)

MIGRATION_SET = "linkwatch-history"
EVENT_KINDS: frozenset[str] = frozenset(k for k in EVENT_TYPES if k != UplinkSamples.kind)
"""Kinds stored in the events table (samples have their own table)."""
MAX_POINTS = 500
"""Default ceiling of points per uplink that :meth:`HistoryReader.samples` returns."""


class HistoryError(Exception):
    """The history database is missing, unreadable or not ours, or a query argument is bad."""


# ---------------------------------------------------------------------------------------------
# Time arguments (pure)

_SINCE_FORMS = ("a duration ago (e.g. 1h, 30m, 2d), an epoch time in seconds (e.g. 1764150000) "
                "or a local date/time (e.g. 2026-11-26 or 2026-11-26T10:00)")
_NUMBER = re.compile(r"[+]?(\d+(\.\d*)?|\.\d+)")
MIN_EPOCH = 1e9  # 2001-09-09: a smaller plain number is a forgotten unit, not a date


def parse_since(text: str, now: float) -> float:
    """``"1h"`` (ago, relative to ``now``), an epoch number, or an ISO date/time in local time
    (``"2026-11-26"``, ``"2026-11-26T10:00"``; an explicit offset is honoured) -> epoch seconds.

    Raises :class:`HistoryError` naming the value and the accepted forms.
    """
    from linkwatch.config import parse_duration  # lazily: config needs dnspython

    value = text.strip() if isinstance(text, str) else ""
    if value:
        if _NUMBER.fullmatch(value):
            epoch = float(value)
            if epoch >= MIN_EPOCH and math.isfinite(epoch):
                return epoch
            raise HistoryError(f"bad time {text!r}: a plain number is an epoch time in seconds and this one "
                               f"is before 2001; for a duration ago add a unit (e.g. {value}s, {value}m); "
                               f"expected {_SINCE_FORMS}")
        try:
            return now - parse_duration(value)
        except ValueError:
            pass
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return moment.timestamp()  # naive = local time
    raise HistoryError(f"bad time {text!r}: expected {_SINCE_FORMS}")


def choose_step(span: float, period: float, max_points: int = MAX_POINTS) -> float:
    """The smallest multiple of ``period`` that cuts ``span`` seconds into at most ``max_points``
    epoch-aligned buckets."""
    if not (period > 0 and math.isfinite(period)):
        raise HistoryError(f"bad sample period {period!r}: expected a number of seconds > 0")
    if max_points < 2:
        raise HistoryError(f"bad max_points {max_points!r}: expected at least 2")
    k = max(1, math.ceil(max(span, 0.0) / (period * (max_points - 1)) - 1e-9))
    return k * period


def round_step(step: float, period: float) -> float:
    """A caller's step, rounded up to a whole number of sample periods (at least one)."""
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not (step > 0 and math.isfinite(step)):
        raise HistoryError(f"bad step {step!r}: expected a number of seconds > 0")
    return max(1, math.ceil(step / period - 1e-9)) * period


# ---------------------------------------------------------------------------------------------
# Rows (pure)

EventRow = tuple[float, str, "str | None", str]  # at, kind, uplink, data (JSON)
SampleRow = tuple[str, float, float, int, int, "float | None", "float | None", "float | None", "float | None",
                  "float | None"]  # uplink, start, at, sent, lost, loss_pct, rtt_avg/min/max_ms, jitter_ms
SAMPLE_COLUMNS = ("uplink", "start", "at", "sent", "lost", "loss_pct", "rtt_avg_ms", "rtt_min_ms",
                  "rtt_max_ms", "jitter_ms")


def event_row(ev: Event) -> EventRow:
    """The events-table row of an event: indexed columns plus the whole event as JSON (strict JSON:
    a NaN or infinite number is stored as null, so SQLite's JSON functions can read every row)."""
    d = event_to_dict(ev)
    try:
        data = json.dumps(d, separators=(",", ":"), allow_nan=False)
    except ValueError:
        d = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}
        data = json.dumps(d, separators=(",", ":"), allow_nan=False)
    return (ev.at, ev.kind, getattr(ev, "uplink", None), data)


def sample_row(ev: UplinkSamples) -> SampleRow:
    """The samples-table row of one uplink's history period."""
    return (ev.uplink, ev.start, ev.at, ev.sent, ev.lost, ev.loss_pct, ev.rtt_avg_ms, ev.rtt_min_ms,
            ev.rtt_max_ms, ev.jitter_ms)


# ---------------------------------------------------------------------------------------------
# The batching rule (pure)


@dataclass(frozen=True)
class BatchPolicy:
    """When to commit and what to keep. Times in seconds; see :func:`commit_delay`."""

    commit_interval: float = 10.0
    event_delay: float = 2.0
    sample_period: float = 60.0
    keep_samples: float = 30 * 86400.0
    keep_events: float = 365 * 86400.0
    max_events: int = 100_000
    prune_interval: float = 3600.0
    max_pending_samples: int = 10_000
    max_pending_events: int = 10_000

    @classmethod
    def from_config(cls, cfg: HistoryConfig, **overrides: Any) -> BatchPolicy:
        values = dict(commit_interval=cfg.commit_interval, event_delay=cfg.event_delay,
                      sample_period=cfg.sample_period, keep_samples=cfg.keep_samples,
                      keep_events=cfg.keep_events, max_events=cfg.max_events)
        values.update(overrides)
        return cls(**values)

    @property
    def event_wait(self) -> float:
        """How long the first event of a burst waits for the others: ``event_delay`` less a margin
        for the commit itself, so that it is on disk within ``event_delay``."""
        return max(self.event_delay - min(0.2, self.event_delay / 4), 0.0)

    @property
    def max_backoff(self) -> float:
        return 6 * self.commit_interval

    def retry_delay(self, failures: int) -> float:
        """Wait after the ``failures``-th failed commit in a row: commit_interval, doubling, capped."""
        return min(self.commit_interval * 2 ** max(failures - 1, 0), self.max_backoff)


def commit_delay(policy: BatchPolicy, *, pending_events: int, pending_samples: int,
                 first_event_at: float | None, first_sample_at: float | None,
                 last_commit_at: float | None, failures: int, last_failure_at: float | None,
                 now: float) -> float | None:
    """Seconds until the next commit is due (0.0: now), or None when nothing is pending.

    * samples wait ``commit_interval`` after the first pending one arrived, and at least that long
      after the last commit: at most one commit per ``commit_interval`` in steady state;
    * events wait :attr:`BatchPolicy.event_wait` after the first pending one arrived (a burst
      shares that commit), whatever the last commit was; pending samples ride along;
    * after ``failures`` failed commits in a row, everything waits for the backoff.
    """
    if pending_events <= 0 and pending_samples <= 0:
        return None
    if failures > 0 and last_failure_at is not None:
        return max(last_failure_at + policy.retry_delay(failures) - now, 0.0)
    due = math.inf
    if pending_samples > 0:
        since = first_sample_at if first_sample_at is not None else now
        if last_commit_at is not None:
            since = max(since, last_commit_at)
        due = since + policy.commit_interval
    if pending_events > 0:
        due = min(due, (first_event_at if first_event_at is not None else now) + policy.event_wait)
    return max(due - now, 0.0)


@dataclass(frozen=True)
class Prune:
    """Retention applied in a batch: rows before these wall times go, and events beyond max_events."""

    samples_before: float
    events_before: float
    max_events: int


@dataclass
class Batch:
    """What one commit writes."""

    events: list[EventRow] = field(default_factory=list)
    samples: list[SampleRow] = field(default_factory=list)
    prune: Prune | None = None
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteResult:
    """What a commit did (rows written, rows pruned, pages given back to the file system)."""

    events: int = 0
    samples: int = 0
    pruned_samples: int = 0
    pruned_events: int = 0
    freed_pages: int = 0


@dataclass(frozen=True)
class Recovery:
    """A failure streak ended: how long it was and what the catching-up commit wrote."""

    failures: int
    events: int
    samples: int
    dropped_samples: int
    dropped_events: int


class Batcher:
    """The sink's buffer and bookkeeping, without I/O or clock: every method takes ``now``
    (monotonic seconds) and, where rows are dated, ``wall`` (epoch seconds).

    Pending rows are bounded: at most ``max_pending_samples`` samples, and at most
    ``max_pending_samples + max_pending_events`` rows in all; over that the oldest sample goes
    first, the oldest event only when no sample is left. Drops are counted.
    """

    def __init__(self, policy: BatchPolicy):
        self.policy = policy
        self._events: collections.deque[tuple[float, EventRow]] = collections.deque()  # (arrived, row)
        self._samples: collections.deque[tuple[float, SampleRow]] = collections.deque()
        self._inflight: Batch | None = None
        self.commits = 0
        self.failed_commits = 0
        self.events_written = 0
        self.samples_written = 0
        self.dropped_samples = 0
        self.dropped_events = 0
        self.pruned_samples = 0
        self.pruned_events = 0
        self.last_error: str | None = None
        self.last_commit_at: float | None = None  # wall
        self.failures = 0  # failed commits in a row
        self._last_commit_mono: float | None = None
        self._last_failure_mono: float | None = None
        self._last_prune_mono: float | None = None
        self._meta_written = False
        self._streak_dropped = (0, 0)  # (samples, events) dropped counters when the streak began

    # --- filling ---------------------------------------------------------------------------

    def add(self, event: Event, now: float) -> None:
        """Buffer one event (a samples event goes to the samples table)."""
        if isinstance(event, UplinkSamples):
            self._samples.append((now, sample_row(event)))
        else:
            self._events.append((now, event_row(event)))
        self._trim()

    def drop(self, event: Event) -> None:
        """Count an event that arrived too late to be buffered (after close)."""
        if isinstance(event, UplinkSamples):
            self.dropped_samples += 1
        else:
            self.dropped_events += 1

    def _trim(self) -> None:
        p = self.policy
        while len(self._samples) > p.max_pending_samples:
            self._samples.popleft()
            self.dropped_samples += 1
        while len(self._samples) + len(self._events) > p.max_pending_samples + p.max_pending_events:
            if self._samples:
                self._samples.popleft()
                self.dropped_samples += 1
            else:
                self._events.popleft()
                self.dropped_events += 1

    # --- timing ----------------------------------------------------------------------------

    def due_in(self, now: float) -> float | None:
        """Seconds until the next commit (0.0: now); None when nothing is buffered."""
        return commit_delay(
            self.policy, pending_events=len(self._events), pending_samples=len(self._samples),
            first_event_at=self._events[0][0] if self._events else None,
            first_sample_at=self._samples[0][0] if self._samples else None,
            last_commit_at=self._last_commit_mono, failures=self.failures,
            last_failure_at=self._last_failure_mono, now=now)

    def prune_due(self, now: float) -> bool:
        return self._last_prune_mono is None or now - self._last_prune_mono >= self.policy.prune_interval

    # --- one commit ------------------------------------------------------------------------

    def take(self, now: float, wall: float) -> Batch | None:
        """Move everything buffered into a batch (None when nothing is buffered); with the
        retention cut-offs when a prune is due and the run's metadata until it is written."""
        if self._inflight is not None:
            raise RuntimeError("a batch is already in flight")
        if not self._events and not self._samples:
            return None
        p = self.policy
        batch = Batch(events=[row for _, row in self._events], samples=[row for _, row in self._samples])
        self._events.clear()
        self._samples.clear()
        if self.prune_due(now):
            batch.prune = Prune(wall - p.keep_samples, wall - p.keep_events, p.max_events)
        if not self._meta_written:
            batch.meta = {"sample_period": repr(float(p.sample_period))}
        self._inflight = batch
        return batch

    def committed(self, batch: Batch, result: WriteResult, now: float, wall: float) -> Recovery | None:
        """The batch is on disk; returns a :class:`Recovery` when this ended a failure streak."""
        self._inflight = None
        self.commits += 1
        self.events_written += len(batch.events)
        self.samples_written += len(batch.samples)
        self.pruned_samples += result.pruned_samples
        self.pruned_events += result.pruned_events
        self.last_commit_at = wall
        self._last_commit_mono = now
        if batch.prune is not None:
            self._last_prune_mono = now
        if batch.meta:
            self._meta_written = True
        recovery = None
        if self.failures:
            recovery = Recovery(self.failures, len(batch.events), len(batch.samples),
                                self.dropped_samples - self._streak_dropped[0],
                                self.dropped_events - self._streak_dropped[1])
        self.failures = 0
        self._last_failure_mono = None
        self.last_error = None
        return recovery

    def failed(self, batch: Batch, error: str, now: float) -> bool:
        """The batch was not written: its rows go back in front of the buffer (then bounded).
        Returns True for the first failure of a streak (log it loudly)."""
        self._inflight = None
        self._events.extendleft((now, row) for row in reversed(batch.events))
        self._samples.extendleft((now, row) for row in reversed(batch.samples))
        first = self.failures == 0
        if first:
            self._streak_dropped = (self.dropped_samples, self.dropped_events)
        self._trim()
        self.failures += 1
        self.failed_commits += 1
        self.last_error = error
        self._last_failure_mono = now
        return first

    # --- reporting -------------------------------------------------------------------------

    @property
    def pending_events(self) -> int:
        return len(self._events) + (len(self._inflight.events) if self._inflight else 0)

    @property
    def pending_samples(self) -> int:
        return len(self._samples) + (len(self._inflight.samples) if self._inflight else 0)

    def stats(self) -> dict[str, Any]:
        return {
            "commits": self.commits, "failed_commits": self.failed_commits,
            "events_written": self.events_written, "samples_written": self.samples_written,
            "pending_events": self.pending_events, "pending_samples": self.pending_samples,
            "dropped_samples": self.dropped_samples, "dropped_events": self.dropped_events,
            "pruned_samples": self.pruned_samples, "pruned_events": self.pruned_events,
            "last_error": self.last_error, "last_commit_at": self.last_commit_at,
        }


# ---------------------------------------------------------------------------------------------
# Schema

_MIGRATIONS: Migrations | None = None


def migrations() -> Migrations:
    """The named, transactional schema migrations (applied in order, each once)."""
    global _MIGRATIONS
    if _MIGRATIONS is not None:
        return _MIGRATIONS
    from sqlite_utils.migrations import Migrations

    m = Migrations(MIGRATION_SET)

    @m(name="m001_events_and_samples")
    def m001(db: Database) -> None:
        db["events"].create({"id": int, "at": float, "kind": str, "uplink": str, "data": str},
                            pk="id", not_null={"at", "kind", "data"})
        db["events"].create_index(["at"], index_name="events_at")
        db["samples"].create({"id": int, "uplink": str, "start": float, "at": float, "sent": int, "lost": int,
                              "loss_pct": float, "rtt_avg_ms": float, "rtt_min_ms": float, "rtt_max_ms": float,
                              "jitter_ms": float},
                             pk="id", not_null={"uplink", "start", "at", "sent", "lost"})
        db["samples"].create_index(["start"], index_name="samples_start")

    @m(name="m002_uplink_indexes_and_meta")
    def m002(db: Database) -> None:
        db["events"].create_index(["uplink", "at"], index_name="events_uplink_at")
        db["events"].create_index(["kind", "at"], index_name="events_kind_at")
        db["samples"].create_index(["uplink", "start"], index_name="samples_uplink_start")
        db["meta"].create({"key": str, "value": str}, pk="key", not_null={"value"})

    _MIGRATIONS = m
    return m


def migrate(conn: sqlite3.Connection, *, stop_before: str | None = None) -> list[str]:
    """Apply pending migrations to an open connection; returns the names applied now."""
    from sqlite_utils import Database

    db = Database(conn, recursive_triggers=False, execute_plugins=False)
    m = migrations()
    pending = [mig.name for mig in m.pending(db)]
    if pending:
        m.apply(db, stop_before=stop_before)
    done = {a.name for a in m.applied(db)}
    return [name for name in pending if name in done]


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names of the migrations the database has, in the order they were applied."""
    try:
        rows = conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id",
                            (MIGRATION_SET,)).fetchall()
    except sqlite3.OperationalError:
        return []
    return [r[0] for r in rows]


def _create_file(path: str, mode: int = 0o644) -> None:
    """Create an empty database file with ``mode`` whatever the umask (SQLite then gives -wal
    and -shm the same mode), so another user may read it. An existing file is left alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


class HistoryStore:
    """The writing side: one SQLite connection, opened and used by one thread.

    Opening creates the file (mode 0644) and applies the schema; ``auto_vacuum=INCREMENTAL`` is set
    before the first table, then WAL with ``synchronous=NORMAL`` (a killed process loses nothing
    committed). Every :meth:`write` is one transaction. Errors are sqlite3/OS errors, untouched.
    """

    def __init__(self, path: str, busy_timeout: float = 1.0, *, stop_before: str | None = None):
        self.path = path
        _create_file(path)
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # must come before the first table
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {path} to WAL (journal mode stays {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA journal_size_limit=1048576")  # the -wal shrinks back after a burst
            self.migrated = migrate(conn, stop_before=stop_before)
            # what an earlier connection left in the -wal goes into the file, so the next commit can
            # restart the log instead of growing it (matters on a disk that was full); never waits
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def write(self, batch: Batch) -> WriteResult:
        """Insert the batch, apply its retention and give freed pages back, in one transaction."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch.events:
                conn.executemany("INSERT INTO events (at, kind, uplink, data) VALUES (?, ?, ?, ?)", batch.events)
            if batch.samples:
                conn.executemany(f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS)}) "
                                 f"VALUES ({', '.join('?' * len(SAMPLE_COLUMNS))})", batch.samples)
            for key, value in batch.meta.items():
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            pruned_samples = pruned_events = freed = 0
            if batch.prune is not None:
                pruned_samples, pruned_events = self._prune(batch.prune)
                freed = self._incremental_vacuum()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error says more
            raise
        return WriteResult(len(batch.events), len(batch.samples), pruned_samples, pruned_events, freed)

    def _prune(self, p: Prune) -> tuple[int, int]:
        conn = self.conn
        samples = conn.execute("DELETE FROM samples WHERE start < ?", (p.samples_before,)).rowcount
        events = conn.execute("DELETE FROM events WHERE at < ?", (p.events_before,)).rowcount
        events += conn.execute(
            "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (p.max_events,)).rowcount
        return samples, events

    def _incremental_vacuum(self, limit: int = 1_000_000) -> int:
        # Python's sqlite3 steps "PRAGMA incremental_vacuum" once, and each step frees one page:
        # loop until the free list is empty (executescript would commit the open transaction).
        freed = 0
        while freed < limit and self.conn.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            self.conn.execute("PRAGMA incremental_vacuum")
            freed += 1
        return freed

    def checkpoint(self) -> None:
        """Move the WAL into the database file and truncate it (tests, benchmarks)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self, *, rollback_mode: bool = True) -> None:
        """Close; with ``rollback_mode`` first try (without waiting) to leave the file in
        rollback-journal mode, which a read-only user can open without creating -wal/-shm."""
        try:
            if rollback_mode:
                try:
                    self.conn.execute("PRAGMA busy_timeout=0")
                    self.conn.execute("PRAGMA journal_mode=DELETE")
                except sqlite3.Error:
                    pass  # a reader has it open: -wal/-shm stay, which suits that reader too
        finally:
            self.conn.close()


# ---------------------------------------------------------------------------------------------
# The sink


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class HistorySink:
    """Writes every event and sample to the history database without ever delaying the engine.

    ``handle`` buffers and returns; a driver task on the event loop decides when to commit
    (:func:`commit_delay`) and hands each batch to one worker thread that owns the connection.
    ``clock`` is the wall clock (retention cut-offs, ``last_commit_at``); ``monotonic`` paces
    the commits.
    """

    name = "history"
    timeout = 5.0
    kinds: frozenset[str] = frozenset(EVENT_TYPES)

    def __init__(self, cfg: HistoryConfig, clock: Callable[[], float] = time.time, *,
                 monotonic: Callable[[], float] = time.monotonic, policy: BatchPolicy | None = None,
                 busy_timeout: float = 1.0):
        if not cfg.path:
            raise HistoryError("the history sink needs [history] path")
        self.path = cfg.path
        self.busy_timeout = busy_timeout
        self.close_timeout = self.timeout - 0.5
        self._clock = clock
        self._mono = monotonic
        self._batcher = Batcher(policy or BatchPolicy.from_config(cfg))
        self._store: HistoryStore | None = None  # only touched in the worker thread
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._closed = False

    @property
    def policy(self) -> BatchPolicy:
        return self._batcher.policy

    async def handle(self, event: Event) -> None:
        """Buffer the event and return at once (no I/O here, ever)."""
        if self._closed:
            self._batcher.drop(event)
            return
        self._batcher.add(event, self._mono())
        if self._task is None:
            self._start()
        assert self._wake is not None
        self._wake.set()

    def _start(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="linkwatch-history")
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    def stats(self) -> dict[str, Any]:
        """Counters for the engine's status (see :meth:`Batcher.stats`) plus the path."""
        return {**self._batcher.stats(), "path": self.path}

    # --- the driver (event loop) -----------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                delay = self._batcher.due_in(self._mono())
                if delay is None or delay > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), delay)
                    except TimeoutError:
                        pass
                    continue
                await self._commit()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - defensive: the driver must not die
                log.exception("history: writer loop failed; going on")
                await asyncio.sleep(self.policy.commit_interval)
        await self._final_flush()

    async def _commit(self) -> bool:
        b = self._batcher
        batch = b.take(self._mono(), self._clock())
        if batch is None:
            return True
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, self._write, batch)
        except Exception as exc:
            error = describe_error(exc)
            first = b.failed(batch, error, self._mono())
            log.log(logging.WARNING if first else logging.DEBUG,
                    "history: cannot write to %s: %s; keeping %d event(s) and %d sample(s) in memory, "
                    "retrying in %gs", self.path, error, b.pending_events, b.pending_samples,
                    self.policy.retry_delay(b.failures))
            return False
        recovery = b.committed(batch, result, self._mono(), self._clock())
        if recovery is not None:
            dropped = ""
            if recovery.dropped_samples or recovery.dropped_events:
                dropped = (f"; {recovery.dropped_samples} sample(s) and {recovery.dropped_events} event(s) "
                           f"were dropped while it failed (buffer full)")
            log.info("history: writing to %s again after %d failed attempt(s); caught up %d event(s) and "
                     "%d sample(s)%s", self.path, recovery.failures, recovery.events, recovery.samples, dropped)
        if result.pruned_samples or result.pruned_events:
            log.debug("history: pruned %d sample(s) and %d event(s), freed %d page(s)",
                      result.pruned_samples, result.pruned_events, result.freed_pages)
        return True

    async def _final_flush(self) -> None:
        b = self._batcher
        if b.pending_events or b.pending_samples:
            if not await self._commit():
                log.warning("history: closing with %d event(s) and %d sample(s) not written to %s: %s",
                            b.pending_events, b.pending_samples, self.path, b.last_error)

    # --- the worker thread -----------------------------------------------------------------

    def _write(self, batch: Batch) -> WriteResult:
        if self._store is None:
            self._store = HistoryStore(self.path, self.busy_timeout)
        try:
            return self._store.write(batch)
        except BaseException:
            self._close_store(rollback_mode=False)  # start afresh next time (a remounted disk, a new file)
            raise

    def _close_store(self, rollback_mode: bool = True) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close(rollback_mode=rollback_mode)
            except sqlite3.Error:
                pass

    # --- closing ---------------------------------------------------------------------------

    async def close(self) -> None:
        """One final flush and close, within :attr:`close_timeout` seconds."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        if self._task is None:
            return
        assert self._wake is not None and self._executor is not None
        deadline = self._mono() + self.close_timeout
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=self.close_timeout)
        except TimeoutError:
            self._task.cancel()
            log.warning("history: final write to %s did not finish in %gs; %d event(s) and %d sample(s) "
                        "not written", self.path, self.close_timeout, self._batcher.pending_events,
                        self._batcher.pending_samples)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._close_store),
                                   timeout=max(deadline - self._mono(), 0.05))
        except TimeoutError:
            log.warning("history: closing %s timed out", self.path)
        self._executor.shutdown(wait=False)


# ---------------------------------------------------------------------------------------------
# The reader


_ROW_KEYS = frozenset({"id", "at", "kind", "uplink"})


def _kinds(kinds: Iterable[str] | str | None) -> list[str] | None:
    if kinds is None:
        return None
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    bad = [k for k in names if k not in EVENT_KINDS]
    if bad:
        raise HistoryError(f"unknown event kind(s) {bad}: expected some of {sorted(EVENT_KINDS)}")
    return names


class HistoryReader:
    """Read-only access for the CLI and the web UI (safe to share between threads).

    Opens ``file:PATH?mode=ro``: it never creates, changes or locks out the writer's file, and
    works for a user who may only read the file and its directory.
    """

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time, busy_timeout: float = 1.0):
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        if not os.path.exists(path):
            raise HistoryError(f"no history database at {path} (is [history] path set and the engine running?)")
        if not os.access(path, os.R_OK):
            raise HistoryError(f"cannot read the history database {path}: permission denied "
                               f"(the reading user needs read access to the file and its directory)")
        self._conn = self._open(busy_timeout)

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        try:
            conn = self._connect(uri, busy_timeout)
        except sqlite3.Error as exc:
            # a WAL file that nobody has open, in a directory this user may not write: no -shm can
            # be made. With no -wal there is nothing beyond the main file: read it as immutable.
            if os.path.exists(self.path + "-wal"):
                raise HistoryError(f"cannot read the history database {self.path}: {exc}") from None
            try:
                conn = self._connect(uri + "&immutable=1", busy_timeout)
            except sqlite3.Error:
                raise HistoryError(f"cannot read the history database {self.path}: {exc}") from None
        return conn

    def _connect(self, uri: str, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only=1")
            conn.execute("PRAGMA temp_store=MEMORY")  # GROUP BY sorts of long ranges stay in memory
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise
            raise HistoryError(f"{self.path} is not a linkwatch history database: {exc}") from None
        if not {"events", "samples"} <= tables:
            conn.close()
            raise HistoryError(f"{self.path} is not a linkwatch history database (no events/samples tables)")
        return conn

    def _query(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise HistoryError(f"cannot read the history database {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> HistoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- queries ---------------------------------------------------------------------------

    def events(self, uplink: str | None = None, since: float | None = None, until: float | None = None,
               kinds: Iterable[str] | str | None = None, limit: int | None = 200) -> list[dict[str, Any]]:
        """Events, newest first: ``id``, ``at``, ``kind``, ``uplink`` (None when the event has none)
        and the event's own fields. ``uplink`` selects its uplink_state and admin events and the
        active_changed events that name it; ``since``/``until`` bound ``at`` (inclusive)."""
        where, params = [], []
        if uplink is not None:
            where.append("(uplink = ? OR (kind = 'active_changed' AND ("
                         "EXISTS (SELECT 1 FROM json_each(data, '$.old') WHERE value = ?) OR "
                         "EXISTS (SELECT 1 FROM json_each(data, '$.new') WHERE value = ?))))")
            params += [uplink, uplink, uplink]
        if since is not None:
            where.append("at >= ?")
            params.append(float(since))
        if until is not None:
            where.append("at <= ?")
            params.append(float(until))
        names = _kinds(kinds)
        if names is not None:
            if not names:
                return []
            where.append(f"kind IN ({', '.join('?' * len(names))})")
            params += names
        sql = "SELECT id, at, kind, uplink, data FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, id DESC"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise HistoryError(f"bad limit {limit!r}: expected a whole number >= 1")
            sql += " LIMIT ?"
            params.append(limit)
        out = []
        for id_, at, kind, up, data in self._query(sql, params):
            try:
                fields = json.loads(data)
            except ValueError:
                fields = {}
            own = {k: v for k, v in fields.items() if k not in _ROW_KEYS}
            out.append({"id": id_, "at": at, "kind": kind, "uplink": up, **own})
        return out

    def sample_period(self) -> float:
        """The sample period the writer last used (meta), else that of the newest row, else 60 s."""
        try:
            rows = self._query("SELECT value FROM meta WHERE key = 'sample_period'")
        except HistoryError:
            rows = []  # a database from before the meta table
        for (value,) in rows:
            try:
                period = float(value)
            except ValueError:
                break
            if period > 0 and math.isfinite(period):
                return period
        rows = self._query("SELECT at - start FROM samples ORDER BY start DESC LIMIT 1")
        if rows and rows[0][0] and rows[0][0] > 0:
            return float(rows[0][0])
        return 60.0

    def samples(self, since: float, until: float | None = None, step: float | None = None,
                uplink: str | None = None) -> dict[str, Any]:
        """Samples with ``start`` in ``[since, until)``, summed per uplink into epoch-aligned
        buckets of ``step`` seconds (a whole number of sample periods; default: the smallest that
        gives at most 500 points). Each point: ``t`` (bucket start), ``sent``, ``lost``,
        ``loss_pct`` (None when nothing was sent), ``rtt_avg_ms`` (weighted by answered probes),
        ``rtt_min_ms``, ``rtt_max_ms``, ``jitter_ms`` (mean)."""
        until = self._clock() if until is None else float(until)
        since = float(since)
        period = self.sample_period()
        step = choose_step(until - since, period) if step is None else round_step(step, period)
        where = "start >= :since AND start < :until" + (" AND uplink = :uplink" if uplink is not None else "")
        rows = self._query(f"""
            SELECT uplink, CAST(start / :step AS INTEGER) AS bucket, SUM(sent), SUM(lost),
                   CASE WHEN SUM(sent) > 0 THEN 100.0 * SUM(lost) / SUM(sent) END,
                   SUM(rtt_avg_ms * (sent - lost))
                       / NULLIF(SUM(CASE WHEN rtt_avg_ms IS NOT NULL THEN sent - lost END), 0),
                   MIN(rtt_min_ms), MAX(rtt_max_ms), AVG(jitter_ms)
            FROM samples WHERE {where}
            GROUP BY uplink, bucket ORDER BY uplink, bucket""",
            {"since": since, "until": until, "step": step, "uplink": uplink})
        out: dict[str, list[dict[str, Any]]] = {}
        for up, bucket, sent, lost, loss, rtt, rmin, rmax, jitter in rows:
            out.setdefault(up, []).append({
                "t": bucket * step, "sent": sent, "lost": lost, "loss_pct": loss, "rtt_avg_ms": rtt,
                "rtt_min_ms": rmin, "rtt_max_ms": rmax, "jitter_ms": jitter})
        return {"step": step, "period": period, "since": since, "until": until, "uplinks": out}

    def uplinks(self) -> list[str]:
        """Every uplink name found in the samples or the events, sorted."""
        names: set[str] = set()
        for table in ("samples", "events"):  # a loose index scan: one probe per distinct name
            rows = self._query(f"""
                WITH RECURSIVE u(name) AS (
                    SELECT MIN(uplink) FROM {table}
                    UNION ALL
                    SELECT (SELECT MIN(uplink) FROM {table} WHERE uplink > u.name) FROM u WHERE u.name IS NOT NULL)
                SELECT name FROM u WHERE name IS NOT NULL""")
            names.update(r[0] for r in rows)
        return sorted(names)


__all__ = [
    "Batch", "BatchPolicy", "Batcher", "EVENT_KINDS", "HistoryError", "HistoryReader", "HistorySink",
    "HistoryStore", "Prune", "Recovery", "WriteResult", "applied_migrations", "choose_step", "commit_delay",
    "event_row", "migrate", "migrations", "parse_since", "round_step", "sample_row",
]
