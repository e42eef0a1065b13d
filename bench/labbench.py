"""Helpers every lab benchmark uses: progress lines, the engine's status, bounded waits, faults."""

from __future__ import annotations

import sys
import time

from linkwatch.lab import faults, topology
from linkwatch.lab.plan import LabSpec


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def status(spec: LabSpec) -> dict:
    st, err = topology.engine_status(spec, timeout=2.0)
    if st is None:
        raise RuntimeError(f"engine does not answer: {err}")
    return st.to_dict()


def wait_for(pred, timeout: float, what: str, step: float = 0.02) -> float:
    """Seconds until ``pred()`` holds; RuntimeError after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def settled(spec: LabSpec) -> bool:
    """wan1 carries the traffic and every uplink is UP."""
    st = status(spec)
    return st["active"] == ["wan1"] and all(u["state"] == "UP" for u in st["uplinks"])


def fault(spec: LabSpec, uplink: str, *words: str) -> None:
    faults.apply_fault(spec.name, uplink, faults.parse_fault(list(words)))
