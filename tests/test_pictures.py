"""Boundary samples (Algorithm 1 with a fixed step) and score histograms, in Python and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from ocsdf import OCSDF
from ocsdf.cli import main
from ocsdf.pictures import boundary_samples, load_image_array, save_image_grid


def _squares(n: int, seed: int) -> np.ndarray:
    """8 x 8 images with a bright 3 x 3 square in the top-left quarter."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 8, 8))
    for i in range(n):
        r, c = rng.integers(0, 3, 2)
        x[i, r:r + 3, c:c + 3] = rng.uniform(0.6, 1.0)
    return x


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    model = OCSDF(n_steps=150, warmup_steps=15, width=32, depth=2, random_state=0)
    model.fit(_squares(200, 0))
    path = tmp_path_factory.mktemp("m") / "model"
    model.save(path)
    return model, path


def test_boundary_samples_reach_the_target_level(image_model):
    model, _ = image_model
    noise_scores = model.score_samples(np.random.default_rng(0).uniform(size=(32, 8, 8)))
    x = boundary_samples(model, n=32, steps=64, seed=1)
    assert x.shape == (32, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    s = model.score_samples(x)
    target = -model.margin_
    # from uniform noise (far below the level) towards it; the pixel box stops some paths
    # (projected steps stall where the gradient points out of [0, 1]), so not all the way
    assert np.median(np.abs(s - target)) < 0.7 * np.median(np.abs(noise_scores - target))


def test_tabular_model_samples_are_raw_rows_on_the_level():
    x = np.random.default_rng(0).normal(size=(300, 3)) * [1.0, 10.0, 100.0]
    model = OCSDF(n_steps=300, warmup_steps=100, width=32, depth=2, random_state=0).fit(x)
    noise = model.score_samples(boundary_samples(model, n=40, steps=1, eta=1e-9))  # ~ U(B)
    for level in (0.0, -0.5):
        rows = boundary_samples(model, n=40, steps=64, level=level, seed=2)
        assert rows.shape == (40, 3)
        assert 5 < rows[:, 2].std() < 2000  # raw units: the third feature keeps its scale
        gap = np.abs(model.score_samples(rows) - level)
        assert np.median(gap) < 0.5 * np.median(np.abs(noise - level)), level


def test_image_grid_and_loader(tmp_path):
    imgs = _squares(10, 1)
    png = save_image_grid(imgs, tmp_path / "g.png", ncol=4, title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.savez(tmp_path / "d.npz", x=(imgs * 255).astype(np.uint8))
    loaded = load_image_array(tmp_path / "d.npz")
    assert loaded.shape == (10, 8, 8) and loaded.max() <= 1.0
    with pytest.raises(ValueError, match="images must be"):
        save_image_grid(np.zeros((3, 2, 8, 8)), tmp_path / "bad.png")


def test_sample_and_hist_commands(image_model, tmp_path, capsys):
    _, path = image_model
    grid = tmp_path / "grid.png"
    assert main(["sample", str(path), "--n", "16", "--steps", "32", "-o", str(grid)]) == 0
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "16 images" in capsys.readouterr().out
    np.savez(tmp_path / "normal.npz", x=(_squares(100, 2) * 255).astype(np.uint8))
    hist = tmp_path / "hist.png"
    assert main(["hist", str(path), str(tmp_path / "normal.npz"), "--noise", "200",
                 "--steps", "100", "-o", str(hist)]) == 0
    out = capsys.readouterr().out
    assert hist.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    auroc = float(out.split("AUROC normal vs noise ")[1].split()[0])
    assert auroc > 0.95  # OCSDF separates the squares from uniform noise
    np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 9, 9)))
    assert main(["hist", str(path), str(tmp_path / "wrong.npz"), "-o", str(hist)]) == 2
    assert "the model takes (1, 8, 8)" in capsys.readouterr().err


def test_fit_command_takes_an_npz_of_images(tmp_path, capsys):
    """`ocsdf fit images.npz` fits an image model (pixel box) that sample and hist accept;
    --normal-only keeps the images with y == 0."""
    x = (_squares(120, 5) * 255).astype(np.uint8)
    y = np.r_[np.zeros(100, int), np.ones(20, int)]
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    model_dir = tmp_path / "m"
    assert main(["fit", str(tmp_path / "imgs.npz"), "--model", str(model_dir), "--steps", "20",
                 "--width", "16", "--depth", "1", "--normal-only", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "fitted OCSDF on 100 rows x 64 features" in out.out
    assert "trained on the 100 rows with y == 0" in out.err
    model = OCSDF.load(model_dir)
    assert model.image_shape_ == (1, 8, 8) and not model.scorer_.clip_to_domain
    np.save(tmp_path / "one.npy", x[:30])
    assert main(["fit", str(tmp_path / "one.npy"), "--model", str(tmp_path / "m2"), "--steps",
                 "5", "--width", "8", "--depth", "1", "--quiet"]) == 0
    assert OCSDF.load(tmp_path / "m2").image_shape_ == (1, 8, 8)
    assert OCSDF.load(tmp_path / "m2").negative_transforms_ == "rotate+flip"  # the image default
    assert main(["fit", str(tmp_path / "one.npy"), "--model", str(tmp_path / "m3"), "--steps",
                 "5", "--width", "8", "--depth", "1", "--quiet", "--negative-transforms",
                 "none"]) == 0
    assert OCSDF.load(tmp_path / "m3").negative_transforms_ == "none"
