"""What every `linkwatch` subcommand shares: the default paths, loading the config with logging,
asking the running engine, the error convention and the one `main` that parses and dispatches.

The convention: the library raises domain errors; a command turns each into one clean line on
stderr and an exit code: 0 ok, 1 runtime error (engine not reachable, refused request, unreadable
file), 2 bad config or usage (as argparse's own usage errors).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

DEFAULT_CONFIG = "/etc/linkwatch/linkwatch.toml"
DEFAULT_SOCKET = "/run/linkwatch/control.sock"

EXIT_OK = 0
EXIT_RUNTIME = 1  # the engine is not reachable or refused, a file cannot be read or written
EXIT_USAGE = 2  # a bad config or a bad argument
EXIT_INTERRUPTED = 130  # Ctrl-C


class UsageError(Exception):
    """A bad argument or config: exit code 2."""


def fail(message: object, code: int, prefix: str = "linkwatch") -> int:
    """Print ``prefix: message`` on stderr and return ``code``, for ``return fail(...)``."""
    print(f"{prefix}: {message}", file=sys.stderr)
    return code


def load_config(path: str):
    """The config at ``path`` for a command that needs one setting of it; a bad config is a
    :class:`UsageError` of one line: its first error, and how many more check-config would list."""
    from linkwatch.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as e:
        more = f" (+{len(e.issues) - 1} more; see linkwatch check-config {path})" if len(e.issues) > 1 else ""
        raise UsageError(f"{e.issues[0]}{more}") from None


def load_and_log(args):
    """The config of ``args.config`` with logging set up from it (``--log-level`` wins), or None
    after printing every config error (the caller exits 2)."""
    from linkwatch.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as e:
        print(f"linkwatch: {e}", file=sys.stderr)
        return None
    level = getattr(logging, (args.log_level or config.log.level).upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from linkwatch.config.filemode import mode_warnings

    for text in mode_warnings(args.config, config):
        logging.getLogger("linkwatch").warning("%s", text)
    return config


# --- talking to the running engine -------------------------------------------------------------


def add_client_options(sp: argparse.ArgumentParser) -> None:
    """The options of a command that asks the running engine: where its control socket is."""
    sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file (to find the socket)")
    sp.add_argument("--socket", help="control socket path (overrides the config)")
    sp.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the engine")


def socket_path(args) -> str:
    """``--socket``, else ``[control] socket`` of ``--config``, else the default socket."""
    if args.socket:
        return args.socket
    from linkwatch.config import ConfigError, load

    try:
        return load(args.config).control.socket
    except ConfigError:
        return DEFAULT_SOCKET


def ask(args, request: dict) -> dict | None:
    """The engine's answer to ``request``, or None after printing why there is none (exit 1)."""
    from linkwatch.report.control import ControlError, call

    try:
        answer = call(socket_path(args), request, timeout=args.timeout)
    except ControlError as e:
        print(f"linkwatch: {e}", file=sys.stderr)
        return None
    if not answer.get("ok"):
        print(f"linkwatch: engine refused: {answer.get('error', 'no reason given')}", file=sys.stderr)
        return None
    return answer


# --- parsing and dispatch ----------------------------------------------------------------------


def build_parser(commands: Sequence[ModuleType], prog: str, description: str | None = None,
                 version: str | None = None) -> argparse.ArgumentParser:
    """A parser with one subcommand per module of ``commands``, each added by its ``register``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    if version:
        p.add_argument("--version", action="version", version=version)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in commands:
        module.register(sub)
    return p


def main(commands: Sequence[ModuleType], argv: Sequence[str] | None = None, *, prog: str | None = None,
         description: str | None = None, version: str | None = None, alone: str | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) for the subcommands of ``commands`` and
    run the one chosen; its exit code.

    ``alone`` names the one command a module runs when started by itself
    (``python -m linkwatch.commands.history --since 1h``): ``argv`` are then that command's own
    arguments, and ``prog`` defaults to ``python -m <its module>``."""
    if alone is not None:
        argv = [alone, *(sys.argv[1:] if argv is None else argv)]
        prog = prog or f"python -m {commands[0].__spec__.name}"  # not "__main__" when run by -m
    args = build_parser(commands, prog or "linkwatch", description, version).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
