"""The defaults study (ocsdf.bench.defaults): one tiny run on a real ADBench set, and its CLI."""

from __future__ import annotations

import argparse
import math

import pytest

from ocsdf.bench.defaults import DEFAULT_CONFIGS, config_name, defaults_study, register
from ocsdf.data import load_adbench

TINY = {"width": 16, "depth": 1, "n_steps": 100, "warmup_steps": 10}


@pytest.fixture(scope="module")
def wine_rows() -> list[dict]:
    try:
        load_adbench("wine")
    except FileNotFoundError as err:
        pytest.skip(f"ADBench data not available (expected under /work/shared/data): {err}")
    return defaults_study(["wine"], [TINY], seeds=1, protocol="oc")


def test_tiny_study_row(wine_rows):
    per_dataset = [r for r in wine_rows if r["dataset"] == "wine"]
    assert len(per_dataset) == 1
    row = per_dataset[0]
    assert row["config"] == "16x1-s100"
    assert 0.0 <= row["auroc"] <= 1.0
    assert row["fit_s"] > 0
    assert row["score_s"] >= 0
    assert row["margin_"] > 0
    assert row["n_seeds"] == 1 and row["auroc_std"] == 0.0
    assert row["rank"] == 1.0


def test_tiny_study_summary(wine_rows):
    summary = [r for r in wine_rows if r["dataset"] != "wine"]
    assert len(summary) == 1
    assert math.isclose(summary[0]["auroc"], wine_rows[0]["auroc"])
    assert summary[0]["rank"] == 1.0


def test_config_names_and_bad_protocol():
    names = [config_name(c) for c in DEFAULT_CONFIGS]
    assert len(set(names)) == len(names)
    assert "128x3-s2000" in names and "128x3-s2000-m0.01" in names
    assert all(c["warmup_steps"] == c["n_steps"] // 10 for c in DEFAULT_CONFIGS)
    with pytest.raises(ValueError, match="protocol"):
        defaults_study(["wine"], [TINY], seeds=1, protocol="nope")


def test_register_parses_options():
    parser = argparse.ArgumentParser(prog="ocsdf bench")
    register(parser.add_subparsers(dest="study"))
    args = parser.parse_args(["defaults", "--datasets", "wine", "--seeds", "2",
                              "--protocol", "ad", "--steps-scale", "0.5", "--out-dir", "x"])
    assert args.datasets == ["wine"] and args.seeds == 2 and args.protocol == "ad"
    assert args.steps_scale == 0.5 and args.out_dir == "x" and args.threads == 1
    assert callable(args.func)


def test_explicit_cpu_device_gives_the_same_numbers(wine_rows):
    rows = defaults_study(["wine"], [TINY], seeds=1, protocol="oc", device="cpu")
    for a, b in zip(rows, wine_rows, strict=True):
        assert (a["dataset"], a["config"]) == (b["dataset"], b["config"])
        assert a["auroc"] == b["auroc"] and a["auroc_seeds"] == b["auroc_seeds"]
        both_nan = math.isnan(a["margin_"]) and math.isnan(b["margin_"])  # the summary row
        assert a["margin_"] == b["margin_"] or both_nan


def test_register_device_option():
    parser = argparse.ArgumentParser(prog="ocsdf bench")
    register(parser.add_subparsers(dest="study"))
    assert parser.parse_args(["defaults"]).device == "cpu"
    assert parser.parse_args(["defaults", "--device", "cuda"]).device == "cuda"


def test_config_names_read_back_and_bad_names_say_why():
    from ocsdf.bench.defaults import parse_config

    for c in DEFAULT_CONFIGS:
        assert parse_config(config_name(c)) == c
    c = parse_config("64x2-s500-b256-t3-lr0.003-w0-bl2-schedcosine-m0.01")
    assert c == {"width": 64, "depth": 2, "n_steps": 500, "warmup_steps": 0, "margin": 0.01,
                 "batch_size": 256, "n_newton_steps": 3, "learning_rate": 0.003,
                 "bias_lr_factor": 2.0, "lr_schedule": "cosine"}
    assert config_name(c) == "64x2-s500-b256-t3-lr0.003-w0-bl2-schedcosine-m0.01"
    assert config_name(parse_config("64x2-s500-b96-t1")) == "64x2-s500"  # defaults left out
    assert config_name(parse_config("64x2-s500-b128")) == "64x2-s500-b128"
    for bad, why in (("64-s500", "WIDTHxDEPTH"), ("64x2-s500-q3", "unknown part"),
                     ("64x2-s500-bx", "cannot read")):
        with pytest.raises(ValueError, match=why):
            parse_config(bad)
