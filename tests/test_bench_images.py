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
