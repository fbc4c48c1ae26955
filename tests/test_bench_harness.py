"""The harness of the ``ocsdf bench`` studies: one split stream, the study frame (device,
threads, wall time), the recorded command line and the job runner."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from ocsdf import data
from ocsdf.bench import defaults, harness


@pytest.fixture(scope="module")
def wine():
    try:
        return data.load_adbench("wine")
    except FileNotFoundError as err:
        pytest.skip(f"ADBench data not available ({err}); set OCSDF_DATA_DIR")


# ----------------------------------------------------------------------------- splits
def test_one_split_stream_for_every_path(wine, monkeypatch):
    """Seed 3: split_indices, data.oc_split and the defaults study fit and score the same rows."""
    X, y = wine
    train, test = harness.split_indices(y, "oc", seed=3)
    assert harness.split_indices is data.split_indices
    assert len(train) == int((y == 0).sum()) // 2 and not y[train].any()

    fit_rows, test_normal, anomalies = data.oc_split("wine", seed=3)
    np.testing.assert_array_equal(fit_rows, X[train])
    np.testing.assert_array_equal(test_normal, X[test[y[test] == 0]])
    np.testing.assert_array_equal(anomalies, X[y == 1])

    seen = {}

    class Recorder:  # stands in for OCSDF in the defaults study: records the rows it gets
        margin_ = 0.1

        def __init__(self, **params):
            pass

        def fit(self, rows):
            seen["fit"] = rows
            return self

        def score_samples(self, rows):
            seen["score"] = rows
            return -np.arange(len(rows), dtype=float)

    monkeypatch.setattr(defaults, "OCSDF", Recorder)
    defaults._fit_one(X, y, {}, "oc", seed=3)
    np.testing.assert_array_equal(seen["fit"], fit_rows)
    np.testing.assert_array_equal(seen["score"], X[test])

    other, _ = harness.split_indices(y, "oc", seed=4)
    assert not np.array_equal(other, train)


def test_the_stream_is_documented_and_fixed():
    """The one-class half is ``default_rng([seed, 2])``'s permutation of the normal rows."""
    y = np.r_[np.zeros(20, int), np.ones(4, int)]
    train, test = data.split_indices(y, "oc", seed=7)
    perm = np.random.default_rng([7, 2]).permutation(np.arange(20))
    np.testing.assert_array_equal(train, np.sort(perm[:10]))
    np.testing.assert_array_equal(test, np.r_[np.sort(perm[10:]), np.arange(20, 24)])
    assert "default_rng([seed, 2])" in data.__doc__ and "default_rng([seed, 1])" in data.__doc__


# ----------------------------------------------------------------------------- study frame
def test_study_sets_and_restores_the_threads():
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    with harness.study(argparse.Namespace(threads=wanted)) as run:
        assert torch.get_num_threads() == wanted
        assert run.device == "cpu" and run.threads == wanted and run.wall_s >= 0
        assert run.device_note("Trained") == ""
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with harness.study(argparse.Namespace(threads=wanted)):
            raise RuntimeError("a failing study")
    assert torch.get_num_threads() == before
    with harness.study(argparse.Namespace()):  # no --threads: left as they are
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="--threads"):
        with harness.study(argparse.Namespace(threads=0)):
            pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_study_rejects_absent_cuda_in_one_line():
    before = torch.get_num_threads()
    ran = []
    with pytest.raises(ValueError) as err:
        with harness.study(argparse.Namespace(device="cuda", threads=before + 1)):
            ran.append(True)
    assert not ran and "cuda" in str(err.value).lower() and "\n" not in str(err.value)
    assert torch.get_num_threads() == before


def test_device_note():
    assert harness.device_note("cpu", "Trained") == ""
    assert harness.device_note("cuda:1", "Trained", "fit times") == \
        "Trained on torch device `cuda:1` (fit times are that device's)"
    assert harness.Study(device="cuda").device_note("Scored") == "Scored on torch device `cuda`"


# ----------------------------------------------------------------------------- command line
def test_command_line():
    args = argparse.Namespace(sets="a,b", steps=3000, rate=0.050, fprs=[0.01, 0.1],
                              configs=["64x2", "128x3"], quiet=False, separate=True,
                              data_dir=None, out_dir="docs/results", device="cpu", jobs=1,
                              name="my table")
    names = ["sets", "steps", "rate", "fprs", "configs", "quiet", "separate", "data_dir",
             "out_dir", "device", "jobs", "name"]
    assert harness.command_line("ocsdf bench toy", args, names, omit={"jobs": 1},
                                spread={"configs"}) == (
        "ocsdf bench toy --sets a,b --steps 3000 --rate 0.05 --fprs 0.01,0.1 "
        "--configs 64x2 128x3 --separate --name 'my table'")
    args.device, args.out_dir, args.jobs = "cuda", "out", 2
    text = harness.command_line("ocsdf bench toy", args, ["sets", "out_dir", "jobs", "device"],
                                omit={"jobs": 1})
    assert text == "ocsdf bench toy --sets a,b --out-dir out --jobs 2 --device cuda"


def test_study_commands_keep_their_recorded_text():
    """The commands the tables in docs/results record come out the same."""
    from ocsdf.cli import build_parser

    def command(module, argv):
        args = build_parser(["bench"]).parse_args(["bench", *argv])
        return module.command_text(args)

    from ocsdf.bench import tabular, thresholds

    assert command(defaults, ["defaults", "--seeds", "2", "--configs", "64x2-s2000",
                              "128x3-s1000"]) == \
        "ocsdf bench defaults --seeds 2 --configs 64x2-s2000 128x3-s1000"
    assert command(thresholds, ["thresholds", "--datasets", "cardio,thyroid", "--seeds", "3",
                                "--calibration-sizes", "0.1,0.5"]) == (
        "ocsdf bench thresholds --datasets cardio,thyroid --fprs 0.01,0.05,0.1 --seeds 3 "
        "--threads 1 --calibration-sizes 0.1,0.5")
    assert command(tabular, ["tabular", "--jobs", "15", "--baselines", ""]) == (
        "ocsdf bench tabular --protocol both --seeds 5 --margins auto,0.01,0.05,0.2,1 "
        "--max-rows 20000 --threads 1 --baselines '' --jobs 15")


# ----------------------------------------------------------------------------- jobs, timing
def test_run_jobs_in_this_process_keeps_the_order_and_the_threads():
    before = torch.get_num_threads()
    seen = []

    def worker(item):
        return item * 10, torch.get_num_threads()

    out = harness.run_jobs([3, 1, 2], worker, n_jobs=1, threads=1,
                           finished=lambda i, r: seen.append(i))
    assert out == [(30, 1), (10, 1), (20, 1)] and seen == [0, 1, 2]
    assert torch.get_num_threads() == before
    assert harness.resolve_jobs(0, 50) >= 1 and harness.resolve_jobs(8, 3) == 3


def test_timed():
    value, seconds = harness.timed(sorted, [3, 1, 2], reverse=True)
    assert value == [3, 2, 1] and seconds >= 0
