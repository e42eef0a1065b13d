#!/usr/bin/env python3
"""linkwatch for a Raspberry Pi under qemu-user emulation: the full by-hand run of test_arm.py.

Run by hand, as root, from the repository (needs qemu-user-static, binfmt-support and debootstrap:
scripts/bootstrap.sh --test-tools; the Debian mirror and PyPI the first time):

    .venv/bin/python bench/bench_arm.py                          # arm64 and armhf, about 30 minutes
    .venv/bin/python bench/bench_arm.py --arches arm64 --tests short --trials 3
    .venv/bin/python bench/bench_arm.py --deb dist/linkwatch_0.1.0-1_arm64.deb   # skip the build

For each architecture: the package build (scripts/build-deb.sh --arch; its time depends on what
.cache/deb-build/ already holds), apt's install into a clean emulated Debian 12 root, then in one
lab the engine from that root (the emulated interpreter) and, right after in the same lab, the
engine of this machine's .venv with the same config, each for --cpu-seconds in steady state:
RSS (the emulated process split into qemu's part and the engine's own: armutil.emulated_memory_kb)
and CPU, reported only as a ratio emulated/native (the machine's other load makes the absolute figures meaningless);
then --trials blackhole failovers of the emulated engine, the LAN client's outage each; and the
pure and scenario tests with the emulated interpreter against this machine's (--tests: full =
tests/unit + tests/scenario, short = test_arm.py's selection, none).

Prints a Markdown table and writes the raw figures to bench/results/arm-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labbench import fault, log, settled, status, wait_for  # noqa: E402
from linkwatch.lab import client, topology  # noqa: E402
from linkwatch.lab.engine_config import engine_config  # noqa: E402
from linkwatch.lab.plan import LabSpec  # noqa: E402
from linkwatch.lab.processes import forget_process, stop_pid, process_start_time  # noqa: E402
from linkwatch.lab.topology import EngineOptions  # noqa: E402
from tests.integration import armutil  # noqa: E402
from tests.integration.debutil import BuiltDeb  # noqa: E402
from tests.integration.test_arm import FULL_TESTS, OVERRIDES, SHORT_TESTS, UP2  # noqa: E402

LAB = "bA"


def span(values: list[float], digits: int = 2) -> str:
    return f"median {statistics.median(values):.{digits}f}, range {min(values):.{digits}f}–{max(values):.{digits}f}"


def steady(spec: LabSpec, pid: int, seconds: float) -> dict:
    """CPU seconds and memory of ``pid`` over ``seconds`` of steady state."""
    wait_for(lambda: settled(spec), 90.0, "both uplinks UP, wan1 active", step=0.2)
    time.sleep(3.0)
    cpu0, t0 = armutil.cpu_seconds(pid), time.monotonic()
    samples = []
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        samples.append(armutil.emulated_memory_kb(pid))  # natively: "total" is the RSS
    cpu = armutil.cpu_seconds(pid) - cpu0
    wall = time.monotonic() - t0
    return {"cpu_s": cpu, "wall_s": wall, "cpu_share": cpu / wall,
            "rss_max_kb": max(m["total"] for m in samples), "guest_max_kb": max(m["guest"] for m in samples),
            "qemu_max_kb": max(m["qemu"] for m in samples), "hwm_kb": armutil.memory_kb(pid)["VmHWM"]}


def failovers(spec: LabSpec, trials: int) -> list[dict]:
    out = []
    for i in range(trials):
        fault(spec, "wan1", "clear")
        wait_for(lambda: settled(spec), 60.0, "recovery before a trial", step=0.2)
        time.sleep(1.0)
        flow = client.start_flow(spec.name, duration=6.0, interval=0.01, new_socket=True)  # see test_arm.py
        time.sleep(1.5)
        fault(spec, "wan1", "blackhole")
        wait_for(lambda: status(spec)["active"] == ["wan2"], 20.0, "failover", step=0.05)
        report = flow.result(timeout=30)
        moved = [c.after for c in report.changes] == [UP2]
        out.append({"outage_s": report.longest_outage_s, "moved_to_wan2": moved})
        log(f"  trial {i + 1}: outage {report.longest_outage_s * 1000:.0f} ms, moved={moved}")
    fault(spec, "wan1", "clear")
    return out


def stop_engine(spec: LabSpec, pid: int) -> None:
    stop_pid(pid, process_start_time(pid))
    forget_process(spec.state_dir, "engine")


def bench_arch(arch: str, args, tmp: Path) -> dict:
    res: dict = {"arch": arch}
    problem = armutil.emulation_problem(arch)
    if problem:
        raise SystemExit(f"bench_arm: cannot run {arch}: {problem}")
    deb_path = next((d for d in args.deb if d.name.endswith(f"_{arch}.deb")), None)
    if deb_path:
        deb = BuiltDeb(deb_path.resolve(), False, b"")
    else:
        log(f"{arch}: building the package")
        deb, res["build_s"] = armutil.build_deb(arch, tmp / f"deb-{arch}")
        log(f"{arch}: built in {res['build_s']:.0f} s")
    root = armutil.install_root(arch, deb, tmp / f"root-{arch}")
    res.update(root.timings)
    spec = LabSpec(LAB, 2)
    topology.down(LAB)
    try:
        topology.up(spec, engine=False)
        t0 = time.monotonic()
        rec = armutil.start_engine(root, spec, engine_config(spec, overrides=OVERRIDES))
        wait_for(lambda: armutil.engine_answers(spec), 90.0, "the emulated engine", step=0.2)
        res["engine_answers_s"] = time.monotonic() - t0
        log(f"{arch}: emulated engine answers after {res['engine_answers_s']:.1f} s; {args.cpu_seconds} s steady")
        res["emulated"] = steady(spec, rec.pid, args.cpu_seconds)
        res["failovers"] = failovers(spec, args.trials)
        res["emulated"]["after_failovers_kb"] = armutil.emulated_memory_kb(rec.pid)
        stop_engine(spec, rec.pid)
        topology.start_engine(spec, EngineOptions(overrides=OVERRIDES))
        native_pid = status(spec)["pid"]
        log(f"{arch}: native engine, {args.cpu_seconds} s steady")
        res["native"] = steady(spec, native_pid, args.cpu_seconds)
        res["cpu_ratio"] = res["emulated"]["cpu_share"] / res["native"]["cpu_share"]
    finally:
        topology.down(LAB)
        armutil.unmount_state(root, spec)
    try:
        if args.tests != "none":
            paths = FULL_TESTS if args.tests == "full" else SHORT_TESTS
            armutil.copy_sources(root)
            res["pip_test_tools_s"] = armutil.install_test_tools(root)
            log(f"{arch}: pytest {' '.join(paths)} emulated")
            proc, took = armutil.run_pure_tests(root, paths, timeout=7200)
            res["tests"] = {"paths": paths, "emulated_s": took, "emulated_rc": proc.returncode,
                            "emulated_tail": proc.stdout.strip().splitlines()[-1:]}
            t0 = time.monotonic()
            native = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths],
                                    cwd=REPO, capture_output=True, text=True, timeout=3600)
            res["tests"].update(native_s=time.monotonic() - t0, native_rc=native.returncode,
                                native_tail=native.stdout.strip().splitlines()[-1:])
            if proc.returncode != 0:
                log(proc.stdout[-3000:])
    finally:
        armutil.release(root)
    return res


def table(results: list[dict]) -> str:
    rows = ["| what | " + " | ".join(r["arch"] for r in results) + " |", "|---|" + "---|" * len(results)]

    def row(name, fmt):
        cells = []
        for r in results:
            try:
                cells.append(fmt(r))
            except (KeyError, TypeError, ZeroDivisionError, statistics.StatisticsError):
                cells.append("—")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")

    row("package build", lambda r: f"{r['build_s']:.0f} s")
    row("apt install into a clean root", lambda r: f"{r['apt_install_s']:.0f} s")
    row("engine start to control socket", lambda r: f"{r['engine_answers_s']:.1f} s")
    row("engine's own RSS under emulation, steady max / after the failovers (MB)",
        lambda r: f"{r['emulated']['guest_max_kb'] / 1000:.1f} / {r['emulated']['after_failovers_kb']['guest'] / 1000:.1f}")
    row("... the whole emulated process, qemu's part (MB)",
        lambda r: f"{r['emulated']['rss_max_kb'] / 1000:.1f}, {r['emulated']['qemu_max_kb'] / 1000:.1f}")
    row("native (amd64) engine RSS, steady max (MB)", lambda r: f"{r['native']['rss_max_kb'] / 1000:.1f}")
    row("engine CPU, emulated / native", lambda r: f"{r['cpu_ratio']:.1f}×")
    row("client outage, blackhole (s)", lambda r: span([f["outage_s"] for f in r["failovers"]]))
    row("flow moved to wan2", lambda r: f"{sum(f['moved_to_wan2'] for f in r['failovers'])} of {len(r['failovers'])}")
    row("pure tests emulated", lambda r: f"{r['tests']['emulated_s']:.0f} s ({r['tests']['emulated_tail'][0]})")
    row("pure tests native", lambda r: f"{r['tests']['native_s']:.0f} s ({r['tests']['native_tail'][0]})")
    row("test time, emulated / native", lambda r: f"{r['tests']['emulated_s'] / r['tests']['native_s']:.1f}×")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arches", default="arm64,armhf")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--cpu-seconds", type=float, default=60.0)
    ap.add_argument("--tests", choices=("full", "short", "none"), default="full")
    ap.add_argument("--deb", type=Path, action="append", default=[], help="a built .deb to use (per arch)")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-arm-") as tmp:
        for arch in [a.strip() for a in args.arches.split(",") if a.strip()]:
            results.append(bench_arch(arch, args, Path(tmp)))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"arm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(table(results))
    log(f"raw figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
