"""``python -m linkwatch.lab.flapper``: the ``flap`` fault's background process. It blackholes one
uplink's provider for DOWN seconds, clears it for UP seconds, again and again, and stops by itself
after DURATION (or on SIGTERM), leaving the provider clear. It sends no traffic: it only changes the
provider namespace's nftables fault table (the lab's own)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from linkwatch.lab.faults import Fault, FaultError, MAX_FLAP, fault_ruleset
from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.processes import netns_exec, run_command


def flap(lab: str, uplink: int, down: float, up: float, duration: float, stop: threading.Event,
         clock=time.monotonic) -> int:
    """Alternate blackhole/clear on ``uplink``'s provider; returns how many down periods there were."""
    if not 0 < duration <= MAX_FLAP or down <= 0 or up <= 0:
        raise FaultError(f"flap: bad timing down={down} up={up} duration={duration}")
    ns = discover(lab).provider_ns(uplink)
    if not namespace_exists(ns):
        raise FaultError(f"namespace {ns} does not exist")
    end, downs = clock() + duration, 0
    try:
        while not stop.is_set() and clock() < end:
            run_command(netns_exec(ns, ["nft", "-f", "-"]), input_text=fault_ruleset(Fault("blackhole")))
            downs += 1
            stop.wait(min(down, max(end - clock(), 0)))
            run_command(netns_exec(ns, ["nft", "-f", "-"]), input_text=fault_ruleset(Fault("clear")))
            stop.wait(min(up, max(end - clock(), 0)))
    finally:
        if namespace_exists(ns):
            run_command(netns_exec(ns, ["nft", "-f", "-"]), input_text=fault_ruleset(Fault("clear")))
    return downs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m linkwatch.lab.flapper")
    ap.add_argument("--lab", required=True)
    ap.add_argument("--uplink", type=int, required=True)
    ap.add_argument("--down", type=float, required=True)
    ap.add_argument("--up", type=float, required=True)
    ap.add_argument("--duration", type=float, required=True)
    args = ap.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        downs = flap(args.lab, args.uplink, args.down, args.up, args.duration, stop)
    except FaultError as e:
        print(f"linkwatch lab flapper: {e}", file=sys.stderr)
        return 2
    print(f"flapped wan{args.uplink} {downs} times", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
