"""``--device`` on the ``ocsdf bench`` studies that train or score a model.

Parsing (default "cpu"), the one-line error before any work when CUDA is asked for on a machine
without it, and tiny CPU runs with ``device="cpu"`` given explicitly that reproduce the default
path's numbers.
"""

from __future__ import annotations

import argparse
import importlib

import numpy as np
import pytest
import torch

from ocsdf.cli import build_parser, main

# sub-command -> (module, the study function its run() calls, the smallest settings)
STUDIES = {
    "defaults": ("defaults_study", ["--datasets", "wine", "--seeds", "1", "--steps-scale", "0.01",
                                    "--configs", "64x2-s2000"]),
    "explain": ("explain_study", ["--sets", "breastw", "--n", "5", "--steps", "10",
                                  "--width", "8", "--depth", "1"]),
    "robustness": ("robustness_benchmark", ["--dataset", "moons", "--eps", "0,0.1", "--steps",
                                            "10", "--attack-steps", "1", "--restarts", "1"]),
    "shapes": ("shapes_study", ["--meshes", "unit_sphere", "--steps", "10", "--grid", "8",
                                "--points", "64"]),
    "thresholds": ("thresholds_benchmark", ["--datasets", "thyroid", "--seeds", "1", "--fprs",
                                            "0.05", "--steps", "10", "--quiet"]),
    "toy": ("toy_study", ["--sets", "moons", "--steps", "10", "--width", "8", "--depth", "1"]),
}

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_device_option_parses(name):
    parser = build_parser()
    settings = STUDIES[name][1]
    assert parser.parse_args(["bench", name, *settings]).device == "cpu"  # the default
    assert parser.parse_args(["bench", name, *settings, "--device", "cpu"]).device == "cpu"
    assert parser.parse_args(["bench", name, "--device", "cuda:1"]).device == "cuda:1"


# ----------------------------------------------------------------------------- fail fast
@no_cuda
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_cuda_without_cuda_fails_before_any_work(name, tmp_path, capsys, monkeypatch):
    module = importlib.import_module(f"ocsdf.bench.{name}")

    def never(*args, **kwargs):  # an AssertionError is not a user error: main would raise it
        raise AssertionError(f"{name}: the study started before the device was checked")

    monkeypatch.setattr(module, STUDIES[name][0], never)
    out = tmp_path / "out"
    rc = main(["bench", name, *STUDIES[name][1], "--device", "cuda", "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.startswith("ocsdf: error: ") and err.count("\n") == 1  # one line
    assert "cuda" in err.lower()
    assert not out.exists() or not any(out.iterdir())


@no_cuda
def test_study_functions_check_the_device_first():
    from ocsdf.bench.defaults import defaults_study
    from ocsdf.bench.thresholds import thresholds_benchmark
    from ocsdf.bench.toy import toy_study

    with pytest.raises(ValueError, match="CUDA"):
        defaults_study(["no-such-set"], device="cuda")
    with pytest.raises(ValueError, match="CUDA"):
        thresholds_benchmark(["no-such-set"], device="cuda")
    with pytest.raises(ValueError, match="CUDA"):
        toy_study(["no-such-set"], device="cuda")
    with pytest.raises(ValueError, match="torch device"):
        toy_study(["no-such-set"], device="gpu-please")


# ----------------------------------------------------------------------------- command lines
def test_thresholds_command_text_names_a_non_cpu_device():
    from ocsdf.bench.thresholds import command_text

    args = argparse.Namespace(datasets=["thyroid"], fprs=[0.05], seeds=1, threads=1, steps=None,
                              data_dir=None, out_dir="docs/results", device="cpu")
    assert "--device" not in command_text(args)
    args.device = "cuda:1"
    assert command_text(args).endswith("--device cuda:1")


def test_toy_report_names_a_non_cpu_device(tmp_path):
    import json

    from ocsdf.bench.toy import write_report

    args = argparse.Namespace(sets="moons", steps=10, width=8, depth=1, seed=0, threads=1,
                              out_dir=str(tmp_path), device="cuda")
    md = write_report([{"set": "moons"}], [], args, 1.0).read_text()
    assert "--device cuda" in md and "torch device `cuda`" in md
    args.device = "cpu"
    write_report([{"set": "moons"}], [], args, 1.0)
    command = json.loads((tmp_path / "toy.json").read_text())["command"]
    assert "--device" not in command


# ----------------------------------------------------------------------------- CPU runs
def _numbers(rows: list[dict]) -> list[dict]:
    """Rows without the wall-clock columns."""
    return [{k: v for k, v in r.items() if "time" not in k and not k.endswith(("_s", " s"))}
            for r in rows]


def test_toy_explicit_cpu_device_same_numbers(one_thread):
    from ocsdf.bench.toy import toy_study

    kw = dict(n_steps=20, width=8, depth=1, n_points=300, n_eval=2000, fig_dir=None)
    default, _ = toy_study(["moons"], **kw)
    explicit, _ = toy_study(["moons"], device="cpu", **kw)
    assert _numbers(explicit) == _numbers(default)
    assert explicit[0]["ours_lip"] <= 1 + 1e-4 and np.isfinite(explicit[0]["conv_lip"])


def test_robustness_explicit_cpu_device_same_numbers(one_thread):
    from ocsdf.bench.robustness import robustness_benchmark

    kw = dict(dataset="moons", eps=(0.0, 0.1), n_steps=10, n_eval=20, n_iter=2, restarts=2)
    default = robustness_benchmark(**kw)
    explicit = robustness_benchmark(**kw, device="cpu")
    assert _numbers(explicit) == _numbers(default)
    assert [r["eps (l2, standardised)"] for r in explicit] == [0.0, 0.1]


def test_surface_fits_record_their_device(one_thread):
    pytest.importorskip("scipy")
    from ocsdf import surface

    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 3))
    points /= np.maximum(1.0, np.linalg.norm(points, axis=1, keepdims=True))
    ours = surface.fit_surface(points, n_steps=5, width=8, depth=1, device="cpu")
    base = surface.fit_deepsdf(points, n_steps=5, width=8, depth=1, device="cpu")
    for fit in (ours, base):
        assert fit.device == "cpu"
        scores = fit.score_raw(points[:10])
        assert scores.shape == (10,) and np.all(np.isfinite(scores))
