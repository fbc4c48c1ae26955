"""One training path for one model and for M stacked models (ocsdf.core.training.train,
OCSDF.fit, ocsdf.fit_many): equivalence, quality, per-model margins, fitted estimators."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ocsdf import OCSDF, InputError, fit_many
from ocsdf.core.domain import Ball, Box
from ocsdf.core.nn import LipschitzMLP, make_mlp
from ocsdf.core.training import InMemoryPositives, TrainConfig, train

# training settings pinned (the measured numbers below do not follow the estimator defaults)
SMALL = dict(width=32, depth=2, n_steps=300, warmup_steps=30, n_newton_steps=4,
             learning_rate=1e-3, bias_lr_factor=1.0)


def _gaussian_vs_uniform(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """5-D standard Gaussian rows (train, held-out normal) and uniform rows in [-4, 4]^5."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1000, 5)), rng.normal(size=(500, 5)), rng.uniform(-4, 4, (500, 5))


def _auroc(model, normal, outliers) -> float:
    s = np.r_[model.score_samples(normal), model.score_samples(outliers)]
    return float(roc_auc_score(np.r_[np.ones(len(normal)), np.zeros(len(outliers))], s))


@pytest.mark.parametrize("activation,domain,steps,atol,t",
                         [("groupsort2", Box(), 60, 1e-4, 4), ("groupsort2", Box(), 60, 1e-4, 1),
                          ("fullsort", Ball(5.0), 8, 3e-3, 4)])
def test_stacked_models_follow_their_single_runs(activation, domain, steps, atol, t):
    """M = 2 in one run: each model follows the M = 1 run with its seed, margin and data up to
    float rounding of batched kernels (short run), and its own data set is used.

    Rounding differences are amplified by RMSprop: a weight whose gradient is near 0 moves by
    about +-lr whatever its size, so a sign flipped by rounding moves it 2 lr = 2e-3 apart
    (measured 1.5e-3 for FullSort after 8 warm-up steps on another CPU and torch 2.11; 0 here).
    FullSort is compared during the warm-up only: once Newton steps start, a rounding-level
    difference that reorders a sort changes a negative's path and the runs part (0.02 in a
    weight after 20 steps, measured); GroupSort2 stayed within 1e-7 after 60 steps. T = 1 is
    the fused path (each step's training pass also makes the next step's negatives)."""
    gen = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(500, 5, generator=gen), torch.randn(300, 5, generator=gen) + 1.0
    cfg = TrainConfig(n_steps=steps, warmup_steps=10, n_newton_steps=t)
    joint = make_mlp(5, 32, 2, activation, n_models=2, seeds=[1, 2])
    hist = train(joint, [xa, xb], domain, cfg, margins=[0.05, 0.2], seeds=[3, 4])
    for i, (x, m, s_net, s_run) in enumerate(((xa, 0.05, 1, 3), (xb, 0.2, 2, 4))):
        alone = make_mlp(5, 32, 2, activation, seeds=[s_net])
        (h,) = train(alone, x, domain, TrainConfig(n_steps=steps, warmup_steps=10, margin=m,
                                                   seed=s_run, n_newton_steps=t))
        for p, q in zip(alone.parameters(), joint.parameters()):
            torch.testing.assert_close(p[0], q[i], atol=atol, rtol=0)
        np.testing.assert_allclose(h.loss, hist[i].loss, atol=1e-3)
    # a different seed gives a different trajectory (the comparison above can fail)
    other = make_mlp(5, 32, 2, activation, seeds=[1])
    (h_other,) = train(other, xa, domain, TrainConfig(n_steps=steps, warmup_steps=10, seed=9,
                                                      n_newton_steps=t))
    assert np.abs(np.array(hist[0].loss) - np.array(h_other.loss)).max() > 1e-2


@pytest.mark.parametrize("t", [4, 1])
def test_hand_written_step_trains_as_autograd(t):
    """The hand-written step (no autograd) follows autograd's trajectory over a short run with
    T = 4 (to float rounding); with T = 1 it fuses the next step's Newton pass into the training
    pass (negatives from the weights one update older, drawn in another order), so it follows
    another trajectory of the same quality."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=gen)
    cfg = TrainConfig(n_steps=12 if t == 4 else 400, warmup_steps=4, batch_size=32,
                      n_newton_steps=t, lr=1e-3 if t == 4 else 3e-3)
    nets, losses = [], []
    for cls in (LipschitzMLP, _AutogradMLP):
        nets.append(cls(4, [16, 16], n_models=2, seeds=[0, 1]))
        losses.append([h.loss for h in train(nets[-1], x, Box(), cfg, seeds=[5, 6],
                                             log_every=1)])
    params = [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in nets]
    # TrainConfig(autograd=True) is the autograd path, bit for bit
    forced = LipschitzMLP(4, [16, 16], n_models=2, seeds=[0, 1])
    train(forced, x, Box(), replace(cfg, autograd=True), seeds=[5, 6])
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in forced.parameters()]),
                       params[1])
    if t == 4:
        torch.testing.assert_close(params[0], params[1], rtol=0, atol=1e-5)
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
        return
    assert float((params[0] - params[1]).abs().max()) > 1e-3
    test = torch.cat((torch.randn(300, 4, generator=gen), 8 * torch.rand(300, 4, generator=gen)
                      - 4))
    labels = np.r_[np.ones(300), np.zeros(300)]
    aurocs = [[roc_auc_score(labels, s) for s in net(test).detach().numpy()] for net in nets]
    # measured: 0.954 / 0.951 fused, 0.952 / 0.951 with autograd
    assert min(aurocs[0]) > 0.9 and min(aurocs[1]) > 0.9
    assert abs(np.mean(aurocs[0]) - np.mean(aurocs[1])) < 0.02, aurocs


def test_train_checks_margins_and_seeds():
    net = make_mlp(3, 8, 1, n_models=2, seeds=[0, 1])
    x = torch.randn(20, 3)
    with pytest.raises(ValueError, match="one seed per model"):
        train(net, x, Box(), TrainConfig(n_steps=1))
    with pytest.raises(ValueError, match="need 2 entries"):
        train(net, x, Box(), TrainConfig(n_steps=1), margins=[0.1], seeds=[0, 1])
    with pytest.raises(ValueError, match="margin must be > 0"):
        train(net, x, Box(), TrainConfig(n_steps=1), margins=[0.1, 0.0], seeds=[0, 1])
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        train(net, torch.randn(20, 4), Box(), TrainConfig(n_steps=1), seeds=[0, 1],
              margins=[0.1, 0.1])


class _AutogradMLP(LipschitzMLP):
    """A LipschitzMLP that the trainer differentiates with autograd (no hand-written step)."""

    def supports_tape(self) -> bool:
        return False


def test_positive_sources_and_extra_loss_hooks():
    """A positive source with InMemoryPositives' draw trains exactly as the defaults; a zero
    extra loss (which needs autograd) exactly as a network without the hand-written step; a
    non-zero extra loss changes the trajectory and is called every update."""
    x = torch.randn(50, 3)
    cfg = TrainConfig(n_steps=20, warmup_steps=5, batch_size=16)

    def run(cls=LipschitzMLP, **kw):
        net = cls(3, [8, 8], n_models=2, seeds=[0, 1])
        train(net, x, Box(), cfg, seeds=[3, 4], **kw)
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    base = run()
    source = InMemoryPositives(x, 2, 3, "cpu", torch.float32)
    net = make_mlp(3, 8, 2, n_models=2, seeds=[0, 1])
    train(net, source, Box(), cfg, seeds=[3, 4])
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in net.parameters()]), base)
    base = run(_AutogradMLP)
    calls = []

    def zero(forward, step):
        calls.append(step)
        out = forward(torch.zeros(2, 4, 3))
        assert out.shape == (2, 4)
        return 0.0 * out.sum(1)

    assert torch.equal(run(extra_loss=zero), base)
    assert calls == list(range(20))
    pulled = run(extra_loss=lambda forward, step: (forward(torch.zeros(2, 1, 3)) - 3.0)
                 .square().sum(1))
    assert not torch.equal(pulled, base)


def test_trained_models_are_1_lipschitz():
    net = make_mlp(5, 16, 2, n_models=3, seeds=[0, 1, 2])
    train(net, torch.randn(300, 5), Box(), TrainConfig(n_steps=40, warmup_steps=5,
                                                        batch_size=32), seeds=[0, 1, 2])
    for i, bound in enumerate(net.lipschitz_bounds()):
        assert bound <= 1 + 1e-5
        m = net.export(i)
        x = (torch.randn(2000, 5) * 3).requires_grad_(True)
        (g,) = torch.autograd.grad(m(x).sum(), x)
        assert g.norm(dim=1).max().item() <= bound * (1 + 1e-5)


def test_fit_many_matches_fit_on_a_short_run():
    """Each estimator gets the attributes OCSDF.fit gives it (same seed, same data)."""
    x, normal, outliers = _gaussian_vs_uniform()
    params = dict(width=16, depth=2, n_steps=40, warmup_steps=5)
    many = fit_many([x, x[:600]], ["auto", 0.1], [0, 7], **params)
    singles = [OCSDF(margin="auto", random_state=0, **params).fit(x),
               OCSDF(margin=0.1, random_state=7, **params).fit(x[:600])]
    for a, b in zip(many, singles):
        np.testing.assert_array_equal(a.mean_, b.mean_)
        np.testing.assert_array_equal(a.scale_, b.scale_)
        assert a.margin_ == b.margin_ and a.offset_ == b.offset_ == 0.0
        assert a.n_features_in_ == 5 and a.lipschitz_ == pytest.approx(b.lipschitz_, abs=1e-5)
        np.testing.assert_allclose(a.score_samples(outliers), b.score_samples(outliers),
                                   atol=1e-3)
        assert len(a.history_.loss) == len(b.history_.loss)


def test_fit_many_quality_matches_separate_fits():
    """Different seeds in one batched run reach the AUROC of separately fitted models.

    Measured (300 steps, 32 x 2): batched 0.9754 / 0.9766 / 0.9762 for seeds 0, 1, 2, separate
    fits 0.9754 / 0.9766 / 0.9761 -- the same random draws per seed, so the per-seed difference
    is rounding only (<= 1e-4); the bar leaves room for other platforms' rounding.
    """
    x, normal, outliers = _gaussian_vs_uniform()
    seeds = [0, 1, 2]
    many = fit_many([x] * 3, [0.05] * 3, seeds, **SMALL)
    au_many = [_auroc(m, normal, outliers) for m in many]
    assert min(au_many) >= 0.95
    for seed in (0, 2):
        single = OCSDF(margin=0.05, random_state=seed, **SMALL).fit(x)
        assert abs(au_many[seed] - _auroc(single, normal, outliers)) <= 0.005
    # the seeds really differ
    s = [m.score_samples(normal[:20]) for m in many]
    assert np.abs(s[0] - s[1]).max() > 1e-3


def test_per_model_margins_differ():
    x, _, _ = _gaussian_vs_uniform()
    small, large = fit_many([x, x], [0.01, 0.5], [0, 0], **SMALL)
    assert (small.margin_, large.margin_) == (0.01, 0.5)
    # The hinge pushes f >= m on the positives: the large-margin model scores its training rows
    # higher, and its negatives sat at <= -m.
    q_small = np.quantile(small.score_samples(x), 0.25)
    q_large = np.quantile(large.score_samples(x), 0.25)
    assert q_large > q_small + 0.2  # measured 0.65 against 0.16
    assert large.history_.f_neg[-1] < -0.6 < small.history_.f_neg[-1]  # measured -0.96, -0.29


def test_fit_many_estimators_save_load_and_calibrate(tmp_path):
    x, normal, outliers = _gaussian_vs_uniform()
    params = dict(width=16, depth=1, n_steps=30, warmup_steps=5)
    a, b = fit_many([x, x], [0.05, 0.05], [0, 1], fpr=0.05, **params)
    ref = OCSDF(margin=0.05, random_state=1, fpr=0.05, **params).fit(x)
    assert len(b.calibration_scores_) == len(ref.calibration_scores_) == 200
    assert b.offset_ == pytest.approx(ref.offset_, abs=1e-3)
    a.save(tmp_path / "m")
    loaded = OCSDF.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.score_samples(outliers), a.score_samples(outliers),
                               atol=1e-9)
    np.testing.assert_allclose(loaded.predict_pvalue(normal), a.predict_pvalue(normal))
    assert a.fit_time_ == b.fit_time_ > 0 and loaded.fit_time_ == a.fit_time_  # amortised


def test_fit_many_rejects_bad_input():
    x = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(InputError, match="same length"):
        fit_many([x, x], [0.05], [0, 1], n_steps=2)
    with pytest.raises(InputError, match="features"):
        fit_many([x, x[:, :2]], [0.05, 0.05], [0, 1], n_steps=2)
    with pytest.raises(InputError, match="at least one"):
        fit_many([], [], [], n_steps=2)
    with pytest.raises(InputError, match="margins/seeds"):
        fit_many([x], [0.05], [0], margin=0.1, n_steps=2)
    with pytest.raises(ValueError, match="n_steps"):
        fit_many([x], [0.05], [0], n_steps=0)


def test_fit_many_trims_like_fit():
    """fit_many(trim=q) runs OCSDF.fit's two stages: the same kept rows (same standardisation)
    and, over a short run, the same scores up to rounding."""
    x, _, outliers = _gaussian_vs_uniform()
    params = dict(width=16, depth=2, n_steps=40, warmup_steps=5, trim=0.1)
    many = fit_many([x, x], ["auto", 0.1], [0, 7], **params)
    singles = [OCSDF(margin="auto", random_state=0, **params).fit(x),
               OCSDF(margin=0.1, random_state=7, **params).fit(x)]
    for a, b in zip(many, singles):
        np.testing.assert_allclose(a.mean_, b.mean_, rtol=1e-12)
        assert a.margin_ == pytest.approx(b.margin_, rel=1e-12) and a.trim == 0.1
        np.testing.assert_allclose(a.score_samples(outliers), b.score_samples(outliers),
                                   atol=1e-3)
    assert not np.allclose(many[0].mean_, x.mean(axis=0))  # the refit saw fewer rows


def _one_step(config: TrainConfig) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(weight-parameter changes, bias changes) of a 2-model network after ``config``."""
    net = make_mlp(3, 8, 2, n_models=2, seeds=[0, 1])
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    train(net, x, Box(-5, 5), config, seeds=[0, 1])
    bias_ids = {id(b) for b in net.biases()}
    moved = [(p.detach() - b0) for p, b0 in zip(net.parameters(), before)]
    flags = [id(p) in bias_ids for p in net.parameters()]
    return ([m for m, f in zip(moved, flags) if not f], [m for m, f in zip(moved, flags) if f])


def test_bias_learning_rate_factor_scales_the_bias_steps_only():
    """RMSprop's first update is lr * g / sqrt(0.01 g^2) = 10 lr per entry with a gradient:
    a factor 10 makes the biases' first step exactly 10 times larger and leaves the weights'."""
    base = TrainConfig(n_steps=1, warmup_steps=1, batch_size=16, lr=1e-3)
    w1, b1 = _one_step(base)
    w10, b10 = _one_step(TrainConfig(**{**base.__dict__, "bias_lr_factor": 10.0}))
    for a, b in zip(w1, w10):
        torch.testing.assert_close(a, b)
    moved = [(a, b) for a, b in zip(b1, b10) if a.abs().max() > 0]
    assert moved
    for a, b in moved:
        torch.testing.assert_close(b, 10 * a, rtol=1e-4, atol=1e-9)
    assert float(max(a.abs().max() for a, _ in moved)) == pytest.approx(1e-2, rel=1e-3)
    with pytest.raises(ValueError, match="bias_lr_factor"):
        _one_step(TrainConfig(**{**base.__dict__, "bias_lr_factor": 0.0}))


def test_cosine_schedule_starts_at_the_rate_and_then_decays():
    """Step 0 runs at the full rate (a one-step run equals the constant one); later steps at a
    smaller rate (a three-step run moves the parameters less than the constant one)."""
    base = dict(warmup_steps=0, batch_size=16, lr=1e-2)
    same = [_one_step(TrainConfig(n_steps=1, lr_schedule=s, **base)) for s in
            ("constant", "cosine")]
    for a, b in zip(same[0][0] + same[0][1], same[1][0] + same[1][1]):
        torch.testing.assert_close(a, b)
    const, cos = (_one_step(TrainConfig(n_steps=3, lr_schedule=s, **base))
                  for s in ("constant", "cosine"))
    total = [sum(float(m.abs().sum()) for m in part[0] + part[1]) for part in (const, cos)]
    assert total[1] < 0.95 * total[0]
    with pytest.raises(ValueError, match="lr_schedule"):
        _one_step(TrainConfig(n_steps=1, lr_schedule="step", **base))


def test_linear_schedule_goes_from_the_rate_to_a_thousandth():
    from ocsdf.core.training import LINEAR_FINAL_FACTOR, lr_factor

    factors = [lr_factor("linear", k, 5) for k in range(5)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(LINEAR_FINAL_FACTOR)
    assert np.allclose(np.diff(factors), np.diff(factors)[0])
    assert lr_factor("cosine", 0, 5) == 1.0 and lr_factor("constant", 3, 5) == 1.0
    base = dict(warmup_steps=0, batch_size=16, lr=1e-2)
    const, lin = (_one_step(TrainConfig(n_steps=3, lr_schedule=s, **base))
                  for s in ("constant", "linear"))
    total = [sum(float(m.abs().sum()) for m in part[0] + part[1]) for part in (const, lin)]
    assert total[1] < 0.9 * total[0]


@pytest.mark.parametrize("flat", [False, True])
def test_our_rmsprop_is_torchs_bit_for_bit(flat):
    """The hand-written RMSprop (no torch._dynamo import) makes torch.optim.RMSprop's updates
    exactly, with two parameter groups at different rates, with and without moving the
    parameters into one flat buffer per group."""
    from ocsdf.core.training import RMSprop

    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(5, 5, generator=gen).requires_grad_(), torch.randn(3, generator=gen)
            .requires_grad_(), torch.randn(2, 4, generator=gen).requires_grad_()]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    opts = (RMSprop([{"params": ours[::2], "lr": 1e-3}, {"params": [ours[1]], "lr": 1e-2}],
                    flat=flat),
            torch.optim.RMSprop([{"params": theirs[::2], "lr": 1e-3},
                                 {"params": [theirs[1]], "lr": 1e-2}]))
    for _ in range(20):
        for params, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            ((params[0] ** 3).sum() + params[1].sin().sum() + params[2].exp().sum()).backward()
            opt.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    shared = {p.untyped_storage().data_ptr() for p in ours}
    assert len(shared) == (2 if flat else 3)  # a flat buffer per group holds its parameters
