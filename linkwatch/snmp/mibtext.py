"""The text of LINKWATCH-MIB (SMIv2) for any base OID, built from the layout in :mod:`.mib` (pure).

The numbers (scalars, columns, notifications and their OBJECTS) come from the tables of
:mod:`linkwatch.snmp.mib`, so the module cannot disagree with what the agent answers and the trap
sender sends; this module adds the words (syntax, units, descriptions). The MIB shipped as
packaging/mibs/LINKWATCH-MIB.txt is ``render(DEFAULT_BASE_OID)``; ``linkwatch mib`` prints it for
the configured ``[snmp] base_oid``.

The module identity hangs from the longest named node of SNMPv2-SMI or NET-SNMP-MIB above the base:
``{ netSnmpPlaypen 7745 }`` for the default, ``{ enterprises lwArc1(99999) 1 }`` for
1.3.6.1.4.1.99999.1 (arcs in between get names: bare numbers make smilint warn "implicit node
definition"). Such a module passes ``smilint -l 9`` without a message (one warning if the base has a
0 arc below the parent, see :attr:`Parent.value`) and loads in net-snmp.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from linkwatch.config import DEFAULT_BASE_OID
from linkwatch.snmp.mib import (COLUMNS, IPV6_OBJECTS, MODE_VALUES, NOTIFICATION_OBJECTS, NOTIFICATIONS,
                                NOTIFY_OBJECTS, OID, SCALARS, STATE_VALUES, UNKNOWN_DATE, MibError, oid_str,
                                parse_oid)

MODULE = "LINKWATCH-MIB"
REVISIONS = (  # newest first; add one (and keep the old ones) whenever the module changes
    ("202612050000Z", "IPv6 (dual-stack uplinks): lwActiveIpv6Uplinks and the columns lwUplinkIpv6State, "
                      "lwUplinkIpv6Reason, lwUplinkIpv6Active, lwUplinkIpv6Rtt, lwUplinkIpv6Loss and "
                      "lwUplinkIpv6Downs (instances only for uplinks with IPv6 probe targets), lwIpv6Group "
                      "and lwCompliance3."),
    ("202612040000Z", "Flap dampening and data budgets: the columns lwUplinkDampened, lwUplinkFlapPenalty, "
                      "lwUplinkMonthTraffic, lwUplinkQuota and lwUplinkProbeBytesPerDay, the notifications "
                      "lwUplinkDampenedChange and lwUplinkQuotaReached with lwQuotaThreshold, their groups and "
                      "lwCompliance2."),
    ("202611260000Z", "The first version: the uplink table, the engine scalars, five notifications "
                      "and the storm rule."),
)
WIDTH = 66  # description text per line, after the 9-column indent

# Named nodes a base OID may hang from: (module, name, oid). The longest proper prefix wins.
# (SNMPv2-SMI's are all below internet; org and dod are above it, zeroDotZero is elsewhere.)
PARENTS: tuple[tuple[str, str, OID], ...] = (
    ("SNMPv2-SMI", "internet", (1, 3, 6, 1)),
    ("SNMPv2-SMI", "directory", (1, 3, 6, 1, 1)),
    ("SNMPv2-SMI", "mgmt", (1, 3, 6, 1, 2)),
    ("SNMPv2-SMI", "mib-2", (1, 3, 6, 1, 2, 1)),
    ("SNMPv2-SMI", "transmission", (1, 3, 6, 1, 2, 1, 10)),
    ("SNMPv2-SMI", "experimental", (1, 3, 6, 1, 3)),
    ("SNMPv2-SMI", "private", (1, 3, 6, 1, 4)),
    ("SNMPv2-SMI", "enterprises", (1, 3, 6, 1, 4, 1)),
    ("SNMPv2-SMI", "security", (1, 3, 6, 1, 5)),
    ("SNMPv2-SMI", "snmpV2", (1, 3, 6, 1, 6)),
    ("SNMPv2-SMI", "snmpDomains", (1, 3, 6, 1, 6, 1)),
    ("SNMPv2-SMI", "snmpProxys", (1, 3, 6, 1, 6, 2)),
    ("SNMPv2-SMI", "snmpModules", (1, 3, 6, 1, 6, 3)),
    # every node NET-SNMP-MIB names (naming one of them again is an smilint warning)
    *(("NET-SNMP-MIB", name, (1, 3, 6, 1, 4, 1, 8072, *arcs)) for name, arcs in (
        ("netSnmp", ()), ("netSnmpObjects", (1,)), ("netSnmpEnumerations", (3,)), ("netSnmpModuleIDs", (3, 1)),
        ("netSnmpAgentOIDs", (3, 2)), ("netSnmpDomains", (3, 3)), ("netSnmpNotificationPrefix", (4,)),
        ("netSnmpNotifications", (4, 0)), ("netSnmpNotificationObjects", (4, 1)), ("netSnmpConformance", (5,)),
        ("netSnmpCompliances", (5, 1)), ("netSnmpGroups", (5, 2)), ("netSnmpExperimental", (9999,)),
        ("netSnmpPlaypen", (9999, 9999)))),
)


@dataclass(frozen=True)
class Parent:
    """Where the module identity hangs: ``name`` (imported from ``module``) plus ``arcs``."""

    module: str
    name: str
    oid: OID
    arcs: OID

    @property
    def value(self) -> str:
        """The OID value of the module identity, e.g. ``{ enterprises lwArc1(99999) 1 }``. An arc of
        0 in between stays a bare number (a named node may not end in 0: an smilint error), which
        costs one smilint warning, "implicit node definition"."""
        named = [f"lwArc{i}({arc})" if arc else "0" for i, arc in enumerate(self.arcs[:-1], start=1)]
        return "{ " + " ".join([self.name, *named, str(self.arcs[-1])]) + " }"


def parent_of(base: OID) -> Parent:
    """The longest named node of :data:`PARENTS` strictly above ``base``; MibError if there is none."""
    best = max((p for p in PARENTS if len(p[2]) < len(base) and base[:len(p[2])] == p[2]),
               key=lambda p: len(p[2]), default=None)
    if best is None:
        raise MibError(f"base OID {oid_str(base)} is not below internet (1.3.6.1): expected e.g. "
                       "1.3.6.1.4.1.<your enterprise number>.<n>")
    module, name, oid = best
    return Parent(module, name, oid, base[len(oid):])


# --- the words (paragraphs are separated by blank lines; lines starting with two spaces are kept as
# they are, everything else is wrapped) -------------------------------------------------------------

STORM_RULE = (
    "Storm rule: for each uplink, linkwatch sends at most trap_burst (default 3) notifications within "
    "trap_window (default 60 seconds), both set in the [snmp] table of its configuration. Notifications "
    "beyond that are held back and counted in lwUplinkSuppressedTraps. When the window ends with "
    "notifications held back, one lwUplinkFlapping summary carries the uplink's current state, its "
    "transition count and its count of held-back notifications. Traffic moves (lwActiveChanged) have "
    "their own budget with the same numbers; a window that held back lwActiveChanged notifications ends "
    "with one lwActiveChanged carrying the current active set. So an uplink causes at most "
    "trap_burst + 1 notifications per window.")


def _why_default() -> str:
    p = parent_of(parse_oid(DEFAULT_BASE_OID))
    return (f"No private enterprise number is registered for linkwatch. Its default base OID, "
            f"{DEFAULT_BASE_OID}, lies under {p.name} ({oid_str(p.oid)}) of {p.module}, the arc "
            "Net-SNMP's enterprise sets aside for private experiments. That is fine inside one network; "
            "an organisation with its own "
            "enterprise number should set [snmp] base_oid under it and load the module that `linkwatch mib` "
            "prints for that base.")


@dataclass(frozen=True)
class Obj:
    """The words of one OBJECT-TYPE: SYNTAX, DESCRIPTION, optional UNITS and MAX-ACCESS."""

    syntax: str
    description: str
    units: str | None = None
    access: str = "read-only"


def _enum(values: dict[str, int]) -> str:
    """``INTEGER { up(2), ... }`` of a name -> number table, one item per line when it is long."""
    items = [f"{k.lower()}({v})" for k, v in sorted(values.items(), key=lambda kv: kv[1])]
    one_line = "INTEGER { " + ", ".join(items) + " }"
    if len(one_line) <= 60:
        return one_line
    return "INTEGER {\n" + ",\n".join(" " * 20 + i for i in items) + "\n" + " " * 16 + "}"


UNKNOWN_DATE_HEX = f"'{UNKNOWN_DATE.hex().upper()}'H"  # 1 January of year 0 (as HOST-RESOURCES-MIB)

SCALAR_TEXT: dict[str, Obj] = {
    "lwVersion": Obj("DisplayString", "The version of the running linkwatch engine."),
    "lwUptime": Obj("TimeTicks", "How long the linkwatch engine has been running, in hundredths of a "
                                 "second (wraps after about 497 days)."),
    "lwActiveUplinks": Obj("DisplayString", "The names (lwUplinkName) of the uplinks that carry traffic "
                                            "now, in policy order, separated by commas; empty if none does."),
    "lwMode": Obj(_enum(MODE_VALUES), "The policy mode: failover(1) sends traffic over the best healthy "
                                      "priority tier, balance(2) over every healthy uplink, weighted."),
    "lwUplinkCount": Obj("Integer32 (0..99)", "The number of configured uplinks, i.e. of rows in "
                                              "lwUplinkTable."),
    "lwActiveChanges": Obj("Counter32", "How many times the set of uplinks carrying traffic changed since "
                                        "the engine started."),
    "lwPreviousActiveUplinks": Obj("DisplayString", "lwActiveUplinks as it was before its last change "
                                                    "(the same format); empty before the first change."),
    "lwActiveReason": Obj("DisplayString", "Why the policy chose the current active set, in words."),
    "lwActiveIpv6Uplinks": Obj("DisplayString", "The names of the uplinks that carry IPv6 traffic now (their "
                                                "IPv6 side: see lwUplinkIpv6State), in policy order, separated "
                                                "by commas; empty if none does or no uplink has IPv6 probe "
                                                "targets."),
}

COLUMN_TEXT: dict[str, Obj] = {
    "lwUplinkIndex": Obj("Integer32 (1..99)", "The uplink's position in the configuration file (1 = the "
                                              "first [uplinks.NAME] table). It changes only when the "
                                              "configuration is edited; lwUplinkName names the row.",
                         access="not-accessible"),
    "lwUplinkName": Obj("DisplayString", "The uplink's name (NAME of [uplinks.NAME] in the configuration)."),
    "lwUplinkInterface": Obj("DisplayString", "The network interface of the uplink, e.g. eth1 or wwan0."),
    "lwUplinkState": Obj("LwHealthState", "The uplink's health state."),
    "lwUplinkReason": Obj("DisplayString", "Why the uplink is in its state, in words, with the numbers "
                                           "that explain it (e.g. 3 failed rounds)."),
    "lwUplinkActive": Obj("TruthValue", "true(1) if the uplink carries traffic now, false(2) if not."),
    "lwUplinkPriority": Obj("Integer32 (0..2147483647)", "The configured priority: lower is preferred; "
                                                          "uplinks of equal priority form a tier."),
    "lwUplinkRtt": Obj("Integer32 (-1..2147483647)", "The mean round-trip time of the uplink's probes over "
                                                      "its statistics window, in microseconds; -1 if unknown "
                                                      "(no answer in the window).", units="microseconds"),
    "lwUplinkJitter": Obj("Integer32 (-1..2147483647)", "The mean absolute difference between successive "
                                                         "round-trip times to the same probe target over the "
                                                         "statistics window, in microseconds; -1 if unknown.",
                          units="microseconds"),
    "lwUplinkLoss": Obj("Integer32 (-1..10000)", "The share of the uplink's probes lost over its statistics "
                                                 "window, in hundredths of a percent (10000 = all lost); -1 "
                                                 "if unknown (no probe in the window).",
                        units="hundredths of a percent"),
    "lwUplinkLastChange": Obj("DateAndTime", "When the uplink entered its current state (wall clock, in "
                                             f"UTC); {UNKNOWN_DATE_HEX} (1 January of year 0) if unknown."),
    "lwUplinkTransitions": Obj("Counter32", "How many state changes the uplink made since the engine "
                                            "started."),
    "lwUplinkDowns": Obj("Counter32", "How many times the uplink went down since the engine started."),
    "lwUplinkSuppressedTraps": Obj("Counter32", "How many notifications about this uplink the storm rule "
                                                "(see lwUplinkFlapping) held back since the engine "
                                                "started."),
    "lwUplinkDampened": Obj("TruthValue", "true(1) while the uplink is dampened: it kept failing (went down, "
                                          "or dipped to falling) until its flap penalty (lwUplinkFlapPenalty) "
                                          "passed the configured suppress level, so it is shown as flapping "
                                          "and takes no traffic back, however good its probes look, until "
                                          "the penalty has decayed below the reuse level (it carries traffic "
                                          "still when no other uplink can); false(2) otherwise."),
    "lwUplinkFlapPenalty": Obj("Gauge32", "The uplink's flap penalty now, in hundredths (350 = 3.5): each "
                                          "time it goes down adds 1, each dip to falling 0.5, and the penalty "
                                          "halves every configured half-life (policy.flap_half_life, 60 "
                                          "seconds by default).", units="hundredths"),
    "lwUplinkMonthTraffic": Obj("Gauge32", "The traffic on the uplink's interface this calendar month "
                                           "(local time), received and sent, in megabytes of 10^6 bytes "
                                           "(as providers bill), rounded down. It is read from the "
                                           "interface counters and kept across engine restarts by the "
                                           "history database; it starts again from 0 on the first of the "
                                           "month. A gauge, not a counter: compare it with lwUplinkQuota.",
                                units="megabytes"),
    "lwUplinkQuota": Obj("Gauge32", "The uplink's monthly traffic quota (uplinks.NAME.quota) in megabytes "
                                    "of 10^6 bytes, rounded up; 0 if it has none.", units="megabytes"),
    "lwUplinkProbeBytesPerDay": Obj("Gauge32", "The probe traffic linkwatch sends and receives on the "
                                               "uplink, in bytes per day at the rate of the last minute "
                                               "(a standby uplink is probed rarely, an active one less while "
                                               "the LAN's own traffic proves it works); 0 if too few probe "
                                               "rounds were sent in the last minute to tell.",
                                    units="bytes per day"),
    "lwUplinkIpv6State": Obj("LwHealthState", "The health state of the uplink's IPv6 side, judged by its IPv6 "
                                              "probes only (an uplink whose IPv6 is broken while its IPv4 "
                                              "works is down here and up in lwUplinkState). No instance for "
                                              "an uplink without IPv6 probe targets (IPv4 only)."),
    "lwUplinkIpv6Reason": Obj("DisplayString", "Why the uplink's IPv6 side is in its state, in words."),
    "lwUplinkIpv6Active": Obj("TruthValue", "true(1) if the uplink carries IPv6 traffic now, false(2) if not."),
    "lwUplinkIpv6Rtt": Obj("Integer32 (-1..2147483647)", "The mean round-trip time of the uplink's IPv6 probes "
                                                          "over its statistics window, in microseconds; -1 if "
                                                          "unknown.", units="microseconds"),
    "lwUplinkIpv6Loss": Obj("Integer32 (-1..10000)", "The share of the uplink's IPv6 probes lost over its "
                                                     "statistics window, in hundredths of a percent; -1 if "
                                                     "unknown.", units="hundredths of a percent"),
    "lwUplinkIpv6Downs": Obj("Counter32", "How many times the uplink's IPv6 side went down since the engine "
                                          "started."),
}

NOTIFY_TEXT: dict[str, Obj] = {
    "lwQuotaThreshold": Obj("Integer32 (1..1000)", "The threshold of the uplink's monthly quota, in percent, "
                                                   "that an lwUplinkQuotaReached reports as reached (one of "
                                                   "uplinks.NAME.quota_warn, 80 and 100 by default).",
                            units="percent", access="accessible-for-notify"),
}

NOTIFICATION_TEXT: dict[str, str] = {
    "lwUplinkDown": "The uplink went down: its probes failed (lwUplinkReason, lwUplinkLoss and lwUplinkRtt "
                    "say how) or its carrier was lost. It carries no traffic any more; lwActiveUplinks is "
                    "the active set after the change (if the uplink carried traffic, an lwActiveChanged "
                    "follows).",
    "lwUplinkUp": "The uplink is up again after an lwUplinkDown or lwUplinkDegraded was sent for it. Not "
                  "sent when an uplink comes up at engine start, nor when it recovers from a scare "
                  "(falling back to up).",
    "lwUplinkDegraded": "The uplink works, but its loss, round-trip time or jitter crossed the degraded "
                        "thresholds (lwUplinkReason says which); the policy prefers healthy uplinks.",
    "lwActiveChanged": "The set of uplinks carrying traffic changed (a failover, a failback or an "
                       "operator's action): lwActiveUplinks is the new set, lwPreviousActiveUplinks the old "
                       "one and lwActiveReason says why. When a storm window that held lwActiveChanged "
                       "notifications back ends, one more is sent with the current set.",
    "lwUplinkFlapping": "The storm rule held back notifications about this uplink in the window that just "
                        "ended. This summary carries the uplink's current state, its transition count and "
                        "its count of held-back notifications (lwUplinkSuppressedTraps); poll lwUplinkTable "
                        "for the rest.\n\n" + STORM_RULE,
    "lwUplinkDampenedChange": "The uplink became dampened (lwUplinkDampened true(1)): it kept failing, its "
                              "flap penalty passed the suppress level, and it takes no traffic back until "
                              "the penalty decays; or it is no longer dampened (false(2)) and may take "
                              "traffic back. Carries the uplink's state, the penalty and the active set. "
                              "Subject to the storm rule of the uplink's notifications.",
    "lwUplinkQuotaReached": "The uplink's traffic this month (lwUplinkMonthTraffic) reached lwQuotaThreshold "
                            "percent of its monthly quota (lwUplinkQuota); sent once a month per threshold. "
                            "lwActiveUplinks says whether the metered uplink carries traffic. Subject to the "
                            "storm rule of the uplink's notifications.",
}

# What the second revision added has its own groups and compliance (as IF-MIB grew): the groups and
# the compliance statement of the first revision keep their members.
FIRST_NOTIFICATIONS = ("lwUplinkDown", "lwUplinkUp", "lwUplinkDegraded", "lwActiveChanged", "lwUplinkFlapping")
FLAP_TRAFFIC_COLUMNS = ("lwUplinkDampened", "lwUplinkFlapPenalty", "lwUplinkMonthTraffic", "lwUplinkQuota",
                        "lwUplinkProbeBytesPerDay")

STATE_TEXT = (
    "The health state of an uplink:\n"
    "  init(1)      just configured, no verdict yet\n"
    "  up(2)        healthy\n"
    "  falling(3)   probes failing, not yet declared down\n"
    "  down(4)      declared down, carries no traffic\n"
    "  rising(5)    answering again, not yet declared up\n"
    "  degraded(6)  works, but loss, round-trip time or jitter is poor\n"
    "  disabled(7)  disabled by an operator, not probed")


# --- rendering ----------------------------------------------------------------------------------


def quoted(text: str, indent: int = 9) -> str:
    """A quoted MIB string, wrapped to :data:`WIDTH`, continuation lines indented by ``indent``.
    Paragraphs are separated by blank lines; lines that start with two spaces are kept as they are."""
    if '"' in text:
        raise MibError(f"a MIB string cannot contain a double quote: {text!r}")
    lines: list[str] = []
    for para in text.split("\n\n"):
        if lines:
            lines.append("")
        block = para.split("\n")
        if any(line.startswith("  ") for line in block):
            lines.extend(line if line.startswith("  ") else textwrap.fill(line, WIDTH) for line in block)
        else:
            lines.extend(textwrap.wrap(" ".join(block), WIDTH))
    flat = "\n".join(lines).split("\n")
    pad = " " * indent
    return '"' + "\n".join([flat[0]] + [pad + line if line else "" for line in flat[1:]]) + '"'


def _braced(names: tuple[str, ...] | list[str], indent: int) -> str:
    pad = " " * indent
    return "{\n" + ",\n".join(f"{pad}    {n}" for n in names) + f"\n{pad}}}"


def _ordered(table: dict[str, int]) -> list[str]:
    return sorted(table, key=table.__getitem__)


def _object_type(name: str, obj: Obj, parent: str, sub: int) -> str:
    units = f'    UNITS       "{obj.units}"\n' if obj.units else ""
    return (f"{name} OBJECT-TYPE\n"
            f"    SYNTAX      {obj.syntax}\n{units}"
            f"    MAX-ACCESS  {obj.access}\n"
            "    STATUS      current\n"
            f"    DESCRIPTION\n        {quoted(obj.description)}\n"
            f"    ::= {{ {parent} {sub} }}\n\n")


def _group(kind: str, name: str, members: list[str], description: str, sub: int) -> str:
    clause = "NOTIFICATIONS" if kind == "NOTIFICATION-GROUP" else "OBJECTS    "
    return (f"{name} {kind}\n"
            f"    {clause} {_braced(members, len(clause) + 5)}\n"
            "    STATUS      current\n"
            f"    DESCRIPTION\n        {quoted(description)}\n"
            f"    ::= {{ lwGroups {sub} }}\n\n")


def _compliance(name: str, status: str, description: str, groups: list[str], sub: int) -> str:
    return (f"{name} MODULE-COMPLIANCE\n"
            f"    STATUS      {status}\n"
            f"    DESCRIPTION\n        {quoted(description)}\n"
            "    MODULE      -- this module\n"
            f"        MANDATORY-GROUPS {_braced(groups, 8)}\n"
            f"    ::= {{ lwCompliances {sub} }}\n\n")


def _check_words() -> None:
    for table, words in ((SCALARS, SCALAR_TEXT), (COLUMNS, COLUMN_TEXT), (NOTIFICATIONS, NOTIFICATION_TEXT),
                         (NOTIFY_OBJECTS, NOTIFY_TEXT)):
        odd = set(table) ^ set(words)
        if odd:
            raise MibError(f"linkwatch.snmp.mib and mibtext disagree about {', '.join(sorted(odd))}")


def _imports(parent: Parent) -> str:
    smi = ["MODULE-IDENTITY", "OBJECT-TYPE", "NOTIFICATION-TYPE", "Integer32", "Counter32", "Gauge32", "TimeTicks"]
    if parent.module == "SNMPv2-SMI":
        smi.append(parent.name)
    parts = [f"    {', '.join(smi[:3])},\n    {', '.join(smi[3:])}\n        FROM SNMPv2-SMI",
             "    TEXTUAL-CONVENTION, DisplayString, TruthValue, DateAndTime\n        FROM SNMPv2-TC",
             "    MODULE-COMPLIANCE, OBJECT-GROUP, NOTIFICATION-GROUP\n        FROM SNMPv2-CONF"]
    if parent.module != "SNMPv2-SMI":
        parts.append(f"    {parent.name}\n        FROM {parent.module}")
    return "IMPORTS\n" + "\n".join(parts) + ";\n\n"


def render(base_oid: str | OID = DEFAULT_BASE_OID) -> str:
    """The complete LINKWATCH-MIB module registered at ``base_oid`` (MibError for an unusable one)."""
    base = parse_oid(base_oid) if isinstance(base_oid, str) else tuple(base_oid)
    parent = parent_of(base)
    _check_words()
    here = oid_str(base)
    where = (f"This copy of the module is registered at {here}, the [snmp] base_oid of linkwatch's "
             "configuration (`linkwatch mib` prints the module for the configured base).")
    module_text = ("The state of linkwatch, failover software for Linux routers with several internet "
                   "uplinks: each uplink's health and measurements (lwUplinkTable), which uplinks carry "
                   "traffic (lwScalars), and notifications when an uplink goes down, comes back up or "
                   "degrades, when traffic moves, when an uplink is dampened for flapping and when its "
                   "traffic reaches a threshold of its monthly quota. Every object is read-only.\n\n"
                   f"{where}\n\n{_why_default()}\n\n{STORM_RULE}")
    revisions = "".join(f'    REVISION    "{date}"\n    DESCRIPTION\n        {quoted(text)}\n'
                        for date, text in REVISIONS)
    out = [
        f"{MODULE} DEFINITIONS ::= BEGIN\n\n"
        f"-- LINKWATCH-MIB registered at {here}.\n"
        "-- Printed by `linkwatch mib` (linkwatch/snmp/mibtext.py) from the layout in\n"
        "-- linkwatch/snmp/mib.py; do not edit by hand.\n\n",
        _imports(parent),
        "linkwatchMIB MODULE-IDENTITY\n"
        f'    LAST-UPDATED "{REVISIONS[0][0]}"\n'
        '    ORGANIZATION "linkwatch"\n'
        f"    CONTACT-INFO\n        {quoted('The linkwatch project: see its README for where to report problems.')}\n"
        f"    DESCRIPTION\n        {quoted(module_text)}\n"
        f"{revisions}"
        f"    ::= {parent.value}\n\n",
        "LwHealthState ::= TEXTUAL-CONVENTION\n"
        "    STATUS      current\n"
        f"    DESCRIPTION\n        {quoted(STATE_TEXT)}\n"
        f"    SYNTAX      {_enum(STATE_VALUES)}\n\n",
        "lwNotifications OBJECT IDENTIFIER ::= { linkwatchMIB 0 }\n"
        "lwObjects       OBJECT IDENTIFIER ::= { linkwatchMIB 1 }\n"
        "lwConformance   OBJECT IDENTIFIER ::= { linkwatchMIB 2 }\n\n"
        "-- Engine-wide objects\n\n"
        "lwScalars       OBJECT IDENTIFIER ::= { lwObjects 1 }\n\n",
    ]
    out += [_object_type(n, SCALAR_TEXT[n], "lwScalars", SCALARS[n]) for n in _ordered(SCALARS)]
    columns = _ordered(COLUMNS)
    out.append(
        "-- The uplink table\n\n"
        "lwUplinkTable OBJECT-TYPE\n"
        "    SYNTAX      SEQUENCE OF LwUplinkEntry\n"
        "    MAX-ACCESS  not-accessible\n"
        "    STATUS      current\n"
        f"    DESCRIPTION\n        {quoted('One row per configured uplink, in the order of the configuration file.')}\n"
        "    ::= { lwObjects 2 }\n\n"
        "lwUplinkEntry OBJECT-TYPE\n"
        "    SYNTAX      LwUplinkEntry\n"
        "    MAX-ACCESS  not-accessible\n"
        "    STATUS      current\n"
        f"    DESCRIPTION\n        {quoted('The state and measurements of one uplink.')}\n"
        "    INDEX       { lwUplinkIndex }\n"
        "    ::= { lwUplinkTable 1 }\n\n"
        "LwUplinkEntry ::= SEQUENCE "
        + _braced([f"{n:<24} {COLUMN_TEXT[n].syntax.split(' (')[0]}" for n in columns], 0) + "\n\n")
    out += [_object_type(n, COLUMN_TEXT[n], "lwUplinkEntry", COLUMNS[n]) for n in columns]
    out += ["-- Objects only notifications carry\n\n"
            "lwNotifyObjects OBJECT IDENTIFIER ::= { lwObjects 3 }\n\n"]
    out += [_object_type(n, NOTIFY_TEXT[n], "lwNotifyObjects", NOTIFY_OBJECTS[n]) for n in _ordered(NOTIFY_OBJECTS)]
    out.append("-- Notifications\n\n")
    out += [f"{n} NOTIFICATION-TYPE\n"
            f"    OBJECTS     {_braced(NOTIFICATION_OBJECTS[n], 16)}\n"
            "    STATUS      current\n"
            f"    DESCRIPTION\n        {quoted(NOTIFICATION_TEXT[n])}\n"
            f"    ::= {{ lwNotifications {NOTIFICATIONS[n]} }}\n\n" for n in _ordered(NOTIFICATIONS)]
    readable = [n for n in columns if COLUMN_TEXT[n].access != "not-accessible"]
    first = [n for n in readable if n not in FLAP_TRAFFIC_COLUMNS and n not in IPV6_OBJECTS]
    groups = ["lwScalarGroup", "lwUplinkGroup", "lwNotificationGroup"]
    flap = ["lwUplinkFlapTrafficGroup", "lwFlapTrafficNotificationGroup"]
    out += [
        "-- Conformance\n\n"
        "lwCompliances   OBJECT IDENTIFIER ::= { lwConformance 1 }\n"
        "lwGroups        OBJECT IDENTIFIER ::= { lwConformance 2 }\n\n",
        _compliance("lwCompliance", "deprecated", "What a linkwatch engine of the first revision implements; "
                    "superseded by lwCompliance2.", groups, 1),
        _compliance("lwCompliance2", "deprecated", "What a linkwatch engine of the second revision implements; "
                    "superseded by lwCompliance3.", groups + flap, 2),
        _compliance("lwCompliance3", "current", "What a linkwatch engine implements: all of this module.",
                    groups + flap + ["lwIpv6Group"], 3),
        _group("OBJECT-GROUP", "lwScalarGroup", [n for n in _ordered(SCALARS) if n not in IPV6_OBJECTS],
               "The engine-wide objects of the first revision.", 1),
        _group("OBJECT-GROUP", "lwUplinkGroup", first, "The readable columns of lwUplinkTable of the first "
               "revision.", 2),
        _group("NOTIFICATION-GROUP", "lwNotificationGroup", list(FIRST_NOTIFICATIONS),
               "The notifications of the first revision.", 3),
        _group("OBJECT-GROUP", "lwUplinkFlapTrafficGroup", [*FLAP_TRAFFIC_COLUMNS, *_ordered(NOTIFY_OBJECTS)],
               "Flap dampening, probe traffic and the traffic of the month against the quota.", 4),
        _group("NOTIFICATION-GROUP", "lwFlapTrafficNotificationGroup",
               [n for n in _ordered(NOTIFICATIONS) if n not in FIRST_NOTIFICATIONS],
               "The notifications about flap dampening and quotas.", 5),
        _group("OBJECT-GROUP", "lwIpv6Group", list(IPV6_OBJECTS), "The IPv6 side of dual-stack uplinks.", 6),
        "END\n",
    ]
    return "".join(out)
