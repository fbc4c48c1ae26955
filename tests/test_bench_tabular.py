"""``ocsdf bench tabular``: a tiny run of the study on one small ADBench set, and its helpers."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

pytest.importorskip("pyod", reason="PyOD not installed (pip install pyod)")

from ocsdf.bench import tabular  # noqa: E402
from ocsdf.data import load_adbench  # noqa: E402

TINY = {"width": 16, "depth": 1}


@pytest.fixture(scope="module")
def wine():
    try:
        return load_adbench("wine")
    except FileNotFoundError as err:
        pytest.skip(f"ADBench data not available ({err}); set OCSDF_DATA_DIR")


@pytest.fixture(scope="module")
def study(wine):
    rows, summary = tabular.tabular_benchmark(
        ["wine"], protocol="both", seeds=1, margins=["auto"], n_steps=100,
        baselines=["IForest", "ECOD"], ocsdf_params=TINY)
    return rows, summary


def test_rows(study, wine):
    rows, _ = study
    X, y = wine
    assert {(r["protocol"], r["method"]) for r in rows} == {
        (p, m) for p in ("ad", "oc") for m in ("OCSDF m=auto", "IForest", "ECOD")}
    for r in rows:
        assert 0.0 <= r["auroc"] <= 1.0, r
        assert r["fit_s"] > 0 and r["score_s"] > 0, r
        assert r["error"] == ""
        assert r["n_features"] == X.shape[1]
        if r["protocol"] == "ad":
            assert r["n_train"] == r["n_test"] == len(y)
        else:
            n_normal = int((y == 0).sum())
            assert r["n_train"] == n_normal // 2
            assert r["n_test"] == n_normal - n_normal // 2 + int(y.sum())
    auto = [r for r in rows if r["method"] == "OCSDF m=auto"]
    assert all(0.005 <= r["margin_"] <= 1.0 for r in auto)


def test_summary_tables(study):
    _, summary = study
    assert summary["wall_s"] > 0 and summary["seeds"] == [0]
    for p in ("ad", "oc"):
        res = summary[p]
        table = res["table"]
        data_rows = [t for t in table if t["dataset"] == "wine"]
        assert len(data_rows) == 1
        row = data_rows[0]
        for col in (tabular.AUTO, "IForest", "ECOD"):  # one seed: the mean alone, in %
            assert 0 <= float(row[col]) <= 100
        for col in ("fit s ours", "score s ours", "fit s IForest"):
            assert float(row[col]) > 0, col
        rank_rows = [t for t in table if "average rank" in t["dataset"]]
        assert rank_rows and all("IForest" in t for t in rank_rows)
        # no fixed margin was run: the "auto" pool ranks 3 methods, the best-m pool 2
        assert set(res["avg_rank_auto"]) == {tabular.AUTO, "IForest", "ECOD"}
        assert sorted(res["avg_rank_auto"].values()) == [1.0, 2.0, 3.0]
        assert all(0 <= v <= 1 for v in res["mean_auroc"].values())
    assert "paper OCSDF" in summary["ad"]["table"][0]
    assert summary["ad"]["table"][0]["paper OCSDF"].startswith("81.5")
    assert "paper OCSDF" not in summary["oc"]["table"][0]


def test_cli_run_writes_tables(wine, tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    tabular.register(parser.add_subparsers())
    args = parser.parse_args(["tabular", "--datasets", "wine", "--protocol", "oc", "--seeds",
                              "1", "--margins", "0.05", "--steps", "20", "--baselines",
                              "ECOD", "--out-dir", str(tmp_path), "--quiet"])
    assert args.func is tabular.run
    assert args.max_rows == tabular.DEFAULT_MAX_ROWS and args.threads == 1
    assert args.func(args) == 0
    for ext in ("md", "csv", "json"):
        assert (tmp_path / f"tabular_oc.{ext}").is_file()
    assert not (tmp_path / "tabular_ad.md").exists()
    md = (tmp_path / "tabular_oc.md").read_text()
    assert "ocsdf bench tabular --protocol oc --seeds 1 --margins 0.05" in md
    assert "average rank" in md


def test_split_and_subsample():
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    tr, te = tabular.split_indices(y, "oc", seed=0)
    assert len(tr) == 45 and not y[tr].any()
    assert len(np.intersect1d(tr, te)) == 0 and len(te) == 55 and y[te].sum() == 10
    tr2, _ = tabular.split_indices(y, "oc", seed=0)
    np.testing.assert_array_equal(tr, tr2)
    keep = tabular.subsample_indices(y, 50, seed=1)
    assert len(keep) == 50 and y[keep].sum() == 10  # at least min(10, #anomalies) kept
    np.testing.assert_array_equal(tabular.subsample_indices(y, None, 0), np.arange(100))
    with pytest.raises(ValueError):
        tabular.split_indices(y, "xx", 0)


def test_paper_table_and_baselines():
    paper = tabular.paper_table2()
    assert paper.loc["cardio", "ocsdf_auroc"] == pytest.approx(95.0)
    assert "speech" not in paper.index and len(paper) == 19
    for name in tabular.DEFAULT_BASELINES:
        assert hasattr(tabular.make_baseline(name, 3, 0), "decision_function")
    with pytest.raises(ValueError):
        tabular.make_baseline("nope", 3, 0)
