"""Helpers shared by the tests that run the engine in a lab: its status, and bounded waiting."""

from __future__ import annotations

import time

from linkwatch.lab import topology
from linkwatch.lab.plan import LabSpec


def status(spec: LabSpec) -> dict:
    """The lab engine's status as JSON, the form outside tools read (``status --json``); fails the
    test when the engine does not answer."""
    st, err = topology.engine_status(spec, timeout=2.0)
    assert st is not None, err
    return st.to_dict()


def wait_for(pred, timeout: float, what: str, step: float = 0.05):
    """Poll ``pred`` until it returns something true (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
