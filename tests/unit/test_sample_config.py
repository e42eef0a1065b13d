"""The shipped sample config (etc/linkwatch.toml) stays valid and documents every key of the schema."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any, Iterator

from linkwatch.config import Config, describe_keys, load

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "linkwatch.toml"


def concrete_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Leaf key paths of a parsed TOML document; array entries become "*"."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from concrete_keys(value, f"{prefix}{key}.")
    elif isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
        for item in node:
            yield from concrete_keys(item, f"{prefix}*.")
    else:
        yield prefix.rstrip(".")


def matches(path: str, pattern: str) -> bool:
    """Does a concrete key path fit a schema pattern ("*" stands for any one segment)?"""
    parts, wanted = path.split("."), pattern.split(".")
    return len(parts) == len(wanted) and all(w in ("*", p) for p, w in zip(parts, wanted))


def sample_keys() -> list[str]:
    return list(concrete_keys(tomllib.loads(SAMPLE.read_text())))


def test_sample_loads_without_errors():
    cfg = load(str(SAMPLE))
    assert cfg.uplinks, "the sample must define uplinks"
    assert cfg.source == str(SAMPLE)


# Keys the sample shows only commented out: secrets (a working sample value would be a known
# password) and example entries (users, trap receivers, a second socket) that must not be live on
# a fresh install.
COMMENTED_OK = ("control.status_socket", "control.status_group", "web.password_hash", "snmp.engine_id", "snmp.agent.community", "snmp.users.*.*", "uplinks.*.quota",
                "snmp.traps.*.*", "rules.*.*", "mqtt.host", "mqtt.port", "mqtt.client_id", "mqtt.topic_prefix",
                "mqtt.username", "mqtt.password", "mqtt.password_file", "mqtt.tls_ca_file", "mqtt.tls_cert_file",
                "mqtt.tls_key_file")


def key_lines() -> Iterator[tuple[str, bool, list[str]]]:
    """(key path, commented out?, the comment lines just above) for every key line of the sample,
    reading commented-out headers and keys ("# [[snmp.traps]]", "# host = ...") as well."""
    table, comments = "", []
    for line in SAMPLE.read_text().splitlines():
        stripped = line.strip()
        commented = stripped.startswith("#")
        body = stripped.lstrip("#").strip() if commented else stripped
        header = re.fullmatch(r"(\[\[?)\s*([^\]\s]+?)\s*\]\]?", body)
        key = re.match(r"([A-Za-z0-9_-]+)\s*=\s*\S", body)
        if header and (not commented or header.group(2).startswith(("snmp.", "rules"))):
            table = header.group(2).replace('"', "") + (".*" if header.group(1) == "[[" else "")
        elif key:
            yield (f"{table}.{key.group(1)}" if table else key.group(1)), commented, list(comments)
        comments = comments + [stripped] if commented and not key and not header else []


def commented_ok(path: str) -> bool:
    return any(matches(path, p) for p in COMMENTED_OK)


def test_every_schema_key_appears_in_the_sample():
    present = sample_keys()
    missing = [pattern for pattern in describe_keys() if not any(matches(p, pattern) for p in present)]
    commented = {path for path, is_commented, _ in key_lines() if is_commented}
    assert missing and all(commented_ok(p) for p in missing)
    assert [p for p in missing if not any(matches(c, p) for c in commented)] == []


def test_every_key_in_the_sample_is_known():
    known = describe_keys(per_uplink_health=True)
    unknown = [path for path in sample_keys() if not any(matches(path, pattern) for pattern in known)]
    assert unknown == []


def test_sample_sections_show_the_defaults():
    """Outside [uplinks] the sample writes the default values, so its comments tell the truth."""
    cfg = load(str(SAMPLE))
    differing = []
    for section in dataclasses.fields(Config):
        value = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(value):
            continue
        default = type(value)()
        for f in dataclasses.fields(value):
            # keys whose default is "unset" (None) show an example value instead
            if getattr(default, f.name) is not None and getattr(value, f.name) != getattr(default, f.name):
                differing.append(f"{section.name}.{f.name}")
    assert differing == []


def test_first_use_of_every_key_is_commented_with_its_default():
    """The comment block just above the first line of each schema key says "Default:" or "Required";
    only the keys of COMMENTED_OK may appear commented out."""
    seen, undocumented, wrongly_commented = set(), [], []
    for path, commented, comments in key_lines():
        pattern = next((p for p in describe_keys() if matches(path, p)), None)
        if pattern is None:
            continue
        if commented and not commented_ok(pattern):
            wrongly_commented.append(path)
        if pattern not in seen:
            seen.add(pattern)
            if not re.search(r"Default:|Required", " ".join(comments)):
                undocumented.append(pattern)
    assert seen == set(describe_keys())
    assert wrongly_commented == []
    assert undocumented == []
