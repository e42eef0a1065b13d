"""What the config file's mode gives away: whoever may change it can point ``[hooks] directory``
at scripts of their own, which the engine runs with its capabilities (CAP_NET_ADMIN, CAP_NET_RAW);
and it may hold the web password's hash and SNMP keys. Warnings, not refusals: a config valid
before stays usable."""

from __future__ import annotations

import os
import stat

from linkwatch.config.values import Config

SAFE_MODE = 0o640  # root (or the admin) writes it; the linkwatch group (the web UI) reads it


def has_secrets(config: Config) -> bool:
    snmp = config.snmp
    return bool(config.web.password_hash or snmp.agent.community or snmp.users
                or any(t.community for t in snmp.traps) or config.mqtt.password)


def mode_warnings(path: str, config: Config | None = None) -> list[str]:
    """The warnings for the config file at ``path`` (none when it cannot be stat'ed)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return []
    out = []
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        out.append(f"{path} is writable by others (mode {mode:04o}): whoever can change it can set "
                   f"[hooks] directory and run scripts with the engine's capabilities; chmod {SAFE_MODE:04o} it "
                   "(owner root, group linkwatch)")
    if mode & stat.S_IROTH and config is not None and has_secrets(config):
        out.append(f"{path} is readable by everyone (mode {mode:04o}) and holds secrets (the web password's hash, "
                   f"SNMP communities or keys, the MQTT password); chmod {SAFE_MODE:04o} it")
    return out


def tightened(mode: int) -> int:
    """``mode`` without write for the group and without anything for others (at most 0640 plus
    the owner's execute bit, which nobody needs on a config but is not ours to take)."""
    return stat.S_IMODE(mode) & 0o740
