"""Property-based tests of the config loader (hypothesis, issue 14): random TOML documents built from
the schema's real keys (every key of :func:`key_docs`, uplink health overrides, unknown keys) with
random values of every TOML type. Whatever the document, the loader returns a Config or raises
ConfigError, never anything else; every issue names a key path (or the TOML line/column), and a bad
value set at one key is blamed on a path inside its table, not on an unrelated one.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tomllib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from linkwatch.config import Config, ConfigError, key_docs, load, loads

PROPERTY = settings(max_examples=int(os.environ.get("LW_PROPERTY_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

ARRAYS = ("uplinks.*.probes", "snmp.traps", "rules")  # arrays of tables; the other "*" are named tables
HEALTH_KEYS = [k.path.split(".", 1)[1] for k in key_docs() if k.path.startswith("health.")]
KEY_PATHS = [k.path for k in key_docs()] + [f"uplinks.*.health.{k}" for k in HEALTH_KEYS]
TOP = {p.split(".")[0] for p in KEY_PATHS}

BASE = {
    "uplinks": {
        "fibre": {"interface": "eth1", "probes": [{"type": "icmp", "target": "198.51.100.10"},
                                                  {"type": "dns", "target": "203.0.113.53"}]},
        "lte": {"interface": "wwan0", "priority": 2, "probes": [{"type": "icmp", "target": "198.51.100.10"}]},
    },
}

PLAUSIBLE = ["", "1s", "100ms", "0s", "-1s", "2h", "1e9s", "off", "on", "198.51.100.1", "203.0.113.0/24",
             "fe80::1", "::", "eth0", "wwan0", "fibre", "lte", "icmp", "dns", "udp", "0660", "0o777", "9999",
             "127.0.0.1:8080", "[::1]:161", "udp:161", "1.3.6.1.4.1.99999", "md5", "sha", "aes", "des",
             "authPriv", "noAuthNoPriv", "v2c", "v3", "inform", "trap", "failover", "balance", "withdraw",
             "keep", "debug", "INFO", "/tmp/x.db", "relative/path", "x" * 300, "\u00e9\u4e2d\U0001f600",
             "a\nb", "0x10", "1.5", "nan", "-0"]

scalars = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.text(max_size=12),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 100, 101, 255, 256, 65535, 65536, 2**31, 2**32]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["type", "target", "name", "x", "host", "interface"]), inner, max_size=3)),
    max_leaves=6)


def toml_string(s: str) -> str:
    """A TOML basic string: control characters, DEL, quote and backslash escaped, the rest as is."""
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c
                         for c in s) + '"'


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_document(doc: dict) -> str:
    """Every leaf as a dotted key at the top (arrays and empty tables inline): always valid TOML."""
    lines: list[str] = []

    def walk(prefix: list[str], d: dict) -> None:
        for key, value in d.items():
            path = prefix + [toml_string(key)]
            if isinstance(value, dict) and value:
                walk(path, value)
            else:
                lines.append(f"{'.'.join(path)} = {toml_value(value)}")

    walk([], doc)
    return "\n".join(lines) + "\n"


def put(doc: dict, path: list, value) -> None:
    """Set ``value`` at ``path`` (strings: table keys, ints: array indexes), making room as needed."""
    node = doc
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        want = list if isinstance(nxt, int) else dict
        if isinstance(node, list):
            while len(node) <= key:
                node.append({})
            if not isinstance(node[key], want):
                node[key] = want()
            node = node[key]
        else:
            if not isinstance(node.get(key), want):
                node[key] = want()
            node = node[key]
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append({})
    node[last] = value


@st.composite
def concrete_path(draw) -> list:
    keys = draw(st.sampled_from(KEY_PATHS)).split(".")
    out: list = []
    for i, key in enumerate(keys):
        if key != "*":
            out.append(key)
        elif ".".join(keys[:i]) in ARRAYS:
            out.append(draw(st.integers(0, 2)))
        else:
            out.append(draw(st.sampled_from(["fibre", "lte", "wan-3", "Bad Name", "x" * 40, ""])))
    return out


mutation = st.one_of(
    st.tuples(concrete_path(), values),
    st.tuples(st.lists(st.sampled_from(sorted(TOP) + ["nope", "uplinks", "fibre", "probes"]), min_size=1, max_size=3),
              values),
)


def check_outcome(text: str, mutated_tops: set[str]) -> Config | None:
    try:
        return loads(text)
    except ConfigError as e:
        assert e.issues, "a ConfigError with no issue"
        for issue in e.issues:
            assert isinstance(issue.path, str) and issue.path, f"an issue without a key path: {issue!r}"
            assert issue.message.strip(), f"an issue without a message: {issue!r}"
            head = issue.path.split(".")[0].split("[")[0]
            assert head in TOP or head in mutated_tops or issue.path.startswith("line ") \
                or issue.path == "end of document", \
                f"issue blamed on {issue.path!r}, which is no key of the schema nor one the document set: {issue}"
            assert "Traceback" not in issue.message
        str(e)  # the CLI prints this
        return None


@PROPERTY
@given(st.lists(mutation, min_size=1, max_size=6))
def test_random_documents_give_a_config_or_key_path_errors(mutations):
    doc = json.loads(json.dumps(BASE))
    tops = set()
    for path, value in mutations:
        put(doc, path, value)
        tops.add(str(path[0]))
    check_outcome(toml_document(doc), tops)


@PROPERTY
@given(concrete_path(), values)
@example(["health", "min_targets"], 2)  # CI found it: blamed on uplinks.lte.health, which it never set
def test_one_bad_value_is_blamed_inside_its_own_table(path, value):
    doc = json.loads(json.dumps(BASE))
    put(doc, path, value)
    try:
        loads(toml_document(doc))
    except ConfigError as e:
        paths = [i.path for i in e.issues]
        assert any(p.split(".")[0].split("[")[0] == path[0] for p in paths), \
            f"set {'.'.join(map(str, path))} = {value!r}; the issues name other tables only: {paths}"


@PROPERTY
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_text_gives_a_config_or_errors(text):
    try:
        tops = set(tomllib.loads(text))
    except tomllib.TOMLDecodeError:
        tops = set()
    check_outcome(text, tops)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_any_file_gives_a_config_or_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "linkwatch.toml"
    path.write_bytes(data)
    try:
        load(path)
    except ConfigError as e:
        assert e.issues and all(i.path for i in e.issues)
