"""ONNX export (ocsdf.deploy): the graph reproduces score_samples, certificates survive float32."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from sklearn.exceptions import NotFittedError  # noqa: E402

from ocsdf import OCSDF  # noqa: E402
from ocsdf.certify import lipschitz_in  # noqa: E402
from ocsdf.cli.export import export_command  # noqa: E402
from ocsdf.deploy import (  # noqa: E402
    certified_radius_from_scores,
    onnx_metadata,
    rounding_bound,
    to_onnx,
)

MEAN = np.array([-5.0, 0.0, 1000.0])
SCALE = np.array([0.01, 1.0, 100.0])  # unequal feature scales (raw units)
NAMES = ["tiny", "unit", "huge"]


def _fit(**kw) -> OCSDF:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 3))
    z[:, 2] = 0.5 * z[:, 0] + 0.3 * rng.normal(size=400)  # some structure to learn
    import pandas as pd

    X = pd.DataFrame(z * SCALE + MEAN, columns=NAMES)
    return OCSDF(width=32, depth=2, n_steps=200, random_state=0, **kw).fit(X)


@pytest.fixture(scope="module")
def box_model() -> OCSDF:
    return _fit(domain="box")


@pytest.fixture(scope="module")
def ball_model() -> OCSDF:
    return _fit(domain="ball", activation="fullsort")


@pytest.fixture(scope="module")
def rows(box_model) -> np.ndarray:
    """10,000 raw rows: the data's region, the rest of the box, and far outside it (|z| to 9)."""
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(size=(4000, 3)), rng.uniform(-5, 5, size=(3000, 3)),
                        rng.uniform(-9, 9, size=(3000, 3))])
    return z * box_model.scale_ + box_model.mean_


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(path, X, dtype=np.float32):
    sess = _session(path)
    score, rounding = sess.run(["score", "rounding"], {"x": np.asarray(X, dtype=dtype)})
    return score.astype(np.float64), rounding.astype(np.float64)


@pytest.fixture(scope="module")
def exported(box_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return (to_onnx(box_model, d / "box32.onnx"),
            to_onnx(box_model, d / "box64.onnx", dtype="float64"))


def _frame(model, X):
    import pandas as pd

    return pd.DataFrame(X, columns=list(model.feature_names_in_))


def test_float64_graph_equals_score_samples(box_model, rows, exported):
    ref = box_model.score_samples(_frame(box_model, rows))
    score, rounding = _run(exported[1], rows, np.float64)
    assert score.shape == (len(rows),)
    np.testing.assert_allclose(score, ref, rtol=0, atol=1e-10)
    assert np.all(np.abs(score - ref) <= rounding)


def test_float32_graph_within_rounding_bound(box_model, rows, exported):
    """float32 scores: within 1e-5 of the float64 scores relative to the score scale, and
    within the analytic per-row bound of the `rounding` output (itself equal to the bound
    recomputed from the metadata)."""
    ref = box_model.score_samples(_frame(box_model, rows))
    score, rounding = _run(exported[0], rows)
    err = np.abs(score - ref)
    assert err.max() <= 1e-5 * max(1.0, np.abs(ref).max())
    assert np.all(err <= rounding)
    np.testing.assert_allclose(rounding, rounding_bound(rows, onnx_metadata(exported[0])),
                               rtol=1e-5)


def test_rows_outside_box_are_clipped(box_model, rows, exported):
    z = (rows - box_model.mean_) / box_model.scale_
    outside = np.abs(z).max(axis=1) > box_model.domain_size
    assert outside.sum() > 500
    dist = np.linalg.norm(z - np.clip(z, -5, 5), axis=1)[outside]
    ref = box_model.score_samples(_frame(box_model, rows[outside]))
    for path, dtype, tol in ((exported[0], np.float32, 1e-4), (exported[1], np.float64, 1e-10)):
        score, rounding = _run(path, rows[outside], dtype)
        np.testing.assert_allclose(score, ref, rtol=0, atol=tol)
        assert np.all(score <= -dist + rounding)


def test_certified_radius_from_onnx_scores(box_model, rows, exported):
    X = _frame(box_model, rows)
    tight = box_model.certified_radius(X)  # network and domain terms bounded apart
    # the ONNX graph gives the score alone: one bound for both terms
    truth = np.abs(box_model.decision_function(X)) / box_model.scorer_.lipschitz_in("raw")
    assert np.all(truth <= tight * (1 + 1e-12))
    for path, dtype, tol in ((exported[0], np.float32, 1e-5), (exported[1], np.float64, 1e-12)):
        meta = onnx_metadata(path)
        score, rounding = _run(path, rows, dtype)
        radius = certified_radius_from_scores(
            score, float(meta["threshold"]), float(meta["lipschitz_raw"]), rounding)
        assert np.all(radius <= truth)  # sound: never larger than the float64 certificate
        np.testing.assert_allclose(radius, truth, rtol=0, atol=tol)


def test_metadata_round_trip(box_model, exported):
    meta = onnx_metadata(exported[0])
    assert json.loads(meta["feature_names"]) == NAMES
    assert int(meta["n_features"]) == 3
    assert float(meta["threshold"]) == box_model.offset_
    assert float(meta["lipschitz_raw"]) == lipschitz_in(box_model, "raw")
    assert float(meta["lipschitz_standardized"]) == box_model.lipschitz_
    assert np.array_equal(json.loads(meta["scale"]), box_model.scale_)
    assert np.array_equal(json.loads(meta["mean"]), box_model.mean_)
    assert meta["norm"] == "l2" and meta["dtype"] == "float32" and meta["domain"] == "box"
    assert float(meta["max_abs_z"]) == 1e12  # scores are defined up to there (Z_MAX)
    from ocsdf import __version__

    assert meta["ocsdf_version"] == __version__
    sess = _session(exported[0])
    assert sess.get_modelmeta().custom_metadata_map == meta


def test_array_fit_has_null_feature_names(tmp_path):
    rng = np.random.default_rng(0)
    model = OCSDF(width=8, depth=1, n_steps=5, random_state=0).fit(rng.normal(size=(50, 2)))
    meta = onnx_metadata(to_onnx(model, tmp_path / "m.onnx"))
    assert json.loads(meta["feature_names"]) is None


@pytest.mark.parametrize("n", [1, 7, 10_000])
def test_dynamic_batch(box_model, rows, exported, n):
    ref = box_model.score_samples(_frame(box_model, rows[:n]))
    score, _ = _run(exported[1], rows[:n], np.float64)
    assert score.shape == (n,)
    np.testing.assert_allclose(score, ref, rtol=0, atol=1e-10)


def test_ball_fullsort_model(ball_model, rows, tmp_path):
    ref = ball_model.score_samples(_frame(ball_model, rows))
    for dtype, np_dtype in (("float32", np.float32), ("float64", np.float64)):
        path = to_onnx(ball_model, tmp_path / f"ball_{dtype}.onnx", dtype=dtype)
        score, rounding = _run(path, rows, np_dtype)
        assert np.all(np.abs(score - ref) <= rounding)
    np.testing.assert_allclose(score, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("opset", [13, 18])
def test_other_opsets(box_model, rows, tmp_path, opset):
    path = to_onnx(box_model, tmp_path / "m.onnx", opset=opset, dtype="float64")
    score, _ = _run(path, rows[:500], np.float64)
    np.testing.assert_allclose(score, box_model.score_samples(_frame(box_model, rows[:500])),
                               rtol=0, atol=1e-10)


def test_bad_inputs(box_model, tmp_path):
    with pytest.raises(NotFittedError, match="not fitted"):
        to_onnx(OCSDF(), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="OCSDF"):
        to_onnx(object(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="dtype"):
        to_onnx(box_model, tmp_path / "m.onnx", dtype="float16")
    with pytest.raises(ValueError, match="opset"):
        to_onnx(box_model, tmp_path / "m.onnx", opset=9)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="rounding"):
        certified_radius_from_scores([0.1], 0.0, 1.0, rounding=-1.0)


def test_atomic_overwrite_and_export_command(box_model, tmp_path):
    model_dir = tmp_path / "model"
    box_model.save(model_dir)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(b"old")
    summary = export_command(model_dir, out)
    assert str(out) in summary and "threshold" in summary
    assert os.listdir(out.parent) == ["model.onnx"]  # replaced, no temporary file left
    assert onnx_metadata(out)["domain"] == "box"


def test_readme_snippet_runs_without_ocsdf(box_model, tmp_path, monkeypatch):
    """The README's Deploy snippet imports nothing from ocsdf and gives the certified radius."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    deploy = readme[readme.index("## Deploy"):]
    code = re.search(r"```python\n(.*?)```", deploy, re.S).group(1)
    assert "ocsdf" not in code
    to_onnx(box_model, tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - our own documentation
    x = ns["x"].astype(np.float64)
    truth = box_model.certified_radius(_frame(box_model, x))
    assert np.all(ns["radius"] <= truth)
    # The snippet's rows lie far outside the data (|z| ~ 500): there the rounding bound, not
    # 1e-5, is the scale of the gap.
    assert np.all(truth - ns["radius"] <= 2 * ns["rounding"] / ns["lip"] + 1e-12)
