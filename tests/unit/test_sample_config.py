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


def test_every_schema_key_appears_in_the_sample():
    present = sample_keys()
    missing = [pattern for pattern in describe_keys() if not any(matches(p, pattern) for p in present)]
    text = SAMPLE.read_text()
    commented = [p for p in missing if p.rpartition(".")[2] in COMMENTED_SECRETS
                 and re.search(rf"^# {re.escape(p.rpartition('.')[2])} = ", text, re.M)]
    assert missing == commented == ["web.password_hash"]


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


COMMENTED_SECRETS = ("password_hash",)


def test_first_use_of_every_key_is_commented_with_its_default():
    """The comment block just above the first line of each schema key says "Default:" or "Required".

    Secrets (a password hash) appear commented out: a working sample value would be a known password.
    """
    lines = SAMPLE.read_text().splitlines()
    table, comments, undocumented, seen = "", [], [], set()
    for line in lines:
        stripped = line.strip()
        header = re.fullmatch(r"(\[\[?)\s*([^\]]+?)\s*\]\]?", stripped)
        key = re.match(r"([A-Za-z0-9_-]+)\s*=", stripped) or re.match(
            rf"#\s*({'|'.join(COMMENTED_SECRETS)})\s*=", stripped)
        if header:
            table = header.group(2).replace('"', "") + (".*" if header.group(1) == "[[" else "")
        elif key:
            path = f"{table}.{key.group(1)}" if table else key.group(1)
            pattern = next((p for p in describe_keys() if matches(path, p)), None)
            if pattern and pattern not in seen:
                seen.add(pattern)
                if not re.search(r"Default:|Required", " ".join(comments)):
                    undocumented.append(pattern)
        if stripped.startswith("#"):
            comments.append(stripped)
        else:
            comments = []
    assert seen == set(describe_keys())
    assert undocumented == []
