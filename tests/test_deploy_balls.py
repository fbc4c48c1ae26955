"""ONNX export of a tabular model whose domain B has balls around the training rows outside the
box (ocsdf.core.domain.WithBalls): the graph reproduces score_samples and bounds its rounding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from ocsdf import OCSDF  # noqa: E402
from ocsdf.core.domain import Box, WithBalls  # noqa: E402
from ocsdf.deploy import _domain_extent, onnx_metadata, rounding_bound, to_onnx  # noqa: E402
from ocsdf.errors import DomainWarning  # noqa: E402

MEAN = np.array([3.0, -200.0, 0.0, 50.0])
SCALE = np.array([0.5, 20.0, 1.0, 4.0])


@pytest.fixture(scope="module")
def model() -> OCSDF:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 4))
    z[:3, 0] = 9.0  # three rows beyond the box of 5 standard deviations
    z[3, 1] = -9.5
    X = z * SCALE + MEAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        return OCSDF(width=16, depth=2, n_steps=60, random_state=0).fit(X)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_balls")
    return {"float32": to_onnx(model, d / "b32.onnx"),
            "float64": to_onnx(model, d / "b64.onnx", dtype="float64"),
            "float64_opset18": to_onnx(model, d / "b64_18.onnx", dtype="float64", opset=18)}


def _run(path, X, dtype):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    score, rounding = sess.run(["score", "rounding"], {"x": np.asarray(X, dtype=dtype)})
    return score.astype(np.float64), rounding.astype(np.float64)


def _outlying(model) -> np.ndarray:
    """The training rows outside the box (the ball centres), raw units."""
    return model.scorer_.unstandardize(model.domain_rows_)


@pytest.fixture(scope="module")
def rows(model) -> np.ndarray:
    """Held-out rows, the outlying training rows, and points 0.5 r, r and 2 r from each ball
    centre (and between two centres), in the box's and far beyond (raw units)."""
    dom = model.scorer_.domain
    rng = np.random.default_rng(1)
    z = [rng.normal(size=(500, 4)), rng.uniform(-5, 5, size=(300, 4)),
         rng.uniform(-10, 10, size=(300, 4))]
    r = dom.radius
    for c in dom.centres:
        dirs = rng.normal(size=(20, 4))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        for t in (0.0, 0.5, 0.999, 1.001, 2.0):
            z.append(c + t * r * dirs)
    z.append(0.5 * (dom.centres[0] + dom.centres[-1])[None])
    return np.concatenate([model.scorer_.unstandardize(np.concatenate(z)), _outlying(model)])


def test_domain_has_balls(model):
    dom = model.scorer_.domain
    assert isinstance(dom, WithBalls) and isinstance(dom.base, Box)
    assert len(dom.centres) >= 2
    assert len(_outlying(model)) == len(dom.centres)
    assert _domain_extent(dom) >= np.abs(dom.centres).max() + dom.radius
    assert _domain_extent(dom) >= _domain_extent(dom.base)


@pytest.mark.parametrize("key", ["float64", "float64_opset18"])
def test_float64_graph_equals_score_samples(model, rows, exported, key):
    ref = model.score_samples(rows)
    score, rounding = _run(exported[key], rows, np.float64)
    np.testing.assert_allclose(score, ref, rtol=0, atol=1e-9)
    assert np.all(np.abs(score - ref) <= rounding)


def test_float32_graph_within_rounding_bound(model, rows, exported):
    ref = model.score_samples(rows)
    score, rounding = _run(exported["float32"], rows, np.float32)
    err = np.abs(score - ref)
    assert np.all(err <= rounding)
    assert err.max() <= 1e-4
    np.testing.assert_allclose(rounding, rounding_bound(rows, onnx_metadata(exported["float32"])),
                               rtol=1e-5)


def test_outlying_rows_score_min_of_network_and_balls(model, exported):
    """Each outlying training row (a ball centre) gets min(f, sdf_B) with sdf_B >= r there, in
    both graphs."""
    X = _outlying(model)
    terms = model.scorer_.score_terms(X)
    assert np.all(terms[:, 1] >= model.scorer_.domain.radius * (1 - 1e-12))
    expected = terms.min(axis=1)
    np.testing.assert_allclose(model.score_samples(X), expected, rtol=0, atol=1e-12)
    score, _ = _run(exported["float64"], X, np.float64)
    np.testing.assert_allclose(score, expected, rtol=0, atol=1e-9)
    score, rounding = _run(exported["float32"], X, np.float32)
    assert np.all(np.abs(score - expected) <= rounding)


def test_ball_term_matters(model, rows, exported):
    """Rows near a ball score above the box-only sdf (so the ball term is exercised)."""
    dom = model.scorer_.domain
    z = torch.as_tensor(model.scorer_.standardize(rows))
    gain = (dom.signed_distance(z) - dom.base.signed_distance(z)).numpy()
    assert (gain > 0.1).sum() >= 20


def test_no_balls_graph_unchanged(tmp_path):
    """Without outside rows B is the plain box and the graph has no ball nodes."""
    rng = np.random.default_rng(0)
    model = OCSDF(width=8, depth=1, n_steps=5, random_state=0).fit(rng.normal(size=(100, 3)))
    assert isinstance(model.scorer_.domain, Box)
    import onnx

    proto = onnx.load(str(to_onnx(model, tmp_path / "m.onnx", dtype="float64")))
    assert not any(n.op_type in ("Unsqueeze", "ReduceMax") for n in proto.graph.node)
    X = rng.normal(size=(50, 3)) * 4
    score, _ = _run(tmp_path / "m.onnx", X, np.float64)
    np.testing.assert_allclose(score, model.score_samples(X), rtol=0, atol=1e-10)
