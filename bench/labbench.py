"""Helpers every lab benchmark uses: progress lines, the engine's status, bounded waits, faults,
and the raw figures saved next to the printed table."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from linkwatch.lab import faults, topology
from linkwatch.lab.plan import LabSpec


RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def report(results: dict, table: str, prefix: str = "") -> Path:
    """Write ``results`` to bench/results/<prefix><time>.json, print ``table`` and where the raw
    figures went; returns the file's path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / time.strftime(f"{prefix}%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=2))
    print(table)
    print(f"\nraw figures: {path.relative_to(RESULTS.parent.parent)}")
    return path


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
