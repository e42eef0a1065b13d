"""`linkwatch prefixes UPLINK [PREFIX ...]`: the LAN prefixes an uplink delegates now, for the
per-uplink-prefix way of running IPv6 (from a DHCPv6 client's hook when prefix delegation hands
out a new prefix); no PREFIX goes back to the uplink's ``ipv6_prefixes`` in the config, ``--none``
says the delegation is gone. With no engine answering (a hook at boot, before the engine), the
request is written where the engine reads it at start (:mod:`linkwatch.daemon.prefixstate`)."""

from __future__ import annotations

import sys

from linkwatch.commands.common import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, add_client_options, ask, socket_path

NAME = "prefixes"
HELP = "set the LAN prefixes an uplink delegates now (a DHCPv6 client's hook)"


def cmd_prefixes(args) -> int:
    from linkwatch.daemon import prefixstate
    from linkwatch.report.control import ControlError, call

    if args.none and args.prefix:
        print("linkwatch prefixes: --none takes no PREFIX", file=sys.stderr)
        return EXIT_USAGE
    prefixes = [] if args.none else (args.prefix or None)
    request = {"cmd": "prefixes", "uplink": args.uplink, "prefixes": prefixes}
    path = socket_path(args)
    try:
        call(path, {"cmd": "ping"}, timeout=args.timeout)
    except ControlError as e:  # no engine: leave it in the file the engine reads at start, then ask again
        why = prefixstate.merge(prefixstate.path_for(path), args.uplink, prefixes)
        if why:
            print(f"linkwatch: {e}; and cannot save the request for the engine's start: {why}", file=sys.stderr)
            return EXIT_RUNTIME
        try:
            call(path, {"cmd": "ping"}, timeout=args.timeout)
        except ControlError:
            print(f"no engine answers at {path}: saved in {prefixstate.path_for(path)} for its start")
            return EXIT_OK
    answer = ask(args, request)
    if answer is None:
        return EXIT_RUNTIME
    print(answer.get("message", "ok"))
    if answer.get("warning"):
        print(f"linkwatch: warning: {answer['warning']}", file=sys.stderr)
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``prefixes`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP)
    add_client_options(sp)
    sp.add_argument("uplink", help="the uplink's name, as in [uplinks.NAME] (one with IPv6 probe targets)")
    sp.add_argument("prefix", nargs="*", help="an IPv6 prefix the uplink delegates, e.g. 2001:db8:1a00::/56 "
                    "(none: the config's ipv6_prefixes)")
    sp.add_argument("--none", action="store_true", help="the delegation is gone: no prefix at all")
    sp.set_defaults(func=cmd_prefixes)
