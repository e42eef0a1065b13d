"""`linkwatch status`: the uplinks as the running engine sees them, as a table (or its JSON)."""

from __future__ import annotations

import json
import time

from linkwatch.commands.common import EXIT_OK, EXIT_RUNTIME, add_client_options, ask, fail
from linkwatch.config.convert import format_size
from linkwatch.core.status import Status, StatusError, UplinkStatus, status_from_dict

NAME = "status"
HELP = "show the uplinks as the running engine sees them"


def _fmt(v, unit: str = "", digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def _fmt_bytes(v) -> str:
    return "-" if v is None else format_size(v)


def _name(u: UplinkStatus) -> str:
    """The uplink's name with its markers: forced by an operator, dampened (it kept failing)."""
    return u.name + (" (forced)" if u.forced else "") + (" FLAPPING" if u.dampened else "")


def _month(u: UplinkStatus) -> str:
    """This month's traffic, against the quota when there is one: ``12.3GB/20.0GB (62%)``."""
    if not u.quota_bytes:
        return format_size(u.month_bytes)
    pct = u.quota_pct if u.quota_pct is not None else 100.0 * u.month_bytes / u.quota_bytes
    return f"{format_size(u.month_bytes)}/{format_size(u.quota_bytes)} ({pct:.0f}%)"


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0, int(time.time() - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_status(st: Status) -> str:
    """The status snapshot as text: the uplink table (FLAPPING after the name of a dampened uplink;
    PROBES/DAY its probe traffic at the current rate; MONTH its traffic this month, against its quota),
    the active line, then one line each for the history, the SNMP traps and the SNMP agent when they
    are on."""
    rows = [("UPLINK", "IF", "STATE", "ACTIVE", "RTT", "LOSS", "JITTER", "SINCE", "PROBES/DAY", "MONTH",
             "REASON")]
    for u in st.uplinks:
        rows.append((
            _name(u), u.interface, u.state.value,
            "yes" if u.active else "no", _fmt(u.rtt_ms, "ms"), _fmt(u.loss_pct, "%", 0),
            _fmt(u.jitter_ms, "ms"), _ago(u.since), _fmt_bytes(u.probe_bytes_per_day), _month(u), u.reason,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.append(f"active: {', '.join(st.active) or '-'} ({st.mode}): {st.reason}")
    for r in st.rules:
        now = ("not applied (sticky flows are off)" if not r.applied else f"new flows go to {', '.join(r.now)}"
               if r.now else "none works: new flows are dropped" if r.fallback == "drop"
               else "none works: the default policy decides")
        lists = " -> ".join(r.uplinks) + (" (balanced)" if r.balance else "")
        lines.append(f"rule {r.name}: {r.matches} via {lists}: {now}")
    for u in st.uplinks:
        if u.flows_move_in_s is not None:
            lines.append(f"flows left on {u.name}: reset in {u.flows_move_in_s:.0f}s (move_flows_after)")
    if st.conntrack_flushes:
        f = st.conntrack_flushes[-1]
        how = f"flow mark 0x{f.mark:x}" if f.mark is not None else f"NAT address {f.address}"
        after = f", {f.after_switch_ms:.0f}ms after the route switch" if f.after_switch_ms is not None else ""
        lines.append(f"last flow reset: {f.uplink}, {f.deleted} entries by {how} in {f.ms:.0f}ms{after}")
    history = st.sinks["history"].detail if "history" in st.sinks else None
    if history:
        pending = history.get("pending_events", 0) + history.get("pending_samples", 0)
        line = (f"history: {history.get('events_written', 0)} events, {history.get('samples_written', 0)} samples "
                f"written, last commit {_ago(history.get('last_commit_at'))} ago, {pending} pending")
        if history.get("last_error"):
            line += f"; FAILING: {history['last_error']}"
        lines.append(line)
    traps = st.sinks["snmp-traps"].detail if "snmp-traps" in st.sinks else None
    if traps:
        lines.append(f"snmp traps: {traps.get('sent', 0)} sent, {traps.get('failed', 0)} failed, "
                     f"{sum((traps.get('suppressed') or {}).values())} held back by the storm limit")
    mqtt = st.sinks["mqtt"].detail if "mqtt" in st.sinks else None
    if mqtt:
        state = "connected" if mqtt.get("connected") else f"NOT CONNECTED: {mqtt.get('error') or 'connecting'}"
        lines.append(f"mqtt {mqtt.get('broker')}{' (tls)' if mqtt.get('tls') else ''}: {state}; "
                     f"{mqtt.get('published', 0)} messages published under {mqtt.get('topic_prefix')}/")
    snmp = st.snmp
    if snmp is not None and snmp.agent_error:
        lines.append(f"snmp agent: NOT RUNNING: {snmp.agent_error}")
    elif snmp is not None and snmp.agent:
        a = snmp.agent
        lines.append(f"snmp agent on {snmp.agent_listen}: {a.get('answered', 0)} answered, "
                     f"{a.get('bad_community', 0)} bad community, {a.get('bad_user_or_keys', 0)} bad v3 user/keys, "
                     f"{a.get('malformed', 0)} malformed")
    return "\n".join(lines)


def cmd_status(args) -> int:
    answer = ask(args, {"cmd": "status"})
    if answer is None:
        return EXIT_RUNTIME
    try:
        st = status_from_dict(answer.get("status"))
    except StatusError as e:
        return fail(f"the engine sent a status this linkwatch cannot read: {e}", EXIT_RUNTIME)
    print(json.dumps(st.to_dict(), indent=2) if args.json else format_status(st))
    return EXIT_OK


def register(subparsers) -> None:
    """Add the ``status`` command to an argparse subparsers object."""
    sp = subparsers.add_parser(NAME, help=HELP)
    add_client_options(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_status)
