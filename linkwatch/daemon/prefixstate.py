"""The LAN prefixes set at run time (``linkwatch prefixes``, from a DHCPv6 client's hook), kept
beside the control socket (``control.sock`` -> ``control.prefixes.json``, in /run/linkwatch by
default) so that an engine restart keeps them, and a reboot, after which the DHCPv6 client binds
afresh and calls its hook again, does not. The engine rewrites the file whenever they change (a
request, or a reload that drops an uplink's); ``linkwatch prefixes`` writes it itself when it
finds no engine (a hook that runs at boot before the engine), then asks again: the engine reads
the file after its socket is up, so either the file or the request reaches it. A file that
cannot be read or written costs a warning, never the engine."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

log = logging.getLogger("linkwatch.prefixes")

MAX_BYTES = 64 * 1024


def path_for(control_socket: str) -> str:
    """One file per engine (its socket): two engines sharing a directory do not share it."""
    return os.path.splitext(os.path.abspath(control_socket))[0] + ".prefixes.json"


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


def merge(path: str, uplink: str, prefixes: list[str] | None) -> str | None:
    """What ``linkwatch prefixes`` does when no engine answers: record the request in the file
    (None: back to the config's); None, or why it could not."""
    saved = load(path)
    saved.pop(uplink, None)
    if prefixes is not None:
        saved[uplink] = prefixes
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    except OSError as e:
        return str(e)
    return save(path, ((name, tuple(p)) for name, p in saved.items() if isinstance(p, list)))


def save(path: str, learned: Iterable[tuple[str, tuple[str, ...]]]) -> str | None:
    """Write ``learned`` atomically; None, or why it could not be written."""
    tmp = f"{path}.{os.getpid()}.tmp"  # the engine and `linkwatch prefixes` may both write
    try:
        with open(tmp, "w") as f:
            json.dump({name: list(prefixes) for name, prefixes in learned}, f)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot save the LAN prefixes to %s: %s (they hold until the engine restarts)", path, e)
        return str(e)
    return None
