"""`linkwatch history`: print the event log from the history database.

A thin wrapper over :class:`linkwatch.history.HistoryReader` (read-only: safe next to a running
engine, and for a user who may only read the file). The database is ``[history] path`` of the
config unless ``--db`` names it. Errors are one line on stderr: exit 1 when the database is missing
or unreadable, 2 for bad usage or config. Also runnable alone:
``python -m linkwatch.commands.history --db /var/lib/linkwatch/history.db --since 1h``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from linkwatch.commands import common
from linkwatch.commands.common import (DEFAULT_CONFIG, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, UsageError, fail,
                                       load_config)
from linkwatch.core.events import EVENT_TYPES, EventError, event_from_dict
from linkwatch.history.reader import EVENT_KINDS, HistoryError, HistoryReader, parse_since
from linkwatch.sinks.log import format_event

NAME = "history"
HELP = "print the event log from the history database"
DEFAULT_LIMIT = 200
PREFIX = "linkwatch history"  # how its lines on stderr start


# --- formatting (pure) -----------------------------------------------------------------------


def describe(row: dict[str, Any]) -> str:
    """What happened, in the log's words (:func:`linkwatch.sinks.log.format_event`); rows of an unknown
    shape (a newer writer) fall back to ``key=value`` pairs."""
    fields = {k: v for k, v in row.items() if k != "id"}
    cls = EVENT_TYPES.get(row.get("kind"))
    if cls is not None and "uplink" not in {f.name for f in dataclasses.fields(cls)}:
        fields.pop("uplink", None)
    try:
        return format_event(event_from_dict(fields))
    except EventError:
        return " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("kind", "at", "mono", "uplink"))


def format_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per event, in the order given: local time, kind, uplink, what happened."""
    kind_w = max((len(r["kind"]) for r in rows), default=0)
    up_w = max((len(r.get("uplink") or "-") for r in rows), default=0)
    return [
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['at']))}  {r['kind']:<{kind_w}}  "
        f"{r.get('uplink') or '-':<{up_w}}  {describe(r)}"
        for r in rows
    ]


# --- arguments -------------------------------------------------------------------------------


def kind_list(values: Sequence[str] | None) -> list[str] | None:
    """``--kind a --kind b,c`` -> ``["a", "b", "c"]``, each checked."""
    if not values:
        return None
    kinds = [k.strip() for v in values for k in v.split(",") if k.strip()]
    bad = [k for k in kinds if k not in EVENT_KINDS]
    if bad:
        raise UsageError(f"unknown --kind {', '.join(bad)}: expected some of {', '.join(sorted(EVENT_KINDS))} "
                         f"(samples are graphed by the web UI, not listed here)")
    return kinds


def db_path(args: argparse.Namespace) -> str:
    """``--db``, else ``[history] path`` of ``--config``."""
    if args.db:
        return args.db
    config = load_config(args.config)
    if not config.history.path:
        raise UsageError(f"{args.config}: [history] path is not set (no history is kept); or give --db PATH")
    return config.history.path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


# --- the command -----------------------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    try:
        path = db_path(args)
        kinds = kind_list(args.kind)
        now = time.time()
        since = parse_since(args.since, now) if args.since else None
        until = parse_since(args.until, now) if args.until else None
    except (UsageError, HistoryError) as e:
        return fail(e, EXIT_USAGE, PREFIX)
    try:
        with HistoryReader(path) as reader:
            rows = reader.events(uplink=args.uplink, since=since, until=until, kinds=kinds, limit=args.limit)
    except HistoryError as e:
        return fail(e, EXIT_RUNTIME, PREFIX)
    rows.reverse()  # oldest first, for reading
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print("\n".join(format_lines(rows)))
    else:
        print(f"{PREFIX}: no events" + (f" since {args.since}" if args.since else ""), file=sys.stderr)
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``history`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(
        NAME, help=HELP,
        description="Print events (state changes with their numbers, failovers, admin actions, engine "
                    "start/stop) from the history database, oldest first. Read-only.")
    sp.add_argument("--config", default=DEFAULT_CONFIG,
                    help=f"config file, for [history] path (default {DEFAULT_CONFIG})")
    sp.add_argument("--db", metavar="PATH", help="history database file (overrides the config)")
    sp.add_argument("--uplink", metavar="NAME", help="only this uplink's events (and failovers naming it)")
    sp.add_argument("--since", metavar="WHEN", help="1h, 30m, 2d (ago), an epoch time, or 2026-11-26[T10:00] (local)")
    sp.add_argument("--until", metavar="WHEN", help="same forms as --since")
    sp.add_argument("--kind", action="append", metavar="KIND",
                    help=f"only these kinds ({', '.join(sorted(EVENT_KINDS))}); repeat or comma-separate")
    sp.add_argument("--limit", type=_positive_int, default=DEFAULT_LIMIT,
                    help=f"at most this many of the newest events (default {DEFAULT_LIMIT})")
    sp.add_argument("--json", action="store_true", help="a JSON list of events instead of lines")
    sp.set_defaults(func=cmd_history)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m linkwatch.commands.history [options]``: the command on its own."""
    return common.main([sys.modules[__name__]], argv, alone=NAME)


if __name__ == "__main__":
    sys.exit(main())
