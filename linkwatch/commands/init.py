"""`linkwatch init`: a first config from what the machine looks like -- the interfaces with a
default route in the main table, as uplinks ordered by route metric, with public probe targets --
written to a new file (never over an existing one) or printed.

The kernel is read by :mod:`linkwatch.kernel.discover`, the text made by
:mod:`linkwatch.config.starter`; this module only writes it."""

from __future__ import annotations

import errno
import grp
import os
import socket
import sys
import tempfile
import time

from linkwatch.commands.common import DEFAULT_CONFIG, EXIT_OK, EXIT_RUNTIME, fail

NAME = "init"
HELP = "write a first config from this machine's default routes (never overwrites)"

MODE = 0o640  # the config may later hold secrets (the web password hash, SNMP keys)
GROUP = "linkwatch"  # the engine's group (the package's users): it must read the file
LOOKED_FOR = ("no default route in the main table via any interface, IPv4 or IPv6 (what `ip route "
              "show default` and `ip -6 route show default` list), so no uplink to write; connect the "
              "uplinks (DHCP, PPP, router advertisements) and run linkwatch init again, or write the "
              "config by hand from the sample (etc/linkwatch.toml)")


class ExistsError(Exception):
    """The output file exists: init never overwrites it."""


def refusal(path: str) -> str:
    return (f"{path} already exists, left unchanged (init never overwrites a config): move it away "
            f"first (e.g. sudo mv {path} {path}.orig), or write elsewhere with --output PATH "
            "(--output - prints it)")


def _fill(fd: int, text: str, group: int) -> None:
    """Write ``text`` to the new file ``fd``: mode 0640, group ``group`` (-1: unchanged), on disk."""
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), MODE)
        if group >= 0:
            os.fchown(f.fileno(), -1, group)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _link_or_create(tmp: str, path: str, text: str, group: int) -> None:
    """Put the finished temporary file at ``path`` unless something is there already: a hard link
    fails on an existing name, so even a file created meanwhile is never replaced. Where the file
    system has no hard links, an exclusive create (not atomic, still never overwriting)."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise ExistsError(path) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    except FileExistsError:
        raise ExistsError(path) from None
    _fill(fd, text, group)


def write_new(path: str, text: str) -> None:
    """Write ``text`` to the new file ``path`` atomically, mode 0640 (group linkwatch when run as
    root and that group exists); its directory is created if missing. :class:`ExistsError` if
    ``path`` exists."""
    if os.path.lexists(path):
        raise ExistsError(path)
    group = -1
    if os.geteuid() == 0:
        try:
            group = grp.getgrnam(GROUP).gr_gid
        except KeyError:
            pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".linkwatch-init-")
    try:
        _fill(fd, text, group)
        _link_or_create(tmp, path, text, group)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def cmd_init(args) -> int:
    from linkwatch.config import ConfigError, loads
    from linkwatch.config.starter import StarterError, render_starter, starter_uplinks
    from linkwatch.kernel.discover import read_default_uplinks
    from linkwatch.kernel.facts import FactsError

    to_stdout = args.output == "-"
    if not to_stdout and os.path.lexists(args.output):
        return fail(refusal(args.output), EXIT_RUNTIME, "linkwatch init")
    try:
        found = read_default_uplinks()
    except FactsError as e:
        return fail(f"cannot read the routes: {e}", EXIT_RUNTIME, "linkwatch init")
    path = DEFAULT_CONFIG if to_stdout else args.output
    origin = f"on {socket.gethostname()} at {time.strftime('%Y-%m-%d %H:%M')}"
    try:
        text = render_starter(found, path, origin)
    except StarterError as e:
        detail = LOOKED_FOR if not found else str(e)
        return fail(f"{detail}; no file written", EXIT_RUNTIME, "linkwatch init")
    try:
        loads(text, path)  # what check-config will say: a failure here is linkwatch's bug
    except ConfigError as e:
        return fail(f"the config made from these routes is not valid (a bug; please report it), "
                    f"no file written:\n{e}", EXIT_RUNTIME, "linkwatch init")
    if to_stdout:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        write_new(args.output, text)
    except ExistsError:
        return fail(refusal(args.output), EXIT_RUNTIME, "linkwatch init")
    except OSError as e:
        return fail(f"{args.output}: {e.strerror or e}; no file written", EXIT_RUNTIME, "linkwatch init")
    uplinks = starter_uplinks(found)
    listed = ", ".join(f"{name} ({up.interface}, priority {n})" for n, (name, up) in enumerate(uplinks, 1))
    print(f"{args.output}: wrote {len(uplinks)} uplink{'s' if len(uplinks) != 1 else ''}: {listed}")
    print(f"read it through, then: linkwatch check-config {args.output}")
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``init`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP, description=HELP + (
        ": one uplink per interface with a default route in the main table (IPv4 or IPv6), ordered by "
        "route metric, gateway \"auto\", probes to public anycast resolvers (Quad9, Cloudflare). "
        "Refuses to overwrite an existing file (exit status 1)."))
    sp.add_argument("--output", "-o", default=DEFAULT_CONFIG, metavar="PATH",
                    help=f"the new config file (default {DEFAULT_CONFIG}); - prints it instead")
    sp.set_defaults(func=cmd_init)
