"""KNNDistance: exact k-th neighbour scores, an exact Lipschitz bound, certificates no attack
breaks, OCSDF's input errors, scikit-learn conventions."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import check_estimator

from ocsdf import OCSDF, InputError
from ocsdf.certify import (
    certified_radius,
    empirical_auroc_under_attack,
    lipschitz_in,
    pgd_attack,
)
from ocsdf.errors import DomainWarning
from ocsdf.knn import AUTO_CONTAMINATION, KNNDistance

#: Raw feature scales and offsets of the test data: unequal, so that the raw bound
#: ``1 / min(scale)`` differs from the standardised one.
SCALE = np.array([1.0, 4.0, 0.5])
SHIFT = np.array([0.0, 10.0, -3.0])


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)) * SCALE + SHIFT


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return _rows(120, 0)


# ------------------------------------------------------------------ exact scores
def _brute_scores(train: np.ndarray, X: np.ndarray, k: int, domain: str, size: float,
                  leave_one_out: bool = False) -> np.ndarray:
    """NumPy reference: standardise with the training mean and std, k-th smallest pairwise
    distance, then the minimum with the signed distance to the box or ball."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    zt, zq = (train - mean) / std, (X - mean) / std
    d = np.sqrt(((zq[:, None, :] - zt[None, :, :]) ** 2).sum(axis=-1))
    if leave_one_out:
        np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, k - 1]
    if domain == "box":
        inside = (size - np.abs(zq)).min(axis=1)
        outside = np.linalg.norm(zq - np.clip(zq, -size, size), axis=1)
        sdf = np.where(inside >= 0, inside, -outside)
    else:
        sdf = size - np.linalg.norm(zq, axis=1)
    return np.minimum(-kth, sdf)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("domain, algorithm", [("box", "auto"), ("box", "brute"),
                                               ("ball", "kd_tree")])
def test_scores_equal_brute_force_kth_distance(train, k, domain, algorithm):
    rng = np.random.default_rng(1)
    queries = np.r_[
        train[:20],                                            # training rows
        train[20:40] + 1e-7 * SCALE * rng.normal(size=(20, 3)),  # next to them
        _rows(40, 2),                                          # new normal rows
        SHIFT + 7.0 * SCALE * rng.choice([-1.0, 1.0], size=(20, 3)),  # outside B
        SHIFT + SCALE * rng.uniform(-5.5, 5.5, size=(40, 3)),   # across the boundary of B
    ]
    model = KNNDistance(n_neighbors=k, domain=domain, domain_size=4.0,
                        algorithm=algorithm).fit(train)
    expected = _brute_scores(train, queries, k, domain, 4.0)
    np.testing.assert_allclose(model.score_samples(queries), expected, rtol=0, atol=1e-12)
    if k == 1:
        inside = np.abs((train[:20] - train.mean(0)) / train.std(0)).max(axis=1) <= 4.0
        assert np.all(model.score_samples(train[:20])[inside] == 0.0)  # itself, at 0
    # The differentiable path gives the same numbers.
    with torch.no_grad():
        tensor = model.score_tensor(torch.as_tensor(queries)).numpy()
    np.testing.assert_allclose(tensor, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("contamination", ["auto", 0.2])
def test_threshold_is_a_quantile_of_leave_one_out_scores(train, contamination):
    model = KNNDistance(n_neighbors=3, contamination=contamination).fit(train)
    loo = _brute_scores(train, train, 3, "box", 5.0, leave_one_out=True)
    np.testing.assert_allclose(model.loo_scores_, loo, rtol=0, atol=1e-12)
    q = AUTO_CONTAMINATION if contamination == "auto" else contamination
    assert model.offset_ == pytest.approx(np.percentile(loo, 100 * q), abs=1e-12)
    assert np.mean(loo < model.offset_) == pytest.approx(q, abs=1.5 / len(train))
    X = _rows(50, 3)
    np.testing.assert_allclose(model.decision_function(X),
                               model.score_samples(X) - model.offset_, rtol=0, atol=0)
    assert np.array_equal(model.predict(X), np.where(model.decision_function(X) >= 0, 1, -1))
    assert model.predict(SHIFT[None] + 20.0).tolist() == [-1]


def test_training_rows_outside_b_warn_and_score_below_zero():
    X = np.r_[_rows(99, 4), [SHIFT + [0.0, 0.0, 500.0]]]
    with pytest.warns(DomainWarning, match=r"1 of 100 training rows \(1.0 %\) lie outside"):
        model = KNNDistance().fit(X)
    assert model.n_outside_domain_ == 1
    assert model.score_samples(X[-1:])[0] < -1.0  # itself at distance 0, yet outside B


# ------------------------------------------------------------------ Lipschitz bound
def test_lipschitz_bound_holds_on_all_pairs_and_is_attained(train):
    model = KNNDistance(n_neighbors=2).fit(train)
    L = lipschitz_in(model, "raw")
    assert L == pytest.approx(1.0 / train.std(axis=0).min(), rel=1e-12)
    assert lipschitz_in(model, "standardized") == 1.0 == model.lipschitz_
    rng = np.random.default_rng(5)

    def partner(x: np.ndarray, low: float, high: float) -> np.ndarray:
        u = rng.normal(size=x.shape)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        return x + u * np.exp(rng.uniform(np.log(low), np.log(high), size=(len(x), 1)))

    wide = SHIFT + SCALE * rng.uniform(-9, 9, size=(1500, 3))  # inside and outside B
    near = train[rng.integers(0, len(train), 1500)] + 0.05 * SCALE * rng.normal(size=(1500, 3))
    out = SHIFT + SCALE * rng.choice([-1, 1], size=(500, 3)) * rng.uniform(5, 8, (500, 3))
    x = np.r_[wide, near, out, train]
    y = np.r_[partner(wide, 1e-3, 10.0), partner(near, 1e-4, 0.5), partner(out, 1e-3, 3.0),
              partner(train, 1e-4, 0.1)]
    gap = np.abs(model.score_samples(x) - model.score_samples(y))
    assert np.all(gap <= L * np.linalg.norm(x - y, axis=1) + 1e-9)

    # Independent lower bound: the largest raw gradient norm at rows near the training rows,
    # then the pair (x, x + h g/|g|) along it: its difference quotient reaches L.
    xt = torch.as_tensor(near[:500]).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.score_tensor(xt).sum(), xt)
    norms = grad.norm(dim=1).numpy()
    best = int(np.argmax(norms))
    assert norms[best] <= L * (1 + 1e-12)
    h = 1e-5
    x0 = near[best : best + 1]
    x1 = x0 + h * grad[best].numpy() / norms[best]
    quotient = abs(model.score_samples(x1)[0] - model.score_samples(x0)[0]) / h
    assert 0.97 * L <= quotient <= L * (1 + 1e-9)


# ------------------------------------------------------------------ certificates
@pytest.fixture(scope="module")
def certified(train):
    """A fitted model with held-out normal rows and anomalies that overlap them."""
    model = KNNDistance(n_neighbors=3, contamination=0.2).fit(train)
    normal = _rows(30, 6)
    anomalous = _rows(30, 7) + np.array([2.0, 0.0, 1.0]) * SCALE
    return model, normal, anomalous


def _attack_in_radius(model: KNNDistance, X: np.ndarray, radius: np.ndarray, direction: int,
                      space: str) -> np.ndarray:
    """PGD on each row within its own l2 budget ``radius`` (``space`` units): attack
    ``w -> score(x + (w - x) r)`` with budget 1, so that one batched call serves every row."""
    scorer = model.scorer_
    x0 = torch.as_tensor(X if space == "raw" else scorer.standardize(X))
    r = torch.as_tensor(radius)[:, None]
    fn = scorer.score_tensor if space == "raw" else scorer.score_z_tensor

    def rescaled(w: torch.Tensor) -> torch.Tensor:
        return fn(x0 + (w - x0) * r)

    w = pgd_attack(rescaled, x0, 1.0, direction, n_iter=40, restarts=2)
    adv = (x0 + (w - x0) * r).detach().numpy()
    assert np.all(np.linalg.norm(adv - x0.numpy(), axis=1) <= radius * (1 + 1e-9))
    return adv if space == "raw" else scorer.unstandardize(adv)


@pytest.mark.parametrize("space", ["raw", "standardized"])
def test_no_attack_within_the_certified_radius_flips_predict(certified, space):
    model, normal, anomalous = certified
    X = np.r_[normal, anomalous]
    pred = model.predict(X)
    radius = model.certified_radius(X, space=space)
    np.testing.assert_allclose(radius, certified_radius(model, X, space), rtol=0, atol=0)
    assert (pred == 1).sum() >= 10 and (pred == -1).sum() >= 10
    for label in (1, -1):
        rows = X[pred == label]
        adv = _attack_in_radius(model, rows, 0.99 * radius[pred == label], -label, space)
        assert np.all(model.predict(adv) == label)
    if space == "standardized":
        # The attack has teeth: with 20 % more budget it turns most outliers into inliers
        # (towards the k-th neighbour the score rises at rate 1). Inliers are harder: moving
        # away from one training row nears others, so their radii are conservative.
        outliers = X[pred == -1]
        far = _attack_in_radius(model, outliers, 1.2 * radius[pred == -1], +1, space)
        assert np.mean(model.predict(far) == 1) >= 0.7


def test_certified_auroc_never_exceeds_auroc_under_attack(certified):
    model, normal, anomalous = certified
    eps = np.array([0.0, 0.1, 0.3, 0.6])
    cert = model.certified_auroc(normal, anomalous, eps)
    attacked = empirical_auroc_under_attack(model, normal, anomalous, eps, n_iter=30,
                                            restarts=2)
    clean = roc_auc_score(np.r_[np.ones(30), np.zeros(30)],
                          model.score_samples(np.r_[normal, anomalous]))
    assert cert[0] == pytest.approx(clean, abs=1e-12) == pytest.approx(attacked[0], abs=1e-12)
    assert 0.6 < clean < 1.0  # overlapping classes: the comparison below has room to fail
    assert np.all(cert <= attacked + 1e-12)
    assert np.all(np.diff(cert) <= 0) and cert[-1] < cert[0]
    cert_std = model.certified_auroc(normal, anomalous, 0.2, space="standardized")
    attacked_std = empirical_auroc_under_attack(model, normal, anomalous, 0.2,
                                                space="standardized", n_iter=30, restarts=2)
    assert cert_std <= attacked_std + 1e-12


# ------------------------------------------------------------------ input and conventions
TINY = dict(n_steps=5, warmup_steps=2, width=8, depth=1, batch_size=16)


def _message(fn) -> str:
    with pytest.raises(ValueError) as err:
        fn()
    return str(err.value)


@pytest.mark.parametrize(
    "X",
    [
        np.array([[1.0, np.nan], [2.0, 3.0]]),
        np.array([[1.0, np.inf], [2.0, 3.0]]),
        np.arange(5.0),
        np.empty((0, 3)),
        np.ones((1, 3)),
        np.array([["a", "b"], ["c", "d"]], dtype=object),
        pd.DataFrame({"x": [1.0, 2.0], "city": ["a", "b"]}),
    ],
    ids=["nan", "inf", "1-d", "empty", "one-row", "strings", "text-column"],
)
def test_bad_training_input_gives_ocsdf_errors(X):
    knn = _message(lambda: KNNDistance().fit(X))
    ocsdf = _message(lambda: OCSDF(**TINY).fit(X))
    assert knn == ocsdf.replace("OCSDF", "KNNDistance")
    assert "KNNDistance" in knn or "OCSDF" not in ocsdf


def test_bad_scoring_input_gives_ocsdf_errors(train):
    knn = KNNDistance().fit(train)
    ocsdf = OCSDF(**TINY, random_state=0).fit(train)
    bad = [np.ones((4, 2)), np.array([[1.0, np.nan, 0.0]]), SHIFT[None] + [0.0, 0.0, 1e13]]
    for X in bad:
        assert _message(lambda X=X: knn.score_samples(X)) == \
            _message(lambda X=X: ocsdf.score_samples(X)).replace("OCSDF", "KNNDistance")
    with pytest.raises(ValueError, match="X has 2 features, but KNNDistance is expecting 3"):
        knn.predict(np.ones((4, 2)))


def test_too_few_rows_for_n_neighbors_and_bad_parameters():
    X = _rows(8, 8)
    with pytest.raises(InputError, match=r"n_neighbors=10 needs at least 11 training rows .*"
                                         r"got 8$"):
        KNNDistance(n_neighbors=10).fit(X)
    with pytest.raises(InputError, match="n_neighbors=8 needs at least 9 training rows"):
        KNNDistance(n_neighbors=8).fit(X)
    assert KNNDistance(n_neighbors=7).fit(X).offset_ <= 0
    for params, message in [
        (dict(n_neighbors=0), r"'n_neighbors' parameter of KNNDistance must be an int in the "
                              r"range \[1, inf\)"),
        (dict(algorithm="lsh"), "'algorithm' parameter of KNNDistance must be a str among"),
        (dict(contamination=0.7), r"'contamination' .* a float in the range \(0.0, 0.5\]"),
        (dict(domain="unit", standardize="cover"), "standardize='cover' needs domain"),
    ]:
        with pytest.raises(ValueError, match=message):
            KNNDistance(**params).fit(X)
    with pytest.raises(TypeError, match="positional"):
        KNNDistance(3)


def test_clone_get_params_and_pickle(train):
    model = KNNDistance(n_neighbors=3, domain="ball", contamination=0.05, algorithm="kd_tree")
    assert model.get_params() == dict(n_neighbors=3, domain="ball", domain_size=5.0,
                                      standardize=True, contamination=0.05,
                                      algorithm="kd_tree", n_jobs=None)
    model.fit(train)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "scorer_")
    X = _rows(20, 9)
    np.testing.assert_array_equal(copy.fit(train).score_samples(X), model.score_samples(X))
    copy.set_params(n_neighbors=1).fit(train)
    assert not np.array_equal(copy.score_samples(X), model.score_samples(X))
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.score_samples(X), model.score_samples(X))
    frame = pd.DataFrame(train, columns=["a", "b", "c"])
    named = KNNDistance().fit(frame)
    assert list(named.feature_names_in_) == ["a", "b", "c"]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_check_estimator_fails_only_on_in_sample_outlier_counts():
    """scikit-learn's checks pass except two that count outliers among the training rows:
    scored in sample, a training row is its own nearest neighbour (documented)."""
    results = check_estimator(KNNDistance(), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == {"check_outliers_fit_predict", "check_outliers_train"}
