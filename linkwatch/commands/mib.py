"""`linkwatch mib`: print LINKWATCH-MIB for the configured (or a given) base OID.

A thin wrapper over :func:`linkwatch.snmp.mibtext.render`. The base OID is ``--base-oid`` if given,
else ``[snmp] base_oid`` of ``--config``; without ``--config`` and with no file at the default path,
the default base (the module shipped as packaging/mibs/LINKWATCH-MIB.txt). The module goes to stdout
(``linkwatch mib > LINKWATCH-MIB.txt``); errors are one line on stderr with exit code 2.
Also runnable alone: ``python -m linkwatch.commands.mib --base-oid OID``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from linkwatch.commands import common
from linkwatch.commands.common import DEFAULT_CONFIG, EXIT_OK, EXIT_USAGE, UsageError, fail, load_config

NAME = "mib"
HELP = "print LINKWATCH-MIB for the configured base OID"
PREFIX = "linkwatch mib"  # how its lines on stderr start


def base_oid(args: argparse.Namespace) -> str:
    """``--base-oid``, else ``[snmp] base_oid`` of the config (the default base when no config
    was named and none exists at the default path)."""
    if args.base_oid:
        return args.base_oid
    from linkwatch.config import DEFAULT_BASE_OID

    path = args.config or DEFAULT_CONFIG
    if args.config is None and not os.path.exists(path):
        print(f"{PREFIX}: no {path}; printing the module for the default base OID {DEFAULT_BASE_OID}",
              file=sys.stderr)
        return DEFAULT_BASE_OID
    return load_config(path).snmp.base_oid


def cmd_mib(args: argparse.Namespace) -> int:
    from linkwatch.snmp.mib import MibError
    from linkwatch.snmp.mibtext import render

    try:
        text = render(base_oid(args))
    except (UsageError, MibError) as e:
        return fail(e, EXIT_USAGE, PREFIX)
    sys.stdout.write(text)
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``mib`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(
        NAME, help=HELP,
        description="Print the LINKWATCH-MIB module (SMIv2) registered at the base OID that the engine's "
                    "agent and traps use, for loading into snmptrapd, net-snmp tools or an NMS. "
                    "packaging/mibs/LINKWATCH-MIB.txt is the module for the default base OID.")
    sp.add_argument("--base-oid", metavar="OID",
                    help="register the module here, e.g. 1.3.6.1.4.1.<your enterprise number>.1 "
                         "(default: [snmp] base_oid of the config)")
    sp.add_argument("--config", metavar="FILE",
                    help=f"config file, for [snmp] base_oid (default {DEFAULT_CONFIG} if it exists)")
    sp.set_defaults(func=cmd_mib)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m linkwatch.commands.mib [options]``: the command on its own."""
    return common.main([sys.modules[__name__]], argv, alone=NAME)


if __name__ == "__main__":
    sys.exit(main())
