"""`linkwatch passwd`: set the web login password, i.e. write ``[web] password_hash`` into the
config file (atomically, everything else untouched; refused if the result would not be valid)."""

from __future__ import annotations

import getpass
import os
import re
import sys
import tempfile

from linkwatch.commands.common import DEFAULT_CONFIG, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, fail

NAME = "passwd"
HELP = "set the web login password: writes [web] password_hash into the config"


class PasswdError(ValueError):
    """The config file cannot take the new hash (it would no longer parse, or cannot be written)."""


def set_password_hash(text: str, hash_: str) -> str:
    """The config text with ``[web] password_hash`` set to ``hash_``, everything else untouched.

    Replaces an existing ``password_hash = ...`` line of the [web] table; otherwise puts the line
    after a commented-out example in that table, or right after its header; with no [web] table,
    appends one."""
    line = f'password_hash = "{hash_}"'
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if re.fullmatch(r"\s*\[\s*web\s*\]\s*(#.*)?\n?", l)), None)
    if start is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{sep}\n[web]\n{line}\n"
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"\s*\[", lines[i])), len(lines))
    for i in range(start + 1, end):
        if re.match(r"\s*password_hash\s*=", lines[i]):
            lines[i] = line + "\n"
            return "".join(lines)
    example = next((i for i in range(start + 1, end) if re.match(r"\s*#\s*password_hash\s*=", lines[i])), start)
    if not lines[example].endswith("\n"):
        lines[example] += "\n"
    lines.insert(example + 1, line + "\n")
    return "".join(lines)


def write_config(path: str, text: str) -> int:
    """Replace ``path`` atomically with ``text``, keeping its owner, and its mode less what others
    could do with it (:func:`linkwatch.config.filemode.tightened`: it holds the password hash, and
    whoever writes it controls the hooks). Returns the mode before."""
    from linkwatch.config import ConfigError, loads
    from linkwatch.config.filemode import tightened

    try:
        loads(text, path)
    except ConfigError as e:
        raise PasswdError(f"{path} would no longer be valid, left unchanged:\n{e}") from None
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".linkwatch-passwd-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, tightened(st.st_mode))
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return st.st_mode & 0o7777


def _read_password(stdin) -> str:
    if stdin.isatty():
        first = getpass.getpass("New web password: ")
        if getpass.getpass("Again: ") != first:
            raise PasswdError("the two passwords differ")
        return first
    return stdin.readline().rstrip("\r\n")  # scripts: the password on one line of stdin


def cmd_passwd(args) -> int:
    from linkwatch.config.filemode import tightened
    from linkwatch.webui.security import PasswordError, hash_password

    try:
        password = _read_password(sys.stdin)
        hash_ = hash_password(password)
        if args.print:
            print(hash_)
            return EXIT_OK
        with open(args.config, encoding="utf-8-sig") as f:
            text = f.read()
        before = write_config(args.config, set_password_hash(text, hash_))
    except (PasswordError, PasswdError) as e:
        return fail(e, EXIT_USAGE)
    except OSError as e:
        return fail(f"{args.config}: {e.strerror or e}", EXIT_RUNTIME)
    print(f"{args.config}: password set; restart the web UI (systemctl restart linkwatch-web) to use it")
    if tightened(before) != before:
        print(f"{args.config}: mode {before:04o} -> {tightened(before):04o}: others may no longer change it "
              "(or read the hash)")
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``passwd`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP, description=HELP + (
        ". Asks twice on a terminal; otherwise reads one line from stdin."))
    sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file to write the hash into")
    sp.add_argument("--print", action="store_true", help="only print the hash, change no file")
    sp.set_defaults(func=cmd_passwd)
