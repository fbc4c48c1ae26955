"""The domain B of a fitted model: a box or ball with a ball around each training row outside it
(:class:`ocsdf.core.domain.WithBalls`), checked against brute force."""

import numpy as np
import pytest
import torch

from ocsdf import OCSDF
from ocsdf.core.domain import Ball, Box, WithBalls


def _domain(base, k: int = 40, d: int = 3, seed: int = 0) -> WithBalls:
    rng = np.random.default_rng(seed)
    return WithBalls(base, rng.normal(size=(k, d)) * 7.0, 0.4)


@pytest.mark.parametrize("base", [Box(-5.0, 5.0), Ball(5.0)])
def test_signed_distance_and_projection_match_brute_force(base):
    dom = _domain(base)
    z = torch.as_tensor(np.random.default_rng(1).normal(size=(3000, 3)) * 9.0)
    sdf = dom.signed_distance(z)
    # brute force: every piece's signed distance, the largest wins
    balls = dom.radius - torch.cdist(z, torch.as_tensor(dom.centres)).min(dim=1).values
    torch.testing.assert_close(sdf, torch.maximum(base.signed_distance(z), balls))
    # outside B it is minus the distance to B, reached by the projection, which lies in B
    p = dom.project(z)
    out = sdf < 0
    assert out.sum() > 100 and (~out).sum() > 100
    torch.testing.assert_close((z - p).norm(dim=1)[out], -sdf[out])
    assert (dom.signed_distance(p) > -1e-9).all()
    torch.testing.assert_close(p[~out], z[~out])
    torch.testing.assert_close(dom.distance_outside(z), torch.relu(-sdf))
    # every centre is inside B, at depth r at least
    assert (dom.signed_distance(torch.as_tensor(dom.centres)) >= dom.radius - 1e-12).all()


def test_signed_distance_is_1_lipschitz_and_differentiable():
    dom = _domain(Box(-5.0, 5.0))
    rng = np.random.default_rng(2)
    a = torch.as_tensor(rng.normal(size=(5000, 3)) * 8.0)
    b = a + torch.as_tensor(rng.normal(size=(5000, 3))) * 0.3
    ratio = (dom.signed_distance(a) - dom.signed_distance(b)).abs() / (a - b).norm(dim=1)
    assert float(ratio.max()) <= 1.0 + 1e-12
    z = a.clone().requires_grad_(True)
    dom.signed_distance(z).sum().backward()
    assert float(z.grad.norm(dim=1).max()) <= 1.0 + 1e-12


def test_batched_shapes_and_blocks(monkeypatch):
    import ocsdf.core.domain as domain_module

    dom = _domain(Box(-5.0, 5.0), k=50)
    z = torch.as_tensor(np.random.default_rng(3).normal(size=(2, 500, 3)) * 8.0)
    full = dom.signed_distance(z)
    assert full.shape == (2, 500)
    monkeypatch.setattr(domain_module, "_BALL_BLOCK", 7)  # centres in 8 blocks: same result
    torch.testing.assert_close(dom.signed_distance(z), full, rtol=0, atol=0)
    torch.testing.assert_close(dom.project(z), WithBalls(dom.base, dom.centres, dom.radius)
                               .project(z))
    with pytest.raises(ValueError, match="radius must be > 0"):
        WithBalls(Box(), np.zeros((1, 3)), 0.0)


def test_saved_model_keeps_its_balls(tmp_path, recwarn):
    X = np.random.default_rng(0).normal(size=(300, 4))
    X[:3, 1] = 30.0
    model = OCSDF(n_steps=40, random_state=0).fit(X)
    assert model.domain_rows_.shape == (3, 4)
    model.save(tmp_path / "m")
    loaded = OCSDF.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.domain_rows_, model.domain_rows_)
    assert loaded.scorer_.domain.radius == model.scorer_.domain.radius
    probe = np.vstack([X, X[:3] + 0.01, X[:3] + 3.0])
    np.testing.assert_array_equal(loaded.score_samples(probe), model.score_samples(probe))


def test_unit_box_rows_outside_get_no_balls_and_say_so():
    from ocsdf.errors import DomainWarning

    X = np.random.default_rng(0).uniform(size=(100, 3))
    X[0, 1] = 1.5
    with pytest.warns(DomainWarning, match=r"1 of 100 training rows \(1.0 %\) lie outside the "
                      r"unit box \[0, 1\]\^d of the negatives; the network was never shown"):
        model = OCSDF(domain="unit", standardize=False, n_steps=20).fit(X)
    assert model.domain_rows_.shape == (0, 3) and not model.scorer_.clip_to_domain


def test_ball_centres_cached_in_inference_mode_still_differentiate():
    """B's centres, converted once per dtype while training (in inference mode), stay usable
    by autograd afterwards (attacks and explanations differentiate through B's distance)."""
    domain = WithBalls(Box(-1.0, 1.0), np.array([[2.0, 0.0]]), 0.5)
    with torch.inference_mode():
        domain.project(torch.tensor([[3.0, 0.0]]))
    z = torch.tensor([[1.8, 0.1]], requires_grad=True)
    domain.signed_distance(z).sum().backward()
    # nearest is the ball around (2, 0): r - |z - c| with gradient -(z - c) / |z - c|
    expected = -(torch.tensor([[1.8, 0.1]]) - torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(z.grad, expected / expected.norm())
