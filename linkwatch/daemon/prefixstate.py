"""The LAN prefixes set at run time (``linkwatch prefixes``, from a DHCPv6 client's hook), kept
beside the control socket (``prefixes.json`` in its directory, /run/linkwatch by default) so that
an engine restart keeps them, and a reboot, after which the DHCPv6 client binds afresh and calls
its hook again, does not. A file that cannot be read or written costs a warning, never the engine."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

log = logging.getLogger("linkwatch.prefixes")

MAX_BYTES = 64 * 1024


def path_for(control_socket: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(control_socket)), "prefixes.json")


def load(path: str) -> dict[str, object]:
    """{uplink: prefixes as saved}; the core checks each one again. {} when there is none."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        log.warning("cannot read the saved LAN prefixes %s: %s", path, e)
        return {}
    try:
        data = json.loads(raw) if len(raw) <= MAX_BYTES else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.warning("ignoring the saved LAN prefixes %s: not a JSON object of at most %d bytes", path, MAX_BYTES)
        return {}
    return data


def save(path: str, learned: Iterable[tuple[str, tuple[str, ...]]]) -> str | None:
    """Write ``learned`` atomically; None, or why it could not be written."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump({name: list(prefixes) for name, prefixes in learned}, f)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot save the LAN prefixes to %s: %s (they hold until the engine restarts)", path, e)
        return str(e)
    return None
