"""The lab's namespaces as the kernel shows them now: which exist, the lab's size, who runs inside.

Reads only: :func:`discover` finds an existing lab's spec from its namespace names;
:func:`namespace_pids` lists the processes inside one (``down`` stops strays);
:func:`namespace_prefixes` lists a namespace's addresses and routes (``up``'s overlap check).
"""

from __future__ import annotations

import os
import socket

from linkwatch.lab.plan import LabError, LabSpec, lab_role
from linkwatch.lab.safety import NETNS_DIR


def namespace_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def existing_lab_namespaces(name: str) -> list[str]:
    """The namespaces of lab ``name`` that exist now (whatever its size)."""
    try:
        entries = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []
    return [ns for ns in entries if lab_role(name, ns) is not None]


def discover(name: str) -> LabSpec:
    """The spec of an existing lab, its size read from its provider namespaces."""
    providers = [ns for ns in existing_lab_namespaces(name) if lab_role(name, ns).startswith("p")]
    if not providers:
        raise LabError(f"lab {name!r} is not up (no namespace lw-{name}-p1 …); run `linkwatch lab up --name {name}`")
    return LabSpec(name, max(int(lab_role(name, ns)[1:]) for ns in providers))


def namespace_pids(ns: str) -> list[int]:
    """Pids of processes inside namespace ``ns`` (compares /proc/<pid>/ns/net with the name's inode)."""
    try:
        ino = os.stat(os.path.join(NETNS_DIR, ns)).st_ino
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def namespace_prefixes(netns: str | None = None) -> list[tuple[str, str]]:
    """Addresses and route destinations of a namespace (default: the calling thread's), with origins."""
    from pyroute2 import IPRoute

    out: list[tuple[str, str]] = []
    kwargs = {"netns": netns} if netns else {}
    with IPRoute(**kwargs) as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for a in ipr.get_addr():
            addr = a.get_attr("IFA_ADDRESS") or a.get_attr("IFA_LOCAL")
            if addr:
                out.append((f"{addr}/{a['prefixlen']}", f"address on {names.get(a['index'], a['index'])}"))
        for r in [*ipr.get_routes(family=socket.AF_INET), *ipr.get_routes(family=socket.AF_INET6)]:
            dst = r.get_attr("RTA_DST")
            if dst:
                table = r.get_attr("RTA_TABLE") or r["table"]
                out.append((f"{dst}/{r['dst_len']}", f"route in table {table}"))
    return out
