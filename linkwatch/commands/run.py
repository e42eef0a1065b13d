"""`linkwatch run`: run the engine in the foreground (what linkwatch.service starts)."""

from __future__ import annotations

import logging

from linkwatch.commands.common import DEFAULT_CONFIG, EXIT_RUNTIME, EXIT_USAGE, fail, load_and_log

NAME = "run"
HELP = "run the engine in the foreground"


def cmd_run(args) -> int:
    from linkwatch.daemon.engine import Engine
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
    try:
        return asyncio.run(Engine(config, args.config).run())
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
