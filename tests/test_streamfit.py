"""Training from data larger than memory (:mod:`ocsdf.streamfit`, ``ocsdf fit --stream``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ocsdf import OCSDF
from ocsdf.cli import main
from ocsdf.core.training import InMemoryPositives
from ocsdf.errors import DomainWarning, InputError
from ocsdf.streamfit import ShuffleBuffer, fit_stream

pytest.importorskip("pyarrow", reason="pyarrow not installed (pip install 'ocsdf[parquet]')")

TINY = dict(n_steps=40, warmup_steps=4, width=16, depth=1, random_state=3)
TINY_CLI = ["--steps", "40", "--width", "16", "--depth", "1", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """3000 rows, 5 named features on different scales, and a text column."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 5)) * [1, 2, 3, 4, 5] + [0, 1, 2, 3, 100]
    out = pd.DataFrame(X, columns=list("abcde"))
    out.insert(2, "id", [f"r{i}" for i in range(3000)])
    return out


@pytest.fixture(scope="module")
def files(frame, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("streamfit")
    csv, parquet = folder / "rows.csv", folder / "rows.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False, row_group_size=1000)
    return {"csv": csv, "parquet": parquet}


def _same_model(got: OCSDF, ref: OCSDF, rows) -> None:
    assert got.get_params() == ref.get_params()
    assert np.array_equal(got.mean_, ref.mean_) and np.array_equal(got.scale_, ref.scale_)
    assert got.margin_ == ref.margin_ and got.offset_ == ref.offset_
    assert got.n_outside_domain_ == ref.n_outside_domain_
    assert np.array_equal(got.score_samples(rows), ref.score_samples(rows))


# ---------------------------------------------------------------------------- equality
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_that_fits_gives_fit_bit_for_bit(frame, files, kind):
    feats = frame.drop(columns="id")
    ref = OCSDF(**TINY).fit(feats)  # as `ocsdf fit` passes a file with a header: a DataFrame
    got = fit_stream(files[kind], OCSDF(**TINY), columns=list("abcde"), chunk_rows=700)
    _same_model(got, ref, feats)
    assert list(got.feature_names_in_) == list("abcde")
    info = got.stream_info_
    assert info.in_memory and info.n_rows == 3000 and info.n_calibration == 0
    assert len(info.pass_seconds) == 1  # loaded once, never refreshed


def test_batches_that_fit_give_fit_bit_for_bit(frame):
    feats = frame.drop(columns="id")
    X = np.ascontiguousarray(feats.to_numpy())
    parts = [X[i:i + 450] for i in range(0, 3000, 450)]
    ref = OCSDF(**TINY).fit(np.concatenate(parts))
    for source in (lambda: iter(parts), parts, X):
        got = fit_stream(source, OCSDF(**TINY), chunk_rows=512)
        _same_model(got, ref, X)
        assert not hasattr(got, "feature_names_in_")
    frames = [feats.iloc[i:i + 450] for i in range(0, 3000, 450)]
    ref = OCSDF(**TINY).fit(pd.concat(frames))
    got = fit_stream(lambda: (f for f in frames), OCSDF(**TINY))
    _same_model(got, ref, feats)
    assert list(got.feature_names_in_) == list("abcde")


def test_cli_stream_saves_the_model_ocsdf_fit_saves(files, frame, tmp_path, capsys):
    path = str(files["csv"])
    assert main(["fit", path, "--model", str(tmp_path / "a"), "--columns", "a,b,c,d,e",
                 *TINY_CLI]) == 0
    assert main(["fit", path, "--model", str(tmp_path / "b"), "--columns", "a,b,c,d,e",
                 "--stream", "--chunk-rows", "999", *TINY_CLI]) == 0
    out = capsys.readouterr().out
    assert "fitted OCSDF on 3000 rows x 5 features" in out and "streamed: pass 1" in out
    a, b = OCSDF.load(tmp_path / "a"), OCSDF.load(tmp_path / "b")
    feats = frame.drop(columns="id")
    assert np.array_equal(a.score_samples(feats), b.score_samples(feats))
    assert list(b.feature_names_in_) == list("abcde")
    # then it scores like any model, by name, from a file with extra columns
    assert main(["score", str(tmp_path / "b"), path, "-o", str(tmp_path / "s.csv")]) == 0
    scores = pd.read_csv(tmp_path / "s.csv")["score"].to_numpy()
    assert np.array_equal(scores, b.score_samples(feats))


# ---------------------------------------------------------------------------- small buffer
def test_a_buffer_smaller_than_the_data_trains_as_well():
    """Gaussian rows (20,000 x 4) against uniform ones in [-4, 4]^4: a buffer of 1,000 rows
    refreshed from the stream gives the AUROC of the in-memory fit (measured: within 0.005
    over seeds 0-2)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 4))
    test = np.vstack([rng.normal(size=(2000, 4)), rng.uniform(-4, 4, size=(2000, 4))])
    y = np.r_[np.ones(2000), np.zeros(2000)]
    params = dict(n_steps=300, warmup_steps=30, width=32, depth=2, bias_lr_factor=5,
                  random_state=0)
    ref = OCSDF(**params).fit(X)
    got = fit_stream(X, OCSDF(**params), chunk_rows=4096, buffer_rows=1000, sample_rows=2000)
    info = got.stream_info_
    assert not info.in_memory and info.buffer_rows == 1000
    assert info.rows_per_step == 20_000 // 300 + 1 and len(info.pass_seconds) == 2
    # streamed statistics: fit's up to float rounding
    np.testing.assert_allclose(got.mean_, ref.mean_, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got.scale_, ref.scale_, rtol=1e-13)
    auc_ref = roc_auc_score(y, ref.score_samples(test))
    auc = roc_auc_score(y, got.score_samples(test))
    assert auc > 0.95 and abs(auc - auc_ref) < 0.02, (auc, auc_ref)


def test_the_buffer_draws_like_in_memory_positives():
    data = torch.randn(500, 3)
    gens = [torch.Generator().manual_seed(7)]
    ref_gens = [torch.Generator().manual_seed(7)]
    buffer, ref = ShuffleBuffer(data), InMemoryPositives(data, 1, 3, "cpu", torch.float32)
    for _ in range(5):
        assert torch.equal(buffer.draw(gens, 64), ref.draw(ref_gens, 64))


def test_rows_outside_the_domain_are_counted_in_the_second_pass():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6000, 3))
    X[::500, 1] = 40.0  # 12 rows far out in feature x1
    with pytest.warns(DomainWarning) as ref_warn:
        ref = OCSDF(**TINY).fit(X)
    with pytest.warns(DomainWarning) as got_warn:
        got = fit_stream(X, OCSDF(**TINY), chunk_rows=1000, buffer_rows=700)
    assert not got.stream_info_.in_memory
    assert got.n_outside_domain_ == ref.n_outside_domain_ == 12
    assert str(got_warn[0].message) == str(ref_warn[0].message)
    assert "in feature 1" in str(got_warn[0].message)


# ---------------------------------------------------------------------------- calibration
def test_calibration_rows_are_held_out_of_training(monkeypatch):
    """Feature 0 is the row number: every positive drawn during training is a training row,
    never one of the calibration rows, and those are exactly ``calibration_rows`` rows."""
    n = 8000
    rng = np.random.default_rng(2)
    X = np.column_stack([np.arange(n, dtype=float), rng.normal(size=(n, 2))])
    drawn: list[torch.Tensor] = []
    original = ShuffleBuffer.draw

    def record(self, gens, batch_size):
        out = original(self, gens, batch_size)
        drawn.append(out.reshape(-1, out.shape[-1]).double())
        return out

    monkeypatch.setattr(ShuffleBuffer, "draw", record)
    est = OCSDF(**{**TINY, "n_steps": 60}, fpr=0.05)
    model = fit_stream(X, est, chunk_rows=1000, buffer_rows=1500, calibration_rows=700)
    info = model.stream_info_
    assert (info.n_calibration, info.n_train) == (700, n - 700) and not info.in_memory
    assert len(model.calibration_scores_) == 700
    scores = model.score_samples(X)
    cal = np.flatnonzero(np.isin(scores, model.calibration_scores_))
    assert len(cal) == 700  # the calibration scores are those of 700 rows of X
    seen = torch.cat(drawn).numpy() * model.scale_ + model.mean_
    rows = np.unique(np.rint(seen[:, 0]).astype(int))
    assert len(rows) > 2000  # the refreshed buffer showed more rows than it holds
    assert not np.isin(rows, cal).any()
    # the standardisation is that of the training rows only
    np.testing.assert_allclose(model.mean_, np.delete(X, cal, axis=0).mean(axis=0),
                               rtol=1e-12)


def test_default_calibration_rows_follow_fit_and_are_capped():
    rng = np.random.default_rng(3)
    small = rng.normal(size=(4000, 2))
    model = fit_stream(small, OCSDF(**TINY, fpr=0.01))
    assert model.stream_info_.n_calibration == 1000  # 10 / fpr rows (25 %), as fit holds out
    big = rng.normal(size=(60_000, 2))
    model = fit_stream(big, OCSDF(**TINY, fpr=0.05), buffer_rows=5000)
    assert model.stream_info_.n_calibration == 10_000  # 20 % would be 12,000: capped
    assert model.offset_ == np.sort(model.calibration_scores_)[int(0.05 * 10_001) - 1]


# ---------------------------------------------------------------------------- memory
_FIT_AND_REPORT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from ocsdf import OCSDF
    from ocsdf.streamfit import fit_stream

    def rows(n):
        def batches():
            rng = np.random.default_rng(0)
            for s in range(0, n, 50_000):
                yield rng.normal(size=(min(50_000, n - s), 20))
        return batches

    for n in (int(a) for a in sys.argv[1:]):
        m = fit_stream(rows(n), OCSDF(n_steps=20, warmup_steps=2, width=16, depth=1,
                                      random_state=0), buffer_rows=20_000, sample_rows=5_000)
        assert m.stream_info_.n_rows == n and not m.stream_info_.in_memory
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
""")


def test_peak_memory_does_not_grow_with_rows():
    """One process fits 250,000 rows, then 1,000,000 (20 features): its peak RSS grows by
    less than 50 MB (measured: 1.1 and 8.8 MB), where holding the extra 750,000 rows would take
    120 MB in float64 alone (and fit holds them in several copies)."""
    if sys.platform != "linux":
        pytest.skip("ru_maxrss is in KiB on Linux only")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _FIT_AND_REPORT, "250000",
                           "1000000"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    quarter, full = (int(v) / 1024 for v in proc.stdout.split())
    assert full - quarter < 50, (quarter, full)


# ---------------------------------------------------------------------------- errors
def test_a_one_shot_iterator_is_refused():
    parts = [np.zeros((10, 2)), np.ones((10, 2))]
    for once in (iter(parts), (p for p in parts)):
        with pytest.raises(InputError, match="can be read once only: pass a function"):
            fit_stream(once, OCSDF(**TINY))
    with pytest.raises(InputError, match="returned a int, not an iterator"):
        fit_stream(lambda: 3, OCSDF(**TINY))
    with pytest.raises(InputError, match="row batch 1 is a str"):
        fit_stream([parts[0], "x"], OCSDF(**TINY))


def test_a_source_that_changes_between_passes_is_refused():
    calls = []

    def shrinking():
        calls.append(1)
        n = 4000 if len(calls) == 1 else 3000
        return iter([np.random.default_rng(0).normal(size=(n, 2))])

    with pytest.raises(InputError, match="gave 4000 rows on the first pass but 3000 on the "
                       "second"):
        fit_stream(shrinking, OCSDF(**TINY), buffer_rows=100)


def _error_line(argv, capsys) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocsdf: error: "), lines
    return lines[0]


@pytest.mark.parametrize("value, expected", [
    ("", "1 missing or infinite values (NaN/inf)"),
    ("inf", "1 missing or infinite values (NaN/inf)"),
    ("oops", "non-numeric columns in"),
], ids=["nan", "inf", "text"])
def test_bad_rows_give_the_errors_of_ocsdf_fit(frame, tmp_path, capsys, value, expected):
    text = frame.drop(columns="id").to_csv(index=False).splitlines()
    fields = text[2345].split(",")  # data row 2345
    fields[1] = value
    text[2345] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    argv = ["fit", str(bad), "--model", str(tmp_path / "m"), *TINY_CLI]
    whole = _error_line(argv, capsys)
    streamed = _error_line([*argv, "--stream", "--chunk-rows", "500"], capsys)
    for line in (whole, streamed):
        assert expected in line and str(bad) in line
    if value != "oops":
        assert "first in data row 2345" in whole and "first in data row 2345" in streamed
    else:
        assert "('oops' in data row 2345)" in streamed
    assert not (tmp_path / "m").exists()


def test_other_input_errors_are_one_line(files, tmp_path, capsys):
    model = ["--model", str(tmp_path / "m"), *TINY_CLI]
    assert "file not found" in _error_line(["fit", str(tmp_path / "no.csv"), "--stream",
                                            *model], capsys)
    header_only = tmp_path / "h.csv"
    header_only.write_text("a,b\n")
    assert "has no data rows" in _error_line(["fit", str(header_only), "--stream", *model],
                                             capsys)
    folder = tmp_path / "mixed"
    folder.mkdir()
    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}).to_csv(folder / "1.csv", index=False)
    pd.DataFrame({"a": [1.0, 2.0], "c": [3.0, 4.0]}).to_csv(folder / "2.csv", index=False)
    line = _error_line(["fit", str(folder), "--stream", *model], capsys)
    assert "every file (batch) needs the same columns" in line and "2.csv" in line
    for option in (["--trim", "0.1"], ["--cover"], ["--normal-only"]):
        line = _error_line(["fit", str(files["csv"]), "--stream", *option, *model], capsys)
        assert f"--stream does not support {option[0]}" in line
    assert "--buffer-rows applies to --stream only" in _error_line(
        ["fit", str(files["csv"]), "--buffer-rows", "10", *model], capsys)
    assert not (tmp_path / "m").exists()


def test_unsupported_estimators_are_refused():
    X = np.zeros((10, 4))
    for est, expected in ((OCSDF(trim=0.1), "does not trim"),
                          (OCSDF(standardize="cover"), "does not cover"),
                          (OCSDF(image_shape=(1, 2, 2)), "tabular rows"),
                          (OCSDF(network="conv"), "tabular rows")):
        with pytest.raises(InputError, match=expected):
            fit_stream(X, est)
    if "distance_weight" in OCSDF().get_params():  # distance supervision needs all rows
        with pytest.raises(InputError, match="distance supervision"):
            fit_stream(X, OCSDF(distance_weight=1.0))
    with pytest.raises(InputError, match="buffer_rows must be an integer >= 1"):
        fit_stream(X, OCSDF(), buffer_rows=0)


def test_a_streamed_model_saves_loads_and_certifies(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(5000, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        model = fit_stream(X, OCSDF(**TINY, fpr=0.1), buffer_rows=800, chunk_rows=999)
    loaded = OCSDF.load(model.save(tmp_path / "m"))
    assert np.array_equal(loaded.score_samples(X[:100]), model.score_samples(X[:100]))
    assert np.array_equal(loaded.calibration_scores_, model.calibration_scores_)
    assert loaded.offset_ == model.offset_
    radius = loaded.certified_radius(X[:10])
    assert radius.shape == (10,) and np.all(radius >= 0)


def test_cli_help_defaults_are_the_library_defaults():
    from ocsdf.cli import fit as cli_fit
    from ocsdf.stream import DEFAULT_CHUNK_ROWS
    from ocsdf.streamfit import DEFAULT_BUFFER_ROWS

    assert cli_fit.DEFAULT_BUFFER_ROWS == DEFAULT_BUFFER_ROWS
    assert cli_fit.DEFAULT_CHUNK_ROWS == DEFAULT_CHUNK_ROWS
