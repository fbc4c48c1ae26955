"""Transformed negatives (``ocsdf.core.augment``, ``OCSDF(negative_transforms=...)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ocsdf import OCSDF
from ocsdf.core.augment import TransformedNegatives, sum_losses, transform_images, transforms_for
from ocsdf.core.loss import hkr_loss
from ocsdf.errors import InputError


def _images(n=6, c=2, h=5, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g)


def test_transforms_turn_and_flip_each_image_as_torch_does():
    img = _images()
    names = ("rot90", "rot180", "rot270", "vflip")
    which = torch.tensor([0, 1, 2, 3, 3, 0])
    out = transform_images(img.reshape(6, -1), which, (2, 5, 5), names).reshape(img.shape)
    for i, k in enumerate(which.tolist()):
        want = img[i].flip(1) if names[k] == "vflip" else torch.rot90(img[i], k + 1, dims=(1, 2))
        assert torch.equal(out[i], want)
    # a quarter turn moves pixel (row 0, col 4) to (row 0, col 0): counter-clockwise
    assert out[0, :, 0, 0].tolist() == img[0, :, 0, 4].tolist()
    with pytest.raises(ValueError, match="does not match"):
        transform_images(img.reshape(6, -1), which, (2, 5, 4), names)


def test_quarter_turns_only_for_square_images():
    assert transforms_for("rotate", (3, 8, 8)) == ("rot90", "rot180", "rot270")
    assert transforms_for("rotate", (3, 8, 6)) == ("rot180",)
    assert transforms_for("rotate+flip", (1, 4, 7)) == ("rot180", "vflip")
    with pytest.raises(ValueError, match="must be one of"):
        transforms_for("shear", (1, 4, 4))


def test_term_is_the_hkr_loss_on_its_own_draws():
    x = _images(n=20).reshape(20, -1)
    term = TransformedNegatives([x, x[:10]], [0.1, 0.2], [0, 1], image_shape=(2, 5, 5),
                                transforms=("rot90", "vflip"), weight=0.5, lam=10.0,
                                batch_size=4)
    twin = TransformedNegatives([x, x[:10]], [0.1, 0.2], [0, 1], image_shape=(2, 5, 5),
                                transforms=("rot90", "vflip"), weight=0.5, lam=10.0,
                                batch_size=4)
    w = torch.randn(50, generator=torch.Generator().manual_seed(3))
    got = term(lambda z: z @ w, step=0)
    pos, neg = twin.draw()
    assert pos.shape == neg.shape == (2, 4, 50)
    want = 0.5 * hkr_loss(pos @ w, neg @ w, torch.tensor([0.1, 0.2]), 10.0)
    assert torch.allclose(got, want)
    # every negative is a transformed training image of its own model
    flat = x.reshape(20, 2, 5, 5)
    candidates = torch.cat([torch.rot90(flat, 1, dims=(2, 3)), flat.flip(2)]).reshape(40, -1)
    for m, n_rows in enumerate((20, 10)):
        allowed = torch.cat([candidates[:n_rows], candidates[20:20 + n_rows]])
        assert all(bool((allowed == row).all(1).any()) for row in neg[m])
    with pytest.raises(ValueError, match="weight"):
        TransformedNegatives(x, [0.1], [0], image_shape=(2, 5, 5), transforms=("vflip",),
                             weight=0.0)


def test_sum_losses():
    assert sum_losses(None, None) is None
    one = lambda f, s: torch.ones(2)  # noqa: E731
    assert sum_losses(None, one) is one
    both = sum_losses(one, lambda f, s: torch.full((2,), 2.0))
    assert both(None, 0).tolist() == [3.0, 3.0]


def _striped(n, seed):
    """Horizontal stripes, bright at the top: not invariant under turns or flips."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, 1, 8, 8))
    img[:, :, :3, :] = 0.8 + 0.1 * rng.random((n, 1, 3, 8))
    img[:, :, 3:, :] = 0.1 * rng.random((n, 1, 5, 8))
    return img


def test_fit_with_transformed_negatives_is_sound_and_ranks_turned_images_lower():
    X = _striped(120, 0)
    common = dict(n_steps=150, width=32, depth=2, random_state=0, distance_weight=0.0)
    plain = OCSDF(negative_transforms="none", **common).fit(X)
    model = OCSDF(negative_transforms="rotate+flip", **common).fit(X)
    assert model.lipschitz_ <= 1 + 1e-4
    test = _striped(60, 1)
    turned = np.rot90(test, 2, axes=(2, 3))  # bright at the bottom
    gap = lambda m: np.mean(m.score_samples(test)) - np.mean(m.score_samples(turned))  # noqa
    assert gap(model) > 0
    assert gap(model) > gap(plain) + 0.5
    # "auto": turned and flipped images for images, nothing for rows; other values are for
    # images only
    auto = OCSDF(**common).fit(X)
    assert auto.negative_transforms_ == "rotate+flip"
    assert np.array_equal(auto.score_samples(X), OCSDF(
        negative_transforms="rotate+flip", **common).fit(X).score_samples(X))
    rows = OCSDF(n_steps=5).fit(np.random.default_rng(0).normal(size=(30, 4)))
    assert rows.negative_transforms_ == "none"
    with pytest.raises(InputError, match="negative_transforms='rotate' turns images"):
        OCSDF(negative_transforms="rotate", n_steps=5).fit(np.random.default_rng(0).normal(
            size=(30, 4)))
