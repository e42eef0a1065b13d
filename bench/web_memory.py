#!/usr/bin/env python3
"""The web UI's RSS across repeated API floods (issue 14): a warm-up that levels off, or a climb.

    .venv/bin/python bench/web_memory.py                     # history filled 3 h back, 10 floods
    .venv/bin/python bench/web_memory.py --history-hours 0   # the lab's own history, growing
    .venv/bin/python bench/web_memory.py --trim 0            # without malloc_trim

It builds the soak's lab (``wm``; bench/soak.py), fills a history database with ``--history-hours``
of 10 s samples for wan1 and wan2 (bench/history_fill.py) so that the API's answers are full size
from the first flood on, and starts ``linkwatch web`` on 127.0.0.1 on a copy of the lab's config
that reads it (as root, beside the lab's own web UI; ``LINKWATCH_MALLOC_TRIM`` = ``--trim``). Then
``--floods`` times: the soak's web flood (1,500 bounded GETs of the JSON API from 6 threads, good
and bad parameters), ``--gap`` seconds of quiet, the web UI's RSS. It prints a table and writes the
raw figures to bench/results/web-memory-<time>.json. All traffic stays on loopback and in the lab.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import history_fill  # noqa: E402
import soak  # noqa: E402
import soakfaults as sf  # noqa: E402
from labbench import log, report  # noqa: E402

from linkwatch.daemon.memory import rss_kb  # noqa: E402


def measure(args) -> dict:
    work = tempfile.mkdtemp(prefix="lw-web-memory-")
    os.chmod(work, 0o755)
    s = soak.Soak(soak.parse(["--lab", args.lab, "--web-port", str(args.port), "--seed", "1"]))
    proc = None
    try:
        s.up()
        text = Path(s.spec.config_path).read_text()
        if args.history_hours > 0:
            db = os.path.join(work, "history.db")
            history_fill.fill(db, ["wan1", "wan2"], days=args.history_hours / 24, period=10)
            text = re.sub(r'(?m)^path = "[^"]*history\.db"', f'path = "{db}"', text)
        config = os.path.join(work, "linkwatch.toml")
        Path(config).write_text(text)
        os.chmod(config, 0o640)
        env = dict(os.environ, LINKWATCH_MALLOC_TRIM=str(args.trim))
        listen = f"127.0.0.1:{args.port + 1}"
        proc = subprocess.Popen([sys.executable, "-m", "linkwatch", "web", "--config", config, "--listen", listen],
                                env=env, stderr=open(os.path.join(work, "web.log"), "w"), cwd="/")
        url = f"http://{listen}/"
        time.sleep(args.gap)  # start-up over, no request yet: the soak's baseline too
        rss = [rss_kb(proc.pid)]
        floods = []
        for i in range(args.floods):
            floods.append(sf.flood_web(url))
            time.sleep(args.gap)
            rss.append(rss_kb(proc.pid))
            log(f"flood {i + 1}/{args.floods}: {floods[-1]}, RSS {rss[-1] / 1024:.1f} MB")
        if proc.poll() is not None or None in rss:
            raise RuntimeError(f"the web UI exited ({proc.returncode}); see {work}/web.log")
        half = len(rss) // 2
        return {"history_hours": args.history_hours, "trim_s": args.trim, "gap_s": args.gap,
                "rss_kb": rss, "floods": floods,
                "first_flood_mb": round((rss[1] - rss[0]) / 1024, 2),
                "later_floods_mb": round((rss[-1] - rss[1]) / 1024, 2),
                "last_half_mb": round((rss[-1] - rss[half]) / 1024, 2),
                "median_step_kb": statistics.median(b - a for a, b in zip(rss[1:], rss[2:])) if len(rss) > 2 else None}
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        s.down()
        shutil.rmtree(work, ignore_errors=True)


def table(r: dict) -> str:
    rss = r["rss_kb"]
    history = f"{r['history_hours']:g} h filled" if r["history_hours"] else "the lab's own"
    trim = f"every {r['trim_s']:g} s" if r["trim_s"] else "off"
    return "\n".join([
        f"| web UI RSS (history: {history}, malloc_trim {trim}) | MB |",
        "|---|---|",
        f"| started, before any request | {rss[0] / 1024:.1f} |",
        f"| after flood 1 | {rss[1] / 1024:.1f} ({r['first_flood_mb']:+.2f}) |",
        f"| after flood {len(rss) - 1} | {rss[-1] / 1024:.1f} ({r['later_floods_mb']:+.2f} since flood 1, "
        f"{r['last_half_mb']:+.2f} over the last half) |"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--floods", type=int, default=10)
    ap.add_argument("--gap", type=float, default=12.0, help="seconds of quiet after each flood")
    ap.add_argument("--history-hours", type=float, default=3.0, help="history filled back (0: the lab's own)")
    ap.add_argument("--trim", type=float, default=5.0, help="LINKWATCH_MALLOC_TRIM for the web UI (0 = off)")
    ap.add_argument("--lab", default="wm")
    ap.add_argument("--port", type=int, default=18475, help="the lab's web UI; the measured one takes the next")
    args = ap.parse_args(argv)
    if not 1 <= args.floods <= 100 or not 0 <= args.history_hours <= 48:
        ap.error("--floods 1..100, --history-hours 0..48")
    r = measure(args)
    report(r, table(r), "web-memory-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
