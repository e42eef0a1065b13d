"""`linkwatch web`: serve the web UI (dashboard, JSON API, /metrics) with waitress, unprivileged.

Flask and waitress are imported only when `linkwatch web` runs: the engine never loads them.
"""

from __future__ import annotations

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
    import waitress

    from linkwatch.webui.app import create_app

    app = create_app(config)
    log.info("web UI on http://%s:%d/ (engine socket %s, history %s)", host if ":" not in host else f"[{host}]",
             port, config.control.socket, config.history.path or "off")
    try:
        waitress.serve(app, host=host, port=port, threads=args.threads, ident="linkwatch",
                       # X-Forwarded-For reaches the app only for [web] trusted_proxies: it checks who sent it
                       clear_untrusted_proxy_headers=not config.web.trusted_proxies, channel_timeout=30)
    except OSError as e:
        return fail(f"cannot serve on {host}:{port}: {e.strerror or e}", EXIT_RUNTIME)
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
