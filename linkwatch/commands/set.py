"""`linkwatch set UPLINK ACTION`: an admin override (disable, enable, force, auto), applied by the
running engine over its control socket."""

from __future__ import annotations

from linkwatch.commands.common import EXIT_OK, EXIT_RUNTIME, add_client_options, ask
from linkwatch.core.states import ADMIN_ACTIONS

NAME = "set"
HELP = "admin override: disable, enable, force or auto an uplink"


def cmd_set(args) -> int:
    answer = ask(args, {"cmd": "set", "uplink": args.uplink, "action": args.action})
    if answer is None:
        return EXIT_RUNTIME
    print(f"{answer.get('message', 'ok')}; active: {', '.join(answer.get('active', [])) or '-'}")
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``set`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP)
    add_client_options(sp)
    sp.add_argument("uplink", help="the uplink's name, as in [uplinks.NAME]")
    sp.add_argument("action", choices=ADMIN_ACTIONS,
                    help="disable takes the uplink out of service, enable puts it back; force sends all traffic to "
                    "it while it works, auto ends the override (not kept across an engine restart)")
    sp.set_defaults(func=cmd_set)
