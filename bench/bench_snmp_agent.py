#!/usr/bin/env python3
"""linkwatch SNMP agent benchmark: how fast a full walk of LINKWATCH-MIB is answered while the
engine probes (target: <= 50 ms median for 4 uplinks).

Run by hand, as root, from the repository:

    sudo .venv/bin/python bench/bench_snmp_agent.py               # about 1 minute
    sudo .venv/bin/python bench/bench_snmp_agent.py --walks 100 --flood 10

It builds lab ``bA`` (4 uplinks, 3 probe targets each) with [snmp.agent] on 10.77.0.1:1161 (a v2c
community and a v3 SHA-256/AES user), waits for every uplink UP, then, from the lab's client
namespace (10.77.0.2):

1. ``snmpbulkwalk`` (net-snmp, -Cr10) of the whole MIB, v2c and v3 authPriv, --walks times each,
   wall time per run, which includes starting the process (and, for v3, engine-ID discovery).
   The same command on an empty subtree (one exchange: snmpbulkwalk does no GET afterwards) estimates that
   fixed cost.
2. a Python client in the client namespace (this file with --client) timing only the walk: v2c
   with GETBULK over a raw UDP socket (max-repetitions 10, like snmpbulkwalk; also the sum of
   the send-to-receive times alone), v3 authPriv with pysnmp's bulk_cmd on one engine
   (discovery done once before timing). Median and range.
3. whether the engine's probing is disturbed: the probe-round rate (status ``rounds``, all
   uplinks) and the mean RTT the engine reports, over --flood seconds idle and over --flood
   seconds of back-to-back walks.

It prints Markdown tables and writes every raw number to bench/results/snmp-agent-<time>.json. The
lab is torn down at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LAB = "bA"
UPLINKS = 4
HOST, PORT = "10.77.0.1", 1161
AGENT = f"{HOST}:{PORT}"
BASE = "1.3.6.1.4.1.8072.9999.9999.7745"
COMMUNITY = "lw-bench-ro"
USER, AUTH_KEY, PRIV_KEY = "ops", "bench-auth-passphrase", "bench-priv-passphrase"
V2 = ["-v2c", "-c", COMMUNITY]
V3 = ["-v3", "-l", "authPriv", "-u", USER, "-a", "SHA-256", "-A", AUTH_KEY, "-x", "AES", "-X", PRIV_KEY]
MAX_REPETITIONS = 10
TARGET_MS = 50.0
INSTANCES = 8 + 13 * UPLINKS  # scalars + 13 readable columns per uplink


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(values_ms: list[float]) -> dict:
    return {"n": len(values_ms), "median": statistics.median(values_ms), "min": min(values_ms),
            "max": max(values_ms), "p90": sorted(values_ms)[int(0.9 * (len(values_ms) - 1))]}


# --- the client side (runs inside the lab's client namespace) ----------------------------------------


def _oid(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def raw_v2c_walk(sock, community: str) -> tuple[int, float]:
    """One GETBULK walk of BASE over a raw socket: (instances, seconds spent in send->receive)."""
    from pyasn1.codec.ber import decoder, encoder
    from pysnmp.proto import rfc1905
    from pysnmp.proto.api import v2c

    base = _oid(BASE)
    oid, count, wire = base, 0, 0.0
    while True:
        pdu = v2c.GetBulkRequestPDU()
        v2c.apiBulkPDU.set_defaults(pdu)
        v2c.apiBulkPDU.set_non_repeaters(pdu, 0)
        v2c.apiBulkPDU.set_max_repetitions(pdu, MAX_REPETITIONS)
        v2c.apiBulkPDU.set_varbinds(pdu, [(oid, v2c.Null(""))])
        msg = v2c.Message()
        v2c.apiMessage.set_defaults(msg)
        v2c.apiMessage.set_community(msg, community)
        v2c.apiMessage.set_pdu(msg, pdu)
        data = encoder.encode(msg)
        t = time.perf_counter()
        sock.send(data)
        answer = sock.recv(65535)
        wire += time.perf_counter() - t
        rsp, _ = decoder.decode(answer, asn1Spec=v2c.Message())
        vbs = v2c.apiPDU.get_varbinds(v2c.apiMessage.get_pdu(rsp))
        for name, value in vbs:
            name = tuple(name)
            if isinstance(value, rfc1905.EndOfMibView) or name[:len(base)] != base:
                return count, wire
            count += 1
            oid = name


async def pysnmp_v3_walks(n: int) -> list[tuple[int, float]]:
    from pysnmp.hlapi.v3arch.asyncio import (ContextData, ObjectIdentity, ObjectType, SnmpEngine, UdpTransportTarget,
                                             UsmUserData, bulk_cmd, usmAesCfb128Protocol,
                                             usmHMAC192SHA256AuthProtocol)
    from pysnmp.proto import rfc1905

    engine = SnmpEngine()
    auth = UsmUserData(USER, AUTH_KEY, PRIV_KEY, authProtocol=usmHMAC192SHA256AuthProtocol,
                       privProtocol=usmAesCfb128Protocol)
    target = await UdpTransportTarget.create((HOST, PORT), timeout=2, retries=0)
    base = _oid(BASE)

    async def walk() -> int:
        oid, count = BASE, 0
        while True:
            err, status, _, vbs = await bulk_cmd(engine, auth, target, ContextData(), 0, MAX_REPETITIONS,
                                                 ObjectType(ObjectIdentity(oid)), lookupMib=False)
            if err or status:
                raise RuntimeError(f"v3 walk failed: {err or status.prettyPrint()}")
            for name, value in vbs:
                if isinstance(value, rfc1905.EndOfMibView) or tuple(name)[:len(base)] != base:
                    return count
                count += 1
                oid = str(name)

    await walk()  # engine-ID discovery and time sync, not timed
    out = []
    for _ in range(n):
        t = time.perf_counter()
        count = await walk()
        out.append((count, time.perf_counter() - t))
    engine.close_dispatcher()
    return out


def client_main(args: argparse.Namespace) -> None:
    import socket

    from linkwatch.lab.safety import require_lab_namespace

    require_lab_namespace(allowed=(f"lw-{LAB}-client",))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.connect((HOST, PORT))
    if args.walk_for:
        deadline, walks = time.monotonic() + args.walk_for, 0
        while time.monotonic() < deadline:
            raw_v2c_walk(sock, COMMUNITY)
            walks += 1
        print(json.dumps({"walks": walks}))
        return
    raw_v2c_walk(sock, COMMUNITY)  # warm-up
    v2 = []
    for _ in range(args.walks):
        t = time.perf_counter()
        count, wire = raw_v2c_walk(sock, COMMUNITY)
        v2.append((count, time.perf_counter() - t, wire))
    v3 = asyncio.run(pysnmp_v3_walks(args.walks))
    print(json.dumps({"v2c": v2, "v3": v3}))


# --- the bench (root namespace: builds the lab, runs the tools in its client namespace) -------------


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return time.perf_counter() - t, done


def net_snmp_walks(spec, auth: list[str], subtree: str, n: int, expect: int) -> list[float]:
    from linkwatch.lab.processes import netns_exec

    argv = netns_exec(spec.client_ns, ["snmpbulkwalk", *auth, "-t", "2", "-r", "0", "-m", "", "-On",
                                       f"-Cr{MAX_REPETITIONS}", AGENT, subtree])
    out = []
    for _ in range(n):
        took, done = timed(argv)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(".") and "No more variables" not in ln]
        if done.returncode != 0 or len(lines) != expect:
            raise RuntimeError(f"snmpbulkwalk gave {len(lines)} instances (want {expect}): {done.stderr.strip()}")
        out.append(took * 1000)
    return out


def engine_load(spec, seconds: float, flood: bool) -> dict:
    """Probe rounds per second and mean reported RTT over ``seconds``, optionally under a walk flood."""
    from linkwatch.lab import topology
    from linkwatch.lab.processes import child_env, netns_exec

    def snap() -> dict:
        st, err = topology.engine_status(spec, timeout=2.0)
        if st is None:
            raise RuntimeError(f"engine does not answer: {err}")
        return st.to_dict()

    proc = None
    if flood:
        proc = subprocess.Popen(netns_exec(spec.client_ns, [sys.executable, __file__, "--client",
                                                            "--walk-for", str(seconds)]),
                                stdout=subprocess.PIPE, text=True, env=child_env())
    t0, s0 = time.monotonic(), snap()
    rtts = []
    while time.monotonic() - t0 < seconds:
        time.sleep(0.25)
        rtts += [u["rtt_ms"] for u in snap()["uplinks"] if u["rtt_ms"] is not None]
    t1, s1 = time.monotonic(), snap()
    walks = None
    if proc is not None:
        out, _ = proc.communicate(timeout=seconds + 30)
        walks = json.loads(out)["walks"]
    rounds = sum(u["rounds"] for u in s1["uplinks"]) - sum(u["rounds"] for u in s0["uplinks"])
    return {"seconds": t1 - t0, "rounds_per_s": rounds / (t1 - t0), "mean_rtt_ms": statistics.mean(rtts),
            "max_rtt_ms": max(rtts), "walks": walks, "agent": s1["snmp"]["agent"]}


def bench_main(args: argparse.Namespace) -> None:
    from linkwatch.lab import topology
    from linkwatch.lab.plan import LabSpec
    from linkwatch.lab.processes import child_env, netns_exec
    from linkwatch.lab.topology import EngineOptions

    spec = LabSpec(LAB, UPLINKS)
    options = EngineOptions(probe_targets=3, overrides={"snmp": {
        "agent": {"enabled": True, "listen": AGENT, "community": COMMUNITY, "users": [USER]},
        "users": {USER: {"auth": "sha256", "auth_key": AUTH_KEY, "priv": "aes", "priv_key": PRIV_KEY}},
    }})
    topology.down(LAB)
    results: dict = {"lab": LAB, "uplinks": UPLINKS, "probe_targets": 3, "walks": args.walks,
                     "max_repetitions": MAX_REPETITIONS, "instances": INSTANCES, "target_ms": TARGET_MS}
    try:
        log(f"building lab {LAB} ({UPLINKS} uplinks x 3 targets) with the agent on {AGENT}")
        topology.up(spec, engine=True, options=options)
        deadline = time.monotonic() + 60
        while True:
            st, _ = topology.engine_status(spec, timeout=2.0)
            if st and all(u.state == "UP" for u in st.uplinks):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("uplinks did not all come UP within 60 s")
            time.sleep(0.2)
        log("all uplinks UP; net-snmp walks")
        for name, auth in (("v2c", V2), ("v3", V3)):
            results[f"snmpbulkwalk_{name}_ms"] = net_snmp_walks(spec, auth, BASE, args.walks, INSTANCES)
            results[f"snmpbulkwalk_{name}_empty_ms"] = net_snmp_walks(spec, auth, BASE + ".3", args.walks, 0)
        log("Python client walks in the client namespace")
        argv = netns_exec(spec.client_ns, [sys.executable, __file__, "--client", "--walks", str(args.walks)])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=child_env())
        if done.returncode != 0:
            raise RuntimeError(f"client failed: {done.stderr.strip()[-500:]}")
        client = json.loads(done.stdout)
        for name in ("v2c", "v3"):
            counts = {row[0] for row in client[name]}
            if counts != {INSTANCES}:
                raise RuntimeError(f"{name} walks returned {counts} instances, want {INSTANCES}")
        results["client_v2c_walk_ms"] = [row[1] * 1000 for row in client["v2c"]]
        results["client_v2c_wire_ms"] = [row[2] * 1000 for row in client["v2c"]]
        results["client_v3_walk_ms"] = [row[1] * 1000 for row in client["v3"]]
        log(f"engine probing: {args.flood:g} s idle, then {args.flood:g} s of back-to-back walks")
        results["engine_idle"] = engine_load(spec, args.flood, flood=False)
        results["engine_flood"] = engine_load(spec, args.flood, flood=True)
    finally:
        topology.down(LAB)
        log(f"lab {LAB} torn down")
    report(results)


def report(results: dict) -> None:
    rows = [
        ("snmpbulkwalk v2c, full walk (process wall time)", "snmpbulkwalk_v2c_ms"),
        ("snmpbulkwalk v2c, empty subtree (process cost)", "snmpbulkwalk_v2c_empty_ms"),
        ("snmpbulkwalk v3 authPriv, full walk (process wall time)", "snmpbulkwalk_v3_ms"),
        ("snmpbulkwalk v3 authPriv, empty subtree (process + discovery)", "snmpbulkwalk_v3_empty_ms"),
        ("Python v2c GETBULK walk (raw socket, incl. client encode/decode)", "client_v2c_walk_ms"),
        ("Python v2c GETBULK walk, send->receive only", "client_v2c_wire_ms"),
        ("Python v3 authPriv walk (pysnmp bulk_cmd, one engine)", "client_v3_walk_ms"),
    ]
    print(f"\n## SNMP agent: full walk of LINKWATCH-MIB, {results['uplinks']} uplinks x "
          f"{results['probe_targets']} targets ({results['instances']} instances, max-repetitions "
          f"{results['max_repetitions']}), {results['walks']} walks each\n")
    print("| measurement | median ms | min ms | p90 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for label, key in rows:
        s = summary(results[key])
        results.setdefault("summary", {})[key] = s
        print(f"| {label} | {s['median']:.1f} | {s['min']:.1f} | {s['p90']:.1f} | {s['max']:.1f} |")
    for name in ("v2c", "v3"):
        est = statistics.median(results[f"snmpbulkwalk_{name}_ms"]) - statistics.median(
            results[f"snmpbulkwalk_{name}_empty_ms"])
        results["summary"][f"snmpbulkwalk_{name}_minus_empty_ms"] = est
        print(f"| snmpbulkwalk {name}: full minus empty (the walk's own exchanges, estimate) | {est:.1f} | | | |")
    idle, flood = results["engine_idle"], results["engine_flood"]
    print("\n## The engine's probing with and without a walk flood\n")
    print("| | probe rounds/s (4 uplinks) | mean RTT ms | max RTT ms | walks done | agent answered |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, d in (("idle", idle), ("back-to-back v2c walks", flood)):
        print(f"| {label} | {d['rounds_per_s']:.2f} | {d['mean_rtt_ms']:.2f} | {d['max_rtt_ms']:.2f} | "
              f"{d['walks'] if d['walks'] is not None else '-'} | {d['agent']['answered']} |")
    verdict = max(statistics.median(results["client_v2c_walk_ms"]), statistics.median(results["client_v3_walk_ms"]))
    results["verdict"] = {"worst_client_median_ms": verdict, "target_ms": TARGET_MS, "ok": verdict <= TARGET_MS}
    print(f"\nTarget: full walk of {results['uplinks']} uplinks <= {TARGET_MS:g} ms median (Python client, "
          f"v2c and v3): worst median {verdict:.1f} ms -> {'OK' if verdict <= TARGET_MS else 'MISSED'}")
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"snmp-agent-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nraw numbers: {path.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--walks", type=int, default=30, help="walks per measurement (default 30)")
    parser.add_argument("--flood", type=float, default=5.0, help="seconds of idle / walk-flood probing (default 5)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)  # inside the client namespace
    parser.add_argument("--walk-for", type=float, default=0.0, help=argparse.SUPPRESS)  # client: walk flood
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    if os.geteuid() != 0:
        sys.exit("bench_snmp_agent.py needs root (it builds network namespaces)")
    bench_main(args)


if __name__ == "__main__":
    main()
