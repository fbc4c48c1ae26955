"""Certificates: certified AUROC arithmetic, raw-space bounds, attacks that cannot break them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ocsdf import OCSDF
from ocsdf.baselines import train_conventional
from ocsdf.certify import (
    certified_auroc,
    certified_auroc_terms,
    empirical_auroc_under_attack,
    lipschitz_in,
    pgd_attack,
    radius_from_terms,
    score_terms,
)
from ocsdf.core.domain import Ball, Box
from ocsdf.data import load_adbench, oc_split

EPS = np.array([0.0, 0.05, 0.1, 0.2, 0.5])


def test_certified_auroc_at_zero_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    sn, sa = rng.integers(0, 5, 300).astype(float), rng.integers(-2, 3, 200).astype(float)
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[sn, sa])
    assert certified_auroc(sn, sa, 0.0) == pytest.approx(expected, abs=1e-12)


def test_certified_auroc_is_the_auroc_of_worst_case_scores():
    rng = np.random.default_rng(1)
    sn, sa = rng.normal(1, 1, 400), rng.normal(-1, 1, 300)
    got = certified_auroc(sn, sa, EPS, lipschitz=1.5)
    labels = np.r_[np.ones(400), np.zeros(300)]
    for e, g in zip(EPS, got):
        assert g == pytest.approx(roc_auc_score(labels, np.r_[sn - 1.5 * e, sa + 1.5 * e]))
    assert np.all(np.diff(got) <= 0)
    assert isinstance(certified_auroc(sn, sa, 0.1), float)


def test_certified_auroc_rejects_negative_budget():
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        certified_auroc([1.0], [0.0], -0.1)


def test_raw_space_bound_covers_gradients_with_unequal_scales():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * np.array([0.01, 1.0, 100.0])
    model = OCSDF(n_steps=200, width=16, depth=2, random_state=0).fit(x)
    L_raw = lipschitz_in(model, "raw")
    assert L_raw == pytest.approx(model.lipschitz_ / model.scale_.min())
    pts = torch.as_tensor(x + rng.normal(size=x.shape) * x.std(0)).requires_grad_(True)
    (g,) = torch.autograd.grad(model.score_tensor(pts).sum(), pts)
    assert g.norm(dim=1).max().item() <= L_raw * (1 + 1e-9)
    # The radius is the distance to the threshold divided by the raw bound.
    r = model.certified_radius(x[:10])
    assert np.allclose(r, np.abs(model.decision_function(x[:10])) / L_raw)


def test_term_bounds_fold_the_standardisation_into_the_first_layer():
    """Wide first layer (d > width: orthonormal rows): ||W1 diag(1/scale)|| is below
    ||W1|| / min(scale); tall layers (orthonormal columns) give exactly 1 / min(scale)."""
    rng = np.random.default_rng(0)
    scales = np.r_[np.full(20, 0.05), np.ones(20)]
    x = rng.normal(size=(200, 40)) * scales
    for width, expect_gain in ((16, True), (64, False)):
        model = OCSDF(n_steps=30, width=width, depth=2, random_state=0).fit(x)
        sc = model.scorer_
        lf, lb = sc.term_lipschitz("raw")
        w = sc.net[0].weight.detach().double().numpy()
        rest = np.prod([np.linalg.norm(m.weight.detach().double().numpy(), 2)
                        for m in sc.net[1:] if isinstance(m, torch.nn.Linear)])
        assert lf == pytest.approx(np.linalg.norm(w / sc.scale, 2) * rest, rel=1e-9)
        assert lb == pytest.approx(1 / sc.scale.min())
        assert lf <= sc.network_lipschitz / sc.scale.min() * (1 + 1e-12)
        # an independent lower bound: gradient norms of the network term in raw units
        pts = torch.as_tensor(x + rng.normal(size=x.shape) * scales).requires_grad_(True)
        z = (pts - torch.as_tensor(sc.mean)) / torch.as_tensor(sc.scale)
        (g,) = torch.autograd.grad(sc.net(z).sum(), pts)
        assert g.norm(dim=1).max().item() <= lf * (1 + 1e-9)
        assert (lf < 0.9 * lb) == expect_gain
        assert lipschitz_in(model, "raw") == pytest.approx(max(lf, lb))


def test_term_wise_certificates_generalise_the_single_bound():
    rng = np.random.default_rng(3)
    tn, ta = rng.normal(1, 1, (300, 2)), rng.normal(-1, 1, (200, 2))
    sn, sa = tn.min(1), ta.min(1)
    # equal bounds: exactly the single-bound certificate and radius
    np.testing.assert_allclose(certified_auroc_terms(tn, ta, EPS, (1.5, 1.5)),
                               certified_auroc(sn, sa, EPS, 1.5), rtol=0, atol=1e-15)
    np.testing.assert_allclose(radius_from_terms(tn, 0.2, (1.5, 1.5)), np.abs(sn - 0.2) / 1.5,
                               rtol=1e-12)
    # a smaller network bound: never below the single bound with the larger constant
    tight = certified_auroc_terms(tn, ta, EPS, (0.5, 1.5))
    assert np.all(tight >= certified_auroc(sn, sa, EPS, 1.5) - 1e-15)
    assert tight[-1] > certified_auroc(sn, sa, EPS[-1], 1.5) + 0.01
    r = radius_from_terms(tn, 0.2, (0.5, 1.5))
    inlier = sn >= 0.2
    expect_in = np.minimum((tn[:, 0] - 0.2) / 0.5, (tn[:, 1] - 0.2) / 1.5)
    expect_out = np.maximum(np.clip(0.2 - tn[:, 0], 0, None) / 0.5,
                            np.clip(0.2 - tn[:, 1], 0, None) / 1.5)
    np.testing.assert_allclose(r, np.where(inlier, expect_in, expect_out), rtol=1e-12)
    # no domain term (None): the network term alone
    np.testing.assert_allclose(
        radius_from_terms(np.c_[sn, np.full(300, np.inf)], 0.2, (0.5, None)),
        np.abs(sn - 0.2) / 0.5, rtol=1e-12)


def test_term_wise_radius_is_never_broken_by_an_attack_on_a_wide_input():
    """Rows pushed by PGD to 0.98 of their term-wise radius (raw units, wide first layer, so
    the network term's bound is below the single one) never change prediction."""
    rng = np.random.default_rng(1)
    scales = np.r_[np.full(20, 0.05), np.ones(20)]
    x = rng.normal(size=(300, 40)) * scales
    model = OCSDF(n_steps=150, width=16, depth=2, random_state=0).fit(x)
    rows = np.r_[x[:40], rng.normal(size=(40, 40)) * scales * 3]
    terms = score_terms(model, rows)
    np.testing.assert_array_equal(terms.min(1), model.score_samples(rows))
    radius = model.certified_radius(rows)
    single = np.abs(model.decision_function(rows)) / lipschitz_in(model, "raw")
    assert np.all(radius >= single * (1 - 1e-12)) and np.any(radius > 1.02 * single)
    label = model.predict(rows)
    xt = torch.as_tensor(rows)
    for sign in (-1, 1):
        sel = label == (1 if sign == -1 else -1)
        for i in np.flatnonzero(sel):
            adv = pgd_attack(model.score_tensor, xt[i : i + 1], 0.98 * float(radius[i]), sign,
                             n_iter=40, restarts=2, seed=int(i))
            assert model.predict(adv.numpy())[0] == label[i]


def _check_sound(model, xn, xa, eps_grid, space):
    """|f(x+d) - f(x)| <= L ||d|| on attacked rows and empirical AUROC >= certified AUROC."""
    L = lipschitz_in(model, space)
    cert = model.certified_auroc(xn, xa, eps_grid, space=space)
    emp = empirical_auroc_under_attack(model, xn, xa, eps_grid, space=space, n_iter=20,
                                       restarts=2)
    assert np.all(emp >= cert - 1e-12), (emp, cert)
    to_t = torch.as_tensor
    mean, scale = to_t(model.mean_), to_t(model.scale_)
    fn = model.score_tensor if space == "raw" else (lambda z: model.score_tensor(z * scale + mean))
    x = to_t(xn) if space == "raw" else (to_t(xn) - mean) / scale
    for e in eps_grid[1:]:
        adv = pgd_attack(fn, x, float(e), -1, n_iter=20, restarts=2)
        delta = (adv - x).norm(dim=1)
        assert delta.max().item() <= e * (1 + 1e-9)
        with torch.no_grad():
            change = (fn(adv) - fn(x)).abs()
        assert (change <= L * delta + 1e-9).all()
        assert change.max().item() > 0.3 * L * e  # the attack really moves scores
    return cert, emp


def test_certificates_hold_on_two_moons(moons, moons_model):
    _, held_out = moons
    anomalies = Ball(5.0).sample(300, 2, torch.Generator().manual_seed(5)).double().numpy()
    cert, emp = _check_sound(moons_model, held_out[:300], anomalies, EPS, "standardized")
    assert cert[0] > 0.95 and cert[1] < cert[0]


def test_certificates_hold_on_a_tabular_set_in_raw_units():
    try:
        X, y = load_adbench("breastw")
    except FileNotFoundError as err:
        pytest.skip(f"ADBench data not available: {err}")
    rng = np.random.default_rng(0)
    normal, anomalous = X[y == 0], X[y == 1]
    idx = rng.permutation(len(normal))
    train, test = normal[idx[:300]], normal[idx[300:]]
    model = OCSDF(n_steps=600, width=32, depth=2, random_state=0).fit(train)
    eps = np.array([0.0, 0.1, 0.3, 1.0])  # raw units (breastw features are integers 1..10)
    cert, emp = _check_sound(model, test, anomalous[:150], eps, "raw")
    assert cert[0] > 0.9


def test_conventional_network_is_not_robust_under_the_same_attack():
    """The paper's point, measured: a ReLU network of the same shape trained with BCE against the
    same negatives is steep (local Lipschitz constant >> 1) and the same l2 attack costs it far
    more AUROC than it costs OCSDF (cardio, OC split, budget 0.5 standardised units)."""
    try:
        train, normal, anomalous = oc_split("cardio", seed=0)
    except FileNotFoundError as err:
        pytest.skip(f"ADBench data not available: {err}")
    model = OCSDF(n_steps=1000, random_state=0).fit(train)
    mean, scale = torch.as_tensor(model.mean_), torch.as_tensor(model.scale_)
    xn = (torch.as_tensor(normal[:300]) - mean) / scale
    xa = (torch.as_tensor(anomalous[:150]) - mean) / scale
    labels = np.r_[np.ones(len(xn)), np.zeros(len(xa))]
    torch.manual_seed(0)
    net = train_conventional(((torch.as_tensor(train) - mean) / scale).float(), Box(-5, 5),
                             width=128, depth=3, n_steps=1000).double()

    def ocsdf_score(z):
        return model.score_tensor(z * scale + mean)

    def auroc(fn, eps):
        an = pgd_attack(fn, xn, eps, -1, n_iter=20, restarts=1)
        aa = pgd_attack(fn, xa, eps, +1, n_iter=20, restarts=1)
        with torch.no_grad():
            return roc_auc_score(labels, torch.cat((fn(an), fn(aa))).numpy())

    ours_drop = auroc(ocsdf_score, 0.0) - auroc(ocsdf_score, 0.5)
    conv_drop = auroc(net, 0.0) - auroc(net, 0.5)
    z = ((torch.as_tensor(train) - mean) / scale).requires_grad_(True)
    (g,) = torch.autograd.grad(net(z).sum(), z)
    assert g.norm(dim=1).max().item() > 5.0
    assert conv_drop > 0.08 and conv_drop > 3 * ours_drop, (conv_drop, ours_drop)


def test_certify_cli_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    from ocsdf.cli import main

    rng = np.random.default_rng(0)
    normal = rng.normal(size=(300, 2)) * [1.0, 10.0]
    anomalous = rng.normal(size=(100, 2)) * [1.0, 10.0] + [4.0, 0.0]
    for name, x in (("train", normal[:200]), ("normal", normal[200:]), ("anom", anomalous)):
        np.savetxt(tmp_path / f"{name}.csv", x, delimiter=",", header="a,b", comments="")
    model_dir, png, out = tmp_path / "m", tmp_path / "r.png", tmp_path / "t.csv"
    assert main(["fit", str(tmp_path / "train.csv"), "--model", str(model_dir), "--steps", "100",
                 "--width", "16", "--depth", "1", "--quiet"]) == 0
    code = main(["certify", str(model_dir), str(tmp_path / "normal.csv"),
                 str(tmp_path / "anom.csv"), "--eps", "0,0.1,0.5", "--attack-steps", "5",
                 "--restarts", "1", "--png", str(png), "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "l2 budget in raw feature units" in text and "certified_auroc" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import pandas as pd

    table = pd.read_csv(out)
    assert list(table["eps"]) == [0.0, 0.1, 0.5]
    assert (table["empirical_auroc"] >= table["certified_auroc"] - 1e-12).all()
    # Raw bound: feature b has std 10, feature a std 1, so L_raw = L_std / min(scale) ~ L_std.
    model = OCSDF.load(model_dir)
    assert lipschitz_in(model, "raw") == pytest.approx(model.lipschitz_ / model.scale_.min())


def test_certify_cli_reference_column(tmp_path, capsys):
    """--reference TRAIN adds the exact 1-NN reference's certified AUROC, equal to what
    KNNDistance gives on the same rows, never above its clean AUROC."""
    import pandas as pd

    from ocsdf import KNNDistance
    from ocsdf.cli import main

    rng = np.random.default_rng(1)
    normal = rng.normal(size=(260, 2)) * [1.0, 3.0]
    anomalous = rng.normal(size=(80, 2)) * [1.0, 3.0] + [3.0, 0.0]
    for name, x in (("train", normal[:200]), ("normal", normal[200:]), ("anom", anomalous)):
        np.savetxt(tmp_path / f"{name}.csv", x, delimiter=",", header="a,b", comments="")
    model_dir, out = tmp_path / "m", tmp_path / "t.csv"
    assert main(["fit", str(tmp_path / "train.csv"), "--model", str(model_dir), "--steps", "50",
                 "--width", "16", "--depth", "1", "--quiet"]) == 0
    code = main(["certify", str(model_dir), str(tmp_path / "normal.csv"),
                 str(tmp_path / "anom.csv"), "--eps", "0,0.2,1", "--no-attack",
                 "--reference", str(tmp_path / "train.csv"), "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "reference: exact 1-NN distance to the 200 rows" in text
    table = pd.read_csv(out)
    knn = KNNDistance().fit(pd.DataFrame(normal[:200], columns=["a", "b"]))
    expected = knn.certified_auroc(pd.DataFrame(normal[200:], columns=["a", "b"]),
                                   pd.DataFrame(anomalous, columns=["a", "b"]), [0, 0.2, 1])
    np.testing.assert_allclose(table["knn_certified_auroc"], expected, rtol=0, atol=1e-12)
    assert table["knn_certified_auroc"].is_monotonic_decreasing
    assert table["knn_certified_auroc"][0] > 0.8


def test_certify_cli_rejects_negative_budget(capsys):
    from ocsdf.cli import main

    assert main(["certify", "m", "a.csv", "b.csv", "--eps", "0,-1"]) == 2
    assert "expected comma-separated budgets >= 0" in capsys.readouterr().err


def test_robustness_bench_rows_on_a_toy_set():
    from ocsdf.bench.robustness import robustness_benchmark

    rows = robustness_benchmark("moons", eps=(0.0, 0.2), n_steps=60, n_eval=60, n_iter=3,
                                restarts=1)
    assert [r["eps (l2, standardised)"] for r in rows] == [0.0, 0.2]
    for r in rows:
        assert 0.0 <= r["OCSDF certified AUROC"] <= r["OCSDF AUROC under attack"] + 1e-12
        assert 0.0 <= r["conventional AUROC under attack"] <= 1.0
        assert r["OCSDF max |grad| on train"] <= 1.0 + 1e-4
    assert rows[0]["OCSDF certified AUROC"] == pytest.approx(rows[0]["OCSDF AUROC under attack"])


def test_our_attack_is_at_least_as_strong_as_torchattacks(moons, moons_model):
    """Cross-check with an independent attack library (optional: ``pip install --no-deps
    torchattacks``; its PGDL2 clamps to [0, 1], so it attacks the ball's bounding box mapped
    there, where l2 norms shrink by the box side 10)."""
    torchattacks = pytest.importorskip("torchattacks")
    _, held_out = moons
    xn = torch.as_tensor(held_out[:100])
    xa = Ball(5.0).sample(100, 2, torch.Generator().manual_seed(7)).double()
    eps, side = 0.2, 10.0

    class TwoLogits(torch.nn.Module):
        def forward(self, u):
            s = moons_model.score_tensor(u.reshape(len(u), -1).double() * side - 5.0)
            return torch.stack((s, -s), dim=1)  # class 0 = normal, 1 = anomalous

    attack = torchattacks.PGDL2(TwoLogits(), eps=eps / side, alpha=0.025 * eps / side, steps=50)
    labels = np.r_[np.ones(100), np.zeros(100)]

    def auroc(adv_n, adv_a):
        with torch.no_grad():
            s = torch.cat((moons_model.score_tensor(adv_n), moons_model.score_tensor(adv_a)))
        return roc_auc_score(labels, s.numpy())

    def theirs(x, label):  # torchattacks expects images (n, c, h, w)
        adv = attack(((x + 5.0) / side).reshape(-1, 1, 1, 2), torch.full((len(x),), label))
        return adv.reshape(-1, 2).double() * side - 5.0

    theirs_n, theirs_a = theirs(xn, 0), theirs(xa, 1)
    ours_n = pgd_attack(moons_model.score_tensor, xn, eps, -1)
    ours_a = pgd_attack(moons_model.score_tensor, xa, eps, +1)
    assert auroc(ours_n, ours_a) <= auroc(theirs_n, theirs_a) + 1e-3
