"""The history's writing side: the schema (named sqlite-utils migrations) and :class:`HistoryStore`,
one SQLite connection used by one thread that writes each :class:`~linkwatch.history.batching.Batch`
in one transaction.

The database file is made mode 0640 whatever the umask, group the control socket's (SQLite gives
``-wal`` and ``-shm`` the database file's mode and owner), so that the web UI, another and
unprivileged user in that group, can read it and nobody else (it holds the admins' addresses); on
a clean close the file goes back to rollback-journal mode so that a reader who may not create
``-wal``/``-shm`` in the directory can still open it while the engine is stopped.

Imports only the standard library at the top; sqlite-utils is imported when migrating.
"""

from __future__ import annotations

import grp
import os
import sqlite3
from typing import TYPE_CHECKING

from linkwatch.history.batching import SAMPLE_COLUMNS, Batch, Prune, WriteResult

if TYPE_CHECKING:  # pragma: no cover
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

MIGRATION_SET = "linkwatch-history"


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

    @m(name="m003_interface_traffic")
    def m003(db: Database) -> None:
        # the interface's own bytes per period: the month's traffic survives a restart
        db["samples"].add_column("rx_bytes", int, not_null_default=0)
        db["samples"].add_column("tx_bytes", int, not_null_default=0)

    @m(name="m004_sample_family")
    def m004(db: Database) -> None:
        # a dual-stack uplink's IPv6 probes get rows of their own (family 6); earlier rows are IPv4's
        db["samples"].add_column("family", int, not_null_default=4)

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


def _create_file(path: str, mode: int = 0o640, group: str | None = None) -> None:
    """Create an empty database file with ``mode`` whatever the umask, owned by ``group`` when
    given (SQLite then gives -wal and -shm the same mode and owner), so the web UI's user, in that
    group, may read it and nobody else. An existing file is left alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return
    try:
        if group is not None:
            try:
                os.fchown(fd, -1, grp.getgrnam(group).gr_gid)
            except (KeyError, PermissionError):  # no such group, or not one of ours: the engine's own group
                pass
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


class HistoryStore:
    """The writing side: one SQLite connection, opened and used by one thread.

    Opening creates the file (mode 0640, group ``group``) and applies the schema; ``auto_vacuum=INCREMENTAL`` is set
    before the first table, then WAL with ``synchronous=NORMAL`` (a killed process loses nothing
    committed). Every :meth:`write` is one transaction. Errors are sqlite3/OS errors, untouched.
    """

    def __init__(self, path: str, busy_timeout: float = 1.0, *, stop_before: str | None = None,
                 group: str | None = None):
        self.path = path
        _create_file(path, group=group)
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
