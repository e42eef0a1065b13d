"""Drives headless Debian Chromium (through chromedriver and Selenium) against the lab's web UI.

Run by tests/integration/test_browser.py inside the lab's CLIENT namespace, so every packet the
browser sends (including anything Chromium sends on its own) stays inside the lab: the web UI
listens on the lab router's LAN address. It refuses to run anywhere else.

Steps (each prints one JSON line; the test asserts on them):
  1. open the dashboard: both uplinks UP, one marked ACTIVE, without logging in (public_read)
  2. screenshot
  3. blackhole the active uplink: the page shows it leave UP and the ACTIVE marker move, with no
     reload (a marker set on the window object survives)
  4. clear the fault; log in through the page; click "Force" on the standby uplink: the marker
     moves; click "Automatic choice": it moves back
  5. a phone-sized window: nothing sticks out sideways and the cards stack
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from linkwatch.lab import faults
from linkwatch.lab.safety import require_lab_namespace

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def emit(step: str, **data) -> None:
    print(json.dumps({"step": step, **data}), flush=True)


def cards(driver) -> dict[str, dict]:
    """What the page shows now: per uplink its state text and whether it is marked ACTIVE."""
    return driver.execute_script("""
        const out = {};
        document.querySelectorAll('#cards .card').forEach((c) => {
          out[c.dataset.uplink] = {
            state: c.querySelector('.state').textContent.trim(),
            active: c.querySelector('.active-marker').dataset.active === 'true',
            marker: c.querySelector('.active-marker').textContent.trim(),
          };
        });
        return out;""")


def click(driver, by, selector: str, tries: int = 5) -> None:
    """Find and click, again if the dashboard re-rendered the element in between (it redraws the
    cards on every update: an element found a moment ago may be gone)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for attempt in range(tries):
        try:
            driver.find_element(by, selector).click()
            return
        except StaleElementReferenceException:
            if attempt == tries - 1:
                raise
            time.sleep(0.05)


def wait_for(driver, cond, timeout: float, what: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    seen = {}
    while time.monotonic() - t0 < timeout:
        seen = cards(driver)
        if cond(seen):
            return seen, time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not seen within {timeout:g}s; the page shows {seen}")


def wait_timeline(driver, cond, timeout: float, what: str) -> tuple[list[str], float]:
    t0 = time.monotonic()
    items: list[str] = []
    while time.monotonic() - t0 < timeout:
        items = driver.execute_script(
            "return Array.from(document.querySelectorAll('#timeline li .what')).map(e => e.textContent);")
        if cond(items):
            return items, time.monotonic() - t0
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not seen within {timeout:g}s; the timeline shows {items[:5]}")


def active_of(seen: dict) -> list[str]:
    return sorted(n for n, c in seen.items() if c["active"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lab", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--screenshot", required=True)
    args = ap.parse_args()
    require_lab_namespace(allowed=(f"lw-{args.lab}-client",))

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,1250", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        driver.get(args.url)
        seen, took = wait_for(driver, lambda s: len(s) == 2 and all(c["state"] == "UP" for c in s.values())
                              and len(active_of(s)) == 1, 30, "both uplinks UP, one active")
        emit("both_up", cards=seen, seconds=round(took, 2))
        driver.execute_script("window.__sameDocument = 'yes';")
        time.sleep(1.5)  # let one graph refresh draw, for the screenshot
        driver.save_screenshot(args.screenshot)
        emit("screenshot", path=args.screenshot)

        primary = active_of(seen)[0]
        other = next(n for n in seen if n != primary)
        emit("fault", detail=faults.apply_fault(args.lab, primary, faults.Fault("blackhole")))
        seen, took = wait_for(driver, lambda s: s[primary]["state"] != "UP" and active_of(s) == [other], 15,
                              f"{primary} leaving UP and the ACTIVE marker moving to {other}")
        same = driver.execute_script("return window.__sameDocument || null;")
        emit("failover_seen", cards=seen, seconds=round(took, 2), same_document=same == "yes")
        timeline, took = wait_timeline(driver, lambda items: any(
            i.startswith(f"{primary}: ") and "DOWN" in i for i in items), 10, f"{primary} DOWN in the timeline")
        emit("timeline", items=timeline[:10], seconds=round(took, 2))
        faults.apply_fault(args.lab, primary, faults.Fault("clear"))
        seen, took = wait_for(driver, lambda s: active_of(s) == [primary], 40, f"failback to {primary}")
        emit("failback_seen", cards=seen, seconds=round(took, 2))

        driver.find_element(By.ID, "login-link").click()
        driver.find_element(By.ID, "password").send_keys(args.password)
        driver.find_element(By.ID, "login-button").click()
        wait_for(driver, lambda s: len(s) == 2, 10, "the dashboard after login")
        emit("logged_in", has_logout=bool(driver.find_elements(By.ID, "logout")))
        click(driver, By.CSS_SELECTOR, f'.card[data-uplink="{other}"] button[data-action="force"]')
        seen, took = wait_for(driver, lambda s: active_of(s) == [other], 10, f"force {other}")
        message = driver.find_element(By.ID, "message").text
        emit("forced", cards=seen, seconds=round(took, 2), message=message)
        wait_for(driver, lambda s: driver.execute_script("return !document.getElementById('auto').disabled;"), 5,
                 "the Automatic choice button enabled")
        click(driver, By.ID, "auto")
        seen, took = wait_for(driver, lambda s: active_of(s) == [primary], 10, "automatic choice again")
        emit("auto", cards=seen, seconds=round(took, 2))

        # a phone: 390 px wide; nothing may stick out sideways, the cards stack
        driver.set_window_size(390, 844)
        driver.refresh()
        wait_for(driver, lambda s: len(s) == 2, 10, "the dashboard on a phone")
        layout = driver.execute_script("""
            const cards = Array.from(document.querySelectorAll('#cards .card')).map(c => c.getBoundingClientRect());
            return {viewport: document.documentElement.clientWidth,
                    page: document.documentElement.scrollWidth,
                    stacked: cards.length === 2 && cards[1].top >= cards[0].bottom,
                    widest: Math.max(...cards.map(r => r.right))};""")
        driver.save_screenshot(args.screenshot.replace(".png", "-phone.png"))
        emit("phone", **layout)
        return 0
    except Exception as e:  # one JSON line the test can show, then a non-zero exit
        emit("error", error=f"{type(e).__name__}: {e}")
        try:
            driver.save_screenshot(args.screenshot + ".error.png")
        except Exception:
            pass
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
