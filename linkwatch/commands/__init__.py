"""The `linkwatch` command. Each subcommand is a thin wrapper over the library: the library raises
domain errors, this module turns them into one clean line on stderr and an exit code.

Exit codes: 0 ok, 1 runtime error (engine not reachable, refused request), 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from linkwatch import __version__

DEFAULT_CONFIG = "/etc/linkwatch/linkwatch.toml"
DEFAULT_SOCKET = "/run/linkwatch/control.sock"

# Every subcommand, with its one-line help; tests check that README.md documents each of them.
COMMANDS = {
    "run": "run the engine in the foreground",
    "status": "show the uplinks as the running engine sees them",
    "set": "admin override: disable, enable, force or auto an uplink",
    "check-config": "check a config file and report every error; changes nothing",
    "lab": "build and drive the network-namespace lab (root)",
    "history": "print the event log from the history database",
    "web": "serve the web dashboard, JSON API and /metrics (unprivileged)",
    "passwd": "set the web login password: writes [web] password_hash into the config",
    "mib": "print LINKWATCH-MIB for the configured base OID",
}


def _socket_path(args) -> str:
    if args.socket:
        return args.socket
    from linkwatch.config import ConfigError, load

    try:
        return load(args.config).control.socket
    except ConfigError:
        return DEFAULT_SOCKET


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
    return config


def cmd_run(args) -> int:
    from linkwatch.daemon.engine import Engine
    import asyncio

    config = load_and_log(args)
    if config is None:
        return 2
    try:
        return asyncio.run(Engine(config, args.config).run())
    except Exception as e:  # domain errors (socket in use, no permission) as one line
        logging.getLogger("linkwatch").debug("engine failed", exc_info=True)
        print(f"linkwatch: {e}", file=sys.stderr)
        return 1


def cmd_check_config(args) -> int:
    from linkwatch.config import ConfigError, load

    try:
        config = load(args.file)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    names = ", ".join(f"{u.name} ({u.interface}, priority {u.priority}, table {u.table})" for u in config.uplinks)
    print(f"{args.file}: OK: {len(config.uplinks)} uplinks: {names}")
    return 0


def _ask(args, request: dict) -> dict | None:
    from linkwatch.report.control import ControlError, call

    try:
        answer = call(_socket_path(args), request, timeout=args.timeout)
    except ControlError as e:
        print(f"linkwatch: {e}", file=sys.stderr)
        return None
    if not answer.get("ok"):
        print(f"linkwatch: engine refused: {answer.get('error', 'no reason given')}", file=sys.stderr)
        return None
    return answer


def _fmt(v, unit: str = "", digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def _fmt_bytes(v) -> str:
    if v is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if v < 1000 or unit == "GB":
            return f"{v:.0f}{unit}" if unit == "B" else f"{v:.1f}{unit}"
        v /= 1000.0
    return "-"


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0, int(time.time() - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_status(st: dict) -> str:
    rows = [("UPLINK", "IF", "STATE", "ACTIVE", "RTT", "LOSS", "JITTER", "SINCE", "PROBES/DAY", "REASON")]
    for u in st["uplinks"]:
        rows.append((
            u["name"] + (" (forced)" if u.get("forced") else ""), u["interface"], u["state"],
            "yes" if u["active"] else "no", _fmt(u["rtt_ms"], "ms"), _fmt(u["loss_pct"], "%", 0),
            _fmt(u["jitter_ms"], "ms"), _ago(u.get("since")), _fmt_bytes(u.get("probe_bytes_per_day")),
            u["reason"],
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.append(f"active: {', '.join(st['active']) or '-'} ({st['mode']}): {st.get('reason', '')}")
    history = (st.get("sinks", {}).get("history") or {}).get("detail")
    if history:
        pending = history.get("pending_events", 0) + history.get("pending_samples", 0)
        line = (f"history: {history.get('events_written', 0)} events, {history.get('samples_written', 0)} samples "
                f"written, last commit {_ago(history.get('last_commit_at'))} ago, {pending} pending")
        if history.get("last_error"):
            line += f"; FAILING: {history['last_error']}"
        lines.append(line)
    traps = (st.get("sinks", {}).get("snmp-traps") or {}).get("detail")
    if traps:
        lines.append(f"snmp traps: {traps.get('sent', 0)} sent, {traps.get('failed', 0)} failed, "
                     f"{sum((traps.get('suppressed') or {}).values())} held back by the storm limit")
    snmp = st.get("snmp") or {}
    if snmp.get("agent_error"):
        lines.append(f"snmp agent: NOT RUNNING: {snmp['agent_error']}")
    elif snmp.get("agent"):
        a = snmp["agent"]
        lines.append(f"snmp agent on {snmp.get('agent_listen')}: {a.get('answered', 0)} answered, "
                     f"{a.get('bad_community', 0)} bad community, {a.get('bad_user_or_keys', 0)} bad v3 user/keys, "
                     f"{a.get('malformed', 0)} malformed")
    return "\n".join(lines)


def cmd_status(args) -> int:
    answer = _ask(args, {"cmd": "status"})
    if answer is None:
        return 1
    st = answer["status"]
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0


def cmd_set(args) -> int:
    answer = _ask(args, {"cmd": "set", "uplink": args.uplink, "action": args.action})
    if answer is None:
        return 1
    print(f"{answer.get('message', 'ok')}; active: {', '.join(answer.get('active', [])) or '-'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linkwatch", description="Fast, careful multi-uplink failover for Linux routers.")
    p.add_argument("--version", action="version", version=f"linkwatch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def client_opts(sp):
        sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file (to find the socket)")
        sp.add_argument("--socket", help="control socket path (overrides the config)")
        sp.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the engine")

    sp = sub.add_parser("run", help=COMMANDS["run"])
    sp.add_argument("--config", default=DEFAULT_CONFIG)
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("status", help=COMMANDS["status"])
    client_opts(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("set", help=COMMANDS["set"])
    client_opts(sp)
    sp.add_argument("uplink")
    sp.add_argument("action", choices=["disable", "enable", "force", "auto"])
    sp.set_defaults(func=cmd_set)

    sp = sub.add_parser("check-config", help=COMMANDS["check-config"])
    sp.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    sp.set_defaults(func=cmd_check_config)

    from linkwatch.lab.cli import register as register_lab
    from linkwatch.webui.cli import register as register_web

    register_lab(sub)
    register_web(sub)
    from linkwatch.history_cli import register as register_history
    from linkwatch.snmp.cli import register as register_mib

    register_history(sub)
    register_mib(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
