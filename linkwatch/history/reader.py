"""Reading the history database, read-only (``mode=ro``), for `linkwatch history` and the web UI.

The web UI runs as another, unprivileged user: this module imports only the standard library and
:mod:`linkwatch.core.events` (and :mod:`linkwatch.config` lazily, for :func:`parse_since`), so it
also works under a plain system Python. Also here: the time arguments of a query (:func:`parse_since`,
:func:`choose_step`, :func:`round_step`) and :class:`HistoryError`, the one error of the history.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable

from linkwatch.core.events import EVENT_TYPES, UplinkSamples

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
            try:
                return moment.timestamp()  # naive = local time
            except (ValueError, OverflowError, OSError):  # year 1 in local time: before the epoch's range
                raise HistoryError(f"bad time {text!r}: out of range; expected {_SINCE_FORMS}") from None
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
        self._family: bool | None = None  # has the samples table a family column (migration m004)?
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
                uplink: str | None = None, family: int = 4) -> dict[str, Any]:
        """Samples of ``family`` (4, or 6: a dual-stack uplink's IPv6 probes) with ``start`` in
        ``[since, until)``, summed per uplink into epoch-aligned
        buckets of ``step`` seconds (a whole number of sample periods; default: the smallest that
        gives at most 500 points, and a finer ``step`` is raised to that: whoever asks, the answer
        never holds more than MAX_POINTS points per uplink). Each point: ``t`` (bucket start), ``sent``, ``lost``,
        ``loss_pct`` (None when nothing was sent), ``rtt_avg_ms`` (weighted by answered probes),
        ``rtt_min_ms``, ``rtt_max_ms``, ``jitter_ms`` (mean)."""
        until = self._clock() if until is None else float(until)
        since = float(since)
        period = self.sample_period()
        finest = choose_step(until - since, period)  # the step that gives MAX_POINTS points
        step = finest if step is None else max(round_step(step, period), finest)
        where = "start >= :since AND start < :until" + (" AND uplink = :uplink" if uplink is not None else "")
        if self._has_family():
            where += " AND family = :family"
        elif family != 4:  # a database from before IPv6 samples: all of its rows are IPv4's
            where += " AND 0"
        rows = self._query(f"""
            SELECT uplink, CAST(start / :step AS INTEGER) AS bucket, SUM(sent), SUM(lost),
                   CASE WHEN SUM(sent) > 0 THEN 100.0 * SUM(lost) / SUM(sent) END,
                   SUM(rtt_avg_ms * (sent - lost))
                       / NULLIF(SUM(CASE WHEN rtt_avg_ms IS NOT NULL THEN sent - lost END), 0),
                   MIN(rtt_min_ms), MAX(rtt_max_ms), AVG(jitter_ms)
            FROM samples WHERE {where}
            GROUP BY uplink, bucket ORDER BY uplink, bucket""",
            {"since": since, "until": until, "step": step, "uplink": uplink, "family": family})
        out: dict[str, list[dict[str, Any]]] = {}
        for up, bucket, sent, lost, loss, rtt, rmin, rmax, jitter in rows:
            out.setdefault(up, []).append({
                "t": bucket * step, "sent": sent, "lost": lost, "loss_pct": loss, "rtt_avg_ms": rtt,
                "rtt_min_ms": rmin, "rtt_max_ms": rmax, "jitter_ms": jitter})
        return {"step": step, "period": period, "since": since, "until": until, "uplinks": out}

    def _has_family(self) -> bool:
        if self._family is None:
            self._family = any(r[1] == "family" for r in self._query("PRAGMA table_info(samples)"))
        return self._family

    def traffic_since(self, since: float) -> dict[str, int]:
        """Bytes received + sent on each uplink's interface in the periods that began at ``since``
        or later (the month so far, for the engine's quota after a restart)."""
        rows = self._query("SELECT uplink, SUM(rx_bytes + tx_bytes) FROM samples WHERE start >= :since "
                           "GROUP BY uplink", {"since": float(since)})
        return {uplink: int(total or 0) for uplink, total in rows}

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
