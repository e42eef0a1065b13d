"""What the SNMP agent answers (pure): the MIB view of one status snapshot, and how GET, GETNEXT,
GETBULK and SET are answered from it; also the cheap look at a datagram before pysnmp decodes it.

The view holds exactly :func:`linkwatch.snmp.mib.instances` of the engine's status; it is not a
full SNMPv2-MIB agent (no sysDescr, no sysUpTime, no snmp counters). A walk of the base OID B
returns the eight scalars ``B.1.1.n.0`` (lwVersion ... lwActiveReason), then lwUplinkTable column
by column (``B.1.2.1.C.I``, columns 2-19 for every uplink I, lwUplinkIndex itself is
not-accessible), then endOfMibView; nothing is answered under ``B.0``, ``B.1.3`` (objects only
notifications carry) or ``B.2`` or outside B.
No sockets, no threads, no clock here: :mod:`.agent` receives the requests and sends the answers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pyasn1.codec.ber import encoder
from pysnmp.proto import rfc1902, rfc1905

from linkwatch.snmp import mib
from linkwatch.snmp.mib import OID, Layout

MAX_BULK_VARBINDS = 2048
MAX_RESPONSE = 65000  # bytes of varbinds in one response, whatever the manager allows

NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = "noSuchObject", "noSuchInstance", "endOfMibView"
SYNTAX_TYPES = {
    "Integer32": rfc1902.Integer32, "OctetString": rfc1902.OctetString, "Counter32": rfc1902.Counter32,
    "Gauge32": rfc1902.Gauge32, "TimeTicks": rfc1902.TimeTicks, "ObjectIdentifier": rfc1902.ObjectIdentifier,
}
EXCEPTIONS = {NO_SUCH_OBJECT: rfc1905.noSuchObject, NO_SUCH_INSTANCE: rfc1905.noSuchInstance,
              END_OF_MIB_VIEW: rfc1905.endOfMibView}

Result = int | str  # an index into View.oids, or one of the three exception values


# --- the MIB view ----------------------------------------------------------------------------------


def readable_objects(layout: Layout) -> tuple[OID, ...]:
    """The OIDs of the readable objects (scalars without .0, columns without index), sorted."""
    scalars = [layout.scalar(name)[:-1] for name in mib.SCALARS]
    columns = [layout.column(name) for name in mib.COLUMNS if name != "lwUplinkIndex"]
    return tuple(sorted(scalars + columns))


@dataclass(frozen=True)
class View:
    """One snapshot of the MIB: sorted instance OIDs, their values and their encoded sizes."""

    oids: tuple[OID, ...]
    values: tuple[Any, ...]
    objects: tuple[OID, ...]
    sizes: tuple[int, ...] = ()
    at: float = 0.0  # time.monotonic() when made

    def object_of(self, oid: OID) -> OID | None:
        """The readable object ``oid`` is an instance of (or the object itself), if any."""
        i = bisect.bisect_right(self.objects, oid) - 1
        if i >= 0 and oid[:len(self.objects[i])] == self.objects[i]:
            return self.objects[i]
        return None

    def get(self, oid: OID) -> Result:
        i = bisect.bisect_left(self.oids, oid)
        if i < len(self.oids) and self.oids[i] == oid:
            return i
        return NO_SUCH_INSTANCE if self.object_of(oid) is not None else NO_SUCH_OBJECT

    def next(self, oid: OID) -> Result:
        i = bisect.bisect_right(self.oids, oid)
        return i if i < len(self.oids) else END_OF_MIB_VIEW

    def size(self, oid: OID, result: Result) -> int:
        if isinstance(result, int) and self.sizes:
            return self.sizes[result]
        return 2 * len(oid) + 8  # an OID's BER is at most about 2 bytes per arc, plus headers


def _value(syntax_value: tuple[str, Any]) -> Any:
    syntax, value = syntax_value
    if syntax == "OctetString" and isinstance(value, str):
        value = value.encode("utf-8")
    return SYNTAX_TYPES[syntax](value)


def _ber_size(name: Any, value: Any) -> int:
    inner = len(encoder.encode(name)) + len(encoder.encode(value))
    return inner + (2 if inner < 128 else 3 if inner < 256 else 4)


def make_view(layout: Layout, instances: list[tuple[OID, tuple[str, Any]]], objects: tuple[OID, ...],
              at: float) -> View:
    """The View of :func:`mib.instances`' output with pysnmp values (names are ObjectName)."""
    names = [rfc1902.ObjectName(oid) for oid, _ in instances]
    values = [_value(v) for _, v in instances]
    return View(tuple(o for o, _ in instances), tuple(zip(names, values)), objects,
                tuple(_ber_size(n, v) for n, v in zip(names, values)), at)


# --- answering -------------------------------------------------------------------------------------


def answer_get(view: View, oids: Iterable[OID]) -> list[tuple[OID, Result]]:
    return [(oid, view.get(oid)) for oid in oids]


def answer_next(view: View, oids: Iterable[OID]) -> list[tuple[OID, Result]]:
    """GETNEXT: each OID's successor, or (the OID, endOfMibView)."""
    out: list[tuple[OID, Result]] = []
    for oid in oids:
        r = view.next(oid)
        out.append((view.oids[r], r) if isinstance(r, int) else (oid, r))
    return out


def answer_bulk(view: View, oids: Sequence[OID], non_repeaters: int, max_repetitions: int,
                budget: int = MAX_RESPONSE, max_varbinds: int = MAX_BULK_VARBINDS) -> list[tuple[OID, Result]]:
    """GETBULK (RFC 3416 4.2.3): the non-repeaters' successors, then up to ``max_repetitions``
    rounds over the repeaters. Stops early when every repeater has reached endOfMibView, and
    before the response would exceed ``budget`` bytes or ``max_varbinds``; at least the
    non-repeaters are always there (the caller turns an oversize into tooBig)."""
    n = min(max(int(non_repeaters), 0), len(oids))
    m = max(int(max_repetitions), 0)
    out = answer_next(view, oids[:n])
    used = sum(view.size(o, r) for o, r in out)
    cursor = list(oids[n:])
    if not cursor:
        return out
    for _ in range(m):
        row = answer_next(view, cursor)
        cost = sum(view.size(o, r) for o, r in row)
        if used + cost > budget or len(out) + len(row) > max_varbinds:
            break
        out += row
        used += cost
        if all(r == END_OF_MIB_VIEW for _, r in row):
            break
        cursor = [o for o, _ in row]
    return out


def set_error(view: View, oids: Sequence[OID]) -> tuple[str, int]:
    """SET's (error-status, error-index): notWritable for our objects, noAccess for the rest."""
    if not oids:
        return "noAccess", 0
    return ("notWritable" if view.object_of(oids[0]) is not None else "noAccess"), 1


# --- before pysnmp: the datagram's envelope --------------------------------------------------------


def envelope_check(packet: bytes) -> str | None:
    """A cheap look at a datagram before pysnmp decodes it: ``"malformed"`` unless it is exactly one
    BER SEQUENCE that starts with a one-byte version INTEGER; ``"bad_version"`` unless that version
    is SNMPv2c (1) or SNMPv3 (3); None when pysnmp should have it. Junk costs microseconds."""
    if len(packet) < 5 or packet[0] != 0x30:
        return "malformed"
    first = packet[1]
    if first < 0x80:
        length, header = first, 2
    else:
        n = first & 0x7F
        if not 1 <= n <= 3 or len(packet) < 2 + n:
            return "malformed"
        length, header = int.from_bytes(packet[2:2 + n], "big"), 2 + n
    if header + length != len(packet) or packet[header:header + 2] != b"\x02\x01":
        return "malformed"
    return None if packet[header + 2] in (1, 3) else "bad_version"
