"""HKR loss values and Algorithm 1 (Newton–Raphson negatives), one model and a model axis."""

from __future__ import annotations

import pytest
import torch

from ocsdf.core.domain import Ball, Box, WithBalls
from ocsdf.core.loss import hkr_loss, hkr_loss_and_grad
from ocsdf.core.sampling import domain_centre, negative_starts, newton_raphson_negatives


def test_hkr_loss_matches_formula():
    fp = torch.tensor([0.5, -0.1])
    fn = torch.tensor([-1.0, 0.02])
    m, lam = 0.05, 100.0
    pos = [lam * max(0.0, m - v) - v for v in (0.5, -0.1)]
    neg = [lam * max(0.0, m + v) + v for v in (-1.0, 0.02)]
    expected = sum(pos) / 2 + sum(neg) / 2
    assert float(hkr_loss(fp, fn, m, lam)) == pytest.approx(expected)


def test_hkr_loss_and_grad_by_hand_is_autograds():
    """The hand-written loss and derivative equal hkr_loss and its autograd gradient per model
    (margin per model, scores on both sides of each hinge), and extra rows get derivative 1."""
    gen = torch.Generator().manual_seed(0)
    scores = 0.2 * torch.randn(3, 17, generator=gen)  # 6 positives, 5 negatives, 6 extra
    margin = torch.tensor([0.01, 0.1, 0.3])
    loss, grad = hkr_loss_and_grad(scores, 6, 5, margin, 50.0)
    s = scores[:, :11].clone().requires_grad_(True)
    expected = hkr_loss(s[:, :6], s[:, 6:], margin, 50.0)
    expected.sum().backward()
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad[:, :11], s.grad)
    assert torch.equal(grad[:, 11:], torch.ones(3, 6))
    hinged = (margin[:, None] - s[:, :6] > 0).sum() + (margin[:, None] + s[:, 6:] > 0).sum()
    assert 0 < int(hinged) < 33  # both sides of the hinges are exercised


def test_hkr_loss_per_model_uses_each_models_margin():
    fp = torch.tensor([[0.5, -0.1], [0.5, -0.1]])
    fn = torch.tensor([[-1.0, 0.02], [-1.0, 0.02]])
    per_model = hkr_loss(fp, fn, torch.tensor([0.05, 0.2]), 100.0)
    assert per_model.shape == (2,)
    assert float(per_model[0]) == pytest.approx(float(hkr_loss(fp[0], fn[0], 0.05)))
    assert float(per_model[1]) == pytest.approx(float(hkr_loss(fp[1], fn[1], 0.2)))


def test_newton_raphson_moves_towards_the_level_without_crossing_it():
    """For f = 1 - ||z|| (SDF of the unit disc) every sample moves towards ``f = -m``
    (radius 1 + m) and never crosses it; each step's eta is in [0, 1]."""
    f = lambda z: 1.0 - z.norm(dim=-1)  # noqa: E731
    m = 0.1
    z0 = newton_raphson_negatives(f, Ball(5.0), 2000, 2, 0, m, torch.Generator().manual_seed(0))
    z = newton_raphson_negatives(f, Ball(5.0), 2000, 2, 4, m, torch.Generator().manual_seed(0))
    gap0, gap = z0.norm(dim=1) - (1 + m), z.norm(dim=1) - (1 + m)
    assert z.norm(dim=1).max() <= 5.0 + 1e-5
    assert (torch.sign(gap) == torch.sign(gap0)).all()
    assert (gap.abs() <= gap0.abs() + 1e-6).all()
    assert (gap.abs() < 0.9 * gap0.abs()).float().mean() > 0.5  # most samples really moved
    # Samples move along the radius only (the gradient direction of f).
    cos = (z * z0).sum(1) / (z.norm(dim=1) * z0.norm(dim=1))
    assert cos.min() > 1 - 1e-5


def test_model_axis_gives_each_model_its_own_draws_and_level():
    """With M generators, model i's negatives equal a single-model run with its generator and
    margin: the models do not see each other's draws."""
    f = lambda z: 1.0 - z.norm(dim=-1)  # noqa: E731
    margins = torch.tensor([0.1, 0.5])
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    joint = newton_raphson_negatives(f, Ball(5.0), 300, 2, 4, margins, gens)
    assert joint.shape == (2, 300, 2)
    for i, (s, m) in enumerate(((3, 0.1), (4, 0.5))):
        alone = newton_raphson_negatives(f, Ball(5.0), 300, 2, 4, m,
                                         torch.Generator().manual_seed(s))
        torch.testing.assert_close(joint[i], alone)


def test_zero_steps_gives_uniform_samples_in_the_box():
    gen = torch.Generator().manual_seed(0)
    z = newton_raphson_negatives(lambda z: z.sum(-1), Box(-5, 5), 20000, 3, 0, 0.1, gen)
    assert z.min() >= -5 and z.max() <= 5
    assert z.mean(0).abs().max() < 0.1


@pytest.mark.parametrize("domain", [Box(-5, 5), Box(0, 1), Ball(3.0)])
def test_spread_puts_half_the_starts_in_the_shrunk_domain(domain):
    """spread = a: each start is a draw of B, moved with probability 1/2 to c + a (z - c); the
    draw of B is the one spread = 1 makes (same generator, same first draw), so the starts are
    exactly a mix of the paper's starts and their shrunk copies."""
    n, d, a = 20000, 3, 0.4
    plain, _ = negative_starts(domain, n, d, 0, [torch.Generator().manual_seed(7)])
    spread, _ = negative_starts(domain, n, d, 0, [torch.Generator().manual_seed(7)], spread=a)
    c = domain_centre(domain)
    shrunk = torch.isclose(spread, c + a * (plain - c), atol=1e-6).all(-1)[0]
    same = (spread == plain).all(-1)[0]
    assert bool((shrunk | same).all())
    share = shrunk.double().mean().item()
    assert abs(share - 0.5) < 0.02  # 5.7 binomial standard deviations at n = 20000
    # every start stays in B: the shrunk copies of B's points lie in a B shrunk about c
    assert float(domain.distance_outside(spread[0]).max()) == 0.0
    # the shrunk half lies a times as far from the centre
    r_plain = (plain[0][shrunk] - c).norm(dim=-1).mean()
    r_spread = (spread[0][shrunk] - c).norm(dim=-1).mean()
    assert abs(float(r_spread / r_plain) - a) < 1e-5


def test_spread_one_is_the_paper_and_out_of_range_is_an_error():
    f = lambda z: 1.0 - z.norm(dim=-1)  # noqa: E731
    base = newton_raphson_negatives(f, Ball(5.0), 200, 2, 2, 0.1, torch.Generator().manual_seed(1))
    same = newton_raphson_negatives(f, Ball(5.0), 200, 2, 2, 0.1,
                                    torch.Generator().manual_seed(1), spread=1.0)
    assert torch.equal(base, same)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="spread must be in"):
            negative_starts(Ball(5.0), 4, 2, 1, [torch.Generator()], spread=bad)


def test_domain_centre_of_each_domain():
    assert domain_centre(Box(-5, 5)) == 0.0
    assert domain_centre(Box(0, 1)) == 0.5
    assert domain_centre(Ball(2.0)) == 0.0
    assert domain_centre(WithBalls(Box(-2, 4), [[9.0, 9.0]], 0.1)) == 1.0


def test_samples_stay_in_the_domain_after_projection():
    gen = torch.Generator().manual_seed(0)
    f = lambda z: -z[:, 0]  # noqa: E731  - pushes samples towards +inf in x0
    z = newton_raphson_negatives(f, Box(-1, 1), 500, 2, 8, 10.0, gen)
    assert z.max() <= 1.0 and z.min() >= -1.0


def test_domain_distance_outside():
    box, ball = Box(-1, 1), Ball(2.0)
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [2.0, 2.0]])
    assert torch.allclose(box.distance_outside(z), torch.tensor([0.0, 2.0, 2 ** 0.5]))
    assert torch.allclose(ball.distance_outside(z), torch.tensor([0.0, 1.0, 8 ** 0.5 - 2]))


def test_value_and_grad_gives_the_same_negatives_as_autograd():
    """Passing ``f`` and its gradient in one callable changes nothing but the cost."""
    f = lambda z: 1.0 - z.norm(dim=-1)  # noqa: E731

    def vg(z):
        return f(z), -z / z.norm(dim=-1, keepdim=True)

    for gens in (torch.Generator().manual_seed(5), [torch.Generator().manual_seed(s)
                                                     for s in (5, 6)]):
        fm = f if isinstance(gens, torch.Generator) else (lambda z: f(z))
        a = newton_raphson_negatives(fm, Box(-5, 5), 200, 3, 4, 0.1, gens)
        gens2 = (torch.Generator().manual_seed(5) if isinstance(gens, torch.Generator)
                 else [torch.Generator().manual_seed(s) for s in (5, 6)])
        b = newton_raphson_negatives(fm, Box(-5, 5), 200, 3, 4, 0.1, gens2, value_and_grad=vg)
        torch.testing.assert_close(a, b)


def test_hand_written_loss_made_in_inference_mode_still_differentiates():
    """The loss's cached constants are normal tensors even when first made in inference mode
    (the trainer's), so autograd can use the function afterwards."""
    with torch.inference_mode():
        hkr_loss_and_grad(torch.randn(2, 7), 3, 2, torch.tensor([0.1, 0.2]), 30.0)
    scores = torch.randn(2, 7, requires_grad=True)
    loss, grad = hkr_loss_and_grad(scores, 3, 2, torch.tensor([0.1, 0.2]), 30.0)
    loss.sum().backward()
    torch.testing.assert_close(scores.grad[:, :5], grad[:, :5].detach())
