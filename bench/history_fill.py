#!/usr/bin/env python3
"""Fill a history database with N days of samples for K uplinks, and time the web UI's queries.

    .venv/bin/python bench/history_fill.py --db /tmp/history.db --days 30 --uplinks 4
    .venv/bin/python bench/history_fill.py --db /tmp/history.db --uplinks wan1,lte --days 7 --force

The samples look like a router's: one row per uplink per period with a per-uplink RTT level and
noise, a little random loss, and a few outages (100 % loss) with the state-change, failover,
admin and engine events that go with them. Writing goes through :class:`HistoryStore` (the
engine's schema, pragmas and transaction code) in large batches. After filling it prints the
median time of the graph queries (1 h, 1 day, 7 days, 30 days over every uplink) and the event
log queries through :class:`HistoryReader`, i.e. what the web UI pays per request.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linkwatch.core.events import (  # noqa: E402
    ActiveChanged, AdminAction, EngineEvent, UplinkSamples, UplinkStateChanged,
)
from linkwatch.history import Batch, HistoryReader, HistoryStore, event_row, sample_row  # noqa: E402

DEFAULT_UPLINKS = ("wan1", "wan2", "wan3", "wan4")
CHUNK = 20_000  # rows per transaction


def _outages(rng: random.Random, start: float, end: float) -> list[tuple[float, float]]:
    """A few outage windows (begin, end): about one every two days, 2-40 minutes long."""
    out, t = [], start
    while True:
        t += rng.expovariate(1 / (2 * 86400))
        if t >= end:
            return out
        length = rng.uniform(120, 2400)
        out.append((t, min(t + length, end)))
        t += length


def fill(path: str, uplinks: tuple[str, ...] | list[str] = DEFAULT_UPLINKS, days: float = 30, period: float = 60,
         now: float | None = None, seed: int = 0) -> dict:
    """Create ``path`` (which must not exist) with ``days`` of samples for ``uplinks``, one row
    per uplink per ``period`` seconds ending at ``now``, plus the matching events. Returns counts."""
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; remove it first (or use --force)")
    rng = random.Random(seed)
    end = ((time.time() if now is None else now) // period) * period
    start = end - days * 86400
    t0 = time.perf_counter()
    store = HistoryStore(path)
    samples: list = []
    events: list = []
    n_samples = n_events = 0

    def flush(force: bool = False) -> None:
        nonlocal samples, events, n_samples, n_events
        if force or len(samples) + len(events) >= CHUNK:
            store.write(Batch(events=events, samples=samples, meta={"sample_period": repr(float(period))}))
            n_samples += len(samples)
            n_events += len(events)
            samples, events = [], []

    events.append(event_row(EngineEvent(at=start, mono=0.0, what="started", detail="history_fill")))
    probes = max(1, int(round(period)))  # about one probe a second per uplink
    for i, name in enumerate(uplinks):
        base = (8.0, 21.0, 45.0, 15.0)[i % 4] * (1 + 0.1 * (i // 4))
        down = _outages(rng, start, end)
        for a, b in down:
            for at, old, new, why in ((a, "UP", "DOWN", "3 failed rounds"), (b, "DOWN", "UP", "5 good rounds")):
                events.append(event_row(UplinkStateChanged(
                    at=at, mono=at - start, uplink=name, interface=f"eth{i + 1}", old=old, new=new, reason=why,
                    loss_pct=100.0 if new == "DOWN" else 0.0, rtt_ms=None if new == "DOWN" else base,
                    jitter_ms=None if new == "DOWN" else 1.0)))
            if i == 0:
                events.append(event_row(ActiveChanged(at=a + 0.01, mono=a - start, old=(name,),
                                                      new=(uplinks[1 % len(uplinks)],), reason=f"{name} DOWN")))
                events.append(event_row(ActiveChanged(at=b + 30, mono=b - start, old=(uplinks[1 % len(uplinks)],),
                                                      new=(name,), reason="failback after hold")))
        if i == 1:
            t = start + 3 * 86400.0
            events.append(event_row(AdminAction(at=t, mono=t - start, action="disable", uplink=name, source="cli",
                                                result="disabled")))
            events.append(event_row(AdminAction(at=t + 600, mono=t - start, action="enable", uplink=name,
                                                source="web:admin@192.168.1.10", result="enabled")))
        k, t, outage = 0, start, 0
        while t < end:
            while outage < len(down) and down[outage][1] <= t:
                outage += 1
            dead = outage < len(down) and down[outage][0] <= t + period
            lost = probes if dead else (rng.randrange(probes // 10 + 1) if rng.random() < 0.05 else 0)
            answered = probes - lost
            rtt = None if not answered else base * rng.uniform(0.9, 1.3)
            samples.append(sample_row(UplinkSamples(
                at=t + period, mono=t + period - start, uplink=name, start=t, sent=probes, lost=lost,
                loss_pct=100.0 * lost / probes, rtt_avg_ms=rtt, rtt_min_ms=None if rtt is None else rtt * 0.8,
                rtt_max_ms=None if rtt is None else rtt * 1.6, jitter_ms=None if rtt is None else rng.uniform(0.2, 3))))
            k += 1
            t = start + k * period
            flush()
    events.append(event_row(EngineEvent(at=end, mono=end - start, what="stopped")))
    flush(force=True)
    store.checkpoint()
    store.close()
    return {"path": path, "uplinks": list(uplinks), "samples": n_samples, "events": n_events,
            "bytes": os.path.getsize(path), "seconds": time.perf_counter() - t0, "since": start, "until": end}


def time_queries(path: str, until: float | None = None, runs: int = 21) -> list[tuple[str, float, float, int]]:
    """(query, median ms with an open reader, median ms including opening it, rows) per query."""
    until = time.time() if until is None else until
    reader = HistoryReader(path)
    names = reader.uplinks()

    def points(res: dict) -> int:
        return sum(len(v) for v in res["uplinks"].values())

    queries = [
        ("samples 1 h, all uplinks", lambda r: points(r.samples(until - 3600, until))),
        ("samples 1 day, all uplinks", lambda r: points(r.samples(until - 86400, until))),
        ("samples 7 days, all uplinks", lambda r: points(r.samples(until - 7 * 86400, until))),
        ("samples 30 days, all uplinks", lambda r: points(r.samples(until - 30 * 86400, until))),
        ("samples 1 day, one uplink", lambda r: points(r.samples(until - 86400, until, uplink=names[0]))),
        ("events, newest 200", lambda r: len(r.events())),
        ("events, one uplink, 30 days", lambda r: len(r.events(uplink=names[0], since=until - 30 * 86400))),
        ("uplinks()", lambda r: len(r.uplinks())),
    ]
    out = []
    for label, q in queries:
        warm, cold = [], []
        rows = 0
        for _ in range(runs):
            t = time.perf_counter()
            rows = q(reader)
            warm.append(time.perf_counter() - t)
            t = time.perf_counter()
            with HistoryReader(path) as fresh:
                q(fresh)
            cold.append(time.perf_counter() - t)
        out.append((label, 1000 * statistics.median(warm), 1000 * statistics.median(cold), rows))
    reader.close()
    return out


def _uplink_names(text: str) -> tuple[str, ...]:
    if text.isdigit():
        return tuple(f"wan{i + 1}" for i in range(int(text)))
    return tuple(n.strip() for n in text.split(",") if n.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="database file to create")
    p.add_argument("--days", type=float, default=30)
    p.add_argument("--uplinks", default="4", help="a count (wan1..wanN) or comma-separated names (default 4)")
    p.add_argument("--period", type=float, default=60, help="sample period in seconds (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--no-queries", action="store_true", help="only fill, do not time the queries")
    args = p.parse_args(argv)
    if args.force:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.db + suffix):
                os.remove(args.db + suffix)
    try:
        info = fill(args.db, _uplink_names(args.uplinks), days=args.days, period=args.period, seed=args.seed)
    except FileExistsError as e:
        print(f"history_fill: {e}", file=sys.stderr)
        return 1
    print(f"{info['path']}: {info['samples']} samples and {info['events']} events for {len(info['uplinks'])} "
          f"uplinks over {args.days:g} days in {info['seconds']:.1f}s; {info['bytes'] / 1e6:.1f} MB")
    if not args.no_queries:
        print("| query | ms (open reader) | ms (incl. open) | rows/points |\n|---|---|---|---|")
        for label, warm, cold, rows in time_queries(args.db, until=info["until"]):
            print(f"| {label} | {warm:.2f} | {cold:.2f} | {rows} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
