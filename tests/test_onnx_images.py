"""ONNX export of image (convolutional) models: the graph on flattened pixels reproduces
score_samples, its float32 rounding bound is sound, certificates survive, layers other than the
default architecture's (zero / circular padding, stride, dilation, groups, even kernels, pixel
(un)shuffle, dense layers on image axes) are written exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime")
pytest.importorskip("onnx", reason="ONNX export tests need onnx")
pytest.importorskip("orthogonium", reason="convolutional OCSDF models need orthogonium")

from ocsdf import OCSDF  # noqa: E402
from ocsdf.cli.export import export_command  # noqa: E402
from ocsdf.core.conv import ChannelGroupSort2, LipschitzConvNet  # noqa: E402
from ocsdf.core.domain import Box  # noqa: E402
from ocsdf.core.nn import FullSort, GroupSort2, _Squeeze  # noqa: E402
from ocsdf.core.scorer import Scorer, is_image_network  # noqa: E402
from ocsdf.deploy import (  # noqa: E402
    METADATA_KEYS,
    certified_radius_from_scores,
    onnx_metadata,
    rounding_bound,
    to_onnx,
)

SHAPE = (3, 8, 8)
D = 3 * 8 * 8


def _squares(n: int, kind: int, seed: int) -> np.ndarray:
    """``(n, 3, 8, 8)`` colour images in [0, 1]: a 3 x 3 square of a random colour in the
    top-left quarter (kind 0, the normal class) or elsewhere (kind 1), on faint noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.1, size=(n, *SHAPE))
    for i in range(n):
        r, c = rng.integers(0, 3, 2) if kind == 0 else rng.integers(3, 6, 2)
        x[i, :, r:r + 3, c:c + 3] = rng.uniform(0.5, 1.0, size=(3, 1, 1))
    return x


@pytest.fixture(scope="module")
def model() -> OCSDF:
    torch.set_num_threads(1)
    # two stages: conv -> ChannelGroupSort2 -> PixelUnshuffle(2) -> conv -> ... -> dense head
    return OCSDF(n_steps=40, warmup_steps=4, width=16, depth=1, network="conv",
                 channels=(4, 8), random_state=0).fit(_squares(120, 0, seed=0))


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Flattened rows: normal and other images, uniform noise, the black and white images."""
    rng = np.random.default_rng(1)
    return np.concatenate([_squares(150, 0, 2).reshape(150, D), _squares(150, 1, 3).reshape(150, D),
                           rng.uniform(size=(150, D)), np.zeros((1, D)), np.ones((1, D))])


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_images")
    return (model.to_onnx(d / "conv32.onnx"), model.to_onnx(d / "conv64.onnx", dtype="float64"))


def _run(path, X, dtype=np.float32):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    score, rounding = sess.run(["score", "rounding"], {"x": np.asarray(X, dtype=dtype)})
    return score.astype(np.float64), rounding.astype(np.float64)


def _check_graphs(model, X, tmp_path, name="m") -> float:
    """float64 graph == score_samples to ~1e-12, float32 graph within its rounding output on
    every row (both graphs), that bound under 1e5 times the worst error; returns their
    ratio."""
    ref = model.score_samples(X)
    scale = max(1.0, float(np.abs(ref).max()))
    score, rounding = _run(to_onnx(model, tmp_path / f"{name}64.onnx", dtype="float64"), X,
                           np.float64)
    np.testing.assert_allclose(score, ref, rtol=0, atol=1e-12 * scale)
    assert np.all(np.abs(score - ref) <= rounding)
    path = to_onnx(model, tmp_path / f"{name}32.onnx")
    score, rounding = _run(path, X)
    err = np.abs(score - ref)
    assert np.all(err <= rounding)
    assert err.max() <= 1e-4 * scale
    assert rounding.max() / max(err.max(), 1e-300) < 1e5
    np.testing.assert_allclose(rounding, rounding_bound(X, onnx_metadata(path)), rtol=1e-5)
    return float(rounding.max() / max(err.max(), 1e-300))


def test_conv_model_exports(model, exported):
    """The refusal is gone: OCSDF.to_onnx writes the default convolutional network, whose
    layers include a pixel unshuffle between the two stages."""
    assert is_image_network(model.net_)
    kinds = [type(m) for m in model.net_]
    assert nn.PixelUnshuffle in kinds and ChannelGroupSort2 in kinds
    assert all(m.padding_mode == "circular" for m in model.net_ if type(m) is nn.Conv2d)
    import onnx

    ops = {n.op_type for n in onnx.load(str(exported[0])).graph.node}
    assert {"Conv", "Transpose", "Max", "Min", "Gemm"} <= ops
    assert "Conv" not in {n.op_type for n in onnx.load(str(exported[1])).graph.node}


def test_float64_graph_equals_score_samples(model, rows, exported):
    ref = model.score_samples(rows)
    score, rounding = _run(exported[1], rows, np.float64)
    assert score.shape == (len(rows),)
    np.testing.assert_allclose(score, ref, rtol=0, atol=1e-12)
    assert np.all(np.abs(score - ref) <= rounding)
    # images in any layout score like their rows
    np.testing.assert_array_equal(model.score_samples(rows.reshape(-1, *SHAPE)), ref)


def test_float32_graph_within_rounding_bound(model, rows, exported):
    """Every row's float32 score lies within the graph's own `rounding` output of the float64
    score; the bound is sound yet useful: at most 2e-3 (pixel l2 units; measured 1.3e-3 on the
    all-ones image, 1e-4 to 5e-4 on the others), about 2,000 times the worst error (6e-7)."""
    ref = model.score_samples(rows)
    score, rounding = _run(exported[0], rows)
    err = np.abs(score - ref)
    assert np.all(err <= rounding)
    assert err.max() <= 1e-5
    assert rounding.max() <= 2e-3
    assert 1.0 < rounding.max() / err.max() < 1e5
    np.testing.assert_allclose(rounding, rounding_bound(rows, onnx_metadata(exported[0])),
                               rtol=1e-5)


def test_certified_radius_from_onnx_scores(model, rows, exported):
    truth = np.abs(model.decision_function(rows)) / model.scorer_.lipschitz_in("raw")
    assert np.all(truth <= model.certified_radius(rows) * (1 + 1e-12))
    for path, dtype in ((exported[0], np.float32), (exported[1], np.float64)):
        meta = onnx_metadata(path)
        lip = float(meta["lipschitz_raw"])
        score, rounding = _run(path, rows, dtype)
        radius = certified_radius_from_scores(score, float(meta["threshold"]), lip, rounding)
        assert np.all(radius <= truth)  # sound: never larger than the float64 certificate
        # and never smaller by more than twice the rounding bound
        assert np.all(truth - radius <= 2 * rounding / lip + 1e-12)
        assert np.median(truth - radius) <= (1e-3 if dtype == np.float32 else 1e-11)


def test_metadata_round_trip(model, exported):
    meta = onnx_metadata(exported[0])
    assert set(meta) == set(METADATA_KEYS)
    assert json.loads(meta["image_shape"]) == list(SHAPE)
    assert int(meta["n_features"]) == D
    assert "pixels in [0, 1]" in meta["input_units"]
    assert float(meta["threshold"]) == model.offset_
    assert float(meta["lipschitz_raw"]) == model.scorer_.lipschitz_in("raw")
    assert float(meta["lipschitz_standardized"]) == model.lipschitz_
    assert json.loads(meta["mean"]) == [0.0] * D and json.loads(meta["scale"]) == [1.0] * D
    assert meta["dtype"] == "float32" and onnx_metadata(exported[1])["dtype"] == "float64"
    opts = ort.SessionOptions()
    sess = ort.InferenceSession(str(exported[0]), opts, providers=["CPUExecutionProvider"])
    assert sess.get_modelmeta().custom_metadata_map == meta
    assert [i.shape for i in sess.get_inputs()] == [["n", D]]


def test_image_shape_metadata_of_dense_models(tmp_path):
    """Dense models carry image_shape too: the pixel shape for images, null for tables."""
    img = OCSDF(n_steps=3, width=8, depth=1, random_state=0).fit(_squares(20, 0, 4))
    assert not is_image_network(img.net_)
    meta = onnx_metadata(img.to_onnx(tmp_path / "dense_img.onnx"))
    assert json.loads(meta["image_shape"]) == list(SHAPE)
    tab = OCSDF(n_steps=3, width=8, depth=1, random_state=0).fit(
        np.random.default_rng(0).normal(size=(30, 2)))
    assert json.loads(onnx_metadata(tab.to_onnx(tmp_path / "tab.onnx"))["image_shape"]) is None


@pytest.mark.parametrize("n", [0, 1, 7])
@pytest.mark.parametrize("opset", [13, 18])
def test_dynamic_batch_and_opsets(model, rows, tmp_path, n, opset):
    ref = model.score_samples(rows[:n]) if n else np.zeros(0)
    for dtype, np_dtype in (("float32", np.float32), ("float64", np.float64)):
        path = to_onnx(model, tmp_path / f"m{dtype}.onnx", opset=opset, dtype=dtype)
        score, rounding = _run(path, rows[:n], np_dtype)
        assert score.shape == rounding.shape == (n,)
        assert np.all(np.abs(score - ref) <= rounding)


def test_save_load_export_command(model, rows, tmp_path):
    model.save(tmp_path / "model")
    out = tmp_path / "model.onnx"
    summary = export_command(tmp_path / "model", out)
    assert str(out) in summary
    score, rounding = _run(out, rows)
    assert np.all(np.abs(score - model.score_samples(rows)) <= rounding)


# ---------------------------------------------------------------------------- other layers
def _randomize(net: nn.Sequential, seed: int) -> nn.Sequential:
    """Random weights and biases (float64), scaled to keep activations of order 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if type(m) in (nn.Conv2d, nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64)
                               / fan_in ** 0.5)
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen,
                                               dtype=torch.float64))
    net.requires_grad_(False)
    return net.eval()


def _zero_padding_net() -> nn.Sequential:
    """Zero padding, stride 2 with dilation 2 and groups 2, an even kernel with 'same'
    (asymmetric) padding, ReLU, FullSort."""
    kw = {"dtype": torch.float64}
    return _randomize(nn.Sequential(
        nn.Unflatten(1, SHAPE),
        nn.Conv2d(3, 6, 3, padding=1, **kw), ChannelGroupSort2(),
        nn.Conv2d(6, 8, 3, stride=2, padding=2, dilation=2, groups=2, **kw),  # -> 8 x 4 x 4
        nn.ReLU(),
        nn.Conv2d(8, 4, 2, padding="same", **kw), ChannelGroupSort2(),
        nn.Flatten(), nn.Linear(64, 8, **kw), FullSort(), nn.Linear(8, 1, **kw), _Squeeze(),
    ), seed=1)


def _circular_shuffle_net() -> nn.Sequential:
    """Circular padding with stride 2 and with an even kernel ('same', asymmetric), PixelShuffle
    then PixelUnshuffle in a nested Sequential, a dense layer on the last image axis and
    GroupSort2 there."""
    kw = {"dtype": torch.float64, "padding_mode": "circular"}
    return _randomize(nn.Sequential(
        nn.Unflatten(1, SHAPE),
        nn.Conv2d(3, 8, 3, stride=2, padding=1, **kw), ChannelGroupSort2(),  # -> 8 x 4 x 4
        nn.PixelShuffle(2),  # -> 2 x 8 x 8
        nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(8, 6, 2, padding="same", **kw)),
        nn.Linear(4, 6, dtype=torch.float64), GroupSort2(),  # on W: 6 x 4 x 6
        nn.Flatten(), nn.Linear(144, 1, dtype=torch.float64), _Squeeze(),
    ), seed=2)


def _zeros_convnet() -> nn.Sequential:
    """LipschitzConvNet's zero-padding variant (not the estimator's default), three stages."""
    net = LipschitzConvNet(SHAPE, channels=(4, 6, 4), dense=(8,), padding="zeros", seed=3)
    with torch.no_grad():
        for b in net.biases():
            b.normal_(0, 0.1)
    return net.export(dtype=torch.float64)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("make", [_zero_padding_net, _circular_shuffle_net, _zeros_convnet])
@pytest.mark.parametrize("standardized", [False, True])
def test_other_layers_export_exactly(model, rows, tmp_path, make, standardized):
    """Hand-built networks through the same estimator: exact float64 graphs, sound float32
    bounds; with a standardisation and the box clip too (the graph's general path)."""
    import copy

    other = copy.copy(model)
    if standardized:
        rng = np.random.default_rng(5)
        mean, scale = rng.uniform(0.3, 0.6, D), rng.uniform(0.2, 0.4, D)
        scorer = Scorer(make(), mean, scale, Box(-3.5, 3.5), clip_to_domain=True)
        net_wins = np.mean(np.less(*scorer.score_terms(rows).T))
        assert 0 < net_wins < 1  # the minimum takes either term on some rows
    else:
        scorer = Scorer(make(), np.zeros(D), np.ones(D), model.scorer_.domain,
                        clip_to_domain=False)
    other._set_scorer(scorer)
    _check_graphs(other, rows, tmp_path)
