"""Counterfactual explanations (``ocsdf.explain``) and ``ocsdf bench explain``.

Data: a 5-D Gaussian with very different feature scales and offsets, so that raw and
standardised units cannot be confused. Thresholds below were measured with these seeds and
leave room for floating-point differences between platforms.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ocsdf import OCSDF
from ocsdf.bench import explain as bench
from ocsdf.errors import InputError
from ocsdf.explain import Explanation, explain

SMALL = {"width": 32, "depth": 2, "n_steps": 300, "batch_size": 128, "random_state": 0}
MEAN = np.array([10.0, -3.0, 100.0, 0.0, 5.0])
SCALE = np.array([1.0, 10.0, 0.5, 3.0, 100.0])
SHIFTED = 2  # the feature the hand-made anomalies are pushed along


@pytest.fixture(scope="module")
def gauss() -> np.ndarray:
    return MEAN + SCALE * np.random.default_rng(0).normal(size=(1000, 5))


@pytest.fixture(scope="module")
def shifted() -> np.ndarray:
    """Normal rows moved 4 standard deviations along feature 2 only (inside B = [-5, 5])."""
    z = np.random.default_rng(1).normal(size=(200, 5)) * 0.5
    z[:, SHIFTED] += 4.0
    return MEAN + SCALE * z


@pytest.fixture(scope="module")
def model(gauss) -> OCSDF:
    return OCSDF(**SMALL).fit(gauss)


@pytest.fixture(scope="module")
def trained(gauss) -> OCSDF:
    """A better trained model whose score is closer to a distance (about 13 s)."""
    return OCSDF(width=64, depth=3, n_steps=2000, warmup_steps=100, random_state=0).fit(gauss)


def test_shift_along_one_feature_is_named_and_repaired_in_raw_units(model, shifted):
    e = explain(model, shifted)
    assert isinstance(e, Explanation) and len(e) == len(shifted)
    assert e.flagged.mean() >= 0.95  # measured 1.0
    f = e.flagged
    # Measured: top-1 is feature 2 for every flagged row.
    assert (e.top[f, 0] == SHIFTED).mean() >= 0.95
    # x* is in raw units: feature 2 comes back to the edge of the normal region (measured
    # 2.1-3.1 standard deviations from its mean), the others barely move.
    z2 = (e.x_star[f, SHIFTED] - MEAN[SHIFTED]) / SCALE[SHIFTED]
    assert 1.5 < np.median(z2) < 3.5
    other = np.abs(np.delete(e.delta[f], SHIFTED, axis=1)) / np.delete(SCALE, SHIFTED)
    assert np.median(np.abs(e.delta[f, SHIFTED]) / SCALE[SHIFTED]) > 3 * np.median(other)
    np.testing.assert_allclose(e.delta, e.x_star - e.x, atol=1e-9)
    np.testing.assert_allclose(e.score, model.score_samples(shifted))
    np.testing.assert_allclose(e.score_star, model.score_samples(e.x_star))
    assert e.threshold == model.offset_
    np.testing.assert_allclose(e.gap, np.maximum(e.threshold - e.score, 0))
    np.testing.assert_allclose(e.distance, np.linalg.norm(e.delta / model.scale_, axis=1))


def test_flagged_rows_reach_the_threshold(model):
    rng = np.random.default_rng(2)
    X = MEAN + SCALE * rng.uniform(-4, 4, size=(400, 5))
    e = explain(model, X)
    f = e.flagged
    assert f.sum() > 300
    assert e.reached[f].mean() >= 0.95  # measured 1.0
    assert np.all(e.score_star[e.reached] >= e.threshold)
    assert np.array_equal(e.reached, ~f | (e.score_star >= e.threshold))


def test_distance_never_below_the_lipschitz_bound(model):
    """f(x*) >= t and f L-Lipschitz imply ||z* - z|| >= (t - f(x)) / L for every reached row."""
    X = MEAN + SCALE * np.random.default_rng(3).uniform(-4, 4, size=(300, 5))
    e = explain(model, X)
    ok = e.flagged & e.reached
    assert ok.sum() > 200
    assert np.all(e.distance[ok] >= e.gap[ok] / model.lipschitz_ - 1e-9)


def test_distance_matches_gap_for_a_well_trained_model(trained, shifted):
    e = explain(trained, shifted)
    ok = e.flagged & e.reached
    assert ok.mean() >= 0.95
    ratio = e.distance[ok] / e.gap[ok]
    # Measured: median 1.23 (5-95 %: 1.15-1.32); exact SDF: 1. The 300-step model: about 3.
    assert 1.0 - 1e-6 <= np.median(ratio) < 1.5
    assert (e.top[ok, 0] == SHIFTED).mean() >= 0.95


@pytest.mark.parametrize("k", [1, 2])
def test_sparse_moves_at_most_k_features(model, k):
    X = MEAN + SCALE * np.random.default_rng(4).uniform(-4, 4, size=(300, 5))
    e = explain(model, X, max_features=k)
    assert (e.delta != 0).sum(axis=1).max() <= k
    assert np.all((e.top >= 0).sum(axis=1) <= k)
    f = e.flagged
    # Measured: k = 1 reaches 32 %, k = 2 reaches 68 % of uniform anomalies (a slice through
    # one or two features often misses the normal ball); dense reaches all.
    assert e.reached[f].mean() >= (0.2 if k == 1 else 0.5)


def test_sparse_one_feature_reaches_when_one_feature_is_the_cause(model, shifted):
    e = explain(model, shifted, max_features=1)
    f = e.flagged
    assert e.reached[f].mean() >= 0.9
    changed = e.delta[f] != 0
    assert changed.sum(axis=1).max() == 1
    assert changed[:, SHIFTED].mean() >= 0.85  # measured 0.94


def test_rows_inside_get_an_empty_explanation(model, gauss):
    e = explain(model, gauss[:200], top=3)
    inside = ~e.flagged
    assert inside.sum() > 150
    assert np.array_equal(e.x_star[inside], gauss[:200][inside])
    assert np.all(e.delta[inside] == 0) and np.all(e.distance[inside] == 0)
    assert np.all(e.top[inside] == -1) and np.all(e.reached[inside])
    assert e.top.shape == (200, 3)
    frame = e.to_frame()
    assert list(frame.loc[inside, "feature_1"].unique()) == [""]
    assert frame.loc[inside, "change_1"].isna().all()


def test_dataframe_feature_names_and_to_frame(gauss, shifted):
    cols = ["age", "income", "dose", "height", "weight"]
    m = OCSDF(**SMALL).fit(pd.DataFrame(gauss, columns=cols))
    e = m.explain(pd.DataFrame(shifted, columns=cols), top=2)
    assert e.feature_names == cols
    frame = e.to_frame()
    assert list(frame.columns) == [
        "score", "flagged", "distance", "gap", "reached",
        "feature_1", "value_1", "normal_value_1", "change_1",
        "feature_2", "value_2", "normal_value_2", "change_2",
    ]
    assert len(frame) == len(shifted)
    f = e.flagged
    assert (frame.loc[f, "feature_1"] == "dose").mean() >= 0.95
    row = int(np.flatnonzero(f)[0])
    j = int(e.top[row, 0])
    assert frame.loc[row, "value_1"] == shifted[row, j]
    assert frame.loc[row, "normal_value_1"] == e.x_star[row, j]
    assert frame.loc[row, "change_1"] == e.delta[row, j]
    # Without names: x0..x4; top larger than d is cut to d.
    e2 = explain(OCSDF(**SMALL).fit(gauss), shifted[:5], top=9)
    assert e2.feature_names == [f"x{i}" for i in range(5)] and e2.top.shape == (5, 5)


def test_method_matches_function(model, shifted, gauss):
    a = model.explain(shifted[:20], top=3, max_features=2, max_steps=10)
    b = explain(model, shifted[:20], top=3, max_features=2, max_steps=10)
    np.testing.assert_array_equal(a.x_star, b.x_star)
    np.testing.assert_array_equal(a.top, b.top)
    # a deeper level: more rows explained, every reached x* scores at least that level
    level = float(np.median(model.score_samples(gauss)))  # the typical normal score
    assert level > model.offset_
    deep = model.explain(shifted[:20], threshold=level)
    assert deep.threshold == level and deep.flagged.sum() >= a.flagged.sum()
    assert np.all(deep.score_star[deep.reached & deep.flagged] >= level)


def _message(fn, *args) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args)
    return str(info.value)


def test_input_errors_are_the_scoring_errors(model):
    wrong = np.zeros((3, 4))
    assert _message(model.explain, wrong) == _message(model.score_samples, wrong)
    nan = np.zeros((3, 5))
    nan[1, 2] = np.nan
    assert _message(model.explain, nan) == _message(model.score_samples, nan)
    frame = pd.DataFrame({f"x{i}": ["a", "b"] if i == 0 else [0.0, 1.0] for i in range(5)})
    with pytest.raises(InputError, match="non-numeric"):
        model.explain(frame)
    # scikit-learn's own message, as score_samples gives for a wrong width (a ValueError)
    with pytest.raises(ValueError, match="X has 4 features, but OCSDF is expecting 5"):
        model.explain(np.zeros((0, 4)))
    for bad in ({"top": 0}, {"max_features": 0}, {"max_steps": 1.5}):
        with pytest.raises(InputError, match=next(iter(bad))):
            model.explain(np.zeros((2, 5)), **bad)


def test_empty_input_gives_an_empty_explanation(model):
    e = model.explain(np.zeros((0, 5)), top=3)
    assert len(e) == 0
    assert e.x.shape == e.x_star.shape == e.delta.shape == (0, 5)
    assert e.score.shape == e.distance.shape == e.flagged.shape == (0,)
    assert e.top.shape == (0, 3)
    frame = e.to_frame()
    assert len(frame) == 0 and "feature_3" in frame.columns


def test_pyod_detector_explains_its_outliers():
    pytest.importorskip("pyod", reason="PyOD not installed (pip install pyod)")
    from ocsdf.pyod import OCSDFDetector

    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3))
    clf = OCSDFDetector(contamination=0.1, width=32, depth=2, n_steps=300, random_state=0).fit(X)
    test = np.vstack([rng.normal(size=(20, 3)), 0.5 * rng.normal(size=(20, 3)) + [0, 0, 4]])
    e = clf.explain(test, top=2)
    np.testing.assert_array_equal(e.flagged, clf.predict(test) == 1)
    assert e.threshold == pytest.approx(-clf.threshold_)
    f = e.flagged
    assert f[20:].mean() >= 0.9
    assert e.reached[f].mean() >= 0.9
    assert (e.top[20:][f[20:], 0] == 2).mean() >= 0.9  # measured 1.0


# ---------------------------------------------------------------------------- the benchmark
def test_rank_hits_and_robust_scale():
    order = np.array([[3, 1, 0], [0, 3, 1], [1, 2, 3], [-1, -1, -1]])
    causes = [(3,), (1, 3), (2, 1), (0,)]
    top1, top2 = bench.rank_hits(order, causes)
    assert top1.tolist() == [True, False, True, False]
    assert top2.tolist() == [True, False, True, False]
    x = np.column_stack([np.r_[np.ones(90), np.arange(10.0)],  # MAD = IQR = 0 -> std
                         np.arange(100.0), np.full(100, 7.0)])
    s = bench.robust_scale(x)
    assert s[0] == pytest.approx(x[:, 0].std())
    assert s[1] == pytest.approx(1.4826 * 25.0)
    assert s[2] == 1.0


def test_make_anomalies_has_the_stated_causes():
    rng = np.random.default_rng(6)
    a = rng.normal(size=2000)
    train = np.column_stack([a, a + 0.2 * rng.normal(size=2000), rng.normal(size=(2000, 3))])
    base = np.repeat(train[:1], 5, axis=0)  # one row: every anomaly comes from it
    rows, causes = bench.make_anomalies(train, base, "shift-1", 50, 0)
    assert len(rows) == 50
    for r, c in zip(rows, causes):
        changed = np.flatnonzero(r != base[0])
        assert tuple(changed) == c and len(c) == 1
        assert r[c[0]] > train[:, c[0]].max()  # outside the range
    rows, causes = bench.make_anomalies(train, train[1000:1500], "correlation", 50, 0)
    assert len(rows) > 10 and set(causes) == {(0, 1)}
    lo, hi = np.quantile(train[:, 1], [0.05, 0.95])
    assert np.all((rows[:, 1] >= lo) & (rows[:, 1] <= hi))
    resid = np.abs(rows[:, 1] - rows[:, 0]) / 0.2
    assert np.median(resid) > 3


@pytest.fixture(scope="module")
def thyroid_dir():
    from ocsdf.data import load_adbench

    try:
        load_adbench("thyroid")
    except FileNotFoundError as err:
        pytest.skip(f"ADBench data not available ({err}); set OCSDF_DATA_DIR")


def test_bench_tiny_run_writes_the_table(thyroid_dir, tmp_path: Path):
    pytest.importorskip("shap", reason="the explain bench compares with SHAP (pip install shap)")
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["explain", "--sets", "thyroid", "--n", "30", "--steps", "150",
                              "--width", "16", "--depth", "1", "--out-dir", str(tmp_path)])
    assert args.func(args) == 0
    md = (tmp_path / "explain.md").read_text()
    assert "ocsdf bench explain --sets thyroid --n 30 --steps 150" in md
    table = pd.read_csv(tmp_path / "explain.csv")
    per_set = table[table["set"] == "thyroid"]
    assert set(per_set["method"]) == set(bench.METHODS)
    assert set(per_set["kind"]) <= set(bench.KINDS) and "shift-1" in set(per_set["kind"])
    # The robust z-score names a feature pushed far outside its range almost always.
    z = per_set[(per_set["kind"] == "shift-1") & (per_set["method"] == "robust-z")]
    assert float(z["top1"].iloc[0]) >= 0.8
    assert (table["top1"].between(0, 1)).all()


def test_summarise_averages_seeds_then_sets():
    rows = []
    for name in ("a", "b"):
        for seed, top1 in ((0, 0.2), (1, 0.6)):
            for method in bench.METHODS:
                rows.append({"set": name, "kind": "shift-1", "method": method, "seed": seed,
                             "n": 10, "top1": top1 + (0.2 if name == "b" else 0.0),
                             "top2": 0.5, "top1_flagged": None, "top2_flagged": 0.25,
                             "ms_per_row": 1.0, "explained": 1.0})
    out = bench.summarise(rows)
    mean = [r for r in out if r["set"] == "mean"]
    assert [r["method"] for r in mean] == list(bench.METHODS)
    assert mean[0]["top1"] == pytest.approx(0.5) and mean[0]["n"] == 40
    assert mean[0]["top1_flagged"] is None
    per = [r for r in out if r["set"] == "a" and r["method"] == "ocsdf"][0]
    assert per["top1"] == pytest.approx(0.4) and per["top1_sd"] == pytest.approx(0.2)
    assert per["seeds"] == 2 and per["n"] == 20
    text = bench.findings(out)
    assert "`shift-1`: ocsdf 0.50 / -" in text


def test_explain_on_an_array_warns_about_feature_names_once():
    """A model fitted on a DataFrame, explained on a NumPy array: scikit-learn's feature-name
    warning appears once (it was repeated five times by internal re-validation)."""
    import warnings

    rng = np.random.default_rng(0)
    model = OCSDF(n_steps=20, width=16, depth=1, random_state=0).fit(
        pd.DataFrame(rng.normal(size=(100, 3)), columns=list("abc")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.explain(np.full((4, 3), 4.0))
    names = [w for w in caught if "feature names" in str(w.message)]
    assert len(names) == 1, [str(w.message) for w in caught]
