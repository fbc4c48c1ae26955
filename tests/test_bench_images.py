"""``ocsdf bench images``: a tiny MNIST run through the CLI writes the table, the runs and the
plot, with certificates below the clean AUROC."""

from __future__ import annotations

import json

import pytest

from ocsdf.cli import main
from ocsdf.data import find_data_dir

pytest.importorskip("orthogonium")


def test_bench_images_tiny_mnist(tmp_path):
    root = find_data_dir()
    if root is None or not (root / "mnist" / "mnist.npz").is_file():
        pytest.skip("MNIST not found: needs ../shared/data/mnist/mnist.npz (or OCSDF_DATA_DIR)")
    code = main(["bench", "images", "--classes", "1", "--seeds", "1", "--train-rows", "100",
                 "--test-rows", "200", "--attack-rows", "5", "--attack-steps", "3",
                 "--restarts", "1", "--eps", "8,36", "--set", "n_steps=20", "--set",
                 "warmup_steps=2", "--set", "width=16", "--set", "depth=1", "--set",
                 "network=conv", "--set", "channels=4,8", "--out-dir", str(tmp_path), "--quiet"])
    assert code == 0
    data = json.loads((tmp_path / "images_mnist.json").read_text())
    assert "--set channels=4,8" in data["command"]
    rows = {r["class"]: r for r in data["rows"]}
    assert set(rows) == {"1", "mean", "paper Table 3 (mean)"}
    one = rows["1"]
    assert 50 < one["ocsdf_auroc"] <= 100
    assert one["ocsdf_cert_36/255"] <= one["ocsdf_cert_8/255"] <= one["ocsdf_auroc"]
    assert one["knn_cert_36/255"] <= one["knn_cert_8/255"] <= one["knn_auroc"]
    assert 0 <= one["ocsvm_auroc"] <= 100 and 0 <= one["iforest_auroc"] <= 100
    assert one["ocsdf_lipschitz"] <= 1 + 1e-4
    assert rows["paper Table 3 (mean)"]["ocsdf_cert_36/255"] is None  # budgets differ
    assert (tmp_path / "images_mnist_runs.csv").is_file()
    assert (tmp_path / "images_mnist.png").stat().st_size > 1000


def test_full_setting_is_the_papers():
    """--full: 70 epochs of which 10 warm-up (steps per epoch from the class's size), batch
    128, T = 16, m = 0.395 (0.79 in [-1, 1] units), lambda = 200, lr 1e-3 decayed linearly,
    512 x 3; --set overrides any of it."""
    from ocsdf.bench.images import full_params

    p = full_params(5923)  # MNIST digit 0: 47 steps per epoch
    assert (p["n_steps"], p["warmup_steps"]) == (70 * 47, 10 * 47)
    assert (p["width"], p["depth"], p["batch_size"], p["n_newton_steps"]) == (512, 3, 128, 16)
    assert (p["margin"], p["lam"], p["learning_rate"], p["lr_schedule"]) == (
        0.395, 200.0, 1e-3, "linear")
    q = full_params(5923, {"n_steps": 10, "width": 32})
    assert (q["n_steps"], q["warmup_steps"], q["width"]) == (10, 470, 32)


def test_bench_images_full_setting_runs_and_says_so(tmp_path):
    root = find_data_dir()
    if root is None or not (root / "mnist" / "mnist.npz").is_file():
        pytest.skip("MNIST not found: needs ../shared/data/mnist/mnist.npz (or OCSDF_DATA_DIR)")
    code = main(["bench", "images", "--full", "--classes", "1", "--seeds", "1",
                 "--train-rows", "64", "--test-rows", "100", "--attack-rows", "0",
                 "--eps", "8", "--baselines", "",
                 "--set", "width=16", "--set", "n_steps=4", "--set", "warmup_steps=1",
                 "--out-dir", str(tmp_path), "--quiet"])
    assert code == 0
    data = json.loads((tmp_path / "images_mnist_full.json").read_text())
    assert data["command"].startswith("ocsdf bench images") and "--full" in data["command"]
    notes = (tmp_path / "images_mnist_full.md").read_text()
    assert "the paper's setting (70 epochs of which 10 warm-up" in notes
    runs = json.loads((tmp_path / "images_mnist_full_runs.json").read_text())["rows"]
    assert runs[0]["n_steps"] == 4 and runs[0]["n_train"] == 64
    # --attack-rows 0: certificates, no attack
    assert "ocsdf_cert_8/255" in runs[0] and not any("pgd" in k for k in runs[0])
    assert "no attack (--attack-rows 0)" in notes
