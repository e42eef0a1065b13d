"""The Prometheus rules, the Grafana dashboard and the sample Prometheus configs of packaging/
(docs/prometheus.md): promtool checks them and runs the rules' unit tests, and they are held
against the /metrics page of a real engine — every metric and label they use is on it, and the
rules fire on it as they should.

The page comes from the real code: an Engine (daemon shell and core) running on the scenario
tests' stand-in kernel and probes (tests/promrouter.py), asked through its control socket by the
web UI (Flask's test client), as Prometheus would scrape it; and the page of the same web UI once
the engine is gone. tests/integration/test_prometheus_fleet.py runs Prometheus itself."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from promrouter import QUOTA, USED, faulty_router, write_config  # noqa: E402

from linkwatch.config import load  # noqa: E402
from linkwatch.webui.app import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "packaging" / "prometheus"
RULES = PROM / "linkwatch-rules.yml"
RULE_TESTS = PROM / "linkwatch-rules.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "linkwatch-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian's package prometheus ships it; "
    "`scripts/bootstrap.sh --test-tools` installs it)")

TARGET_LABELS = {"job", "instance"}  # what Prometheus adds to every scraped series


# ---- the metrics page of a real engine ------------------------------------------------------------


def parse_exposition(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], str]]]:
    """The Prometheus text format -> ({name: type}, [(name, labels, value)])."""
    kinds, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            kinds[name] = kind
        elif line and not line.startswith("#"):
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
            assert m, f"not a sample line: {line!r}"
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            samples.append((m.group(1), labels, m.group(3)))
    return kinds, samples


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """/metrics with the engine running (fibre UP and active at 85 % of its quota, lte blackholed:
    DOWN) and with the engine stopped, both served by the web UI from the engine's control socket."""
    path = write_config(tmp_path_factory.mktemp("prom"))
    scrape = create_app(load(path)).test_client()  # asks the engine over [control] socket

    def get() -> str:
        r = scrape.get("/metrics")
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.get_data(as_text=True)

    async def scenario():
        async with faulty_router(path):
            return await asyncio.to_thread(get)

    live = asyncio.run(scenario())
    return {"live": live, "dead": get()}


def test_the_real_page_has_what_the_rules_are_tested_with(pages):
    """The rules' unit tests (linkwatch-rules.test.yml) are written with these shapes."""
    kinds, samples = parse_exposition(pages["live"])
    labels = {name: set(lb) for name, lb, _ in samples}
    assert labels["linkwatch_uplink_up"] == {"uplink", "interface"}
    assert labels["linkwatch_uplink_state"] == {"uplink", "state"}
    assert labels["linkwatch_engine_up"] == set()
    assert kinds["linkwatch_uplink_down_total"] == "counter" and kinds["linkwatch_uplink_dampened"] == "gauge"
    got = {(name, lb.get("uplink"), lb.get("state")): v for name, lb, v in samples}
    assert float(got[("linkwatch_uplink_up", "lte", None)]) == 0 and float(got[("linkwatch_uplink_up", "fibre", None)]) == 1
    assert float(got[("linkwatch_uplink_state", "lte", "DOWN")]) == 1
    assert float(got[("linkwatch_uplink_month_bytes", "fibre", None)]) == USED
    assert float(got[("linkwatch_uplink_quota_bytes", "fibre", None)]) == QUOTA
    assert got[("linkwatch_uplink_quota_bytes", "lte", None)] == "NaN"
    assert pages["dead"] == ("# HELP linkwatch_engine_up 1 when the engine answered this scrape\n"
                             "# TYPE linkwatch_engine_up gauge\nlinkwatch_engine_up 0\n")


# ---- what the rules and the dashboard use -------------------------------------------------------


def rule_list() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def walk(node, key: str):
    """Every value stored under ``key`` anywhere in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard: panels' targets, annotations, template variables."""
    board = json.loads(DASHBOARD.read_text())
    variables = [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return list(walk(board["panels"], "expr")) + list(walk(board["annotations"], "expr")) + variables


def dashboard_as_promql(query: str) -> str:
    """A dashboard query as Prometheus gets it, Grafana's variables filled in."""
    m = re.fullmatch(r"label_values\((.*), *([a-z_]+)\)", query, flags=re.S)
    if m:  # Grafana's own function: the series, then the label's values
        query = m.group(1)
    return query.replace("$__rate_interval", "1m").replace("$__range", "1h").replace(
        "$instance", ".*").replace("$uplink", ".*")


def used_queries() -> dict[str, str]:
    queries = {f"rule {r['alert']}": r["expr"] for r in rule_list()}
    queries.update({f"dashboard query {i}": dashboard_as_promql(q) for i, q in enumerate(dashboard_queries())})
    return queries


def unknown_metrics(queries: dict[str, str], page: str) -> list[str]:
    """linkwatch's metric names the queries use that are not on the page; ``up`` (Prometheus's
    own) only with job="linkwatch"."""
    _, samples = parse_exposition(page)
    names = {name for name, _, _ in samples}
    bad = []
    for where, q in queries.items():
        bad += [f"{where}: {n}" for n in re.findall(r"\blinkwatch_[a-zA-Z0-9_]+", q) if n not in names]
        bad += [f"{where}: up without job=\"linkwatch\"" for m in re.finditer(r"\bup\b(\{[^}]*\})?", q)
                if 'job="linkwatch"' not in (m.group(1) or "")]
    return bad


def test_every_metric_the_rules_and_the_dashboard_use_is_on_the_real_page(pages):
    queries = used_queries()
    assert len(queries) > 20 and all(q.strip() for q in queries.values())
    assert unknown_metrics(queries, pages["live"]) == []


def test_a_metric_renamed_in_the_code_fails_that_check(pages):
    renamed = pages["live"].replace("linkwatch_uplink_up{", "linkwatch_uplink_usable{").replace(
        "linkwatch_uplink_month_bytes", "linkwatch_uplink_month_octets")
    bad = unknown_metrics(used_queries(), renamed)
    assert "rule LinkwatchUplinkDown: linkwatch_uplink_up" in bad
    assert "rule LinkwatchQuotaReached: linkwatch_uplink_month_bytes" in bad
    assert any(b.startswith("dashboard query") and b.endswith("linkwatch_uplink_month_bytes") for b in bad)


def test_every_label_the_rules_and_the_dashboard_use_is_on_the_real_page(pages):
    _, samples = parse_exposition(pages["live"])
    per_metric: dict[str, set[str]] = {}
    for name, labels, _ in samples:
        per_metric.setdefault(name, set(TARGET_LABELS)).update(labels)
    per_metric["up"] = set(TARGET_LABELS)
    every = set().union(*per_metric.values())
    bad = []
    for where, q in used_queries().items():
        for name, matchers in re.findall(r"\b([a-z_]+)\{([^}]*)\}", q):  # name{label="..", ...}
            bad += [f"{where}: {name} has no label {label}"
                    for label in re.findall(r"([a-zA-Z_]+)\s*[=!]~?", matchers)
                    if label not in per_metric.get(name, set())]
        for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", q):
            bad += [f"{where}: no metric has a label {label}" for label in re.split(r"\s*,\s*", group.strip())
                    if label not in every]
    templates = [v for r in rule_list() for v in r.get("annotations", {}).values()]
    templates += list(walk(json.loads(DASHBOARD.read_text()), "legendFormat"))
    templates += list(walk(json.loads(DASHBOARD.read_text()), "textFormat"))
    for text in templates:  # {{ $labels.uplink }} in annotations, {{uplink}} in legends
        labels = re.findall(r"\$labels\.([a-zA-Z_]+)", text) + re.findall(r"\{\{\s*([a-zA-Z_]+)\s*\}\}", text)
        bad += [f"template {text[:40]!r}: no label {label}" for label in labels if label not in every]
    assert bad == []


# ---- promtool ------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path = PROM) -> str:
    r = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"promtool {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@needs_promtool
def test_the_rules_pass_promtool_check_and_their_unit_tests():
    assert "SUCCESS: 11 rules found" in promtool("check", "rules", RULES.name)
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS.name)


@needs_promtool
def test_the_sample_configs_pass_promtool_the_agent_one_in_agent_mode():
    if "--agent" not in promtool("check", "config", "--help"):  # Debian 12's 2.42 has it
        pytest.skip("this promtool cannot check an agent-mode config (no `check config --agent`)")
    assert "SUCCESS: agent.yml is valid" in promtool("check", "config", "--agent", "agent.yml")
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: prometheus.yml is valid" in out and "SUCCESS: 11 rules found" in out
    r = subprocess.run([PROMTOOL, "check", "config", "--agent", "prometheus.yml"], cwd=PROM, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "rule_files is not allowed in agent mode" in r.stdout + r.stderr, \
        "the agent check is a real one: the server's config (it loads rules) fails it"


def as_input_series(page: str, instance: str, minutes: int) -> list[dict]:
    """A scraped page as promtool input series: each sample constant for ``minutes``."""
    _, samples = parse_exposition(page)
    out = []
    for name, labels, value in samples:
        labels = {**labels, "job": "linkwatch", "instance": instance}
        series = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        out.append({"series": series, "values": " ".join([value] * (minutes + 1))})  # no "NaNx15"
    out.append({"series": f'up{{job="linkwatch",instance="{instance}"}}', "values": f"1x{minutes}"})
    return out


@needs_promtool
def test_the_rules_fire_on_a_real_engines_page_and_only_as_they_should(pages, tmp_path):
    """router-a: the live page (lte DOWN, fibre at 85 % of its quota) for 15 minutes; router-b: the
    page of a web UI whose engine is gone. The rules without their annotations (the unit tests
    check those): which alerts fire, with which labels, is what the real label names decide."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    firing = {
        "LinkwatchUplinkDown": [{"severity": "warning", "job": "linkwatch", "instance": "router-a",
                                 "uplink": "lte", "interface": "up2"}],
        "LinkwatchQuotaWarning": [{"severity": "warning", "job": "linkwatch", "instance": "router-a",
                                   "uplink": "fibre", "interface": "up1"}],
        "LinkwatchEngineDown": [{"severity": "critical", "job": "linkwatch", "instance": "router-b"}],
    }
    names = [r["alert"] for r in rule_list()]
    assert set(firing) < set(names)
    checks = [{"eval_time": "10m", "alertname": name,
               "exp_alerts": [{"exp_labels": labels} for labels in firing.get(name, [])]} for name in names]
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m",
                       "input_series": as_input_series(pages["live"], "router-a", 15)
                       + as_input_series(pages["dead"], "router-b", 15),
                       "alert_rule_test": checks}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    assert "SUCCESS" in promtool("test", "rules", "test.yml", cwd=tmp_path)


# ---- the Grafana dashboard ------------------------------------------------------------------


def test_the_dashboard_is_an_importable_grafana_dashboard_with_a_datasource_variable():
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]  # 36: Grafana 9, datasource refs by uid
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    ref = {"type": "prometheus", "uid": "${datasource}"}
    ids, titles = [], set()
    for p in board["panels"]:
        ids.append(p["id"])
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] == "row":
            continue
        titles.add(p["title"])
        assert p["datasource"] == ref, p["title"]
        assert p["targets"] and all(t["datasource"] == ref and t["expr"] for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
        assert all('instance=~"$instance"' in t["expr"] or p["title"] == "Scrape" for t in p["targets"]), p["title"]
    assert len(ids) == len(set(ids))
    assert {"Engine", "State", "Carries traffic", "RTT", "Loss", "Jitter", "State changes",
            "This month vs quota"} <= titles
    for query in dashboard_queries():
        assert "${" not in query.replace("${datasource}", ""), query


@needs_promtool
def test_the_dashboards_queries_are_valid_promql(tmp_path):
    """promtool parses each query (variables filled in) as a recording rule's expression."""
    queries = [dashboard_as_promql(q) for q in dashboard_queries()]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": q}
                                                        for i, q in enumerate(queries)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(queries)} rules found" in promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
