"""`linkwatch mib`: print LINKWATCH-MIB for the configured (or a given) base OID.

A thin wrapper over :func:`linkwatch.snmp.mibtext.render`. The base OID is ``--base-oid`` if given,
else ``[snmp] base_oid`` of ``--config``; without ``--config`` and with no file at the default path,
the default base (the module shipped as packaging/mibs/LINKWATCH-MIB.txt). The module goes to stdout
(``linkwatch mib > LINKWATCH-MIB.txt``); errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = "print LINKWATCH-MIB for the configured base OID"
DEFAULT_CONFIG = "/etc/linkwatch/linkwatch.toml"  # the same default as every other command (linkwatch.commands)


class UsageError(Exception):
    """A bad --base-oid or config: exit code 2."""


def base_oid(args: argparse.Namespace) -> str:
    """``--base-oid``, else ``[snmp] base_oid`` of the config (the default base when no config
    was named and none exists at the default path)."""
    if args.base_oid:
        return args.base_oid
    from linkwatch.config import DEFAULT_BASE_OID, ConfigError, load

    path = args.config or DEFAULT_CONFIG
    if args.config is None and not os.path.exists(path):
        print(f"linkwatch mib: no {path}; printing the module for the default base OID {DEFAULT_BASE_OID}",
              file=sys.stderr)
        return DEFAULT_BASE_OID
    try:
        return load(path).snmp.base_oid
    except ConfigError as e:
        more = f" (+{len(e.issues) - 1} more; see linkwatch check-config {path})" if len(e.issues) > 1 else ""
        raise UsageError(f"{e.issues[0]}{more}") from None


def cmd_mib(args: argparse.Namespace) -> int:
    from linkwatch.snmp.mib import MibError
    from linkwatch.snmp.mibtext import render

    try:
        text = render(base_oid(args))
    except (UsageError, MibError) as e:
        print(f"linkwatch mib: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def register(subparsers) -> None:
    """Add the ``mib`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(
        "mib", help=HELP,
        description="Print the LINKWATCH-MIB module (SMIv2) registered at the base OID that the engine's "
                    "agent and traps use, for loading into snmptrapd, net-snmp tools or an NMS. "
                    "packaging/mibs/LINKWATCH-MIB.txt is the module for the default base OID.")
    sp.add_argument("--base-oid", metavar="OID",
                    help="register the module here, e.g. 1.3.6.1.4.1.<your enterprise number>.1 "
                         "(default: [snmp] base_oid of the config)")
    sp.add_argument("--config", metavar="FILE",
                    help=f"config file, for [snmp] base_oid (default {DEFAULT_CONFIG} if it exists)")
    sp.set_defaults(func=cmd_mib)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linkwatch.snmp.cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(["mib", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
