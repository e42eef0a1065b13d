"""bench/soak.py's RSS check (issue 14): growth from 30 s to the end is judged, the slope once
warm is reported beside it, and several lives of one role (kill -9) are told apart."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import soak  # noqa: E402


def judge(lives: dict[str, list[list[tuple[float, int, int]]]]) -> tuple[dict, list[str]]:
    s = soak.Soak.__new__(soak.Soak)  # only what memory() reads
    s.mem = {role: {100 + i: rows for i, rows in enumerate(pids)} for role, pids in lives.items()}
    s.violations = []
    return s.memory(), s.violations


def life(minutes: float, rss_kb_at, start: float = 0.0) -> list[tuple[float, int, int]]:
    """A sample every 2 s, as the soak's sampler takes them: (t, RSS kB, fds)."""
    return [(start + t, int(rss_kb_at(t)), 20) for t in (2.0 * i for i in range(int(minutes * 30) + 1))]


def test_a_steady_leak_over_5_mb_fails_and_its_slope_shows_it():
    leak = life(30, lambda t: 60_000 + t * 3)  # 3 kB/s: 5.2 MB from 30 s to the end
    out, violations = judge({"engine": [leak]})
    assert len(violations) == 1 and violations[0].startswith("engine RSS grew 5.2 MB"), violations
    assert abs(out["engine"][0]["steady_kb_per_h"] - 3 * 3600) < 100


def test_a_warm_up_that_levels_off_passes_with_a_flat_slope():
    # +3 MB in the first two minutes, then +1 MB over the rest of 30 minutes
    warm = life(30, lambda t: 60_000 + min(t, 120) * 25 + max(0, t - 120) * 0.6)
    out, violations = judge({"web": [warm]})
    assert violations == []
    assert out["web"][0]["steady_kb_per_h"] < 0.6 * 3600 + 50


def test_a_spike_does_not_make_a_slope():
    spiky = life(30, lambda t: 60_000 + (3000 if 596 <= t <= 606 or 1500 <= t <= 1510 else 0))
    out, violations = judge({"web": [spiky]})
    assert violations == [] and out["web"][0]["steady_kb_per_h"] == 0


def test_the_longest_life_of_a_role_is_judged_and_a_short_one_has_no_slope():
    killed = life(3, lambda t: 60_000 + t * 100)  # 17.5 MB in 3 minutes, then kill -9
    restarted = life(27, lambda t: 60_000, start=190)
    out, violations = judge({"engine": [killed, restarted]})
    assert violations == []  # the restarted engine, flat, is the one judged
    by_pid = {row["pid"]: row for row in out["engine"]}
    assert by_pid[100]["steady_kb_per_h"] is None and by_pid[101]["steady_kb_per_h"] == 0
