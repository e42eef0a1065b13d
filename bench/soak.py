#!/usr/bin/env python3
"""linkwatch soak: a long run in the lab with every fault the lab knows, checked all the time (issue 14).

Run by hand, as root, from the repository (after scripts/bootstrap.sh --test-tools):

    sudo .venv/bin/python bench/soak.py --minutes 30 --seed 1
    sudo .venv/bin/python bench/soak.py --minutes 2.5 --seed 14 --lab sk2    # the suite's short version

It builds lab ``sk`` (2 uplinks; the engine with its web UI on 127.0.0.1, its SNMP agent on the LAN
address, a trap receiver (net-snmp's snmptrapd) in the client namespace, and its history on a 4 MB
tmpfs the soak mounts and unmounts itself), keeps a LAN client UDP flow running (20 packets/s) and
plays a schedule drawn from ``--seed``: first every kind of fault once, in a seeded order, then
seeded random ones until the time is up. Link faults hit one uplink at a time and the next waits
until that uplink is UP again (bounded), so some uplink always works:

  blackhole, loss 10-40 %, carrier-down, flap 1s/1s, the router's address changed, the gateway
  changed, the interface deleted and re-created; kill -9 of the engine and of the web UI (each
  started again), a reload of a good file and of a broken one, bounded floods of the control
  socket, the web API and the SNMP agent, and the history's file system filled to the last byte.

Checked all the time: the router has a route for the LAN client (``ip route get`` every 0.5 s);
the client's flow never stops longer than ``--max-outage`` (1.5 s, the blackhole worst case, plus
load margin) while an uplink works; the engine answers ``status`` within 100 ms (every 0.5 s;
floods and restarts reported apart); engine and web RSS and open fds (every 2 s, per process
lifetime; RSS may grow 5 MB from 30 s into the longest-lived process's life to its end, and the
report adds the slope once it is warm, from 5 minutes on: a leak climbs all along, a warm-up levels
off). ``--trace-memory DIR`` and ``--malloc-trim SECONDS`` help find what grows. At the end: no
Traceback or dead task in any log; every state change and traffic move in the engine's log is in
the history and (DOWN, DEGRADED, traffic moves) reached the trap receiver, except those the docs
allow to be lost (decided < 3 s before a kill -9). It prints the seed, the
figures and every violation, and writes everything to bench/results/soak-<seed>-<time>.json. The
same seed gives the same schedule. Exit code 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import soakfaults as sf  # noqa: E402
from labbench import fault, log  # noqa: E402

from linkwatch.daemon.memory import rss_kb  # noqa: E402
from linkwatch.history import HistoryReader  # noqa: E402
from linkwatch.lab import client, topology, web  # noqa: E402
from linkwatch.lab.plan import ECHO_SERVER, LAN_CLIENT, LAN_ROUTER, LabSpec, LabUplink  # noqa: E402
from linkwatch.lab.topology import EngineOptions  # noqa: E402

LINK_FAULTS = ("blackhole", "loss", "carrier", "flap", "address", "gateway", "recreate")
OTHER_FAULTS = ("kill-engine", "kill-web", "reload-good", "reload-bad", "flood-control", "flood-web",
                "flood-snmp", "disk-full")
TRAP_PORT = 9162
LOG_BAD = re.compile(r"Traceback|Task exception was never retrieved|task .* died|CRITICAL")
STATE_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ \S+: uplink=(\S+) (\w+) -> (\w+) ")
ACTIVE_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ \S+: active (\S+) -> (\S+) ")


def load_trapd():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lw_soak_trapd", REPO / "tests" / "integration" / "trapd.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def schedule(seed: int, seconds: float, short: bool) -> list[tuple[str, int, float]]:
    """(kind, uplink 1 or 2, duration s) in order: every kind once (kills first, so the last engine
    and web UI live long enough to show their memory), then random ones, more than ``seconds`` fill."""
    rng = random.Random(seed)
    scale = 0.5 if short else 1.0
    dur = {"blackhole": (6, 20), "loss": (10, 30), "carrier": (3, 10), "flap": (8, 20), "address": (8, 20),
           "gateway": (8, 20), "recreate": (4, 10), "disk-full": (15, 40)}
    cost = {"kill-engine": 8, "kill-web": 6, "reload-good": 3, "reload-bad": 3, "flood-control": 6,
            "flood-web": 6, "flood-snmp": 8}

    def one(kind: str) -> tuple[str, int, float]:
        lo, hi = dur.get(kind, (0, 0))
        d = round(rng.uniform(lo * scale, hi * scale), 1) if hi else 0.0
        return kind, rng.choice((1, 2)), d

    first = ["kill-engine", "kill-web"]
    rest = list(LINK_FAULTS) + [k for k in OTHER_FAULTS if k not in first]
    rng.shuffle(rest)
    plan = [one(k) for k in first + rest]
    total = sum(d + cost.get(k, 6) for k, _, d in plan)
    kinds = list(LINK_FAULTS) * 3 + [k for k in OTHER_FAULTS if k not in first]
    while total < 2 * seconds + 60:  # more than enough: play() stops when the time is up
        step = one(rng.choice(kinds))
        plan.append(step)
        total += step[2] + cost.get(step[0], 6)
    return plan


class Soak:
    def __init__(self, args):
        self.args = args
        self.spec = LabSpec(args.lab)
        self.hist_dir = f"/run/linkwatch/{args.lab}-soak-history"
        self.listen = f"127.0.0.1:{args.web_port}"
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.marks: list[dict] = []  # what the schedule did: {"t", "kind", "uplink", "end"}
        self.quiet = {"flood": [], "restart": []}  # monotonic spans when status latency is reported apart
        self.kills: list[float] = []  # epoch times of engine kills
        self.status_samples: list[tuple[float, float | None, str]] = []  # (t, ms or None, "normal"/"flood"/"restart")
        self.route_fail: list[tuple[float, str]] = []
        self.route_devs: dict[str, int] = {}
        self.mem: dict[str, dict[int, list[tuple[float, int, int]]]] = {"engine": {}, "web": {}}
        self.flows: list[dict] = []
        self.flow_errors: list[str] = []
        self.violations: list[str] = []
        self.floods: list[dict] = []
        self.engine_down = threading.Event()
        self.trapd = None
        self.runner = None
        self.good_config = ""
        self.sinks: dict = {}

    # ---- set-up and tear-down ------------------------------------------------------------------

    def options(self) -> EngineOptions:
        snmp = {"trap_burst": 100, "trap_window": "1s",
                "agent": {"enabled": True, "listen": f"{LAN_ROUTER}:{sf.SNMP_PORT}", "community": sf.COMMUNITY,
                          "allow_from": ["10.77.0.0/24"]}}
        traps = (f'[[snmp.traps]]\nhost = "{LAN_CLIENT}"\nport = {TRAP_PORT}\nversion = "2c"\n'
                 f'community = "{sf.COMMUNITY}"\n')
        return EngineOptions(web=self.listen, extra_toml=traps, overrides={
            "history": {"path": f"{self.hist_dir}/history.db", "sample_period": "10s"},
            "snmp": snmp})

    def up(self) -> None:
        sf.mount_tmpfs(self.hist_dir, "4m")
        trapd_mod = load_trapd()
        mibs = subprocess.run(["bash", str(REPO / "scripts" / "fetch-ietf-mibs.sh")], capture_output=True,
                              text=True, timeout=300).stdout.strip().splitlines()
        mib_dirs = ([mibs[-1]] if mibs else []) + ["/usr/share/snmp/mibs", str(REPO / "packaging" / "mibs")]
        spec = self.spec
        topology.up(spec, engine=False)
        self.trapd = trapd_mod.Trapd(spec.client_ns, TRAP_PORT, [f"authCommunity log,execute,net {sf.COMMUNITY}"],
                                     mib_dirs, workdir=os.path.join(spec.state_dir, "trapd"))
        self.trapd.start()
        self.runner = web.prepare(spec, self.listen)[2]
        topology.start_engine(spec, self.options())
        with open(spec.config_path) as f:
            self.good_config = f.read()
        self.wait_all_up(60)

    def keep_logs(self, stem: str) -> None:
        """Copies of the logs and the traps next to the results (the lab's state directory goes)."""
        import shutil

        files = {"engine.log": self.spec.engine_log, "web.log": self.spec.web_log}
        if self.trapd is not None:
            files["traps.txt"] = str(self.trapd.out)
        for name, path in files.items():
            try:
                shutil.copyfile(path, f"{stem}-{name}")
            except OSError:
                pass

    def down(self) -> None:
        self.stop.set()
        if self.trapd is not None:
            self.trapd.stop()
        try:
            topology.down(self.spec.name)
        finally:
            sf.unmount(self.hist_dir)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def wait_all_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            st, _ = topology.engine_status(self.spec, timeout=1.0)
            if st is not None and all(u.state == "UP" or u.dampened for u in st.uplinks):
                return True
            time.sleep(0.2)
        return False

    # ---- watchers ------------------------------------------------------------------------------

    def in_span(self, which: str, t: float) -> bool:
        return any(a <= t <= (b if b is not None else t) for a, b in self.quiet[which])

    def sampler(self) -> None:
        """Every 0.5 s: the route for the LAN client, the engine's status latency; every 2 s memory."""
        last_mem = 0.0
        while not self.stop.wait(0.5):
            t = self.now()
            done = subprocess.run(["ip", "-n", self.spec.router_ns, "route", "get", ECHO_SERVER, "from", LAN_CLIENT,
                                   "iif", "lan0"], capture_output=True, text=True)
            m = re.search(r" dev (\S+)", done.stdout)
            if done.returncode != 0 or m is None or "unreachable" in done.stdout:
                self.route_fail.append((round(t, 2), (done.stderr or done.stdout).strip()[:120]))
            else:
                self.route_devs[m.group(1)] = self.route_devs.get(m.group(1), 0) + 1
            if not self.engine_down.is_set():
                ms = sf.status_ms(self.spec)
                kind = "restart" if self.in_span("restart", t) else "flood" if self.in_span("flood", t) else "normal"
                self.status_samples.append((round(t, 2), ms if ms is None else round(ms, 2), kind))
            if t - last_mem >= 2.0:
                last_mem = t
                for role in ("engine", "web"):
                    pid = sf.pid_of(self.spec, role)
                    if pid is None:
                        continue
                    rss = rss_kb(pid)
                    try:
                        fds = len(os.listdir(f"/proc/{pid}/fd"))
                    except OSError:
                        continue
                    if rss is None:
                        continue
                    self.mem[role].setdefault(pid, []).append((round(t, 1), rss, fds))
                    if self.args.trace_memory and len(self.mem[role][pid]) % 150 == 15:
                        # a tracemalloc snapshot every 5 minutes (daemon/memtrace.py), the first 30 s after
                        # the start: before its handler is in place SIGUSR2 would kill the process
                        os.kill(pid, signal.SIGUSR2)

    def flows_loop(self, seconds: float) -> None:
        """LAN client flows, one after the other (each at most 300 s), 20 packets a second."""
        while not self.stop.is_set():
            left = seconds - self.now()
            if left < 3:
                return
            try:
                h = client.start_flow(self.spec.name, duration=min(300.0, left), interval=0.05)
                while h.running() and not self.stop.is_set():
                    time.sleep(0.2)
                h.stop()
                report = h.result(timeout=20)
                self.flows.append(report.to_dict())
            except Exception as e:
                self.flow_errors.append(f"{self.now():.1f}s: {e}")
                time.sleep(1)

    # ---- the schedule --------------------------------------------------------------------------

    def link_fault(self, kind: str, k: int, d: float, rng: random.Random) -> None:
        spec, u = self.spec, LabUplink(k)
        if kind == "blackhole":
            fault(spec, f"wan{k}", "blackhole")
        elif kind == "loss":
            fault(spec, f"wan{k}", "loss", str(rng.randint(10, 40)))
        elif kind == "carrier":
            fault(spec, f"wan{k}", "carrier-down")
        elif kind == "flap":
            fault(spec, f"wan{k}", "flap", "1s", "1s", f"{max(2.0, d):g}s")
        elif kind == "address":
            sf.change_address(spec, u, sf.other_host(u, "", rng.randint(0, 5)))
        elif kind == "gateway":
            sf.change_gateway(spec, u, sf.other_host(u, "", rng.randint(0, 5)))
        elif kind == "recreate":
            sf.delete_interface(spec, u)
        time.sleep(d)
        if kind == "recreate":
            sf.recreate_interface(spec, u)
        elif kind in ("address", "gateway"):
            sf.restore_addresses(spec, u)
        else:
            fault(spec, f"wan{k}", "clear")

    def other_fault(self, kind: str, k: int, d: float, rng: random.Random) -> dict:
        spec = self.spec
        if kind == "kill-engine":
            self.quiet["restart"].append([self.now(), None])
            self.engine_down.set()
            self.kills.append(time.time())
            pid = sf.kill9(spec, "engine")
            took = sf.start_engine(spec)
            self.engine_down.clear()
            self.quiet["restart"][-1][1] = self.now() + 3.0
            return {"killed": pid, "answering_after_s": round(took, 2)}
        if kind == "kill-web":
            pid = sf.kill9(spec, "web")
            sf.start_web(spec, self.runner, self.listen)
            return {"killed": pid}
        if kind in ("reload-good", "reload-bad"):
            return sf.reload(spec, self.good_config, broken=kind == "reload-bad")
        if kind.startswith("flood-"):
            self.quiet["flood"].append([self.now(), None])
            if kind == "flood-control":
                out = sf.flood_control(spec)
            elif kind == "flood-web":
                out = sf.flood_web(web.url(self.listen))
            else:
                out = sf.flood_snmp(spec)
            self.quiet["flood"][-1][1] = self.now() + 1.0
            self.floods.append({"kind": kind, **out})
            return out
        if kind == "disk-full":  # with a blackhole meanwhile: its events wait for the disk
            written = sf.fill(self.hist_dir)
            time.sleep(d / 3)
            self.link_fault("blackhole", k, d / 3, rng)
            time.sleep(d / 3)
            sf.unfill(self.hist_dir)
            return {"filled_bytes": written, "blackhole": f"wan{k}"}
        raise ValueError(kind)

    def play(self, plan, seconds: float) -> None:
        rng = random.Random(self.args.seed + 1)
        for i, (kind, k, d) in enumerate(plan):
            if self.now() > seconds or self.stop.is_set():
                break
            mark = {"t": round(self.now(), 2), "kind": kind, "uplink": k if kind in LINK_FAULTS else None,
                    "duration": d}
            log(f"[{i + 1}/{len(plan)}] {kind}" + (f" wan{k}" if kind in LINK_FAULTS else "") + (f" {d:g}s" if d else ""))
            try:
                if kind in LINK_FAULTS:
                    self.link_fault(kind, k, d, rng)
                    mark["cleared"] = round(self.now(), 2)
                    mark["up_again"] = self.wait_all_up(60)
                    if not mark["up_again"]:
                        self.violations.append(f"{mark['t']}s {kind} wan{k}: not every uplink UP within 60 s "
                                               "after the fault was cleared")
                else:
                    mark["result"] = self.other_fault(kind, k, d, rng)
            except Exception as e:
                mark["error"] = f"{type(e).__name__}: {e}"
                self.violations.append(f"{mark['t']}s {kind}: {mark['error']}")
            mark["end"] = round(self.now(), 2)
            self.marks.append(mark)
            time.sleep(1.0)

    def run(self) -> dict:
        seconds = self.args.minutes * 60
        plan = schedule(self.args.seed, seconds, short=self.args.minutes < 10)
        threads = [threading.Thread(target=self.sampler, daemon=True),
                   threading.Thread(target=self.flows_loop, args=(seconds + 30,), daemon=True)]
        for t in threads:
            t.start()
        self.play(plan, seconds)
        time.sleep(5.0)  # the history's event_delay, the last traps, a quiet stretch for the fds
        self.sinks = self.wait_history(60.0)
        self.stop.set()
        for t in threads:
            t.join(30)
        return self.analyse(plan)

    def wait_history(self, timeout: float) -> dict:
        """Until the history has written every event it holds (after a full disk it retries with a
        backoff): the engine's sink figures then, and how long it took."""
        t0, sinks = time.monotonic(), {}
        while time.monotonic() - t0 < timeout:
            st, _ = topology.engine_status(self.spec, timeout=1.0)
            sinks = st.to_dict().get("sinks", {}) if st is not None else {}
            if sinks.get("history", {}).get("detail", {}).get("pending_events") == 0:
                break
            time.sleep(0.5)
        hist = sinks.get("history", {}).get("detail", {})
        traps = sinks.get("snmp-traps", {}).get("detail", {})
        out = {"history_caught_up_after_s": round(time.monotonic() - t0, 1),
               "history": {k: hist.get(k) for k in ("events_written", "pending_events", "failed_commits",
                                                    "dropped_events", "dropped_samples")},
               "traps": {k: traps.get(k) for k in ("sent", "failed", "dropped", "suppressed")}}
        if hist.get("pending_events") != 0:
            self.violations.append(f"the history still holds {hist.get('pending_events')} unwritten events "
                                   f"{timeout:g}s after the end")
        if hist.get("dropped_events"):
            self.violations.append(f"the history dropped {hist['dropped_events']} events")
        return out

    # ---- analysis ------------------------------------------------------------------------------

    def fault_at(self, t0: float, t1: float) -> str:
        """The schedule's steps that overlap [t0, t1]."""
        hits = [m["kind"] + (f" wan{m['uplink']}" if m["uplink"] else "") for m in self.marks
                if m["t"] <= t1 and t0 <= m.get("end", t1)]
        return ", ".join(hits) or "none"

    def outages(self) -> list[dict]:
        out = []
        for f in self.flows:
            origin = f["origin"] - self.t0
            replies = sorted(f["replies"], key=lambda r: r[2])
            times = [(origin + r[1], origin + r[2]) for r in replies]
            prev = origin
            for sent, received in times:
                gap = received - prev - f["interval_s"]
                if gap > 0.5:
                    out.append({"t": round(prev, 2), "gap_s": round(gap, 3), "during": self.fault_at(prev, received)})
                prev = received
        return out

    def log_events(self, path: str) -> list[dict]:
        events = []
        try:
            lines = open(path, errors="replace").read().splitlines()
        except OSError:
            return []
        for line in lines:
            for kind, rx in (("uplink_state", STATE_LINE), ("active_changed", ACTIVE_LINE)):
                m = rx.match(line)
                if m and "ipv6" not in line.split(": ", 1)[1].split()[0:2]:
                    at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
                    events.append({"kind": kind, "at": at, "a": m.group(3), "b": m.group(4),
                                   **({"c": m.group(5)} if kind == "uplink_state" else {})})
        return events

    def delivery(self) -> dict:
        logged = self.log_events(self.spec.engine_log)
        try:
            with HistoryReader(f"{self.hist_dir}/history.db") as r:
                hist = r.events(kinds=["uplink_state", "active_changed"], limit=None)
        except Exception as e:
            self.violations.append(f"history unreadable at the end: {e}")
            hist = []
        traps = self.trapd.traps() if self.trapd else []
        value = sys.modules["lw_soak_trapd"].value
        missing_hist, missing_trap, excused, used = [], [], 0, set()
        for ev in logged:
            near_kill = any(0 <= k - ev["at"] <= 3.0 for k in self.kills)
            if ev["kind"] == "uplink_state":
                key = lambda h: h["kind"] == "uplink_state" and h["uplink"] == ev["a"] and h["old"] == ev["b"] and h["new"] == ev["c"]  # noqa: E731
            else:
                key = lambda h: (h["kind"] == "active_changed" and (",".join(h["old"]) or "-") == ev["a"]  # noqa: E731
                                 and (",".join(h["new"]) or "-") == ev["b"])
            near = [(abs(h["at"] - ev["at"]), i) for i, h in enumerate(hist)
                    if i not in used and key(h) and abs(h["at"] - ev["at"]) <= 0.5]
            match = min(near)[1] if near else None  # one history row for one log line, the closest
            in_hist = match is not None
            if in_hist:
                used.add(match)
            else:
                if near_kill:
                    excused += 1
                else:
                    missing_hist.append(ev)
            wants_trap = ev["kind"] == "active_changed" or ev.get("c") in ("DOWN", "DEGRADED")
            if wants_trap:
                name = {"DOWN": "lwUplinkDown", "DEGRADED": "lwUplinkDegraded"}.get(ev.get("c"), "lwActiveChanged")
                got = any(t["oid"].endswith(name) and ev["at"] - 1.0 <= t["received"] <= ev["at"] + 10.0
                          and (name == "lwActiveChanged" or value(t, "lwUplinkName") == ev["a"]) for t in traps)
                if not got and not near_kill:
                    missing_trap.append(ev)
        for ev in missing_hist:
            self.violations.append(f"state change in the log but not in the history: {ev}")
        for ev in missing_trap:
            self.violations.append(f"state change in the log without its trap: {ev}")
        return {"logged": len(logged), "in_history": len(hist), "traps": len(traps),
                "missing_in_history": len(missing_hist), "missing_traps": len(missing_trap),
                "excused_near_kill": excused}

    def memory(self) -> dict:
        out = {}
        for role, lives in self.mem.items():
            rows = []
            for pid, samples in lives.items():
                if len(samples) < 4:
                    continue
                base = next((s for s in samples if s[0] - samples[0][0] >= 30), samples[len(samples) // 2])
                lifetime = samples[-1][0] - samples[0][0]
                last = samples[-3:]
                rows.append({"pid": pid, "lifetime_s": round(lifetime, 1), "rss_start_kb": base[1],
                             "rss_end_kb": int(statistics.median(s[1] for s in last)),
                             # a leak climbs all along, a warm-up levels off: the slope after it
                             "steady_kb_per_h": steady_slope_kb_per_h(samples),
                             "rss_max_kb": max(s[1] for s in samples), "fds_start": base[2],
                             "fds_end": samples[-1][2], "fds_max": max(s[2] for s in samples),
                             # one sample a minute: a leak climbs all along, a warm-up levels off
                             "rss_kb_by_minute": [(t, rss) for t, rss, _ in samples[::30]]})
            out[role] = rows
            if rows:
                longest = max(rows, key=lambda r: r["lifetime_s"])
                growth = (longest["rss_end_kb"] - longest["rss_start_kb"]) / 1024
                if growth > 5.0:
                    self.violations.append(f"{role} RSS grew {growth:.1f} MB over {longest['lifetime_s']:.0f}s")
                if longest["fds_end"] > longest["fds_start"] + 10 or longest["fds_max"] > 1000:
                    self.violations.append(f"{role} fds not bounded: {longest}")
        return out

    def logs(self) -> dict:
        found = {}
        paths = {"engine": self.spec.engine_log, "web": self.spec.web_log, "services": self.spec.services_log}
        for name, path in paths.items():
            try:
                lines = open(path, errors="replace").read().splitlines()
            except OSError:
                continue
            bad = [ln[:200] for ln in lines if LOG_BAD.search(ln)]
            found[name] = {"lines": len(lines), "bad": bad[:20], "bad_count": len(bad)}
            if bad:
                self.violations.append(f"{name} log: {len(bad)} bad lines, first: {bad[0]}")
        return found

    def analyse(self, plan) -> dict:
        gaps = self.outages()
        for g in gaps:
            if g["gap_s"] > self.args.max_outage:
                self.violations.append(f"client outage {g['gap_s']:.2f}s at {g['t']}s during {g['during']}")
        for t, why in self.route_fail:
            self.violations.append(f"no route for the LAN client at {t}s: {why}")
        normal = [ms for _, ms, k in self.status_samples if k == "normal"]
        slow = [(t, ms) for t, ms, k in self.status_samples if k == "normal" and (ms is None or ms > 100)]
        for t, ms in slow:
            self.violations.append(f"status took {ms} ms at {t}s" if ms is not None else f"status unanswered at {t}s")
        answered = sorted(ms for ms in normal if ms is not None)
        lat = {"samples": len(normal), "p50_ms": answered[len(answered) // 2] if answered else None,
               "p99_ms": answered[int(len(answered) * 0.99)] if answered else None,
               "max_ms": answered[-1] if answered else None, "over_100ms": len(slow),
               "flood_or_restart_max_ms": max((ms for _, ms, k in self.status_samples if k != "normal" and ms), default=None)}
        by_fault: dict[str, float] = {}
        for g in gaps:
            kind = g["during"].split()[0]
            by_fault[kind] = max(by_fault.get(kind, 0.0), g["gap_s"])
        result = {
            "seed": self.args.seed, "minutes": self.args.minutes, "lab": self.spec.name,
            "ran_s": round(self.now(), 1), "max_outage_s": self.args.max_outage,
            "kinds_played": sorted({m["kind"] for m in self.marks}), "steps": len(self.marks),
            "client": {"flows": len(self.flows), "sent": sum(f["sent"] for f in self.flows),
                       "received": sum(f["received"] for f in self.flows), "gaps_over_0_5s": len(gaps),
                       "longest_gap_by_fault": by_fault, "flow_errors": self.flow_errors},
            "route": {"samples_by_dev": self.route_devs, "failures": len(self.route_fail)},
            "status_latency": lat, "delivery": self.delivery(), "sinks": self.sinks, "memory": self.memory(), "logs": self.logs(),
            "floods": self.floods, "marks": self.marks, "gaps": gaps, "plan": plan,
        }
        missing = set(LINK_FAULTS + OTHER_FAULTS) - set(result["kinds_played"])
        if missing and self.args.minutes >= 2:
            self.violations.append(f"fault kinds never played: {sorted(missing)}")
        result["violations"] = self.violations
        return result


def report(r: dict) -> str:
    c, lat, d = r["client"], r["status_latency"], r["delivery"]
    lines = [f"# linkwatch soak, seed {r['seed']}: {r['ran_s']:.0f} s, {r['steps']} steps, "
             f"{len(r['kinds_played'])} fault kinds",
             f"- client: {c['flows']} flows, {c['sent']} sent, {c['received']} answered, gaps > 0.5 s: "
             f"{c['gaps_over_0_5s']}, longest by fault: "
             + ", ".join(f"{k} {v:.2f}s" for k, v in sorted(c["longest_gap_by_fault"].items())),
             f"- route for the LAN: {r['route']['failures']} failures in "
             f"{sum(r['route']['samples_by_dev'].values())} samples ({r['route']['samples_by_dev']})",
             f"- status: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms, over 100 ms "
             f"{lat['over_100ms']} of {lat['samples']} (floods/restarts apart: max {lat['flood_or_restart_max_ms']} ms)",
             f"- state changes: {d['logged']} logged, {d['in_history']} in history, {d['traps']} traps; missing "
             f"in history {d['missing_in_history']}, traps missing {d['missing_traps']}, excused near kill -9 "
             f"{d['excused_near_kill']}; history caught up "
             f"{r['sinks'].get('history_caught_up_after_s')} s after the end, {r['sinks'].get('history')}; "
             f"traps {r['sinks'].get('traps')}"]
    for role, rows in r["memory"].items():
        for row in rows:
            steady = "" if row["steady_kb_per_h"] is None else \
                f", {row['steady_kb_per_h'] / 1024:+.2f} MB/h once warm"
            lines.append(f"- {role} pid {row['pid']} ({row['lifetime_s']:.0f} s): RSS "
                         f"{row['rss_start_kb'] / 1024:.1f} -> {row['rss_end_kb'] / 1024:.1f} MB "
                         f"(max {row['rss_max_kb'] / 1024:.1f}{steady}), fds "
                         f"{row['fds_start']} -> {row['fds_end']} (max {row['fds_max']})")
    lines.append(f"- logs: " + ", ".join(f"{k} {v['lines']} lines, {v['bad_count']} bad" for k, v in r["logs"].items()))
    lines.append(f"- violations: {len(r['violations'])}")
    lines += [f"  - {v}" for v in r["violations"][:40]]
    lines.append(f"reproduce: sudo .venv/bin/python bench/soak.py --minutes {r['minutes']:g} --seed {r['seed']}")
    return "\n".join(lines)


WARM_UP_S = 300  # the RSS slope is taken from here on, for processes that live 4 times as long


def steady_slope_kb_per_h(samples: list[tuple[float, int, int]]) -> float | None:
    """How fast RSS climbs once the process is warm (from WARM_UP_S on), in kB per hour: the
    Theil-Sen slope (median of the pairwise slopes, deaf to a few spikes and steps) of the per-minute
    medians of the (t, RSS kB, fds) samples. None for a process that lived under 4 x WARM_UP_S.
    Reported beside the RSS check (growth from 30 s to the end), which it does not replace."""
    t0 = samples[0][0]
    if samples[-1][0] - t0 < 4 * WARM_UP_S:
        return None
    minutes: dict[int, list[int]] = {}
    for t, rss, _ in samples:
        if t - t0 >= WARM_UP_S:
            minutes.setdefault(int((t - t0) // 60), []).append(rss)
    points = [(m, statistics.median(v)) for m, v in sorted(minutes.items())]
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) for i, a in enumerate(points) for b in points[i + 1:]]
    return round(statistics.median(slopes) * 60, 1)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: random, printed)")
    ap.add_argument("--lab", default="sk", help="lab name (default sk)")
    ap.add_argument("--web-port", type=int, default=18431)
    ap.add_argument("--max-outage", type=float, default=2.0, help="longest client outage allowed while an uplink works")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--trace-memory", metavar="DIR", help="trace the engine's and the web UI's allocations "
                    "(LINKWATCH_TRACEMALLOC) and write a snapshot every 5 minutes to a new directory in DIR; "
                    "compare two with python -m linkwatch.daemon.memtrace OLD NEW (slows the engine and "
                    "grows its RSS: the timing and memory checks mean less)")
    ap.add_argument("--malloc-trim", metavar="SECONDS", help="the engine's and web UI's malloc_trim period "
                    "(LINKWATCH_MALLOC_TRIM; 0 = off, to measure what it saves; default: theirs, 60 s)")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    if not 0.5 <= args.minutes <= 240:
        ap.error("--minutes: 0.5 to 240")
    return args


def soak(args) -> dict:
    log(f"soak: seed {args.seed}, {args.minutes:g} min, lab {args.lab}")
    if args.trace_memory:
        # a new directory of its own (the processes run with cwd /): the web UI (nobody) writes in
        # it too, so it is sticky and world-writable, and no directory that exists is changed
        os.makedirs(os.path.abspath(args.trace_memory), exist_ok=True)
        traces = tempfile.mkdtemp(prefix=f"soak-{args.seed}-", dir=os.path.abspath(args.trace_memory))
        os.chmod(traces, 0o1777)
        log(f"memory snapshots in {traces}")
        os.environ["LINKWATCH_TRACEMALLOC"] = traces  # the lab's engines and web UIs inherit it
    if args.malloc_trim is not None:
        os.environ["LINKWATCH_MALLOC_TRIM"] = args.malloc_trim  # the lab's engines and web UIs inherit it
    s = Soak(args)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"soak-{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        s.up()
        s.t0 = time.monotonic()
        result = s.run()
    finally:
        s.keep_logs(stem)
        s.down()
    path = stem + ".json"
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=str)
    result["path"] = path
    return result


def main(argv=None) -> int:
    args = parse(argv)
    # `kill` of the soak tears its lab down like Ctrl-C does (the finally in soak())
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = soak(args)
    print(report(result))
    print(f"raw results: {result['path']}")
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
