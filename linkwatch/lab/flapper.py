"""``python -m linkwatch.lab.flapper``: the ``flap`` fault's background process. It blackholes one
uplink's provider for DOWN seconds, clears it for UP seconds, again and again, and stops by itself
after DURATION (or on SIGTERM), leaving the provider clear. It sends no traffic: it only changes the
provider namespace's nftables fault table (the lab's own).

The periods follow a fixed schedule from the start (down at 0, up at DOWN, down at DOWN+UP, …), so
the time each ``nft`` run takes does not add up over a long flap. Each toggle is logged with the
system-wide monotonic time (the lab's flap log), to line it up with a client flow's ``origin``.
When it ends by itself it forgets its own pid record (``lab status`` then shows no flap).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from linkwatch.lab.faults import Fault, FaultError, check_flap, fault_ruleset, flap_role
from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.plan import LabError
from linkwatch.lab.processes import forget_process, netns_exec, read_records, run_command


def flap_schedule(down: float, up: float, duration: float) -> list[tuple[float, str]]:
    """``[(0, "blackhole"), (down, "clear"), (down + up, "blackhole"), …]`` up to ``duration``, ending
    with a ``clear`` at ``duration`` at the latest. Pure."""
    check_flap(down, up, duration)
    steps: list[tuple[float, str]] = []
    t = 0.0
    while t < duration - 1e-9:
        steps.append((round(t, 6), "blackhole"))
        steps.append((round(min(t + down, duration), 6), "clear"))
        t += down + up
    return steps


def flap(lab: str, uplink: int, down: float, up: float, duration: float, stop: threading.Event,
         clock: Callable[[], float] = time.monotonic, log: Callable[[str], None] = lambda line: None) -> int:
    """Alternate blackhole/clear on ``uplink``'s provider; returns how many down periods there were."""
    steps = flap_schedule(down, up, duration)
    ns = discover(lab).provider_ns(uplink)
    if not namespace_exists(ns):
        raise FaultError(f"namespace {ns} does not exist")
    start, downs = clock(), 0
    try:
        for at, kind in steps:
            if stop.wait(max(0.0, start + at - clock())):
                break
            run_command(netns_exec(ns, ["nft", "-f", "-"]), input_text=fault_ruleset(Fault(kind)))
            downs += kind == "blackhole"
            log(f"{time.monotonic():.3f} {kind}")
    finally:
        if namespace_exists(ns):
            run_command(netns_exec(ns, ["nft", "-f", "-"]), input_text=fault_ruleset(Fault("clear")))
            log(f"{time.monotonic():.3f} clear (end)")
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
        downs = flap(args.lab, args.uplink, args.down, args.up, args.duration, stop,
                     log=lambda line: print(line, flush=True))
    except LabError as e:
        print(f"linkwatch lab flapper: {e}", file=sys.stderr)
        return 2
    finally:
        if not stop.is_set():  # ended by itself: forget our own record (never another flapper's)
            try:
                state_dir = discover(args.lab).state_dir
            except LabError:
                state_dir = None
            if state_dir and any(r.role == flap_role(args.uplink) and r.pid == os.getpid()
                                 for r in read_records(state_dir)):
                forget_process(state_dir, flap_role(args.uplink))
    print(f"flapped wan{args.uplink} {downs} times", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
