"""Probes: one small interface over ICMP echo (icmplib) and DNS (dnspython).

A probe belongs to one uplink: its socket is bound to the uplink's source address, so the policy
rule ``from <addr> lookup <uplink table>`` sends it out through that uplink, and to the uplink's
interface, so that it never leaves through another one while that rule is missing. The engine calls
``await probe.run(timeout, attempts)`` once per round. Inside a run, attempt 1 leaves at once and
attempt k at ``(k - 1) * timeout / attempts`` unless an answer came first; the run ends at the
first answer (ok) or ``timeout`` after the first send (fail). Sockets stay open between rounds.

Only answers to attempts of the current run count: each attempt has its own key (ICMP sequence
number, DNS id) and a run forgets its keys when it ends, so a late reply is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from linkwatch.core.inputs import ProbeResult, ProbeSpec  # noqa: F401  (what probes take and give)
from linkwatch.probes.base import ICMP_MODES, KINDS, Probe, ProbeError, check_ip, family_of
from linkwatch.probes.dns import DnsProbe
from linkwatch.probes.icmp import IcmpChannelFactory

__all__ = ["KINDS", "Probe", "ProbeError", "ProbeResult", "ProbeSpec", "make_probes"]


# --------------------------------------------------------------------------- factory


def make_probes(specs: Sequence[ProbeSpec], source: str, icmp_mode: str = "auto", *,
                device: str | None = None) -> list[Probe]:
    """One Probe per spec, in order, bound to ``source`` (IPv4 or IPv6: the targets are of its
    family; an uplink's IPv6 probes are a make_probes() call of their own) and, unless None, to
    the interface ``device`` (so that no probe leaves through another uplink).

    The ICMP probes of one call share one raw socket (or each get a datagram socket in "dgram"
    mode); sockets are created here, in the caller's network namespace, when the source address
    exists, else at the first attempt. Raises ProbeError for a bad spec, source or mode, and when
    the process may open neither kind of ICMP socket.
    """
    source = check_ip(source, "source")
    if icmp_mode not in ICMP_MODES:
        raise ProbeError(f"icmp_mode must be one of {', '.join(ICMP_MODES)}, got {icmp_mode!r}")
    for spec in specs:
        if spec.kind not in KINDS:
            raise ProbeError(f"probe kind must be one of {', '.join(KINDS)}, got {spec.kind!r}")
        target = check_ip(spec.target, f"{spec.kind} probe target")
        if family_of(target) != family_of(source):
            raise ProbeError(f"{spec.kind} probe target {spec.target} is not of the family of source {source}")
    icmp = IcmpChannelFactory(source, icmp_mode, device) if any(s.kind == "icmp" for s in specs) else None
    probes: list[Probe] = []
    try:
        for spec in specs:
            target = check_ip(spec.target, "target")
            if spec.kind == "icmp":
                assert icmp is not None
                probes.append(icmp.probe(target))
            else:
                probes.append(DnsProbe(target, source, spec.query, device))
    except BaseException:
        for probe in probes:
            probe.close()
        raise
    return probes
