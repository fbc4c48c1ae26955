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
    """A GPU run leaves the same artefacts as a CPU run: CPU weights, same scores."""
    x = np.random.default_rng(0).normal(size=(200, 3))
    gpu = OCSDF(**TINY, random_state=0, device="cuda").fit(x)
    path = gpu.save(tmp_path / "gpu-model")
    cpu = OCSDF.load(path, device="cpu")
    np.testing.assert_allclose(cpu.score_samples(x), gpu.score_samples(x), atol=1e-9)
    assert cpu.lipschitz_ == pytest.approx(gpu.lipschitz_, rel=1e-9)
