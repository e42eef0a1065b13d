"""The history's batching rule and buffer, pure (no I/O, no clock: times are passed in).

:func:`commit_delay` decides when the next commit is due: samples at most once per
``commit_interval``; an event within ``event_delay`` of its arrival (a burst in that time shares one
commit); after a failed commit the next try waits a backoff. :class:`Batcher` is the sink's bounded
buffer: it turns events into table rows, hands them out as one :class:`Batch` per commit and keeps
the counters. Retention (:class:`Prune`) rides inside a normal batch, at most once per
``prune_interval`` and in the first batch of a run.
"""

from __future__ import annotations

import collections
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from linkwatch.core.events import Event, UplinkSamples, event_to_dict

if TYPE_CHECKING:  # pragma: no cover
    from linkwatch.config import HistoryConfig


# ---------------------------------------------------------------------------------------------
# Rows (pure)

EventRow = tuple[float, str, "str | None", str]  # at, kind, uplink, data (JSON)
SampleRow = tuple[str, float, float, int, int, "float | None", "float | None", "float | None", "float | None",
                  "float | None", int, int, int]  # uplink, start, at, sent, lost, loss_pct, rtt_avg/min/max_ms,
#                                                    jitter_ms, rx_bytes, tx_bytes, family
SAMPLE_COLUMNS = ("uplink", "start", "at", "sent", "lost", "loss_pct", "rtt_avg_ms", "rtt_min_ms",
                  "rtt_max_ms", "jitter_ms", "rx_bytes", "tx_bytes", "family")


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
    """The samples-table row of one uplink's history period (of one family)."""
    return (ev.uplink, ev.start, ev.at, ev.sent, ev.lost, ev.loss_pct, ev.rtt_avg_ms, ev.rtt_min_ms,
            ev.rtt_max_ms, ev.jitter_ms, ev.rx_bytes, ev.tx_bytes, ev.family)


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
