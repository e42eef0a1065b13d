"""`linkwatch run`: run the engine in the foreground (what linkwatch.service starts)."""

from __future__ import annotations

import gc
import logging

from linkwatch.commands.common import DEFAULT_CONFIG, EXIT_RUNTIME, EXIT_USAGE, fail, load_and_log

# Once start-up is over (modules, the SNMP MIBs loaded), its objects leave the collector's counts
# (gc.freeze: O(1), no collection). A full collection runs only once the objects made since the
# last one outnumber a quarter of those counted, so with start-up's counted the netlink dumps'
# cyclic garbage (pyroute2 messages refer to themselves) can pile up: tracemalloc saw 2 MB more in
# 4 minutes of faults, of which 0.2 MB stayed after a full collection. Not a proven cure: the
# 30-minute soak's engine RSS grew as much with it as without (+5.7 vs +5.6 MB; issue 14).
FREEZE_AFTER = 30.0

NAME = "run"
HELP = "run the engine in the foreground"


def cmd_run(args) -> int:
    from linkwatch.daemon.engine import Engine
    from linkwatch.daemon.memory import trim_every
    from linkwatch.daemon.memtrace import install as trace_memory
    from linkwatch.daemon.procname import set_process_name
    import asyncio

    config = load_and_log(args)
    if config is None:
        return EXIT_USAGE
    if config.keepalived.track_file:  # before keepalived can see us: the file a crashed engine left says 0
        from linkwatch.sinks.keepalived import NONE_WORKING, TrackFileError, write_atomically
        try:
            write_atomically(config.keepalived.track_file, NONE_WORKING)
        except TrackFileError as e:
            logging.getLogger("linkwatch.engine").warning("%s (the sink retries)", e)
    set_process_name()  # "linkwatchd": what keepalived's vrrp_track_process watches (docs/keepalived.md)
    trace_memory()  # only with LINKWATCH_TRACEMALLOC set (bench/soak.py --trace-memory)
    trim_every()  # the allocator's free pages back to the kernel every minute (daemon/memory.py)
    async def run() -> int:
        asyncio.get_running_loop().call_later(FREEZE_AFTER, gc.freeze)
        return await Engine(config, args.config).run()

    try:
        return asyncio.run(run())
    except Exception as e:  # domain errors (socket in use, no permission) as one line
        logging.getLogger("linkwatch").debug("engine failed", exc_info=True)
        return fail(e, EXIT_RUNTIME)


def register(subparsers) -> None:
    """Add the ``run`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP)
    sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file")
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                    help="log level (overrides [log] level)")
    sp.set_defaults(func=cmd_run)
