"""The configuration reference: every key of the schema with its default, accepted values and meaning.

Read by ``scripts/gen-config-doc.py`` (docs/configuration.md) and the tests that keep the sample
config and the docs complete.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields

from linkwatch.config.convert import _octal_mode, format_duration
from linkwatch.config.values import ABSENT, ARRAY, CONV, DOC, NAMED, OVERRIDE, TABLE, Config


OCTAL_MODE = _octal_mode().expected  # what every file mode key expects (an octal string)


@dataclass(frozen=True)
class KeyDoc:
    """One key of the schema, for the configuration reference."""

    path: str  # "health.interval", "uplinks.*.probes.*.type"
    default: str  # as TOML would write it, or "required" / "unset"
    expected: str  # what a good value looks like
    doc: str  # what it does
    table: str = ""  # the table it sits in, as a TOML file writes it: "[health]", "[[uplinks.NAME.probes]]"


def _default_text(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING and ABSENT not in f.metadata:
        return "required"
    value = f.default if f.default is not dataclasses.MISSING else f.metadata.get(ABSENT)
    expected = f.metadata[CONV].expected
    if value is None:
        return '"off"' if '"off"' in expected else "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        plain = "percentage" in expected or "number" in expected
        return f"{value:g}" if plain else json.dumps(format_duration(value))
    if isinstance(value, int) and expected == OCTAL_MODE:  # mode, status_mode: "0660", as TOML must write it
        return json.dumps(f"0{value:o}")
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return json.dumps(value) if isinstance(value, str) else str(value)


def key_docs() -> list[KeyDoc]:
    """Every key of :func:`describe_keys` with its default, expected form and meaning."""

    def walk(cls: type, prefix: str, table: str, header: str) -> list[KeyDoc]:
        out: list[KeyDoc] = []
        for f in fields(cls):
            meta = f.metadata
            name = f"{table}.{f.name}" if table else f.name
            if CONV in meta:
                out.append(KeyDoc(prefix + f.name, _default_text(f), meta[CONV].expected, meta[DOC], header))
            elif TABLE in meta and not meta.get(OVERRIDE):
                out += walk(meta[TABLE], f"{prefix}{f.name}.", name, f"[{name}]")
            elif NAMED in meta:
                out += walk(meta[NAMED], f"{prefix}{f.name}.*.", f"{name}.NAME", f"[{name}.NAME]")
            elif ARRAY in meta:
                out += walk(meta[ARRAY], f"{prefix}{f.name}.*.", name, f"[[{name}]]")
        return out

    return walk(Config, "", "", "")


def describe_keys(per_uplink_health: bool = False) -> list[str]:
    """Every TOML key path the schema knows, derived from the dataclasses, in file order.

    Named tables and array entries appear as ``*``: "uplinks.*.interface", "uplinks.*.probes.*.type".
    The per-uplink health overrides ("uplinks.*.health.interval", ...) repeat the [health] keys and
    are listed only with ``per_uplink_health=True``.
    """

    def walk(cls: type, prefix: str) -> list[str]:
        keys: list[str] = []
        for f in fields(cls):
            meta = f.metadata
            if CONV in meta:
                keys.append(prefix + f.name)
            elif TABLE in meta and (per_uplink_health or not meta.get(OVERRIDE)):
                keys += walk(meta[TABLE], f"{prefix}{f.name}.")
            elif NAMED in meta:
                keys += walk(meta[NAMED], f"{prefix}{f.name}.*.")
            elif ARRAY in meta:
                keys += walk(meta[ARRAY], f"{prefix}{f.name}.*.")
        return keys

    return walk(Config, "")
