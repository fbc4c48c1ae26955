"""Images through the estimator: convolutional network, pixel box, certificates, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ocsdf import OCSDF, InputError
from ocsdf.certify import pgd_attack
from ocsdf.core.scorer import is_image_network
from ocsdf.data import find_data_dir

pytest.importorskip("orthogonium")


def _blobs(n: int, kind: int, seed: int) -> np.ndarray:
    """8 x 8 one-channel images in [0, 1]: a bright 3 x 3 square in the top-left quarter
    (kind 0, the normal class) or anywhere else (kind 1)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 8, 8))
    for i in range(n):
        r, c = rng.integers(0, 3, 2) if kind == 0 else rng.integers(3, 6, 2)
        x[i, r:r + 3, c:c + 3] = rng.uniform(0.6, 1.0)
    return x


@pytest.fixture(scope="module")
def fitted():
    model = OCSDF(n_steps=80, warmup_steps=8, width=32, depth=1, network="conv",
                  channels=(8, 8), random_state=0)
    return model.fit(_blobs(200, 0, seed=0))


def test_images_train_a_sound_convolutional_network(fitted):
    assert fitted.image_shape_ == (1, 8, 8)
    assert fitted.n_features_in_ == 64
    assert is_image_network(fitted.net_)
    assert type(fitted.scorer_.domain).__name__ == "Box" and not fitted.scorer_.clip_to_domain
    assert np.all(fitted.mean_ == 0) and np.all(fitted.scale_ == 1)  # pixels not standardised
    # sound bound from the weights used, near 1 for orthogonal layers
    assert 1.0 - 1e-9 <= fitted.lipschitz_ <= 1.0 + 1e-4
    # independent lower bound: gradient norms at images and at uniform noise never exceed it
    x = torch.as_tensor(np.r_[_blobs(20, 0, 5).reshape(20, -1),
                              np.random.default_rng(1).uniform(size=(20, 64))])
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(fitted.score_tensor(x).sum(), x)
    norms = g.norm(dim=1)
    assert float(norms.max()) <= fitted.lipschitz_ + 1e-9
    assert float(norms.max()) > 0.3  # the bound is not vacuous for this network


def test_image_scores_separate_and_accept_every_layout(fitted):
    normal, other = _blobs(60, 0, seed=1), _blobs(60, 1, seed=2)
    s_n, s_a = fitted.score_samples(normal), fitted.score_samples(other)
    assert roc_auc_score(np.r_[np.ones(60), np.zeros(60)], np.r_[s_n, s_a]) > 0.9
    np.testing.assert_array_equal(fitted.score_samples(other.reshape(60, 1, 8, 8)), s_a)
    np.testing.assert_array_equal(fitted.score_samples(other.reshape(60, 64)), s_a)
    with pytest.raises(InputError, match=r"images of shape \(1, 9, 9\)"):
        fitted.score_samples(np.zeros((2, 9, 9)))


def test_image_save_load_scores_bit_for_bit(fitted, tmp_path):
    x = np.random.default_rng(3).uniform(size=(50, 8, 8))
    fitted.save(tmp_path / "m")
    loaded = OCSDF.load(tmp_path / "m")
    assert loaded.image_shape_ == (1, 8, 8)
    assert loaded.lipschitz_ == fitted.lipschitz_
    np.testing.assert_array_equal(loaded.score_samples(x), fitted.score_samples(x))
    np.testing.assert_array_equal(loaded.predict(x), fitted.predict(x))


def test_pgd_never_breaks_an_image_certificate(fitted):
    x = np.r_[_blobs(6, 0, seed=7), _blobs(6, 1, seed=8)].reshape(12, -1)
    radius = fitted.certified_radius(x, space="standardized")  # pixel units: no scaling
    pred = fitted.predict(x)
    flipped_beyond = 0
    for i in np.flatnonzero(radius > 1e-3):
        xi = torch.as_tensor(x[i:i + 1])
        for scale, key in ((0.99, "inside"), (4.0, "beyond")):
            adv = pgd_attack(fitted.score_tensor, xi, eps=scale * float(radius[i]),
                             direction=-1 if pred[i] == 1 else 1, n_iter=30, restarts=1)
            adv = adv.detach().numpy()
            assert np.linalg.norm(adv - x[i:i + 1]) <= scale * radius[i] + 1e-9
            if key == "inside":
                assert fitted.predict(adv)[0] == pred[i]
            else:
                flipped_beyond += int(fitted.predict(adv)[0] != pred[i])
    assert flipped_beyond >= 1  # the attack has teeth: at 4 radii it flips some rows


def test_image_input_errors():
    with pytest.raises(InputError, match=r"pixels must lie in \[0, 1\]"):
        OCSDF(n_steps=2).fit(np.full((5, 4, 4), 255.0))
    with pytest.raises(InputError, match="does not apply to images"):
        OCSDF(n_steps=2, standardize="cover").fit(np.zeros((5, 4, 4)))
    with pytest.raises(InputError, match="network='conv' needs images"):
        OCSDF(n_steps=2, network="conv").fit(np.zeros((5, 4)))
    with pytest.raises(InputError, match=r"image_shape=\(1, 3, 3\) needs 9 features"):
        OCSDF(n_steps=2, image_shape=(1, 3, 3)).fit(np.zeros((5, 4)))


def test_rows_with_image_shape_are_images():
    x = _blobs(40, 0, seed=4)
    model = OCSDF(n_steps=3, width=8, depth=1, network="conv", channels=(4,),
                  image_shape=(1, 8, 8), random_state=0).fit(x.reshape(40, 64))
    assert model.image_shape_ == (1, 8, 8) and is_image_network(model.net_)
    dense = OCSDF(n_steps=3, width=8, depth=1, random_state=0).fit(x)  # the default network
    assert dense.image_shape_ == (1, 8, 8) and not is_image_network(dense.net_)
    assert not dense.scorer_.clip_to_domain  # still the pixel box
    assert np.all(dense.scale_ == 1) and np.all(dense.mean_ == 0)
    with pytest.raises(InputError, match="fewer stages"):
        OCSDF(n_steps=3, network="conv").fit(x)  # 3 stages of 3 x 3 on 8 x 8


def _mnist():
    root = find_data_dir()
    path = None if root is None else root / "mnist" / "mnist.npz"
    if path is None or not path.is_file():
        pytest.skip("MNIST not found: needs ../shared/data/mnist/mnist.npz (or OCSDF_DATA_DIR)")
    return np.load(path)


@pytest.mark.parametrize("network, floor, steps", [("dense", 0.95, 1000), ("conv", 0.9, 150)])
def test_mnist_two_digits_in_seconds(network, floor, steps):
    """Trained on 1,000 zeros (about 6 s for the dense network, 17 s for the convolutional one
    on one CPU thread), zeros vs ones of the test set: the default (dense) network reaches
    0.95 (measured 0.983), the convolutional one (not the default: it does worse on MNIST, see
    OCSDF's ``network``) 0.9 (0.920). With the turned and flipped negatives of the image
    defaults the dense network needs more than the 150 steps that used to do (0.94 there,
    1.000 without them)."""
    d = _mnist()
    x_train = d["x_train"][d["y_train"] == 0][:1000] / 255.0
    keep = np.isin(d["y_test"], (0, 1))
    x_test, y_test = d["x_test"][keep][:1000] / 255.0, d["y_test"][keep][:1000]
    model = OCSDF(n_steps=steps, warmup_steps=steps // 10, width=64, depth=1, network=network,
                  channels=(4, 8, 8), random_state=0).fit(x_train)
    auroc = roc_auc_score(y_test == 0, model.score_samples(x_test))
    assert auroc >= floor
    cert = model.certified_auroc(x_test[y_test == 0], x_test[y_test == 1], 8 / 255,
                                 space="standardized")
    assert 0.5 < cert <= auroc


def test_dense_image_model_exports_to_onnx(tmp_path):
    """The default (dense) image network exports: the graph takes flattened images and its
    scores stay within its own rounding bound of score_samples."""
    ort = pytest.importorskip("onnxruntime")
    x = _blobs(60, 0, seed=9)
    model = OCSDF(n_steps=20, width=16, depth=1, random_state=0).fit(x)
    path = model.to_onnx(tmp_path / "img.onnx")
    session = ort.InferenceSession(str(path))
    rows = x.reshape(60, -1).astype(np.float32)
    score, rounding = session.run(None, {session.get_inputs()[0].name: rows})
    assert np.all(np.abs(score - model.score_samples(x)) <= rounding + 1e-12)
