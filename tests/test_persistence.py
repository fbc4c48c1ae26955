"""Model files: exact round trip, atomic writes, one-line errors for broken files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ocsdf import OCSDF, ModelFileError

TINY = dict(n_steps=5, warmup_steps=2, width=8, depth=1, batch_size=16)


@pytest.fixture()
def saved(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 3))
    model = OCSDF(**TINY, random_state=0, contamination=0.1).fit(x)
    return model, model.save(tmp_path / "model"), x


def test_round_trip_is_exact(saved):
    model, path, x = saved
    loaded = OCSDF.load(path)
    assert np.array_equal(loaded.score_samples(x), model.score_samples(x))
    assert loaded.offset_ == model.offset_ and loaded.margin_ == model.margin_
    assert loaded.fit_time_ == model.fit_time_ > 0
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]


def test_saving_over_an_existing_model_replaces_it(saved):
    model, path, _ = saved
    model.save(path)
    assert OCSDF.load(path).offset_ == model.offset_
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_overwrite_a_foreign_directory(saved, tmp_path):
    model, _, _ = saved
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="not an ocsdf model directory"):
        model.save(other)
    assert (other / "cat.jpg").exists()


def test_missing_directory(tmp_path):
    with pytest.raises(ModelFileError, match="model directory not found"):
        OCSDF.load(tmp_path / "nope")


def test_missing_weights(saved):
    _, path, _ = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="missing model file: .*model.safetensors"):
        OCSDF.load(path)


def test_truncated_weights(saved):
    _, path, _ = saved
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(ModelFileError, match="model.safetensors is not a readable safetensors"):
        OCSDF.load(path)


def test_truncated_config(saved):
    _, path, _ = saved
    f = path / "config.json"
    f.write_text(f.read_text()[:30])
    with pytest.raises(ModelFileError, match="config.json is not valid JSON"):
        OCSDF.load(path)


def test_foreign_config(saved):
    _, path, _ = saved
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelFileError, match="is not an ocsdf model config"):
        OCSDF.load(path)


def test_unknown_format_version(saved):
    _, path, _ = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["format_version"] = 99
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="format version 99"):
        OCSDF.load(path)


def test_error_messages_are_one_line(saved):
    _, path, _ = saved
    (path / "config.json").write_text("{")
    with pytest.raises(ModelFileError) as err:
        OCSDF.load(path)
    assert "\n" not in str(err.value)


def test_weights_swapped_from_another_model_are_detected(saved, tmp_path):
    _, path, x = saved
    other = OCSDF(**TINY, random_state=1).fit(x).save(tmp_path / "other")
    (path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ModelFileError, match="not the ones this model was saved with"):
        OCSDF.load(path)


def test_load_onto_a_device_sets_where_it_scores(saved):
    model, path, x = saved
    loaded = OCSDF.load(path, device="cpu")
    assert loaded.device == "cpu"
    assert next(loaded.net_.parameters()).device.type == "cpu"
    assert np.array_equal(loaded.score_samples(x), model.score_samples(x))


def test_load_onto_missing_cuda_is_a_clear_error(saved):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error is for machines without it")
    with pytest.raises(ValueError, match="CUDA is not available"):
        OCSDF.load(saved[1], device="cuda")


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_trained_on_gpu_loads_and_scores_on_cpu(tmp_path):
    """A GPU-trained model loads on the CPU with the very weights it scored with: the same
    bound, and scores bit for bit equal to its own scorer moved to the CPU (and within float64
    rounding of the GPU's scores)."""
    x = np.random.default_rng(0).normal(size=(200, 3))
    gpu = OCSDF(**TINY, random_state=0, device="cuda").fit(x)
    path = gpu.save(tmp_path / "gpu-model")
    cpu = OCSDF.load(path, device="cpu")
    assert cpu.lipschitz_ == gpu.lipschitz_
    assert np.array_equal(cpu.score_samples(x), gpu.scorer_.to("cpu").score(x))
    np.testing.assert_allclose(cpu.score_samples(x), gpu.score_samples(x), atol=1e-12)
    back = OCSDF.load(path, device="cuda")
    assert np.array_equal(back.score_samples(x), gpu.score_samples(x))


def test_load_never_re_solves_weights(saved, monkeypatch):
    """A machine whose solver rounds differently (simulated: every torch.linalg.solve result
    off by 1e-6 relative while loading) loads the model and scores it identically: the saved
    weights are the ones scoring uses."""
    import torch

    model, path, x = saved
    real = torch.linalg.solve
    calls = []

    def rounding_differently(a, b, *args, **kwargs):
        calls.append(1)
        return real(a, b, *args, **kwargs) * (1 + 1e-6)

    monkeypatch.setattr(torch.linalg, "solve", rounding_differently)
    loaded = OCSDF.load(path)
    assert np.array_equal(loaded.score_samples(x), model.score_samples(x))
    assert loaded.lipschitz_ == model.lipschitz_
    assert calls == []  # nothing was solved


def _old_format_dir(path, d=3, width=8, depth=2, seed=0):
    """A version-1 model directory (Cayley parameters, GroupSort2 on neighbouring pairs) and an
    independent float64 implementation of the score it describes."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    sizes = [d] + [width] * depth
    state, ws, bs = {}, [], []
    for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        n = max(a, b)
        p = torch.randn(n, n, generator=gen) / n**0.5
        bias = 0.1 * torch.randn(b, generator=gen)
        state[f"dense.{li}.param"], state[f"dense.{li}.bias"] = p, bias
        skew = p.triu(1) - p.triu(1).T
        q = torch.linalg.solve(torch.eye(n) + skew, torch.eye(n) - skew)  # float32, as v1
        ws.append(q[:b, :a].double())
        bs.append(bias.double())
    head = torch.randn(1, width, generator=gen)
    state["head.param"], state["head.bias"] = head, torch.tensor([0.2])
    ws.append((head / head.norm()).double())
    bs.append(torch.tensor([0.2], dtype=torch.float64))
    mean, scale = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0])
    bound = float(np.prod([np.linalg.norm(w.numpy(), 2) for w in ws]))

    def score(x):
        z = torch.as_tensor((x - mean) / scale)
        h = z
        for w, b in zip(ws[:-1], bs[:-1]):
            h = h @ w.T + b
            h = torch.sort(h.reshape(len(h), -1, 2), dim=-1, descending=True).values
            h = h.reshape(len(z), -1)
        f = (h @ ws[-1].T + bs[-1]).squeeze(-1)
        inside = torch.minimum(5 - z, z + 5).min(dim=1).values
        outside = -(z - z.clamp(-5, 5)).norm(dim=1)
        return torch.minimum(f, torch.where(inside >= 0, inside, outside)).numpy()

    params = OCSDF(width=width, depth=depth).get_params()
    config = {"format": "ocsdf", "format_version": 1, "params": params, "fitted": {
        "mean": mean.tolist(), "scale": scale.tolist(), "offset": 0.0, "margin": 0.05,
        "lipschitz": max(bound, 1.0), "n_features_in": d, "fit_time_s": 1.5,
        "calibration_scores": None, "feature_names_in": None}}
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    save_file(state, str(path / "model.safetensors"))
    return score


def test_version_1_directories_still_load(tmp_path):
    score = _old_format_dir(tmp_path / "old")
    x = np.random.default_rng(1).normal(size=(500, 3)) * 4
    loaded = OCSDF.load(tmp_path / "old")
    ref = score(x)
    np.testing.assert_allclose(loaded.score_samples(x), ref, atol=1e-6)
    assert np.abs(ref).max() > 0.5  # the comparison can fail
    # saved again, it is version 2 and round-trips exactly
    loaded.save(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "config.json").read_text())["format_version"] == 2
    again = OCSDF.load(tmp_path / "new")
    assert np.array_equal(again.score_samples(x), loaded.score_samples(x))


def test_saved_files_have_the_usual_permissions(saved, tmp_path):
    """Other users (a service) can read a saved model and its ONNX graph: 0o666 / 0o777 less
    the umask, not the owner-only modes of mkdtemp / mkstemp."""
    import os

    model, path, _ = saved
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o777 & ~umask
    for f in path.iterdir():
        assert os.stat(f).st_mode & 0o777 == 0o666 & ~umask, f.name
    pytest.importorskip("onnx", reason="onnx not installed (pip install 'ocsdf[deploy]')")
    onnx_file = model.to_onnx(tmp_path / "m.onnx")
    assert os.stat(onnx_file).st_mode & 0o777 == 0o666 & ~umask


def test_saving_into_a_missing_folder_is_an_error(saved, tmp_path):
    from ocsdf import InputError

    model, _, _ = saved
    with pytest.raises(InputError, match="the folder .*typo does not exist"):
        model.save(tmp_path / "typo" / "model")
    assert not (tmp_path / "typo").exists()
