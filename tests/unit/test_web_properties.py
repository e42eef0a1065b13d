"""Property-based tests of the web API's parameters (hypothesis, issue 14): random query strings for
/api/v1/events and /api/v1/samples (since, until, step, limit, family, uplink, kind, and unknown
ones) and random uplink names and actions on the control route, through Flask's test client against
a real history database. Every answer is 200 or a 4xx JSON with ``ok: false`` and an error message
naming the parameter; never a 500.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web import history_db, make, session_csrf, login  # noqa: E402,F401  (history_db is a fixture)

PROPERTY = settings(max_examples=int(os.environ.get("LW_PROPERTY_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

PARAMS = ("since", "until", "step", "limit", "family", "uplink", "kind")
PLAUSIBLE = ["", "0", "1", "4", "6", "-1", "1h", "1d", "30m", "10s", "0s", "-1h", "1e9", "99999999999999999999",
             "2026-12-05", "2026-12-05T10:00:00", "2026-13-45T99:99", "9999-12-31T23:59:59", "0001-01-01",
             "1970-01-01T00:00:00Z", "now", "wan1", "lte", "x" * 40, "../etc", "UplinkStateChanged",
             "UplinkStateChanged,ActiveChanged", ",", "nan", "inf", "1.5", " 1", "1 ", "\u0661", "\u00e9"]

values = st.one_of(st.sampled_from(PLAUSIBLE), st.text(max_size=30), st.integers().map(str),
                   st.floats().map(str))
queries = st.dictionaries(st.one_of(st.sampled_from(PARAMS), st.text(min_size=1, max_size=8)), values, max_size=5)


def check(r, what: str) -> None:
    assert r.status_code < 500, f"{what}: {r.status_code} {r.get_data()[:200]!r}"
    body = r.get_json(silent=True)
    assert body is not None, f"{what}: no JSON ({r.status_code}): {r.get_data()[:200]!r}"
    if r.status_code == 200:
        assert body.get("ok") is True, f"{what}: {body}"
    else:
        assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {body}"
        assert body.get("ok") is False and isinstance(body.get("error"), str) and body["error"], f"{what}: {body}"


def query_string(q: dict) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in q.items())


def test_history_api_parameters(history_db):
    client, _ = make("public_read = true", history=f'[history]\npath = "{history_db}"')

    @PROPERTY
    @given(path=st.sampled_from(["/api/v1/events", "/api/v1/samples"]), q=queries)
    def prop(path, q):
        url = f"{path}?{query_string(q)}"
        r = client.get(url)
        check(r, url)
        body = r.get_json()
        if r.status_code == 400:
            named = [p for p in PARAMS if body["error"].startswith(p + ":")]
            assert named, f"{url}: the error names no parameter: {body['error']}"

    prop()


segment = st.text(min_size=1, max_size=40).filter(lambda t: "/" not in t and t not in (".", ".."))  # one path segment


def test_control_api_names_and_actions():
    client, engine = make()
    login(client)
    token = session_csrf(client)

    @PROPERTY
    @given(name=st.one_of(st.sampled_from(["wan1", "lte", "nope"]), segment),
           action=st.one_of(st.sampled_from(["force", "auto", "disable", "enable", "reboot"]),
                            segment))
    def prop(name, action):
        url = f"/api/v1/uplinks/{quote(name, safe='')}/{quote(action, safe='')}"
        r = client.post(url, headers={"X-CSRF-Token": token})
        check(r, url)

    prop()
