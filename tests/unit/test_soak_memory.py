"""bench/soak.py's RSS check (issue 14): a leak fails it, a process's warm-up does not hide one."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import soak  # noqa: E402


def judge(samples: dict[str, list[tuple[float, int, int]]]) -> tuple[dict, list[str]]:
    s = soak.Soak.__new__(soak.Soak)  # only what memory() reads
    s.mem = {role: {100 + i: rows} for i, (role, rows) in enumerate(samples.items())}
    s.violations = []
    return s.memory(), s.violations


def life(minutes: float, rss_kb_at) -> list[tuple[float, int, int]]:
    """A sample every 2 s, as the soak's sampler takes them: (t, RSS kB, fds)."""
    return [(t, int(rss_kb_at(t)), 20) for t in (2.0 * i for i in range(int(minutes * 30) + 1))]


def test_a_warm_up_that_levels_off_passes_and_both_figures_are_reported():
    # +4 MB in the first two minutes, then +1 MB over the rest of 30 minutes
    warm = life(30, lambda t: 60_000 + min(t, 120) * 34 + max(0, t - 120) * 0.6)
    out, violations = judge({"engine": warm})
    assert violations == []
    row = out["engine"][0]
    assert row["warm_up_s"] == soak.WARM_UP_S
    assert row["rss_start_kb"] - 60_000 < 1100  # at 30 s
    assert row["rss_end_kb"] - row["rss_start_kb"] > 4000  # the strict figure is kept in the report


def test_a_leak_fails_whatever_the_warm_up():
    leak = life(30, lambda t: 60_000 + t * 4)  # 0.24 MB a minute: 6 MB in 25 minutes
    _, violations = judge({"web": leak})
    assert len(violations) == 1 and violations[0].startswith("web RSS grew 5.") and "from 300 s" in violations[0]


def test_a_short_life_is_judged_from_30_s():
    short = life(3, lambda t: 60_000 + t * 40)  # 5.3 MB from 30 s to 3 minutes
    out, violations = judge({"engine": short})
    assert out["engine"][0]["warm_up_s"] == 30
    assert violations and "from 30 s" in violations[0]
