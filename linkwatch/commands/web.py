"""`linkwatch web`: serve the web UI (dashboard, JSON API, /metrics) with waitress, unprivileged.

Flask and waitress are imported only when `linkwatch web` runs: the engine never loads them.
"""

from __future__ import annotations

import gc
import logging
import os

from linkwatch.commands.common import DEFAULT_CONFIG, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, fail, load_and_log

NAME = "web"
HELP = "serve the web dashboard, JSON API and /metrics (unprivileged)"


def cmd_web(args) -> int:
    from linkwatch.config import LISTEN_EXAMPLES, parse_listen

    config = load_and_log(args)
    if config is None:
        return EXIT_USAGE
    log = logging.getLogger("linkwatch.web")
    from linkwatch.daemon.memory import limit_arenas, trim_every
    from linkwatch.daemon.memtrace import install as trace_memory
    trace_memory()  # only with LINKWATCH_TRACEMALLOC set (bench/soak.py --trace-memory)
    limit_arenas(1)  # the worker threads share the main heap (unless MALLOC_ARENA_MAX says otherwise)
    trim_every()  # what a flood's worker threads left in the heap goes back (daemon/memory.py)
    try:
        host, port = parse_listen(args.listen or config.web.listen)
    except ValueError as e:
        why = f": {e}" if str(e) else ""
        return fail(f"--listen: got {args.listen!r}, expected {LISTEN_EXAMPLES}{why}", EXIT_USAGE)
    if os.geteuid() == 0:
        log.warning("running as root: the web UI needs no privileges; run it as an unprivileged user "
                    "in the control socket's group")
    if not config.web.password_hash:
        log.warning("no [web] password_hash: nobody can log in, controls are off (linkwatch passwd sets one)")
    from linkwatch.webui.app import create_app
    from linkwatch.webui.server import make_server

    app = create_app(config)
    try:
        server = make_server(app, host, port, args.threads, config.web.trusted_proxies)
    except OSError as e:
        return fail(f"cannot serve on {host}:{port}: {e.strerror or e}", EXIT_RUNTIME)
    gc.freeze()  # the start-up's objects out of the collector's way: see FREEZE_AFTER in commands/run.py
    log.info("web UI on http://%s:%d/ (engine socket %s, history %s)", host if ":" not in host else f"[{host}]",
             port, config.control.socket, config.history.path or "off")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``web`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP, description=HELP)
    sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file")
    sp.add_argument("--listen", help='address:port, overrides [web] listen (e.g. "127.0.0.1:8080")')
    sp.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                    help="log level (overrides [log] level)")
    sp.set_defaults(func=cmd_web)
