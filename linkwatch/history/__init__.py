"""The history database: events and per-uplink samples in SQLite, written in batches, read read-only.

From pure to I/O:

* :mod:`linkwatch.history.batching` (pure, time passed in): the batching rule
  (:func:`commit_delay`), the in-memory buffer (:class:`Batcher`) and the table rows.
* :mod:`linkwatch.history.store`: the schema migrations and :class:`HistoryStore`, one SQLite
  connection used by one thread, one transaction per batch.
* :mod:`linkwatch.history.reader`: :class:`HistoryReader`, read-only (``mode=ro``) for the CLI and
  the unprivileged web UI, with the time arguments of a query and :class:`HistoryError`.

The writer itself, the asyncio sink that never delays the engine, is
:class:`linkwatch.sinks.history.HistorySink`. Everything here imports only the standard library and
:mod:`linkwatch.core.events` at the top (sqlite-utils is imported when migrating), so the reader
also works under a plain system Python.
"""

from __future__ import annotations

from linkwatch.history.batching import (
    SAMPLE_COLUMNS,
    Batch,
    BatchPolicy,
    Batcher,
    EventRow,
    Prune,
    Recovery,
    SampleRow,
    WriteResult,
    commit_delay,
    event_row,
    sample_row,
)
from linkwatch.history.reader import (
    EVENT_KINDS,
    MAX_POINTS,
    HistoryError,
    HistoryReader,
    choose_step,
    parse_since,
    round_step,
)
from linkwatch.history.store import MIGRATION_SET, HistoryStore, applied_migrations, migrate, migrations

__all__ = [
    "Batch", "BatchPolicy", "Batcher", "EVENT_KINDS", "EventRow", "HistoryError", "HistoryReader", "HistoryStore",
    "MAX_POINTS", "MIGRATION_SET", "Prune", "Recovery", "SAMPLE_COLUMNS", "SampleRow", "WriteResult",
    "applied_migrations", "choose_step", "commit_delay", "event_row", "migrate", "migrations", "parse_since",
    "round_step", "sample_row",
]
