"""`linkwatch prefixes UPLINK [PREFIX ...]`: the LAN prefixes an uplink delegates now, for the
per-uplink-prefix way of running IPv6 (from a DHCPv6 client's hook when prefix delegation hands
out a new prefix); no PREFIX goes back to the uplink's ``ipv6_prefixes`` in the config."""

from __future__ import annotations

from linkwatch.commands.common import EXIT_OK, EXIT_RUNTIME, add_client_options, ask

NAME = "prefixes"
HELP = "set the LAN prefixes an uplink delegates now (a DHCPv6 client's hook)"


def cmd_prefixes(args) -> int:
    answer = ask(args, {"cmd": "prefixes", "uplink": args.uplink, "prefixes": args.prefix or None})
    if answer is None:
        return EXIT_RUNTIME
    print(answer.get("message", "ok"))
    if answer.get("warning"):
        print(f"linkwatch: warning: {answer['warning']}")
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``prefixes`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP)
    add_client_options(sp)
    sp.add_argument("uplink", help="the uplink's name, as in [uplinks.NAME]")
    sp.add_argument("prefix", nargs="*", help="an IPv6 prefix the uplink delegates, e.g. 2001:db8:1a00::/56 "
                    "(none: the config's ipv6_prefixes)")
    sp.set_defaults(func=cmd_prefixes)
