"""``ocsdf bench tabular``: a tiny run of the study on one small ADBench set, and its helpers."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("pyod", reason="PyOD not installed (pip install pyod)")

from ocsdf.bench import harness, tabular  # noqa: E402
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
    assert "average rank" in md and "Partial results" not in md
    assert "batched" in md
    runs = pd.read_csv(tmp_path / "tabular_oc_runs.csv")
    assert set(runs["method"]) == {"OCSDF m=0.05", "ECOD"} and (runs["dataset"] == "wine").all()


def test_batched_fits_match_separate_fits(wine):
    """The batched study gives the separate fits' AUROC per seed (same random draws per model,
    rounding differences only) and the same margins."""
    kw = dict(protocol="ad", seeds=2, margins=["auto", 0.05], n_steps=60, baselines=[],
              ocsdf_params=TINY)
    rows_b, summary_b = tabular.tabular_benchmark(["wine"], batched=True, **kw)
    rows_s, summary_s = tabular.tabular_benchmark(["wine"], batched=False, **kw)
    assert summary_b["batched"] and not summary_s["batched"]
    assert [r["method"] for r in rows_b] == [r["method"] for r in rows_s]
    for rb, rs in zip(rows_b, rows_s):
        assert rb["margin_"] == rs["margin_"]
        ab = np.array(rb["auroc_seeds"].split(), float)
        as_ = np.array(rs["auroc_seeds"].split(), float)
        assert len(ab) == 2 and np.abs(ab - as_).max() <= 0.01, (rb, rs)
        assert rb["fit_s"] > 0


def test_interrupted_run_keeps_finished_data_sets(wine, tmp_path, monkeypatch):
    """Tables are rewritten after each data set: a failure on the second one leaves the first."""
    real = tabular.load_adbench

    def load(name, data_dir=None):
        if name == "glass":
            raise KeyboardInterrupt
        return real(name, data_dir)

    monkeypatch.setattr(tabular, "load_adbench", load)
    parser = argparse.ArgumentParser()
    tabular.register(parser.add_subparsers())
    args = parser.parse_args(["tabular", "--datasets", "wine,glass", "--protocol", "ad",
                              "--seeds", "1", "--margins", "0.05", "--steps", "20",
                              "--baselines", "ECOD", "--out-dir", str(tmp_path), "--quiet"])
    with pytest.raises(KeyboardInterrupt):
        args.func(args)
    md = (tmp_path / "tabular_ad.md").read_text()
    assert "Partial results: 1 of 2 data sets done" in md and "| wine" in md
    runs = pd.read_csv(tmp_path / "tabular_ad_runs.csv")
    assert set(runs["dataset"]) == {"wine"} and len(runs) == 2


def test_on_dataset_sees_the_rows_so_far(wine):
    seen = []
    tabular.tabular_benchmark(
        ["wine", "wine"], protocol="ad", seeds=1, margins=[0.05], n_steps=10, baselines=[],
        ocsdf_params=TINY, on_dataset=lambda rows, s: seen.append((len(rows),
                                                                   s["datasets_done"])))
    assert seen == [(1, ["wine"]), (2, ["wine", "wine"])]


def test_split_and_subsample():
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    tr, te = harness.split_indices(y, "oc", seed=0)
    assert len(tr) == 45 and not y[tr].any()
    assert len(np.intersect1d(tr, te)) == 0 and len(te) == 55 and y[te].sum() == 10
    tr2, _ = harness.split_indices(y, "oc", seed=0)
    np.testing.assert_array_equal(tr, tr2)
    keep = harness.subsample_indices(y, 50, seed=1)
    assert len(keep) == 50 and y[keep].sum() == 10  # at least min(10, #anomalies) kept
    np.testing.assert_array_equal(harness.subsample_indices(y, None, 0), np.arange(100))
    with pytest.raises(ValueError):
        harness.split_indices(y, "xx", 0)


def test_protocol_rows_are_the_bench_rows():
    """protocol_rows = subsample, then split the kept rows: the rows a bench run of that seed
    trains and evaluates on (each row of X is its own index, so rows name themselves)."""
    from ocsdf.data import protocol_rows

    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    X = np.arange(100.0)[:, None]
    for protocol in ("ad", "oc"):
        x_tr, x_te, y_te = protocol_rows(X, y, protocol, seed=3, max_rows=50)
        keep = harness.subsample_indices(y, 50, seed=3)
        tr, te = harness.split_indices(y[keep], protocol, seed=3)
        np.testing.assert_array_equal(x_tr[:, 0], keep[tr])
        np.testing.assert_array_equal(x_te[:, 0], keep[te])
        np.testing.assert_array_equal(y_te, y[keep][te])
    assert not y[x_tr[:, 0].astype(int)].any() and y_te.sum() == 10  # oc: normal rows train
    x_tr, x_te, _ = protocol_rows(X, y, "ad", seed=0)  # no max_rows: every row, both sides
    np.testing.assert_array_equal(x_tr, X)
    np.testing.assert_array_equal(x_te, X)


def test_paper_table_and_baselines():
    paper = tabular.paper_table2()
    assert paper.loc["cardio", "ocsdf_auroc"] == pytest.approx(95.0)
    assert "speech" not in paper.index and len(paper) == 19
    for name in tabular.DEFAULT_BASELINES:
        assert hasattr(tabular.make_baseline(name, 3, 0), "decision_function")
    with pytest.raises(ValueError):
        tabular.make_baseline("nope", 3, 0)


def test_parallel_workers_give_the_serial_results(wine):
    """Two spawned worker processes compute the same numbers as one process, and the rows and
    the data sets done come back in the order asked for (whatever order they finish in)."""
    kw = dict(protocol="ad", seeds=1, margins=["auto"], n_steps=20, baselines=["ECOD"],
              ocsdf_params=TINY)
    names = ["wine", "glass"]
    seen = []
    rows_1, _ = tabular.tabular_benchmark(names, n_jobs=1, **kw)
    rows_2, summary = tabular.tabular_benchmark(
        names, n_jobs=2, on_dataset=lambda rows, s: seen.append(s["datasets_done"]), **kw)
    assert summary["n_jobs"] == 2 and summary["datasets_done"] == names
    assert [(r["dataset"], r["method"]) for r in rows_2] == \
        [(r["dataset"], r["method"]) for r in rows_1]
    assert [r["auroc_seeds"] for r in rows_2] == [r["auroc_seeds"] for r in rows_1]
    assert sorted(map(len, seen)) == [1, 2] and seen[-1] == names
    assert harness.resolve_jobs(0, 50) >= 1 and harness.resolve_jobs(8, 3) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_absent_device_fails_before_any_work(wine):
    with pytest.raises(ValueError, match="CUDA is not available"):
        tabular.tabular_benchmark(["wine"], seeds=1, margins=["auto"], n_steps=5,
                                  baselines=[], device="cuda")


def test_paper_pool_rank():
    """Ours and the paper's OCSDF ranked alone against the paper's five printed baselines."""
    paper = tabular.paper_table2()
    mat = pd.DataFrame({tabular.AUTO: [0.999, 0.0, 0.5], tabular.BEST: [0.999, 0.999, 0.5]},
                       index=["cardio", "wine", "wbc"])
    pool = tabular._paper_pool_ranks(mat, paper)
    assert pool["datasets"] == ["cardio", "wine"]  # wbc: the paper's WBC row is wdbc's
    # cardio: paper OCSDF 95.0 is 2nd of 6 (PCA 95.5 above); wine: 81.5 is 2nd (PCA 84.4)
    assert pool["paper OCSDF"] == pytest.approx(2.0)
    assert pool[tabular.AUTO] == pytest.approx((1 + 6) / 2)  # 99.9 -> 1st, 0.0 -> 6th
    assert pool[tabular.BEST] == pytest.approx(1.0)
    assert (pool["auto_ge_paper"], pool["best_ge_paper"]) == (1, 2)
    assert tabular._paper_pool_ranks(mat.loc[["wbc"]], paper) == {}
    auto_only = tabular._paper_pool_ranks(mat.assign(**{tabular.BEST: np.nan}), paper)
    assert np.isnan(auto_only[tabular.BEST]) and auto_only[tabular.AUTO] == pool[tabular.AUTO]


def test_cli_jobs_and_device_options():
    parser = argparse.ArgumentParser()
    tabular.register(parser.add_subparsers())
    args = parser.parse_args(["tabular"])
    assert args.jobs == 1 and args.device == "cpu"
    args = parser.parse_args(["tabular", "--jobs", "2", "--device", "cuda"])
    text = tabular.command_text(args)
    assert "--jobs 2" in text and "--device cuda" in text


def test_parallel_run_keeps_the_data_sets_that_finish(wine, tmp_path):
    """With workers, a data set that fails (here: its file is missing) does not lose the
    others: they are all passed to on_dataset, then the error is raised."""
    import shutil

    from ocsdf.data import ADBENCH_FILES, find_data_dir

    (tmp_path / "adbench").mkdir()
    name = f"{ADBENCH_FILES['wine']}.npz"
    shutil.copy(find_data_dir() / "adbench" / name, tmp_path / "adbench" / name)
    seen = []
    with pytest.raises(FileNotFoundError, match="glass"):
        tabular.tabular_benchmark(
            ["glass", "wine"], protocol="ad", seeds=1, margins=["auto"], n_steps=10,
            baselines=[], ocsdf_params=TINY, data_dir=tmp_path, n_jobs=2,
            on_dataset=lambda rows, s: seen.append(s["datasets_done"]))
    assert seen == [["wine"]]


def test_set_and_cover_options_reach_ocsdf_and_the_command():
    parser = argparse.ArgumentParser()
    tabular.register(parser.add_subparsers())
    args = parser.parse_args(["tabular", "--set", "width=64", "--set", "learning_rate=0.002",
                              "--set", "lr_schedule=cosine", "--cover", "--trim", "0.1"])
    assert tabular._ocsdf_params(args) == {"width": 64, "learning_rate": 0.002,
                                           "lr_schedule": "cosine", "standardize": "cover",
                                           "trim": 0.1}
    text = tabular.command_text(args)
    assert text.endswith("--set width=64 --set learning_rate=0.002 --set lr_schedule=cosine")
    assert "--cover" in text and "--trim 0.1" in text
    assert tabular._ocsdf_params(parser.parse_args(["tabular"])) is None
    for bad in ("widht=3", "width"):
        with pytest.raises(ValueError, match="NAME=VALUE with NAME one of"):
            tabular._parse_set(bad)
    words = tabular._training_text({"bias_lr_factor": 5.0, "learning_rate": 0.002})
    assert "RMSprop lr 0.002 (5 x for the biases)" in words and "T = 1" in words
    assert "T = 4" in tabular._training_text({"n_newton_steps": 4})
