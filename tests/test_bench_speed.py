"""``ocsdf bench speed`` on a tiny budget: the table's shape and the facts it must show."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys

import pytest
import torch

from ocsdf.bench import speed

TINY = dict(n_steps=2, n_rows=20_000, width=32, depth=2, ortho_size=64, ortho_repeats=2,
            threads=1, deploy_dims=(), default_fit=False)
HAS_TORCHLIP = importlib.util.find_spec("deel") is not None and (
    importlib.util.find_spec("deel.torchlip") is not None
)


def _by(rows: list[dict], measurement: str) -> list[dict]:
    return [r for r in rows if r["measurement"].startswith(measurement)]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return speed.speed_benchmark(**TINY, include_torchlip=HAS_TORCHLIP)


def test_rows_have_the_table_columns(rows):
    keys = {"measurement", "variant", "value", "unit", "ratio_vs_reference", "note"}
    assert all(set(r) == keys for r in rows)
    assert rows[0]["measurement"] == "torch threads" and rows[0]["value"] == 1


def test_timings_positive_and_finite(rows):
    timed = [r for r in rows if r["unit"] in ("ms/step", "ms", "rows/s")]
    expected = (2 if HAS_TORCHLIP else 1) + 3 + 2
    assert len(timed) == expected
    for r in timed:
        assert r["value"] is not None and math.isfinite(r["value"]) and r["value"] > 0, r
        assert r["ratio_vs_reference"] is not None and r["ratio_vs_reference"] > 0, r


def test_export_scores_like_the_parametrised_network(rows):
    (diff,) = _by(rows, "max abs score difference")
    assert 0 <= diff["value"] < 1e-5


def test_cayley_is_orthogonal_and_bjorck_is_not(rows):
    for which in ("largest", "smallest"):
        sv = {r["variant"]: r["value"] for r in _by(rows, f"{which} singular value (")}
        assert abs(sv["Cayley (cayley_orthogonal)"] - 1) < 1e-4
        assert abs(sv["matrix_exp of skew"] - 1) < 1e-4
    smallest = {r["variant"]: r["value"] for r in _by(rows, "smallest singular value (")}
    assert smallest["Björck, 15 iterations"] < 0.5  # far from orthogonal from a random start


def test_trained_model_bounds(rows):
    ours = _by(rows, "Lipschitz bound after training")[0]
    assert ours["variant"].startswith("ours") and abs(ours["value"] - 1) < 1e-4
    if HAS_TORCHLIP:
        tl = _by(rows, "Lipschitz bound after training")[1]
        assert tl["variant"].startswith("deel-torchlip") and math.isfinite(tl["value"])


def test_missing_torchlip_gives_a_not_installed_row(monkeypatch):
    # A None entry in sys.modules makes ``from deel import torchlip`` raise ImportError.
    monkeypatch.setitem(sys.modules, "deel.torchlip", None)
    monkeypatch.setitem(sys.modules, "deel", None)
    out = speed.speed_benchmark(n_steps=1, n_rows=1000, width=8, depth=1, ortho_size=8,
                                ortho_repeats=1, threads=1, include_torchlip=True,
                                default_fit=False)
    (row,) = [r for r in _by(out, "training step") if r["variant"] == "deel-torchlip"]
    assert row["value"] is None and "not installed" in row["note"]


def test_cli_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "speed_benchmark",
                        lambda **kw: [speed._row("x", "y", 1.0, "ms", 1.0, "z")])
    parser = argparse.ArgumentParser()
    speed.register(parser.add_subparsers())
    before = torch.get_num_threads()
    args = parser.parse_args(["speed", "--steps", "3", "--threads", "1", "--out-dir",
                              str(tmp_path)])
    assert args.func(args) == 0
    assert torch.get_num_threads() == before
    data = json.loads((tmp_path / "speed.json").read_text())
    assert data["command"] == "ocsdf bench speed --steps 3 --threads 1"
    assert data["machine"]["torch_threads"] == "1"
    assert (tmp_path / "speed.md").exists() and (tmp_path / "speed.csv").exists()


def test_deployment_rows_compare_with_isolation_forest():
    from ocsdf.bench.speed import _deployed_rows

    rows = _deployed_rows(5_000, (3,), seed=0)
    variants = [r["variant"] for r in rows]
    assert variants[0].endswith("decision_function") and rows[0]["ratio_vs_reference"] == 1.0
    assert "OCSDF.score_samples (float64)" in variants
    ours = rows[variants.index("OCSDF.score_samples (float64)")]
    assert ours["value"] > 0 and ours["ratio_vs_reference"] > 0
    for path in ("parametrised LipschitzMLP.forward (float32)",
                 "exported plain network (float32)"):  # the three scoring paths of issue 11
        row = rows[variants.index(path)]
        assert row["value"] > 0 and row["unit"] == "rows/s"
        assert row["ratio_vs_reference"] == pytest.approx(row["value"] / rows[0]["value"])


def test_gpu_rows_say_plainly_when_there_is_no_gpu(rows):
    import torch

    gpu = _by(rows, "training step on GPU") + _by(rows, "training step, ")
    if torch.cuda.is_available():
        assert all(r["value"] > 0 for r in gpu) and len(gpu) == 4
    else:
        assert len(gpu) == 1 and gpu[0]["value"] is None
        assert "torch.cuda.is_available() is False" in gpu[0]["note"]


def test_groupsort_rows_compare_the_same_function(rows):
    """Both GroupSort2 implementations give the same output (checked in the note) and the
    reference (max/min, what the network uses) has ratio 1."""
    gs = [r for r in rows if r["measurement"].startswith("GroupSort2 forward + backward")]
    assert len(gs) == 4
    for r in gs:
        assert r["note"].endswith("same output: True") and r["value"] > 0
    assert [r["ratio_vs_reference"] for r in gs[::2]] == [1.0, 1.0]


def test_default_fit_without_adbench_says_so(tmp_path):
    (row,) = speed._default_fit_rows(data_dir=tmp_path)
    assert row["variant"] == "not run" and "cardio not found" in row["note"]
    assert row["value"] is None


@pytest.mark.slow
def test_default_fit_rows_compare_with_isolation_forest():
    from ocsdf.data import find_data_dir

    if find_data_dir() is None:
        pytest.skip("ADBench data not found (../shared/data or OCSDF_DATA_DIR)")
    rows = speed._default_fit_rows(seeds=(0,))
    assert [r["variant"] for r in rows][0] == "scikit-learn IsolationForest"
    # IF, the default, the autograd step (batch 96 and 128), the four previous defaults
    # (batch 128; T = 4; 128 x 3 with T = 4) and the fast one
    assert rows[0]["ratio_vs_reference"] == 1.0 and len(rows) == 8
    assert rows[1]["variant"].startswith("OCSDF() (default") and "fast" in rows[-1]["variant"]
    for r in rows:
        assert r["value"] > 0 and "AUROC per seed 0." in r["note"]
