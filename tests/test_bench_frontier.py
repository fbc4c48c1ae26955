"""``ocsdf bench frontier`` on a tiny budget: every method at every size, through the CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ocsdf.bench import frontier
from ocsdf.cli import main

TINY = ["--sizes", "200,400", "--score-rows", "2000", "--steps", "10", "--budget", "2"]
METHODS = {"OCSDF", "exact 1-NN (kd_tree)", "1-NN search only (kd_tree)", "exact 1-NN (brute)",
           "IsolationForest"}


def _run(tmp_path, dataset: str) -> tuple[dict, str]:
    rc = main(["bench", "frontier", "--dataset", dataset, *TINY, "--out-dir", str(tmp_path)])
    assert rc == 0
    name = "frontier" if dataset == "http" else f"frontier_{dataset}"
    for ext in ("md", "csv", "json", "png"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0, ext
    data = json.loads((tmp_path / f"{name}.json").read_text())
    return data, (tmp_path / f"{name}.md").read_text()


def _check_table(data: dict, md: str) -> None:
    rows = data["rows"]
    assert {(r["n_train"], r["method"]) for r in rows} == {
        (n, m) for n in (200, 400) for m in METHODS}
    for r in rows:
        assert r["rows_per_s"] > 0 and r["model_bytes"] > 0 and r["fit_s"] >= 0, r
        assert 0.0 <= r["auroc"] <= 1.0, r
    ours = [r for r in rows if r["method"] == "OCSDF"]
    sizes = [r["model_bytes"] for r in ours]  # the same network whatever n_train (metadata
    assert max(sizes) < 1.01 * min(sizes)       # such as the means' digits aside)
    assert "onnxruntime" in ours[0]["note"] or "torch" in ours[0]["note"]  # path stated
    assert data["command"].startswith("ocsdf bench frontier")
    assert "--steps 10" in data["command"] and "OCSDF scores faster than" in md


def test_tiny_run_on_a_toy_set_writes_every_method_and_size(tmp_path):
    """Always runs: the 2-D moons set ships with the package (no benchmark data needed)."""
    data, md = _run(tmp_path, "moons")
    _check_table(data, md)
    assert "toy set `moons`" in md


def test_tiny_run_on_http_writes_the_default_table(tmp_path):
    from ocsdf.data import adbench_path

    try:
        adbench_path("http")
    except FileNotFoundError as err:
        pytest.skip(f"ADBench http not available ({err}); the toy test covers the study")
    data, md = _run(tmp_path, "http")
    _check_table(data, md)
    assert "ADBench `http` (3 features)" in md


def test_training_rows_subsample_or_resample_with_jitter():
    pool = np.random.default_rng(0).normal(size=(50, 3)) * [1.0, 10.0, 0.1]
    sub, copies = frontier.training_rows(pool, 20, seed=0)
    assert copies == 0 and len(np.unique(sub, axis=0)) == 20
    assert all(any(np.array_equal(row, p) for p in pool) for row in sub)
    big, copies = frontier.training_rows(pool, 120, seed=0)
    assert copies == 70 and big.shape == (120, 3)
    np.testing.assert_array_equal(big[:50], pool)  # every pool row once, unchanged
    jitter = big[50:] - pool[np.argmin(((big[50:, None] - pool) ** 2).sum(-1), axis=1)]
    assert np.all(jitter != 0)  # no exact duplicates
    assert np.all(np.abs(jitter) < 6 * frontier.JITTER * pool.std(axis=0))  # small, per feature


def test_crossover_is_interpolated_in_log_log():
    assert frontier.crossover([1e3, 1e4], [10.0, 10.0], [5.0, 1.0]) == ("before", 1e3)
    kind, at = frontier.crossover([1e3, 1e4, 1e5], [10.0, 10.0, 10.0], [100.0, 10.0, 1.0])
    assert kind == "at" and at == pytest.approx(1e4)
    kind, at = frontier.crossover([1e2, 1e4], [1.0, 1.0], [10.0, 0.1])
    assert kind == "at" and at == pytest.approx(1e3)
    assert frontier.crossover([1e3, 1e4], [1.0, 1.0], [5.0, 2.0]) == ("never", None)


def test_a_slow_scorer_is_timed_on_fewer_rows_and_extrapolated():
    def slow(X):  # 0.1 ms per row
        time.sleep(1e-4 * len(X))
        return np.zeros(len(X))

    rate, timed_rows = frontier.throughput(slow, np.zeros((100_000, 2)), budget_s=0.05)
    assert timed_rows < 1000  # 0.05 s / 5 calls at 0.1 ms per row: the 256-row minimum
    assert 2_000 < rate < 10_000  # about 1e4 rows/s, less the overhead of each call


def test_pickled_bytes_counts_large_buffers():
    """Protocol 5 hands large arrays to ``write`` as ``PickleBuffer`` objects."""
    n = frontier._pickled_bytes(np.zeros(1_000_000))
    assert 8_000_000 <= n < 8_001_000
