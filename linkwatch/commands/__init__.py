"""The `linkwatch` command: one module per subcommand in this package, each a thin wrapper over the
library with a ``register(subparsers)``; :mod:`linkwatch.commands.common` holds what they share
(default paths, asking the engine, the error convention: 0 ok, 1 runtime error, 2 bad config or
usage) and the one ``main`` that parses and dispatches; :mod:`linkwatch.commands.manpages` renders
the manual pages from the parser and the config schema.

The command modules are imported when the parser is built, not with this package, so that
``python -m linkwatch.commands.history`` runs the module once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import ModuleType

from linkwatch import __version__
from linkwatch.commands import common

# Every subcommand, with its one-line help; tests check that README.md documents each of them, and
# that each module registers its command with this help.
COMMANDS = {
    "run": "run the engine in the foreground",
    "status": "show the uplinks as the running engine sees them",
    "set": "admin override: disable, enable, force or auto an uplink",
    "prefixes": "set the LAN prefixes an uplink delegates now (a DHCPv6 client's hook)",
    "check-config": "check a config file and report every error; changes nothing",
    "init": "write a first config from this machine's default routes (never overwrites)",
    "lab": "build and drive the network-namespace lab (root)",
    "history": "print the event log from the history database",
    "web": "serve the web dashboard, JSON API and /metrics (unprivileged)",
    "passwd": "set the web login password: writes [web] password_hash into the config",
    "mib": "print LINKWATCH-MIB for the configured base OID",
}


def command_modules() -> list[ModuleType]:
    """The modules that register the subcommands, in the order `linkwatch --help` lists them."""
    # (this binds the package attribute `set` to the module: no builtin set() in this file)
    from linkwatch.commands import check_config, history, init, lab, mib, passwd, prefixes, run, set, status, web

    return [run, status, set, prefixes, init, check_config, lab, web, passwd, history, mib]


PARSER = {"prog": "linkwatch", "description": "Fast, careful multi-uplink failover for Linux routers.",
          "version": f"linkwatch {__version__}"}


def build_parser() -> argparse.ArgumentParser:
    return common.build_parser(command_modules(), **PARSER)


def main(argv: Sequence[str] | None = None) -> int:
    """The `linkwatch` console script (and ``python -m linkwatch``)."""
    return common.main(command_modules(), argv, **PARSER)
