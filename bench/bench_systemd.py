#!/usr/bin/env python3
"""linkwatch under a real systemd: the figures of tests/integration/test_systemd.py, over trials.

Run by hand, as root, from the repository (needs systemd-nspawn: scripts/bootstrap.sh
--test-tools, and the Debian mirror the first time, for the debootstrap tarball):

    sudo .venv/bin/python bench/bench_systemd.py                 # about 4 minutes
    sudo .venv/bin/python bench/bench_systemd.py --trials 3 --deb dist/linkwatch_0.1.0-1_amd64.deb

It builds lab ``bS`` without its engine, boots Debian 12 with systemd as PID 1 in the lab's router
namespace (systemd-nspawn), installs the package with apt, writes the lab's engine config to
/etc/linkwatch/linkwatch.toml, and measures, each over --trials:

1. `systemctl start linkwatch` to READY=1 (from the start job, ExecStartPre included, and from
   the main process's exec), and how long before READY the active route showed up in the kernel
   (`ip monitor`; the engine is stopped and table 100 flushed before each trial);
2. `systemctl reload linkwatch` under a LAN flow at 50 packets/s: traffic moves, longest gap;
3. SIGSTOP of the engine with WatchdogSec=--watchdog (a drop-in): until a new engine is READY,
   and the LAN flow meanwhile;
4. `kill -9` of the engine: until the new one is READY, and whether linkwatch's rules and routes
   are the same set before and after (no duplicates);
5. `systemd-analyze security` of both units inside the booted system.

It prints a Markdown table (median and range) and writes the raw figures to
bench/results/systemd-<time>.json. Everything is torn down at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from linkwatch.lab import topology  # noqa: E402
from linkwatch.lab.plan import LabSpec  # noqa: E402
from tests.integration.debutil import BuiltDeb, build_deb, run  # noqa: E402
from tests.integration.sysdutil import (  # noqa: E402
    active_route,
    boot,
    install_package,
    measure_kill9,
    measure_reload,
    measure_start,
    measure_watchdog,
    security_scores,
    set_watchdog,
    shutdown,
)

LAB = "bS"


def span(values: list[float], unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
    v = [x * scale for x in values]
    return f"median {statistics.median(v):.{digits}f} {unit}, range {min(v):.{digits}f}–{max(v):.{digits}f} {unit}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--watchdog", type=int, default=5, help="WatchdogSec for the hung-engine trials (the unit: 30)")
    ap.add_argument("--deb", type=Path, help="the .deb to install (default: build it with scripts/build-deb.sh)")
    args = ap.parse_args(argv)

    raw: dict = {"trials": args.trials, "watchdog_s": args.watchdog, "start": [], "reload": [], "watchdog": [],
                 "kill9": []}
    topology.down(LAB)
    spec = LabSpec(LAB, 2)
    m = None
    with tempfile.TemporaryDirectory(prefix="bench-systemd-") as tmp:
        try:
            deb = BuiltDeb(args.deb.resolve(), False, b"") if args.deb else build_deb(Path(tmp) / "deb")
            topology.up(spec, engine=False)
            m = boot(spec, Path(tmp) / "nspawn", "lwbench-bs")
            raw["boot"] = m.timings
            install_package(m, deb)
            m.sh("systemctl enable linkwatch linkwatch-web")
            for i in range(args.trials):
                m.sh("systemctl stop linkwatch")
                if active_route(spec):  # the route to wait for (the table does not exist before the first start)
                    run(["ip", "-n", spec.router_ns, "route", "flush", "table", "100"], 30)
                raw["start"].append(measure_start(m))
                print(f"start {i + 1}: {raw['start'][-1]}", flush=True)
            m.sh("systemctl start linkwatch-web")
            time.sleep(3)  # both uplinks probed UP
            for i in range(args.trials):
                raw["reload"].append(measure_reload(m))
                print(f"reload {i + 1}: {raw['reload'][-1]}", flush=True)
            set_watchdog(m, args.watchdog)
            m.sh("systemctl restart linkwatch", timeout=60)
            for i in range(args.trials):
                time.sleep(2)
                raw["watchdog"].append(measure_watchdog(m, args.watchdog))
                print(f"watchdog {i + 1}: {raw['watchdog'][-1]}", flush=True)
            set_watchdog(m, None)
            m.sh("systemctl restart linkwatch", timeout=60)
            for i in range(args.trials):
                time.sleep(3)
                got = measure_kill9(m)
                got["same_objects"] = got["after"] == got["before"]
                got["objects"] = len(got["after"][0]) + len(got["after"][1])
                del got["before"], got["after"]
                raw["kill9"].append(got)
                print(f"kill -9 {i + 1}: {got}", flush=True)
            raw["security"] = security_scores(m, "linkwatch.service", "linkwatch-web.service")
        finally:
            if m is not None:
                shutdown(m)
            topology.down(LAB)

    out = REPO / "bench" / "results" / f"systemd-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw, indent=2, default=str))
    s, r, w, k = raw["start"], raw["reload"], raw["watchdog"], raw["kill9"]
    n = args.trials
    print(f"\n| what ({n} trials each) | measured | target |\n|---|---|---|")
    print(f"| `systemctl start` to READY=1 (ExecStartPre's check-config included) | "
          f"{span([x['ready_s'] for x in s])}; from the engine's exec {span([x['ready_from_exec_s'] for x in s])} "
          f"| ≤ 5 s |")
    print(f"| active route in the kernel before READY=1 | {span([x['route_before_ready_s'] for x in s], 'ms', 1000, 0)}"
          f" (before it in {sum(x['route_before_ready_s'] > 0 for x in s)} of {n}) | before |")
    print(f"| `systemctl reload` under a 50 packets/s LAN flow | {sum(x['moves'] for x in r)} traffic moves, "
          f"longest gap {span([x['longest_gap_s'] for x in r], 'ms', 1000, 1)}, same process and states in "
          f"{sum(x['same_pid'] and x['states_after'] == x['states_before'] for x in r)} of {n} | 0 moves |")
    print(f"| hung engine (SIGSTOP), WatchdogSec={args.watchdog}: until a new engine is READY | "
          f"{span([x['replaced_s'] for x in w])} | ≤ WatchdogSec + 5 s |")
    print(f"| ... the LAN flow meanwhile (fail-static) | {sum(x['moves'] for x in w)} moves, longest gap "
          f"{span([x['longest_gap_s'] for x in w], 'ms', 1000, 1)} | flowing |")
    print(f"| `kill -9`: until the new engine is READY | {span([x['restarted_s'] for x in k])}; the same "
          f"{k[0]['objects']} rules and routes after in {sum(x['same_objects'] for x in k)} of {n} | no duplicates |")
    sec = raw["security"]
    print(f"| `systemd-analyze security` inside | linkwatch.service {sec['linkwatch.service']}, "
          f"linkwatch-web.service {sec['linkwatch-web.service']} | docs/operations.md |")
    print(f"\nraw figures: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
