"""benchmarks/bench_grid.py: what its results files record (no timing asserted)."""

from __future__ import annotations

import pytest

from mobilenets import bench
from tests.conftest import load_script


def _module():
    return load_script("benchmarks/bench_grid.py")


def test_each_ours_vs_timm_pair_names_the_commit_and_time_it_was_measured_at(monkeypatch):
    """`--rerun` replaces some pairs of ours-vs-timm-*.json and keeps the file's env, the first run's: a pair
    re-measured at another commit must say so itself."""
    grid = _module()
    tiny = bench.build("0.25-64")
    monkeypatch.setattr(bench, "build", lambda name: tiny)  # ours and the peer: both a tiny model, any input size
    monkeypatch.setattr(bench, "matmul_gflops", lambda *a, **k: 1.0)
    monkeypatch.setattr(bench, "git_commit", lambda: "abc1234")
    pair = grid.alternate_pair("torch", 1, rounds=1)
    assert pair["commit"] == "abc1234" and pair["runs_each"] == 5
    assert pytest.approx(pair["timm_over_ours"]) == pair["timm_ms"] / pair["ours_ms"]
    assert bench.time.strptime(pair["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
