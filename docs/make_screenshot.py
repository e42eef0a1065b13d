"""Make docs/dashboard.png: the dashboard of a lab whose active uplink was just blackholed.

    sudo .venv/bin/python docs/make_screenshot.py [--out docs/dashboard.png] [--warmup 90]

Builds lab "shot" (namespaces lw-shot-*) with the web UI on the router's LAN address, lets the
history collect samples for ``--warmup`` seconds (a row every 10 s in the lab), blackholes wan1,
waits for the failover and the timeline, takes the screenshot with headless Chromium running in
the lab's client namespace (so the browser's packets stay in the lab), and tears the lab down.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from linkwatch.lab import faults, topology  # noqa: E402
from linkwatch.lab.plan import LAN_ROUTER, LabSpec  # noqa: E402
from linkwatch.lab.processes import child_env, netns_exec  # noqa: E402
from linkwatch.lab.topology import EngineOptions  # noqa: E402

LAB = "shot"
LISTEN = f"{LAN_ROUTER}:8080"


def inner(url: str, out: str) -> int:
    """In the client namespace: open the page, wait for the failover to show, screenshot."""
    from linkwatch.lab.safety import require_lab_namespace

    require_lab_namespace(allowed=(f"lw-{LAB}-client",))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,1400", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = driver.execute_script(
                "return Array.from(document.querySelectorAll('#timeline li .what')).map(e => e.textContent)"
                ".some(t => t.startsWith('wan1: ') && t.includes('DOWN'));")
            if shown:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        driver.save_screenshot(out)
    finally:
        driver.quit()
    return 0


def outer(out: str, warmup: float) -> int:
    spec = LabSpec(LAB, 2)
    try:
        topology.up(spec, options=EngineOptions(web=LISTEN, overrides={"policy": {"failback_hold": "10s"}}))
        print(f"lab up; collecting {warmup:g}s of history ...", flush=True)
        time.sleep(warmup)
        print(faults.apply_fault(LAB, "wan1", faults.Fault("blackhole")), flush=True)
        time.sleep(8)
        env = child_env()
        env["SE_OFFLINE"] = "true"
        done = subprocess.run(netns_exec(spec.client_ns, [
            sys.executable, os.path.abspath(__file__), "--inner", "--url", f"http://{LISTEN}/", "--out", out]),
            env=env, timeout=120)
        print(f"wrote {out}" if done.returncode == 0 else "screenshot failed", flush=True)
        return done.returncode
    finally:
        topology.down(LAB)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "dashboard.png"))
    ap.add_argument("--warmup", type=float, default=90.0, help="seconds of history before the fault")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        return inner(args.url, args.out)
    if os.geteuid() != 0:
        print("make_screenshot: needs root (it builds a lab)", file=sys.stderr)
        return 2
    return outer(os.path.abspath(args.out), min(max(args.warmup, 0.0), 900.0))


if __name__ == "__main__":
    sys.exit(main())
