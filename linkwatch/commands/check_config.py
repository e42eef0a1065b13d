"""`linkwatch check-config`: check a config file and report every error at once; changes nothing."""

from __future__ import annotations

import sys

from linkwatch.commands.common import DEFAULT_CONFIG, EXIT_OK, EXIT_USAGE

NAME = "check-config"
HELP = "check a config file and report every error; changes nothing"


def cmd_check_config(args) -> int:
    from linkwatch.config import ConfigError, load

    try:
        config = load(args.file)
    except ConfigError as e:
        print(str(e), file=sys.stderr)  # every error, each naming the file: no "linkwatch:" prefix
        return EXIT_USAGE
    from linkwatch.config.filemode import mode_warnings

    for text in mode_warnings(args.file, config):
        print(f"warning: {text}", file=sys.stderr)
    names = ", ".join(f"{u.name} ({u.interface}, priority {u.priority}, table {u.table})" for u in config.uplinks)
    print(f"{args.file}: OK: {len(config.uplinks)} uplinks: {names}")
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``check-config`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP)
    sp.add_argument("file", nargs="?", default=DEFAULT_CONFIG, help="the config file to check")
    sp.set_defaults(func=cmd_check_config)
