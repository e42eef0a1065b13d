"""Read-only checks of the IPv4 sysctls that decide whether sticky flows can work.

Strict reverse-path filtering (``rp_filter = 1``) checks a packet's source against the route back
to it; without ``src_valid_mark`` that lookup ignores the packet's mark, so the replies of a flow
that stays on a non-active uplink (sticky flows, balancing, policy rules) fail the check and are
dropped silently. linkwatch does not change sysctls; it says so at start (``rp_filter = 2``, the
loose mode Debian and Ubuntu ship, or ``src_valid_mark = 1`` fixes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CONF = Path("/proc/sys/net/ipv4/conf")


def _read(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def strict_rp_filter(interfaces: Sequence[str], conf: Path = CONF) -> list[str]:
    """The interfaces whose replies strict reverse-path filtering would drop when they arrive for
    a flow routed by its mark: the effective rp_filter (the larger of ``all`` and the interface's)
    is 1 and ``src_valid_mark`` is off (both ``all`` and the interface's). Unreadable: not listed."""
    every = _read(conf / "all" / "rp_filter") or 0
    valid_mark = _read(conf / "all" / "src_valid_mark") or 0
    strict = []
    for ifname in interfaces:
        own = _read(conf / ifname / "rp_filter")
        if own is None:
            continue  # no such interface (yet): a PPP link that is not up; checked again at the next start
        if max(every, own) == 1 and not (valid_mark or _read(conf / ifname / "src_valid_mark")):
            strict.append(ifname)
    return strict
