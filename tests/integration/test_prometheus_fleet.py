"""Prometheus itself against linkwatch (docs/prometheus.md), all on loopback: a central Prometheus
run with packaging/prometheus/prometheus.yml and the alerting rules scrapes a real web UI (waitress,
`linkwatch web` in a process of its own) in front of a real engine (the stand-in kernel of tests/promrouter.py:
fibre UP at 85 % of its quota, lte DOWN) as three routers — two static targets named by their
`router` label, one from a file_sd file without one — and Prometheus in agent mode, run with
packaging/prometheus/agent.yml, scrapes it as a fourth and pushes with remote_write. The samples
configs get only the addresses and faster intervals.

Then: every router arrives named as the configs say, the agent's `up` too; the rules see lte DOWN
and fibre's quota on each; every query of the Grafana dashboard returns data (the state timeline
gives the values its mappings name DOWN and UP); the engine stopped -> LinkwatchEngineDown, the web
UI stopped -> LinkwatchTargetDown."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from promrouter import faulty_router, write_config  # noqa: E402


ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "packaging" / "prometheus"
DASHBOARD = ROOT / "packaging" / "grafana" / "linkwatch-dashboard.json"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian's package prometheus; "
    "`scripts/bootstrap.sh --test-tools` installs it)")


@pytest.fixture(autouse=True)
def prometheus_with_agent_mode_and_a_write_receiver():
    usage = subprocess.run([PROMETHEUS, "--help"], capture_output=True, text=True, timeout=30)
    if "web.enable-remote-write-receiver" not in usage.stdout + usage.stderr:  # 2.33 and newer
        pytest.skip("this prometheus has no --web.enable-remote-write-receiver (needs 2.33 or newer)")

ROUTERS = {"berlin", "hamburg", "127.0.0.1", "munich"}  # static, static, file_sd (its address), agent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A Prometheus process (server or agent) on a loopback port, its files in ``directory``."""

    def __init__(self, directory: Path, config: dict, agent: bool = False):
        directory.mkdir()
        self.port = free_port()
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        args = [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn"]
        if agent:
            args += ["--enable-feature=agent", f"--storage.agent.path={directory / 'data'}"]
        else:
            args += [f"--storage.tsdb.path={directory / 'data'}", "--web.enable-remote-write-receiver"]
        self.log = open(directory / "log", "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.directory = directory
        wait_for(lambda: self._ready(), 30, f"Prometheus on port {self.port} ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError((self.directory / "log").read_text())
        return answers(f"http://127.0.0.1:{self.port}/-/ready", self.proc)

    def api(self, path: str, **params) -> object:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=5) as r:
            answer = json.load(r)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def answers(url: str, proc: subprocess.Popen) -> bool:
    assert proc.poll() is None, f"exited with {proc.returncode}"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


def central_config(tmp: Path, web: str) -> dict:
    """packaging/prometheus/prometheus.yml with this test's addresses and 1 s intervals."""
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROM / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [web], "labels": {"router": "berlin"}},
                             {"targets": [web.replace("127.0.0.1", "localhost")], "labels": {"router": "hamburg"}}]
    targets = tmp / "targets"
    targets.mkdir()
    (targets / "more.yml").write_text(yaml.safe_dump([{"targets": [web]}]))
    (job["file_sd_configs"][0]["files"],) = [[str(targets / "*.yml")]]
    return config


def agent_config(web: str, central_port: int) -> dict:
    """packaging/prometheus/agent.yml scraping this test's web UI, writing to the central Prometheus."""
    config = yaml.safe_load((PROM / "agent.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [web]}]
    job["relabel_configs"][0]["replacement"] = "munich"
    (remote,) = config["remote_write"]
    remote["url"] = f"http://127.0.0.1:{central_port}/api/v1/write"
    del remote["basic_auth"]  # the test's central Prometheus asks for none
    remote["queue_config"]["batch_send_deadline"] = "1s"
    return config


def instances(result: list[dict]) -> set[str]:
    return {r["metric"]["instance"] for r in result}


def test_a_central_prometheus_and_an_agent_see_the_fleet_alert_and_fill_the_dashboard(tmp_path):
    """The engine runs in this thread's event loop (it wants the main thread, for its signal
    handlers); the rest of the test in a worker thread meanwhile."""
    path = write_config(tmp_path)

    async def scenario():
        async with faulty_router(path) as engine:
            loop = asyncio.get_running_loop()
            await asyncio.to_thread(watch_the_fleet, tmp_path, path,
                                    lambda: loop.call_soon_threadsafe(engine.request_stop))
    asyncio.run(scenario())


def watch_the_fleet(tmp_path: Path, path: Path, stop_engine) -> None:
    web = f"127.0.0.1:{free_port()}"
    web_log = open(tmp_path / "web.log", "w")
    web_ui = subprocess.Popen([sys.executable, "-m", "linkwatch", "web", "--config", str(path), "--listen", web],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=web_log)
    central = agent = None
    try:
        wait_for(lambda: answers(f"http://{web}/healthz", web_ui), 20, "the web UI")
        central = Prometheus(tmp_path / "central", central_config(tmp_path, web))
        agent = Prometheus(tmp_path / "agent", agent_config(web, central.port), agent=True)

        wait_for(lambda: instances(central.query('linkwatch_engine_up{job="linkwatch"} == 1')) == ROUTERS, 40,
                 f"linkwatch_engine_up 1 from {ROUTERS}")
        assert instances(central.query('up{job="linkwatch"} == 1')) == ROUTERS, "the agent sends up as well"
        assert not central.query('linkwatch_engine_up{router!=""}'), "the router label became the instance"

        def alerts(name: str, state: str) -> set[tuple]:
            return {(a["metric"]["instance"], a["metric"].get("uplink"), a["metric"].get("interface"))
                    for a in central.query(f'ALERTS{{alertname="{name}",alertstate="{state}"}}')}

        wait_for(lambda: alerts("LinkwatchUplinkDown", "pending") == {(r, "lte", "up2") for r in ROUTERS}, 20,
                 "LinkwatchUplinkDown pending for lte on every router")
        wait_for(lambda: alerts("LinkwatchQuotaWarning", "firing") == {(r, "fibre", "up1") for r in ROUTERS}, 20,
                 "LinkwatchQuotaWarning for fibre on every router")
        assert not central.query('ALERTS{alertname=~"LinkwatchAllUplinksDown|LinkwatchEngineDown|'
                                 'LinkwatchTargetDown|LinkwatchQuotaReached|LinkwatchUplinkDampened"}')

        board = json.loads(DASHBOARD.read_text())
        every = "|".join(sorted(ROUTERS))  # Grafana's value for "All" of a multi-value variable

        def fill(expr: str) -> str:
            return expr.replace("$instance", every).replace("$uplink", "fibre|lte").replace("$__rate_interval", "1m")

        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["instance"]["query"] == "label_values(linkwatch_engine_up, instance)"
        assert set(central.api("label/instance/values", **{"match[]": "linkwatch_engine_up"})) == ROUTERS
        assert variables["uplink"]["query"] == 'label_values(linkwatch_uplink_up{instance=~"$instance"}, uplink)'
        assert set(central.api("label/uplink/values", **{"match[]": fill('linkwatch_uplink_up{instance=~"$instance"}')})) \
            == {"fibre", "lte"}
        for panel in board["panels"]:
            for target in panel.get("targets", ()):
                expr = fill(target["expr"])  # increase() needs two samples of each router: wait
                wait_for(lambda: instances(central.query(expr)) == ROUTERS, 15,
                         f"panel {panel['title']!r}: data from every router for {target['expr']}")
            if panel["title"] == "State":
                names = {int(k): v["text"] for m in panel["fieldConfig"]["defaults"]["mappings"]
                         for k, v in m["options"].items()}
                shown = {(r["metric"]["instance"], r["metric"]["uplink"]): names[int(float(r["value"][1]))]
                         for r in central.query(fill(panel["targets"][0]["expr"]))}
                assert shown == {(r, u): s for r in ROUTERS for u, s in (("fibre", "UP"), ("lte", "DOWN"))}

        stop_engine()  # the web UI answers on: linkwatch_engine_up 0
        wait_for(lambda: alerts("LinkwatchEngineDown", "pending") == {(r, None, None) for r in ROUTERS}, 20,
                 "LinkwatchEngineDown pending on every router")
        stop(web_ui)  # nothing answers: up 0 (from the agent too)
        wait_for(lambda: alerts("LinkwatchTargetDown", "pending") == {(r, None, None) for r in ROUTERS}, 20,
                 "LinkwatchTargetDown pending on every router")
    finally:
        for p in (agent, central):
            if p:
                p.stop()
        stop(web_ui)
        web_log.close()
