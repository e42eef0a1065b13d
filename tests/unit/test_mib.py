"""LINKWATCH-MIB: the module text is valid SMIv2 (smilint), net-snmp reads the same OIDs, types and
notification objects as linkwatch.snmp.mib computes, and the pure status/event -> MIB functions.

smilint and snmptranslate run against the IETF base modules of scripts/fetch-ietf-mibs.sh and
NET-SNMP-MIB of Debian's libsnmp-base; each run gets its own empty net-snmp config and persistent
directory, so nothing of the machine's SNMP setup leaks in (or is written to).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from linkwatch.config import DEFAULT_BASE_OID
from linkwatch.core.events import ActiveChanged, AdminAction, EngineEvent, QuotaReached, UplinkDampened, \
    UplinkStateChanged
from linkwatch.commands import mib as mib_cli
from linkwatch.core.states import State
from linkwatch.core.status import FamilyStatus, Status, UplinkStatus
from linkwatch.snmp.mib import (COLUMNS, FALSE, GAUGE_MAX, IPV6_OBJECTS, MAX_TEXT, NOTIFICATION_OBJECTS, NOTIFICATIONS,
                                NOTIFY_OBJECTS, SCALARS, STATE_VALUES, TRUE, UNKNOWN, UNKNOWN_DATE, Layout, MibError,
                                date_and_time, flapping, instances, notification_for, parse_oid, uplink_row)
from linkwatch.snmp.mibtext import PARENTS, parent_of, render
from tests.statusdata import make_status, uplink_dict

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ROOT / "packaging" / "mibs" / "LINKWATCH-MIB.txt"
NET_SNMP_MIBS = "/usr/share/snmp/mibs"  # NET-SNMP-MIB (Debian libsnmp-base)
LAYOUT = Layout.from_text(DEFAULT_BASE_OID)

# smilint messages (severity 4..6) that may remain. None does today: the module is clean even at
# -l 9. Add an entry only with the reason it cannot be avoided.
ALLOWED_WARNINGS: frozenset[str] = frozenset()
SMILINT_LINE = re.compile(r"^(?:(?P<file>[^:]+):(?P<line>\d+): )?\[(?P<sev>\d)\] \{(?P<tag>[^}]*)\} (?P<msg>.*)$")

needs_smilint = pytest.mark.skipif(shutil.which("smilint") is None,
                                   reason="smilint not installed (Debian smitools; scripts/bootstrap.sh --test-tools)")
needs_net_snmp = pytest.mark.skipif(shutil.which("snmptranslate") is None,
                                    reason="snmptranslate not installed (Debian snmp; scripts/bootstrap.sh --test-tools)")


@pytest.fixture(scope="session")
def ietf_dir() -> str:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "fetch-ietf-mibs.sh")], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    path = out.strip().splitlines()[-1]
    assert (Path(path) / "SNMPv2-SMI.txt").is_file(), out
    return path


def smilint(path: Path, ietf: str) -> list[tuple[int, str, str]]:
    """(severity, tag, message) of every smilint message at level 6; anything it prints that is
    not a message (it exits 0 even on errors) counts as severity 0."""
    proc = subprocess.run(["smilint", "-c", "/dev/null", "-s", "-m", "-l", "6", str(path)], capture_output=True,
                          text=True, timeout=60, env={"SMIPATH": f"{ietf}:{NET_SNMP_MIBS}", "PATH": "/usr/bin:/bin"})
    found = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = SMILINT_LINE.match(line)
        if m:
            found.append((int(m["sev"]), m["tag"], line))
        elif line.strip():
            found.append((0, "unparsed", line))
    return found


def problems(messages: list[tuple[int, str, str]]) -> tuple[list[str], list[str]]:
    """(errors, warnings that are not allowed): severities 0..3 are errors, 4..6 warnings."""
    errors = [line for sev, _, line in messages if sev <= 3]
    warnings = [line for sev, tag, line in messages if sev > 3 and tag not in ALLOWED_WARNINGS]
    return errors, warnings


def snmptranslate(mib_dir: Path, ietf: str, tmp_path: Path, *args: str) -> list[str]:
    """stdout lines of snmptranslate with LINKWATCH-MIB from ``mib_dir``; fails on any stderr."""
    state = tmp_path / "net-snmp"
    state.mkdir(exist_ok=True)
    proc = subprocess.run(["snmptranslate", "-M", f"{ietf}:{NET_SNMP_MIBS}:{mib_dir}", "-m", "LINKWATCH-MIB", *args],
                          capture_output=True, text=True, timeout=60,
                          env={"SNMPCONFPATH": str(state), "SNMP_PERSISTENT_DIR": str(state), "HOME": str(state),
                               "PATH": "/usr/bin:/bin"})
    noise = [line for line in proc.stderr.splitlines() if not line.startswith("Created directory: ")]
    assert proc.returncode == 0 and noise == [], proc.stderr
    return [line for line in proc.stdout.splitlines() if line.strip()]


def write_mib(tmp_path: Path, base: str) -> Path:
    d = tmp_path / "mibs"
    d.mkdir(exist_ok=True)
    (d / "LINKWATCH-MIB.txt").write_text(render(base))
    return d


def definitions(mib_dir: Path, ietf: str, tmp_path: Path, names: list[str]) -> dict[str, dict[str, str]]:
    """``snmptranslate -Td`` of each name, as {name: {CLAUSE: text}} (first line of each clause)."""
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in snmptranslate(mib_dir, ietf, tmp_path, "-Td", *(f"LINKWATCH-MIB::{n}" for n in names)):
        if line.startswith("LINKWATCH-MIB::"):
            current = out.setdefault(line.split("::", 1)[1], {})
        elif line.startswith("  ") and "\t" in line and not line.startswith("  --"):
            clause, _, text = line.strip().partition("\t")
            current.setdefault(clause, text.strip())
    return out


# --- the module text ---------------------------------------------------------------------------


def test_packaged_mib_is_the_generated_one_for_the_default_base():
    assert PACKAGED.read_text() == render(DEFAULT_BASE_OID), (
        "packaging/mibs/LINKWATCH-MIB.txt is stale: regenerate it with "
        "`python -m linkwatch.commands.mib --base-oid " + DEFAULT_BASE_OID + " > packaging/mibs/LINKWATCH-MIB.txt`")


@needs_smilint
def test_packaged_mib_passes_smilint_level_6(ietf_dir):
    messages = smilint(PACKAGED, ietf_dir)
    errors, warnings = problems(messages)
    assert errors == [] and warnings == [], "\n".join(errors + warnings)


@needs_smilint
def test_smilint_check_catches_a_broken_module(ietf_dir, tmp_path):
    """The check above can fail: a duplicate OID is an error, an object outside every group a warning."""
    text = render(DEFAULT_BASE_OID).replace("    ::= { lwScalars 8 }", "    ::= { lwScalars 7 }")
    text = text.replace("                    lwUplinkDowns,\n                    lwUplinkSuppressedTraps\n",
                        "                    lwUplinkDowns\n")
    bad = tmp_path / "LINKWATCH-MIB.txt"
    bad.write_text(text)
    messages = smilint(bad, ietf_dir)
    errors, warnings = problems(messages)
    assert any("oid-registered" in e for e in errors), messages
    assert any("group-membership" in w for w in warnings), messages


OTHER_BASES = ["1.3.6.1.4.1.99999.1", "1.3.6.1.4.1.99999", "1.3.6.1.4.1.8072.9999.7745", "1.3.6.1.3.77.5.1",
               "1.3.6.1.2.1.9999", "1.3.6.1.4.1.8072.1.55", "1.3.6.1.4.1.99999.12.0.4"]


@needs_smilint
@pytest.mark.parametrize("base", OTHER_BASES)
def test_a_module_for_another_base_passes_smilint(ietf_dir, tmp_path, base):
    d = write_mib(tmp_path, base)
    errors, warnings = problems(smilint(d / "LINKWATCH-MIB.txt", ietf_dir))
    if base == "1.3.6.1.4.1.99999.12.0.4":
        # An arc of 0 between enterprises and the module cannot be a named node (smilint error
        # last-subid-zero), so it stays a bare number, which smilint reports as an implicit node.
        assert len(warnings) == 1 and "{node-implicit}" in warnings[0], warnings
        warnings = []
    assert errors == [] and warnings == [], "\n".join(errors + warnings)


@needs_net_snmp
@pytest.mark.parametrize("base", OTHER_BASES)
def test_net_snmp_loads_a_module_for_another_base(ietf_dir, tmp_path, base):
    layout = Layout.from_text(base)
    got = snmptranslate(write_mib(tmp_path, base), ietf_dir, tmp_path, "-On", "LINKWATCH-MIB::linkwatchMIB",
                        "LINKWATCH-MIB::lwUplinkFlapping", "LINKWATCH-MIB::lwUplinkSuppressedTraps")
    want = [layout.base, layout.notification("lwUplinkFlapping"), layout.column("lwUplinkSuppressedTraps")]
    assert got == ["." + ".".join(map(str, oid)) for oid in want]


def test_module_identity_hangs_from_the_nearest_named_node():
    assert parent_of(parse_oid(DEFAULT_BASE_OID)).value == "{ netSnmpPlaypen 7745 }"
    assert parent_of(parse_oid("1.3.6.1.4.1.99999.1")).value == "{ enterprises lwArc1(99999) 1 }"
    assert parent_of(parse_oid("1.3.6.1.4.1.8072.9999.7745")).value == "{ netSnmpExperimental 7745 }"
    assert parent_of(parse_oid("1.3.6.1.2.1.10.99")).value == "{ transmission 99 }"
    with pytest.raises(MibError, match=r"1\.2\.3\.4 is not below internet"):
        render("1.2.3.4")
    with pytest.raises(MibError, match="1.3.6.1"):
        render("1.3.6.1")  # internet itself: nothing to hang from


@needs_net_snmp
def test_the_parent_nodes_are_where_their_modules_put_them(ietf_dir, tmp_path):
    got = snmptranslate(tmp_path, ietf_dir, tmp_path, "-m", "SNMPv2-SMI:NET-SNMP-MIB", "-On",
                        *(f"{module}::{name}" for module, name, _ in PARENTS))
    assert got == ["." + ".".join(map(str, oid)) for _, _, oid in PARENTS]


@needs_net_snmp
def test_net_snmp_reads_the_oids_that_mib_py_computes(ietf_dir, tmp_path):
    names = ["linkwatchMIB", "lwUplinkTable", *SCALARS, *COLUMNS, *NOTIFY_OBJECTS, *NOTIFICATIONS]
    want = ([LAYOUT.base, LAYOUT.table] + [LAYOUT.scalar(n)[:-1] for n in SCALARS]
            + [LAYOUT.column(n) for n in COLUMNS] + [LAYOUT.notify_object(n)[:-1] for n in NOTIFY_OBJECTS]
            + [LAYOUT.notification(n) for n in NOTIFICATIONS])
    got = snmptranslate(PACKAGED.parent, ietf_dir, tmp_path, "-On", *(f"LINKWATCH-MIB::{n}" for n in names))
    assert dict(zip(names, got)) == {n: "." + ".".join(map(str, oid)) for n, oid in zip(names, want)}
    assert len(got) == len(names)


@needs_net_snmp
def test_notification_objects_in_the_mib_are_those_of_mib_py(ietf_dir, tmp_path):
    defs = definitions(PACKAGED.parent, ietf_dir, tmp_path, list(NOTIFICATIONS))
    got = {n: tuple(x.strip() for x in d["OBJECTS"].strip("{} ").split(",")) for n, d in defs.items()}
    assert got == NOTIFICATION_OBJECTS


def smidump(path: Path, ietf: str) -> dict:
    """The module as smidump (smitools, like smilint) reads it: its ``-f python`` output, a dict."""
    proc = subprocess.run(["smidump", "-c", "/dev/null", "-f", "python", str(path)], capture_output=True, text=True,
                          timeout=60, env={"SMIPATH": f"{ietf}:{NET_SNMP_MIBS}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    namespace: dict = {}
    exec(proc.stdout, namespace)  # smidump's python format is a Python module defining MIB
    return namespace["MIB"]


@pytest.mark.skipif(shutil.which("smidump") is None, reason="smidump not installed (Debian smitools)")
def test_every_object_and_notification_is_in_a_group_of_the_current_compliance(ietf_dir):
    """The objects and notifications of the second revision have groups of their own, which only the new
    compliance (lwCompliance2) names; the first revision's groups and compliance keep their members."""
    dumped = smidump(PACKAGED, ietf_dir)
    members = {g: set(d["members"]) for g, d in dumped["groups"].items()}
    assert members["lwUplinkGroup"] == {n for n, c in COLUMNS.items() if 2 <= c <= 14}
    assert members["lwUplinkFlapTrafficGroup"] == {n for n, c in COLUMNS.items() if 14 < c < 20} | {"lwQuotaThreshold"}
    assert members["lwIpv6Group"] == {n for n, c in COLUMNS.items() if c >= 20} | {"lwActiveIpv6Uplinks"}
    assert members["lwScalarGroup"] == set(SCALARS) - {"lwActiveIpv6Uplinks"}, "the first revision's, kept"
    assert members["lwNotificationGroup"] == {n for n, c in NOTIFICATIONS.items() if c <= 5}
    assert members["lwFlapTrafficNotificationGroup"] == {"lwUplinkDampenedChange", "lwUplinkQuotaReached"}
    assert set().union(*members.values()) == (set(SCALARS) | set(COLUMNS) | set(NOTIFY_OBJECTS)
                                              | set(NOTIFICATIONS)) - {"lwUplinkIndex"}
    compliances = {name: (c["status"], set(c["requires"])) for name, c in dumped["compliances"].items()}
    assert compliances == {"lwCompliance": ("deprecated", {"lwScalarGroup", "lwUplinkGroup", "lwNotificationGroup"}),
                           "lwCompliance2": ("deprecated", set(members) - {"lwIpv6Group"}),
                           "lwCompliance3": ("current", set(members))}
    threshold = dumped["nodes"]["lwQuotaThreshold"]
    assert threshold["access"] == "notifyonly" and threshold["oid"] == mib_oid(LAYOUT.notify_object("lwQuotaThreshold"))
    assert threshold["syntax"]["type"]["range"] == {"min": "1", "max": "1000"}


def mib_oid(instance: tuple[int, ...]) -> str:
    return ".".join(map(str, instance[:-1]))


def status(**over) -> Status:
    """A status as Engine.status returns it, two uplinks; ``over``: top-level fields in their JSON form.
    lte never changed state: its ``since`` is 0 (no time known)."""
    uplinks = [
        uplink_dict("wan1", interface="eth1", state="UP", reason="3 good rounds", active=True, since=1795672141.37,
                    priority=1, weight=1, table=101, rtt_ms=12.3456, loss_pct=2.5, jitter_ms=0.4, carrier=True,
                    rounds=99, downs=2, transitions=7, probe_bytes_per_day=23_456_789, month_bytes=312_999_999_999),
        uplink_dict("lte", interface="wwan0", state="DOWN", reason="carrier lost", active=False, since=0.0,
                    priority=2, weight=1, table=102, rtt_ms=None, loss_pct=None, jitter_ms=None, carrier=False,
                    rounds=10, downs=1, transitions=3, dampened=True, flap_penalty=3.46, month_bytes=16_400_500_000,
                    quota_bytes=20_000_000_000, quota_pct=82.0, probe_bytes_per_day=None),
    ]
    fields = {"version": "0.1.0", "pid": 42, "started": 1795670000.0, "mode": "failover", "active": ["wan1"],
              "forced": None, "reason": "wan1 is the best healthy tier", "active_changes": 5}
    return make_status(uplinks, **{**fields, **over})


def uplink(index: int = 0, **over) -> UplinkStatus:
    """An uplink of status() (0: wan1, 1: lte), with fields replaced."""
    return replace(status().uplinks[index], **over)


def _range_ok(syntax: str, value) -> bool:
    """Does a value fit the SYNTAX line of ``snmptranslate -Td`` (ranges, sizes, enums)?"""
    enum = re.fullmatch(r"INTEGER \{(.*)\}", syntax)
    if enum:
        return value in {int(v) for v in re.findall(r"\((\d+)\)", enum[1])}
    bounds = re.search(r"\((.*)\)", syntax)
    if bounds is None:
        return True
    size = len(value.encode() if isinstance(value, str) else value) if syntax.startswith("OCTET") else value
    for part in bounds[1].split("|"):
        lo, _, hi = part.strip().partition("..")
        if int(lo) <= size <= int(hi or lo):
            return True
    return False


@needs_net_snmp
def test_every_instance_has_the_mib_type_and_fits_its_range(ietf_dir, tmp_path):
    """What the agent answers (instances()) is what the MIB declares: base type, range, size, enum."""
    defs = definitions(PACKAGED.parent, ietf_dir, tmp_path, [*SCALARS, *COLUMNS])
    base_type = {"OCTET STRING": "OctetString", "INTEGER": "Integer32", "Integer32": "Integer32",
                 "Counter32": "Counter32", "Gauge32": "Gauge32", "TimeTicks": "TimeTicks"}
    by_oid = {LAYOUT.scalar(n): n for n in SCALARS} | {LAYOUT.column(n, i): n for n in COLUMNS for i in (1, 2)}
    long_text = replace(status(reason="r" * 400), uplinks=(uplink(reason="é" * 300, rtt_ms=1e9, loss_pct=250.0,
                                                                  priority=2**31 - 1, month_bytes=10**17,
                                                                  quota_bytes=10**16, flap_penalty=1e9),))
    seen = set()
    six = FamilyStatus(State.DOWN, False, "é" * 300, False, 0.0, 1e9, 250.0, None, "2001:db8:1::2", "fe80::1", 100,
                       9, 2**40, None)
    dual = replace(status(active_ipv6=["wan1"] * 200), uplinks=(uplink(ipv6=six), uplink(1)))
    for st in (status(), status(mode="balance", active=[]), long_text, dual):
        for oid, (syntax, value) in instances(LAYOUT, st, uptime_s=3600.5, suppressed={"wan1": 4}):
            name = by_oid[oid]
            seen.add(name)
            d = defs[name]
            assert d["MAX-ACCESS"] == "read-only", name
            assert syntax == base_type[next(t for t in base_type if d["SYNTAX"].startswith(t))], (name, d["SYNTAX"])
            assert _range_ok(d["SYNTAX"], value), (name, d["SYNTAX"], value)
    assert seen == set(SCALARS) | set(COLUMNS) - {"lwUplinkIndex"}
    assert defs["lwUplinkIndex"]["MAX-ACCESS"] == "not-accessible"


# --- mib.py, pure ------------------------------------------------------------------------------


def test_instances_are_sorted_and_complete_for_two_uplinks():
    got = instances(LAYOUT, status(previous_active=["lte"]), uptime_s=123.456, suppressed={"lte": 9})
    oids = [oid for oid, _ in got]
    assert oids == sorted(oids) and len(set(oids)) == len(oids)
    want = {LAYOUT.scalar(n) for n in SCALARS} | {LAYOUT.column(c, i) for c in COLUMNS if c != "lwUplinkIndex"
                                                  and c not in IPV6_OBJECTS for i in (1, 2)}
    assert set(oids) == want and len(oids) == 9 + 2 * 18, "IPv4-only uplinks: no IPv6 columns (a sparse table)"
    v = dict(got)
    assert v[LAYOUT.scalar("lwUptime")] == ("TimeTicks", 12345)
    assert v[LAYOUT.scalar("lwActiveUplinks")] == ("OctetString", "wan1")
    assert v[LAYOUT.scalar("lwPreviousActiveUplinks")] == ("OctetString", "lte")
    assert v[LAYOUT.scalar("lwUplinkCount")] == ("Integer32", 2)
    assert v[LAYOUT.scalar("lwActiveChanges")] == ("Counter32", 5)
    assert v[LAYOUT.scalar("lwMode")] == ("Integer32", 1)
    assert v[LAYOUT.column("lwUplinkName", 2)] == ("OctetString", "lte")
    assert v[LAYOUT.column("lwUplinkState", 2)] == ("Integer32", STATE_VALUES["DOWN"])
    assert v[LAYOUT.column("lwUplinkSuppressedTraps", 1)] == ("Counter32", 0)
    assert v[LAYOUT.column("lwUplinkSuppressedTraps", 2)] == ("Counter32", 9)
    assert v[LAYOUT.column("lwUplinkTransitions", 1)] == ("Counter32", 7)
    assert v[LAYOUT.column("lwUplinkDowns", 2)] == ("Counter32", 1)
    # a walk returns the table column by column: all names, then all interfaces, ...
    table = [oid[len(LAYOUT.table):] for oid in oids if oid[:len(LAYOUT.table)] == LAYOUT.table]
    assert table[:4] == [(1, 2, 1), (1, 2, 2), (1, 3, 1), (1, 3, 2)]


def test_every_uplink_state_has_its_fixed_mib_number():
    """lwUplinkState covers exactly the states of core.states.State, with the numbers the MIB has
    always had (managers store them), and a state name the MIB does not know (only an event's
    plain string can carry one) shows as init(1)."""
    assert set(STATE_VALUES) == {s.value for s in State}
    assert STATE_VALUES == {"INIT": 1, "UP": 2, "FALLING": 3, "DOWN": 4, "RISING": 5, "DEGRADED": 6, "DISABLED": 7}
    for state in State:
        row = uplink_row(uplink(state=state), 1)
        assert row["lwUplinkState"] == ("Integer32", STATE_VALUES[state.value])
    bogus = dict(flapping(LAYOUT, "lte", 2, "BOGUS", transitions=1, suppressed=1).varbinds)
    assert bogus[LAYOUT.column("lwUplinkState", 2)] == ("Integer32", 1)


def test_value_encodings():
    row = uplink_row(status().uplinks[0], 1)
    assert row["lwUplinkRtt"] == ("Integer32", 12346)  # 12.3456 ms in microseconds
    assert row["lwUplinkJitter"] == ("Integer32", 400)
    assert row["lwUplinkLoss"] == ("Integer32", 250)  # 2.5 % in hundredths
    assert row["lwUplinkActive"] == ("Integer32", TRUE)
    assert row["lwUplinkPriority"] == ("Integer32", 1)
    # 1795672141.37 = 2026-11-26 05:49:01.37 UTC: year (2 octets), month, day, h, m, s, deciseconds, '+', 0, 0
    assert row["lwUplinkLastChange"] == ("OctetString", bytes([0x07, 0xEA, 11, 26, 5, 49, 1, 3, ord("+"), 0, 0]))
    unknown = uplink_row(status().uplinks[1], 2)
    assert unknown["lwUplinkRtt"] == unknown["lwUplinkJitter"] == unknown["lwUplinkLoss"] == ("Integer32", UNKNOWN)
    assert unknown["lwUplinkActive"] == ("Integer32", FALSE)
    assert unknown["lwUplinkLastChange"] == ("OctetString", UNKNOWN_DATE) and len(UNKNOWN_DATE) == 8
    edge = uplink_row(uplink(rtt_ms=math.nan, loss_pct=100.0, jitter_ms=5e9), 1)
    assert edge["lwUplinkRtt"] == ("Integer32", UNKNOWN)
    assert edge["lwUplinkLoss"] == ("Integer32", 10000)
    assert edge["lwUplinkJitter"] == ("Integer32", 2**31 - 1)
    assert uplink_row(uplink(loss_pct=120.0, rtt_ms=0.0004), 1)["lwUplinkLoss"][1] == 10000
    assert date_and_time(None) == date_and_time(0) == UNKNOWN_DATE


def test_dampening_and_traffic_columns():
    wan1, lte = uplink_row(status().uplinks[0], 1), uplink_row(status().uplinks[1], 2)
    assert [wan1[n] for n in ("lwUplinkDampened", "lwUplinkFlapPenalty", "lwUplinkMonthTraffic", "lwUplinkQuota",
                              "lwUplinkProbeBytesPerDay")] == [
        ("Integer32", FALSE), ("Gauge32", 0), ("Gauge32", 312_999), ("Gauge32", 0), ("Gauge32", 23_456_789)]
    assert [lte[n] for n in ("lwUplinkDampened", "lwUplinkFlapPenalty", "lwUplinkMonthTraffic", "lwUplinkQuota",
                             "lwUplinkProbeBytesPerDay")] == [
        ("Integer32", TRUE), ("Gauge32", 346), ("Gauge32", 16_400), ("Gauge32", 20_000), ("Gauge32", 0)]
    # megabytes: traffic rounded down, a quota rounded up (never 0, which means "no quota"); gauges stop at the top
    odd = uplink_row(uplink(month_bytes=999_999, quota_bytes=1_610_612_736), 1)  # quota "1.5GiB"
    assert odd["lwUplinkMonthTraffic"] == ("Gauge32", 0) and odd["lwUplinkQuota"] == ("Gauge32", 1611)
    assert uplink_row(uplink(quota_bytes=1), 1)["lwUplinkQuota"] == ("Gauge32", 1)
    huge = uplink_row(uplink(month_bytes=10**17, flap_penalty=1e8), 1)
    assert huge["lwUplinkMonthTraffic"] == huge["lwUplinkFlapPenalty"] == ("Gauge32", GAUGE_MAX)


def test_long_texts_are_cut_to_255_bytes_of_valid_utf8():
    row = uplink_row(uplink(reason="x" * 300, name="n" * 40), 1)
    assert row["lwUplinkReason"] == ("OctetString", "x" * MAX_TEXT)
    cut = uplink_row(uplink(reason="é" * 200), 1)["lwUplinkReason"][1]
    assert len(cut.encode()) <= MAX_TEXT and cut == "é" * 127  # 254 bytes: no half character
    many = instances(LAYOUT, status(active=[f"uplink{i:02d}" for i in range(40)]), 0)
    assert len(dict(many)[LAYOUT.scalar("lwActiveUplinks")][1].encode()) == MAX_TEXT


def state_event(old: str, new: str, **over) -> UplinkStateChanged:
    fields = dict(at=1795672141.0, mono=50.0, uplink="lte", interface="wwan0", old=old, new=new,
                  reason="3 failed rounds", loss_pct=100.0, rtt_ms=None, jitter_ms=None)
    fields.update(over)
    return UplinkStateChanged(**fields)


def test_notification_for_down_carries_the_objects_in_mib_order():
    n = notification_for(LAYOUT, state_event("FALLING", "DOWN"), 2, active=["wan1"])
    assert n is not None and n.name == "lwUplinkDown" and n.oid == LAYOUT.base + (0, 1)
    oids = [oid for oid, _ in n.varbinds]
    assert oids == [LAYOUT.scalar(o) if o in SCALARS else LAYOUT.column(o, 2) for o in NOTIFICATION_OBJECTS[n.name]]
    values = dict(zip(NOTIFICATION_OBJECTS[n.name], (v for _, v in n.varbinds)))
    assert values == {"lwUplinkName": ("OctetString", "lte"), "lwUplinkInterface": ("OctetString", "wwan0"),
                      "lwUplinkState": ("Integer32", 4), "lwUplinkReason": ("OctetString", "3 failed rounds"),
                      "lwUplinkLoss": ("Integer32", 10000), "lwUplinkRtt": ("Integer32", UNKNOWN),
                      "lwActiveUplinks": ("OctetString", "wan1")}


@pytest.mark.parametrize("old,new,name", [
    ("DOWN", "UP", "lwUplinkUp"), ("RISING", "UP", "lwUplinkUp"), ("DEGRADED", "UP", "lwUplinkUp"),
    ("UP", "DEGRADED", "lwUplinkDegraded"), ("INIT", "DOWN", "lwUplinkDown"), ("UP", "DOWN", "lwUplinkDown"),
    ("INIT", "UP", None), ("FALLING", "UP", None), ("UP", "FALLING", None), ("DOWN", "RISING", None),
    ("DISABLED", "INIT", None), ("UP", "DISABLED", None),
])
def test_notification_for_state_changes(old, new, name):
    n = notification_for(LAYOUT, state_event(old, new, rtt_ms=20.0, loss_pct=0.0), 1, active=["lte"])
    assert (n and n.name) == name
    if n is not None:
        assert n.oid == LAYOUT.notification(name)
        assert dict(n.varbinds)[LAYOUT.column("lwUplinkState", 1)] == ("Integer32", STATE_VALUES[new])
        assert dict(n.varbinds)[LAYOUT.column("lwUplinkRtt", 1)] == ("Integer32", 20000)


def test_notification_for_active_changed_and_other_events():
    ev = ActiveChanged(at=1.0, mono=1.0, old=("wan1",), new=("lte", "wan2"), reason="wan1 down")
    n = notification_for(LAYOUT, ev, 0, active=["lte", "wan2"])
    assert n is not None and n.name == "lwActiveChanged" and n.oid == LAYOUT.base + (0, 4)
    assert n.varbinds == ((LAYOUT.scalar("lwActiveUplinks"), ("OctetString", "lte,wan2")),
                          (LAYOUT.scalar("lwPreviousActiveUplinks"), ("OctetString", "wan1")),
                          (LAYOUT.scalar("lwActiveReason"), ("OctetString", "wan1 down")))
    assert notification_for(LAYOUT, EngineEvent(at=1.0, mono=1.0, what="started"), 0, []) is None
    admin = AdminAction(at=1.0, mono=1.0, action="disable", uplink="lte", source="cli", result="ok")
    assert notification_for(LAYOUT, admin, 2, []) is None


def test_notification_for_a_dampening_carries_the_state_the_penalty_and_the_active_set():
    n = notification_for(LAYOUT, UplinkDampened(1.0, 1.0, "lte", True, 3.5), 2, active=["wan1"], state="RISING")
    assert n is not None and n.name == "lwUplinkDampenedChange" and n.oid == LAYOUT.base + (0, 6)
    assert n.varbinds == ((LAYOUT.column("lwUplinkName", 2), ("OctetString", "lte")),
                          (LAYOUT.column("lwUplinkState", 2), ("Integer32", STATE_VALUES["RISING"])),
                          (LAYOUT.column("lwUplinkDampened", 2), ("Integer32", TRUE)),
                          (LAYOUT.column("lwUplinkFlapPenalty", 2), ("Gauge32", 350)),
                          (LAYOUT.scalar("lwActiveUplinks"), ("OctetString", "wan1")))
    over = dict(notification_for(LAYOUT, UplinkDampened(1.0, 1.0, "lte", False, 0.99), 2, active=["lte"],
                                 state="UP").varbinds)
    assert over[LAYOUT.column("lwUplinkDampened", 2)] == ("Integer32", FALSE)
    assert over[LAYOUT.column("lwUplinkFlapPenalty", 2)] == ("Gauge32", 99)


def test_notification_for_a_quota_threshold():
    n = notification_for(LAYOUT, QuotaReached(1.0, 1.0, "lte", 80, 16_000_400_000, 20_000_000_000), 2,
                         active=["wan1"])
    assert n is not None and n.name == "lwUplinkQuotaReached" and n.oid == LAYOUT.base + (0, 7)
    assert n.varbinds == ((LAYOUT.column("lwUplinkName", 2), ("OctetString", "lte")),
                          (LAYOUT.base + (1, 3, 1, 0), ("Integer32", 80)),  # lwQuotaThreshold.0
                          (LAYOUT.column("lwUplinkMonthTraffic", 2), ("Gauge32", 16_000)),
                          (LAYOUT.column("lwUplinkQuota", 2), ("Gauge32", 20_000)),
                          (LAYOUT.scalar("lwActiveUplinks"), ("OctetString", "wan1")))


def test_flapping_summary():
    n = flapping(LAYOUT, "lte", 2, "RISING", transitions=17, suppressed=6)
    assert n.name == "lwUplinkFlapping" and n.oid == LAYOUT.base + (0, 5)
    assert n.varbinds == ((LAYOUT.column("lwUplinkName", 2), ("OctetString", "lte")),
                          (LAYOUT.column("lwUplinkState", 2), ("Integer32", STATE_VALUES["RISING"])),
                          (LAYOUT.column("lwUplinkTransitions", 2), ("Counter32", 17)),
                          (LAYOUT.column("lwUplinkSuppressedTraps", 2), ("Counter32", 6)))


def test_layout_of_another_base_and_bad_oids():
    other = Layout.from_text(".1.3.6.1.4.1.99999.1")
    assert other.scalar("lwVersion") == (1, 3, 6, 1, 4, 1, 99999, 1, 1, 1, 1, 0)
    assert other.column("lwUplinkLoss", 3) == (1, 3, 6, 1, 4, 1, 99999, 1, 1, 2, 1, 10, 3)
    for bad in ("1.3.x.1", "1", "1.3.6.1.4294967296"):
        with pytest.raises(MibError, match=re.escape(repr(bad))):
            parse_oid(bad)


# --- `linkwatch mib` ---------------------------------------------------------------------------


def test_cli_prints_the_module_for_a_given_base(capsys):
    assert mib_cli.main(["--base-oid", "1.3.6.1.4.1.99999.1"]) == 0
    assert capsys.readouterr().out == render("1.3.6.1.4.1.99999.1")


def test_cli_reads_the_base_from_the_config(tmp_path, capsys):
    cfg = tmp_path / "linkwatch.toml"
    cfg.write_text('[snmp]\nbase_oid = "1.3.6.1.4.1.99999.7"\n\n[uplinks.fibre]\ninterface = "eth1"\n\n'
                   '[[uplinks.fibre.probes]]\ntype = "icmp"\ntarget = "198.51.100.10"\n\n'
                   '[[uplinks.fibre.probes]]\ntype = "dns"\ntarget = "203.0.113.53"\n')
    assert mib_cli.main(["--config", str(cfg)]) == 0
    assert capsys.readouterr().out == render("1.3.6.1.4.1.99999.7")
    cfg.write_text(cfg.read_text().replace("1.3.6.1.4.1.99999.7", "2.5"))
    assert mib_cli.main(["--config", str(cfg)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "snmp.base_oid" in err and ("'2.5'" in err or '"2.5"' in err)


def test_cli_without_a_config_prints_the_default_module(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mib_cli, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))
    assert mib_cli.main([]) == 0
    out, err = capsys.readouterr()
    assert out == PACKAGED.read_text() and DEFAULT_BASE_OID in err


@pytest.mark.parametrize("bad,words", [("1.2.3", "1.2.3 is not below internet"), ("iso.3", "'iso.3'")])
def test_cli_refuses_a_bad_base_oid(capsys, bad, words):
    assert mib_cli.main(["--base-oid", bad]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("linkwatch mib: ") and words in err


# --- the operator documentation ------------------------------------------------------------------


def test_docs_name_every_object_notification_and_the_default_base():
    doc = (ROOT / "docs" / "snmp.md").read_text()
    for name in [*SCALARS, *COLUMNS, *NOTIFICATIONS, "trap_burst", "trap_window", DEFAULT_BASE_OID,
                 "packaging/mibs/LINKWATCH-MIB.txt", "linkwatch mib"]:
        assert name in doc, f"docs/snmp.md does not mention {name}"
