#!/usr/bin/env python3
"""linkwatch web benchmark: dashboard and API latency, history commits, web UI memory.

Run by hand, as root, from the repository:

    sudo .venv/bin/python bench/bench_web.py            # about 5 minutes
    sudo .venv/bin/python bench/bench_web.py --quick    # a smoke run, about 1.5 minutes
    sudo .venv/bin/python bench/bench_web.py --steady 300 --trials 7 --requests 300

It builds lab ``bW`` (4 uplinks, 3 probe targets each), fills its history with 30 days of
1-minute samples for wan1..wan4 (bench/history_fill.py), starts the engine (history sample
period 1 min) and the lab's web UI (user nobody, host loopback, public_read), waits for all
uplinks UP, then measures:

1. latency of GET /api/v1/status (target p95 <= 20 ms) and GET / (target p95 <= 100 ms), and,
   for information, /api/v1/samples?since=1h and 1d, /api/v1/events?since=1d&limit=50, /metrics.
   Each trial is ONE persistent keep-alive connection (like a browser, session cookie sent back)
   with sequential requests, interleaved round-robin over the endpoints (status, page, samples 1h,
   samples 1d, events, metrics, status, ...); the first --warmup rounds are dropped. Reported per
   trial as p50/p95/max, then the median and range of the trial p95s. One more trial opens a NEW
   connection per request (informative).
2. history commits in steady state (target <= 1 per 10 s), counted independently of the engine:
   a read-only connection polls ``PRAGMA data_version`` every 100 ms (each change = at least one
   commit by another connection) during a --steady window without faults or HTTP load, compared
   with the engine's own counter (status sinks.history.detail.commits) at the window's ends.
3. the web UI process's VmRSS and VmHWM (target <= 60 MB) before and after the load.

It prints Markdown tables and writes every raw number to bench/results/web-<time>.json. The lab
is torn down at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import socket
import sqlite3
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from history_fill import fill  # noqa: E402

from linkwatch.lab import topology  # noqa: E402
from linkwatch.lab.safety import NETNS_DIR  # noqa: E402
from linkwatch.lab.plan import LabSpec  # noqa: E402
from linkwatch.lab.processes import read_records  # noqa: E402
from linkwatch.lab.topology import EngineOptions  # noqa: E402

LAB = "bW"
UPLINKS = ("wan1", "wan2", "wan3", "wan4")
HOST = "127.0.0.1"
POLL_INTERVAL = 0.1  # data_version poll
COMMIT_WINDOW = 10.0  # target: at most one commit per this many seconds
HTTP_TIMEOUT = 10.0
TRIAL_LIMIT = 600.0  # no single latency trial runs longer than this
WATCH_LIMIT = 3 * 3600.0  # the commit watcher stops by itself after this

# (key, path, target p95 in ms or None)
ENDPOINTS: tuple[tuple[str, str, float | None], ...] = (
    ("status", "/api/v1/status", 20.0),
    ("page", "/", 100.0),
    ("samples_1h", "/api/v1/samples?since=1h", None),
    ("samples_1d", "/api/v1/samples?since=1d", None),
    ("events_1d", "/api/v1/events?since=1d&limit=50", None),
    ("metrics", "/metrics", None),
)


class BenchError(RuntimeError):
    """The benchmark cannot set up or measure what it was asked to."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- pure helpers ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    if not values:
        raise BenchError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: list[float]) -> dict:
    ms = [s * 1000.0 for s in seconds]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms),
            "mean_ms": statistics.fmean(ms)}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def max_in_window(times: list[float], width: float) -> int:
    """The largest number of ``times`` inside any half-open window [t, t + width)."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def proc_status(pid: int) -> dict[str, int | str]:
    """VmRSS and VmHWM (bytes) and the real uid of ``pid`` from /proc/<pid>/status."""
    out: dict[str, int | str] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Uid":
                out["uid"] = int(value.split()[0])
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --- HTTP --------------------------------------------------------------------------------------


@dataclass
class Browser:
    """Sequential GETs like a browser tab: one keep-alive connection, the session cookie sent back.

    With ``keep_alive=False`` every request opens (and closes) its own connection."""

    port: int
    keep_alive: bool = True
    cookie: str | None = None
    connects: int = 0
    conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=HTTP_TIMEOUT)
            self.connects += 1
        return self.conn

    def get(self, path: str) -> tuple[float, int, bytes]:
        """(seconds from sending the request to the last body byte, HTTP status, body)."""
        headers = {"Accept-Encoding": "identity"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if not self.keep_alive:
            headers["Connection"] = "close"
        t0 = time.perf_counter()
        conn = self._connection()
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        took = time.perf_counter() - t0
        set_cookie = resp.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";", 1)[0]
        if resp.will_close or not self.keep_alive:
            self.close()
        return took, resp.status, body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class TrialResult:
    keep_alive: bool
    seconds: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    rounds: int = 0
    elapsed: float = 0.0
    truncated: bool = False

    def to_json(self) -> dict:
        return {"keep_alive": self.keep_alive, "connects": self.connects, "rounds": self.rounds,
                "elapsed_s": self.elapsed, "truncated": self.truncated, "bytes": self.bytes,
                "errors": self.errors,
                "summary": {k: latency_summary(v) for k, v in self.seconds.items() if v},
                "seconds": {k: [round(s, 6) for s in v] for k, v in self.seconds.items()}}


def run_trial(port: int, requests: int, warmup: int, keep_alive: bool = True,
              endpoints=ENDPOINTS, limit: float = TRIAL_LIMIT) -> TrialResult:
    """``warmup + requests`` rounds over ``endpoints`` (round-robin); the warm-up rounds are dropped."""
    res = TrialResult(keep_alive=keep_alive, seconds={k: [] for k, _, _ in endpoints},
                      errors={k: [] for k, _, _ in endpoints})
    browser = Browser(port, keep_alive=keep_alive)
    t0 = time.monotonic()
    try:
        for r in range(warmup + requests):
            if time.monotonic() - t0 > limit:
                res.truncated = True
                break
            for key, path, _ in endpoints:
                try:
                    took, code, body = browser.get(path)
                except (OSError, http.client.HTTPException) as e:
                    res.errors[key].append(f"{type(e).__name__}: {e}")
                    continue
                if code != 200:
                    res.errors[key].append(f"HTTP {code}: {body[:120]!r}")
                res.bytes[key] = len(body)
                if r >= warmup:
                    res.seconds[key].append(took)
            res.rounds = r + 1
    finally:
        browser.close()
    res.connects = browser.connects
    res.elapsed = time.monotonic() - t0
    return res


def sanity(port: int) -> dict:
    """One GET of each endpoint, checked and described (status 200, JSON shape, sizes)."""
    browser = Browser(port)
    out: dict = {}
    try:
        for key, path, _ in ENDPOINTS:
            _, code, body = browser.get(path)
            if code != 200:
                raise BenchError(f"GET {path} answered HTTP {code}: {body[:200]!r}")
            info: dict = {"bytes": len(body)}
            if key.startswith("samples"):
                data = json.loads(body)
                info.update(step=data["step"], points={u: len(v) for u, v in data["uplinks"].items()})
            elif key.startswith("events"):
                info["events"] = len(json.loads(body)["events"])
            elif key == "status":
                info["uplinks"] = len(json.loads(body)["status"]["uplinks"])
            elif key == "metrics":
                info["lines"] = body.count(b"\n")
            out[key] = info
    finally:
        browser.close()
    return out


# --- history commits ---------------------------------------------------------------------------


class CommitWatcher(threading.Thread):
    """Polls ``PRAGMA data_version`` of a read-only connection; records when it changed.

    A change means that another connection committed at least once since the previous poll (two
    commits within one poll interval count as one)."""

    def __init__(self, path: str, interval: float = POLL_INTERVAL, limit: float = WATCH_LIMIT):
        super().__init__(name="commit-watcher", daemon=True)
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                    check_same_thread=False, timeout=1.0)
        self.interval, self.limit = interval, limit
        self.changes: list[float] = []  # monotonic times of observed changes
        self.polls = 0
        self.errors: list[str] = []
        self.max_gap = 0.0  # longest time between two successful polls
        self._halt = threading.Event()

    def _version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def run(self) -> None:
        t0 = last_poll = time.monotonic()
        last = self._version()
        while not self._halt.wait(self.interval) and time.monotonic() - t0 < self.limit:
            try:
                v = self._version()
            except sqlite3.Error as e:
                self.errors.append(f"{time.monotonic() - t0:.1f}s: {e}")
                continue
            now = time.monotonic()
            self.polls += 1
            self.max_gap = max(self.max_gap, now - last_poll)
            last_poll = now
            if v != last:
                self.changes.append(now)
                last = v

    def between(self, a: float, b: float) -> list[float]:
        return [t for t in self.changes if a <= t < b]

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5.0)
        self.conn.close()


# --- the lab -----------------------------------------------------------------------------------


def engine_status(spec: LabSpec) -> dict:
    st, err = topology.engine_status(spec, timeout=2.0)
    if st is None:
        raise BenchError(f"engine does not answer: {err}")
    return st.to_dict()


def history_counter(st: dict) -> dict:
    detail = st.get("sinks", {}).get("history", {}).get("detail")
    if not isinstance(detail, dict) or "commits" not in detail:
        raise BenchError(f"engine status has no sinks.history.detail.commits: {st.get('sinks')!r}")
    return detail


def wait_all_up(spec: LabSpec, timeout: float = 90.0) -> float:
    t0 = time.monotonic()
    states: dict = {}
    while time.monotonic() - t0 < timeout:
        st, _ = topology.engine_status(spec, timeout=1.0)
        if st is not None:
            states = {u.name: u.state.value for u in st.uplinks}
            if len(states) == spec.uplinks and all(s == "UP" for s in states.values()):
                return time.monotonic() - t0
        time.sleep(0.2)
    raise BenchError(f"not every uplink was UP within {timeout:g}s: {states}")


def web_pid(spec: LabSpec) -> int:
    recs = [r for r in read_records(spec.state_dir) if r.role == "web" and r.alive]
    if not recs:
        raise BenchError(f"no live web process recorded in {spec.state_dir}")
    return recs[0].pid


def db_info(path: str) -> dict:
    sizes = {s or "db": os.path.getsize(path + s) for s in ("", "-wal", "-shm") if os.path.exists(path + s)}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    try:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("samples", "events")}
        first, last = conn.execute("SELECT min(start), max(start) FROM samples").fetchone()
        per_uplink = dict(conn.execute("SELECT uplink, count(*) FROM samples GROUP BY uplink").fetchall())
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return {"bytes": sizes, "rows": counts, "samples_per_uplink": per_uplink, "first_sample": first,
            "last_sample": last, "pages": pages, "page_size": page_size}


def leftover_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"lw-{LAB}-"))
    except OSError:
        return []


# --- the run -----------------------------------------------------------------------------------


def measure(args: argparse.Namespace, results: dict) -> None:
    spec = LabSpec(LAB, len(UPLINKS))
    port = free_port()
    listen = f"{HOST}:{port}"
    log(f"building lab {LAB} (4 uplinks) without the engine")
    topology.up(spec, engine=False)
    log(f"filling {spec.history_path}: {args.days:g} days of 1-minute samples for {', '.join(UPLINKS)}")
    info = fill(spec.history_path, uplinks=UPLINKS, days=args.days, period=60)
    results["fill"] = {k: v for k, v in info.items()}
    log(f"  {info['samples']} samples, {info['events']} events, {info['bytes'] / 1e6:.1f} MB "
        f"in {info['seconds']:.1f}s")
    log(f"starting the engine (3 probe targets per uplink) and the web UI on {listen}")
    options = EngineOptions(probe_targets=3, web=listen,
                            overrides={"history": {"path": spec.history_path, "sample_period": "1m"}})
    topology.start_engine(spec, options)
    results["all_up_after_s"] = wait_all_up(spec)
    log(f"all 4 uplinks UP after {results['all_up_after_s']:.1f}s")
    st = engine_status(spec)
    wpid, epid = web_pid(spec), st["pid"]
    results["web_pid"], results["engine_pid"] = wpid, epid
    results["web_uid"] = proc_status(wpid)["uid"]
    results["memory"] = {"web_at_start": proc_status(wpid), "engine_at_start": proc_status(epid)}
    results["sanity"] = sanity(port)
    log("sanity: " + "; ".join(f"{k} {v['bytes']} B" for k, v in results["sanity"].items()))

    watcher = CommitWatcher(spec.history_path)
    watcher.start()
    try:
        # 1. latency, keep-alive trials
        load_start = time.monotonic()
        trials = []
        for i in range(args.trials):
            tr = run_trial(port, args.requests, args.warmup)
            trials.append(tr)
            s, p = latency_summary(tr.seconds["status"]), latency_summary(tr.seconds["page"])
            errors = sum(len(v) for v in tr.errors.values())
            log(f"trial {i + 1}/{args.trials} (keep-alive, {tr.connects} connection(s), {tr.elapsed:.1f}s): "
                f"status p95 {s['p95_ms']:.1f} ms, page p95 {p['p95_ms']:.1f} ms, errors {errors}")
        results["trials"] = [t.to_json() for t in trials]
        # 1b. a new connection per request
        tr = run_trial(port, args.requests, args.warmup, keep_alive=False)
        results["new_connection_trial"] = tr.to_json()
        log(f"new-connection trial: {tr.connects} connections in {tr.elapsed:.1f}s")
        load_end = time.monotonic()
        results["memory"]["web_after_load"] = proc_status(wpid)
        load_commits = watcher.between(load_start, load_end)
        results["commits_during_load"] = {"seconds": load_end - load_start, "observed": len(load_commits),
                                          "max_per_10s": max_in_window(load_commits, COMMIT_WINDOW)}

        # 2. steady state: no faults, no HTTP load
        log(f"steady state: watching history commits for {args.steady:g}s (no faults, no HTTP load)")
        before = history_counter(engine_status(spec))
        s0 = time.monotonic()
        time.sleep(args.steady)
        s1 = time.monotonic()
        after = history_counter(engine_status(spec))
        seen = watcher.between(s0, s1)
        results["steady"] = {
            "seconds": s1 - s0, "poll_interval_s": POLL_INTERVAL,
            "observed_commits": len(seen), "observed_at_s": [round(t - s0, 2) for t in seen],
            "max_commits_in_10s": max_in_window(seen, COMMIT_WINDOW),
            "engine_commits": after["commits"] - before["commits"],
            "engine_failed_commits": after.get("failed_commits", 0) - before.get("failed_commits", 0),
            "engine_before": before, "engine_after": after,
        }
        log(f"steady: {len(seen)} commits seen, engine counted {results['steady']['engine_commits']}")
    finally:
        watcher.stop()
    results["watcher"] = {"polls": watcher.polls, "max_gap_s": watcher.max_gap, "errors": watcher.errors[:20],
                          "total_changes": len(watcher.changes)}
    results["memory"]["web_at_end"] = proc_status(wpid)
    results["memory"]["engine_at_end"] = proc_status(epid)
    results["db"] = db_info(spec.history_path)
    results["engine_status_at_end"] = {k: engine_status(spec).get(k) for k in ("active", "active_changes")}


# --- report ------------------------------------------------------------------------------------


def mb(v: float) -> str:
    return f"{v / 1e6:.1f} MB"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(results: dict) -> str:
    lines: list[str] = []
    trials = results.get("trials", [])
    if trials:
        n_req = trials[0]["summary"]["status"]["n"]
        lines += [f"### Latency per trial (keep-alive, one connection per trial, {n_req} requests per endpoint, "
                  f"round-robin, {results['args']['warmup']} warm-up rounds dropped)", "",
                  "| endpoint | " + " | ".join(f"trial {i + 1} p50 / p95 / max ms" for i in range(len(trials)))
                  + " | bytes |",
                  "|---|" + "---|" * len(trials) + "---|"]
        for key, path, _ in ENDPOINTS:
            cells = []
            for t in trials:
                s = t["summary"].get(key)
                cells.append(f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f} / {s['max_ms']:.1f}" if s else "-")
            lines.append(f"| GET {path} | " + " | ".join(cells) + f" | {trials[0]['bytes'].get(key, '-')} |")
        errs = {k: sum(len(t["errors"][k]) for t in trials) for k, _, _ in ENDPOINTS}
        if any(errs.values()):
            lines.append(f"\nerrors: {errs}")
        lines += ["", "### Latency summary (median of the trial values, range over trials)", "",
                  "| endpoint | p95 median (range) | p50 median (range) | worst max | target p95 | |",
                  "|---|---|---|---|---|---|"]
        for key, path, target in ENDPOINTS:
            p95 = spread([t["summary"][key]["p95_ms"] for t in trials])
            p50 = spread([t["summary"][key]["p50_ms"] for t in trials])
            worst = max(t["summary"][key]["max_ms"] for t in trials)
            tgt = f"≤ {target:g} ms" if target else "(info)"
            ok = verdict(p95["median"] <= target) if target else ""
            lines.append(f"| GET {path} | {p95['median']:.1f} ms ({p95['min']:.1f}–{p95['max']:.1f}) | "
                         f"{p50['median']:.1f} ms ({p50['min']:.1f}–{p50['max']:.1f}) | {worst:.1f} ms | "
                         f"{tgt} | {ok} |")
    nc = results.get("new_connection_trial")
    if nc:
        lines += ["", f"### New connection per request (informative, {nc['connects']} connections)", "",
                  "| endpoint | p50 ms | p95 ms | max ms |", "|---|---|---|---|"]
        for key, path, _ in ENDPOINTS:
            s = nc["summary"].get(key)
            if s:
                lines.append(f"| GET {path} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['max_ms']:.1f} |")
    lines += ["", "### History, memory", "", "| what | measured | target | |", "|---|---|---|---|"]
    st = results.get("steady")
    if st:
        lines.append(f"| history commits, steady state {st['seconds']:.0f} s (data_version polled every "
                     f"{st['poll_interval_s'] * 1000:.0f} ms) | {st['observed_commits']} commits seen, "
                     f"max {st['max_commits_in_10s']} in any 10 s; engine counted {st['engine_commits']} "
                     f"(failed {st['engine_failed_commits']}) | ≤ 1 per 10 s | "
                     f"{verdict(st['max_commits_in_10s'] <= 1)} |")
        lines.append(f"| commit times in the window (s from its start) | "
                     f"{', '.join(f'{t:.1f}' for t in st['observed_at_s']) or 'none'} | | |")
    ld = results.get("commits_during_load")
    if ld:
        lines.append(f"| history changes during the HTTP load ({ld['seconds']:.0f} s, right after the engine "
                     f"started: the store's first open (switch to WAL) and the start-up events) | "
                     f"{ld['observed']} seen, "
                     f"max {ld['max_per_10s']} in any 10 s | (info) | |")
    mem = results.get("memory", {})
    if "web_after_load" in mem:
        w = mem["web_after_load"]
        end = mem.get("web_at_end", w)
        hwm = max(w["VmHWM"], end["VmHWM"])
        lines.append(f"| web UI RSS (pid {results['web_pid']}, uid {results['web_uid']}) after the load | "
                     f"VmRSS {mb(w['VmRSS'])}, VmHWM {mb(hwm)} (at start {mb(mem['web_at_start']['VmRSS'])}) | "
                     f"≤ 60 MB | {verdict(hwm <= 60e6)} |")
    if "engine_at_end" in mem:
        e = mem["engine_at_end"]
        lines.append(f"| engine RSS (info) | VmRSS {mb(e['VmRSS'])}, VmHWM {mb(e['VmHWM'])} | | |")
    db = results.get("db")
    if db:
        sizes = ", ".join(f"{k} {mb(v)}" for k, v in db["bytes"].items())
        lines.append(f"| history database | {sizes}; {db['rows']['samples']} samples "
                     f"({', '.join(f'{u} {n}' for u, n in sorted(db['samples_per_uplink'].items()))}), "
                     f"{db['rows']['events']} events | | |")
    san = results.get("sanity")
    if san:
        def points(key: str) -> str:
            p = san[key]["points"]
            counts = "/".join(str(n) for n in sorted(set(p.values())))
            return f"{len(p)} uplinks × {counts} points (step {san[key]['step']:g} s)"
        lines.append(f"| samples API answer | 1h: {points('samples_1h')}; 1d: {points('samples_1d')} | | |")
    load = results.get("loadavg")
    if load:
        lines.append(f"| load average (1/5/15 min) at start / end | {load['start']} / {load.get('end')} | | |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steady", type=float, default=None, help="steady-state commit window, s (default 120)")
    ap.add_argument("--trials", type=int, default=None, help="keep-alive latency trials (default 5)")
    ap.add_argument("--requests", type=int, default=None, help="measured requests per endpoint per trial (default 200)")
    ap.add_argument("--warmup", type=int, default=5, help="round-robin rounds dropped at a trial's start (default 5)")
    ap.add_argument("--days", type=float, default=30.0, help="days of history to fill (default 30)")
    ap.add_argument("--quick", action="store_true", help="smoke run: --steady 30 --trials 2 --requests 50")
    args = ap.parse_args(argv)
    quick = {"steady": 30.0, "trials": 2, "requests": 50}
    full = {"steady": 120.0, "trials": 5, "requests": 200}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 1 <= args.trials <= 50:
        ap.error(f"--trials {args.trials}: expected 1..50")
    if not 10 <= args.requests <= 5000:
        ap.error(f"--requests {args.requests}: expected 10..5000")
    if not 0 <= args.warmup <= 100:
        ap.error(f"--warmup {args.warmup}: expected 0..100")
    if not 10 <= args.steady <= 3600:
        ap.error(f"--steady {args.steady:g}: expected 10..3600 seconds")
    if not 0 < args.days <= 400:
        ap.error(f"--days {args.days:g}: expected 0..400")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_web: needs root (it builds network namespaces); run "
              "`sudo .venv/bin/python bench/bench_web.py` from the repository", file=sys.stderr)
        return 2
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": os.uname().release,
                     "cpus": os.cpu_count(), "args": vars(args),
                     "loadavg": {"start": [round(x, 2) for x in os.getloadavg()]},
                     "endpoints": [{"key": k, "path": p, "target_p95_ms": t} for k, p, t in ENDPOINTS]}
    t0 = time.monotonic()
    failed: BaseException | None = None
    topology.down(LAB)  # a previous run of this benchmark that was killed hard
    try:
        measure(args, results)
    except BaseException as e:  # noqa: BLE001 - report, tear down, then exit non-zero
        failed = e
        results["error"] = f"{type(e).__name__}: {e}"
    finally:
        try:
            down = topology.down(LAB)
            results["teardown"] = {"stopped": down.stopped, "deleted": down.deleted}
        except Exception as e:  # noqa: BLE001
            results["teardown"] = {"error": f"{type(e).__name__}: {e}"}
        results["leftover_namespaces"] = leftover_namespaces()
    results["loadavg"]["end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = time.monotonic() - t0
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / time.strftime("web-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=1, default=str))
    print(report(results))
    print(f"\nleftover lw-{LAB}-* namespaces: {results['leftover_namespaces'] or 'none'}; "
          f"teardown: {results['teardown']}")
    print(f"run took {results['elapsed_s']:.0f} s; raw figures: {path.relative_to(REPO)}")
    if failed is not None:
        print(f"bench_web: FAILED: {results['error']}", file=sys.stderr)
        if isinstance(failed, KeyboardInterrupt):
            return 130
        return 1
    return 1 if results["leftover_namespaces"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
