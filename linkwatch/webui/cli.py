"""`linkwatch web` (serve the UI with waitress) and `linkwatch passwd` (set the login password).

Flask and waitress are imported only when `linkwatch web` runs: the engine never loads them.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import sys
import tempfile

WEB_HELP = "serve the web dashboard, JSON API and /metrics (unprivileged)"
PASSWD_HELP = "set the web login password: writes [web] password_hash into the config"


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


def write_config(path: str, text: str) -> None:
    """Replace ``path`` atomically with ``text``, keeping its mode and owner."""
    from linkwatch.config import ConfigError, loads

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
        os.chmod(tmp, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_password(stdin) -> str:
    if stdin.isatty():
        first = getpass.getpass("New web password: ")
        if getpass.getpass("Again: ") != first:
            raise PasswdError("the two passwords differ")
        return first
    return stdin.readline().rstrip("\r\n")  # scripts: the password on one line of stdin


def cmd_passwd(args) -> int:
    from linkwatch.webui.security import PasswordError, hash_password

    try:
        password = _read_password(sys.stdin)
        hash_ = hash_password(password)
        if args.print:
            print(hash_)
            return 0
        with open(args.config, encoding="utf-8-sig") as f:
            text = f.read()
        write_config(args.config, set_password_hash(text, hash_))
    except (PasswordError, PasswdError) as e:
        print(f"linkwatch: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"linkwatch: {args.config}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{args.config}: password set; restart the web UI (systemctl restart linkwatch-web) to use it")
    return 0


def cmd_web(args) -> int:
    from linkwatch.commands.common import load_and_log
    from linkwatch.config import LISTEN_EXAMPLES, parse_listen

    config = load_and_log(args)
    if config is None:
        return 2
    log = logging.getLogger("linkwatch.web")
    try:
        host, port = parse_listen(args.listen or config.web.listen)
    except ValueError as e:
        why = f": {e}" if str(e) else ""
        print(f"linkwatch: --listen: got {args.listen!r}, expected {LISTEN_EXAMPLES}{why}", file=sys.stderr)
        return 2
    if os.geteuid() == 0:
        log.warning("running as root: the web UI needs no privileges; run it as an unprivileged user "
                    "in the control socket's group")
    if not config.web.password_hash:
        log.warning("no [web] password_hash: nobody can log in, controls are off (linkwatch passwd sets one)")
    import waitress

    from linkwatch.webui.app import create_app

    app = create_app(config)
    log.info("web UI on http://%s:%d/ (engine socket %s, history %s)", host if ":" not in host else f"[{host}]",
             port, config.control.socket, config.history.path or "off")
    try:
        waitress.serve(app, host=host, port=port, threads=args.threads, ident="linkwatch",
                       clear_untrusted_proxy_headers=True, channel_timeout=30)
    except OSError as e:
        print(f"linkwatch: cannot serve on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    """Add the `web` and `passwd` subcommands to the main parser's subparsers."""
    from linkwatch.commands.common import DEFAULT_CONFIG

    sp = sub.add_parser("web", help=WEB_HELP, description=WEB_HELP)
    sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file")
    sp.add_argument("--listen", help='address:port, overrides [web] listen (e.g. "127.0.0.1:8080")')
    sp.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sp.set_defaults(func=cmd_web)

    sp = sub.add_parser("passwd", help=PASSWD_HELP, description=PASSWD_HELP + (
        ". Asks twice on a terminal; otherwise reads one line from stdin."))
    sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file to write the hash into")
    sp.add_argument("--print", action="store_true", help="only print the hash, change no file")
    sp.set_defaults(func=cmd_passwd)
