"""Bounded-memory streaming scoring (:mod:`ocsdf.stream`, ``ocsdf score --chunk-rows``)."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ocsdf import OCSDF
from ocsdf.cli import main
from ocsdf.cli.options import as_model_input, read_for_model
from ocsdf.errors import InputError
from ocsdf.io import write_csv_atomic
from ocsdf.stream import data_files, iter_scores, score_files

pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (pip install 'ocsdf[parquet]')")
pq = pytest.importorskip("pyarrow.parquet")

N_ROWS = 150_000  # more than two scoring batches (SCORE_BATCH = 65536)
CHUNK = 7_001  # divides neither N_ROWS nor SCORE_BATCH


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stream")


@pytest.fixture(scope="module")
def model_dir(folder) -> Path:
    """A tiny model fitted on named columns a, b, c."""
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(500, 3)), columns=["a", "b", "c"])
    return OCSDF(n_steps=30, width=16, depth=1, random_state=0).fit(X).save(folder / "model")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """N_ROWS rows: an id column the model does not use, then c, a, b (another order)."""
    X = np.random.default_rng(1).normal(size=(N_ROWS, 3)) * 1.5
    return pd.DataFrame({"id": [f"r{i}" for i in range(N_ROWS)], "c": X[:, 2], "a": X[:, 0],
                         "b": X[:, 1]})


@pytest.fixture(scope="module")
def csv_file(folder, frame) -> Path:
    path = folder / "rows.csv"
    frame.to_csv(path, index=False)
    return path


def _in_memory(model_dir: Path, path: Path, tmp_path: Path) -> tuple[pd.DataFrame, bytes]:
    """What ``ocsdf score`` computed and wrote before it streamed: the whole file read by
    ``read_for_model``, one ``score_samples`` call, ``write_csv_atomic``."""
    model = OCSDF.load(model_dir)
    args = argparse.Namespace(columns=None, model=str(model_dir), header=None)
    X, _ = read_for_model(model, str(path), args)
    score = model.score_samples(as_model_input(model, X))
    decision = score - model.offset_
    out = pd.DataFrame({"score": score, "decision": decision,
                        "label": np.where(decision >= 0, 1, -1)})
    target = tmp_path / "in_memory.csv"
    write_csv_atomic(out, target)
    return out, target.read_bytes()


def test_chunked_csv_scores_equal_in_memory_bit_for_bit(model_dir, csv_file, tmp_path):
    expected, expected_bytes = _in_memory(model_dir, csv_file, tmp_path)
    out = tmp_path / "scores.csv"
    result = score_files(model_dir, csv_file, out, chunk_rows=CHUNK, progress=False)
    assert out.read_bytes() == expected_bytes
    assert result.n_rows == N_ROWS and result.ignored == ("id",)
    assert result.n_outliers == int((expected["label"] == -1).sum())
    # the batches are the same whatever the chunk size, so the scores are too
    got = pd.concat(iter_scores(OCSDF.load(model_dir), csv_file, chunk_rows=65_536 + 17))
    np.testing.assert_array_equal(got["score"].to_numpy(), expected["score"].to_numpy())


def test_chunked_parquet_scores_equal_in_memory_bit_for_bit(model_dir, frame, tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path,
                   row_group_size=10_000)
    expected, expected_bytes = _in_memory(model_dir, path, tmp_path)
    out = tmp_path / "scores.parquet"
    result = score_files(model_dir, path, out, chunk_rows=CHUNK, progress=False)
    got = pd.read_parquet(out)
    assert list(got.columns) == ["score", "decision", "label"] and result.n_rows == N_ROWS
    for col in ("score", "decision", "label"):
        np.testing.assert_array_equal(got[col].to_numpy(), expected[col].to_numpy())
    csv_out = tmp_path / "scores.csv"
    score_files(model_dir, path, csv_out, chunk_rows=CHUNK, progress=False)
    assert csv_out.read_bytes() == expected_bytes


def test_cli_score_streams_with_chunk_rows(model_dir, csv_file, tmp_path, capsys):
    _, expected_bytes = _in_memory(model_dir, csv_file, tmp_path)
    out = tmp_path / "cli.csv"
    assert main(["score", str(model_dir), str(csv_file), "-o", str(out),
                 "--chunk-rows", "9999"]) == 0
    assert out.read_bytes() == expected_bytes
    captured = capsys.readouterr()
    assert f"scored {N_ROWS} rows" in captured.out
    assert "ignored columns not used by the model: ['id']" in captured.err
    assert main(["score", str(model_dir), str(csv_file), "--chunk-rows", "0"]) == 2


def test_cli_score_to_stdout_streams_the_same_csv(model_dir, frame, tmp_path, capsys):
    small = tmp_path / "small.csv"
    frame.iloc[:3000].to_csv(small, index=False)
    _, expected_bytes = _in_memory(model_dir, small, tmp_path)
    capsys.readouterr()
    assert main(["score", str(model_dir), str(small), "--chunk-rows", "700"]) == 0
    assert capsys.readouterr().out.encode() == expected_bytes


def test_a_folder_of_files_scores_like_their_concatenation(model_dir, frame, tmp_path):
    data = tmp_path / "data"
    (data / "part=2").mkdir(parents=True)
    frame.iloc[:40_000].to_csv(data / "a.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame.iloc[40_000:100_000], preserve_index=False),
                   data / "part=2" / "b.parquet", row_group_size=25_000)
    frame.iloc[100_000:].to_csv(data / "z.csv", index=False)
    frame.iloc[:0].to_csv(data / "empty.csv", index=False)  # header only: skipped
    (data / "_SUCCESS").write_text("")
    (data / ".hidden.csv").write_text("not,data\nx,y\n")
    (data / "notes.md").write_text("not data")
    whole = tmp_path / "whole.csv"
    frame.to_csv(whole, index=False)
    _, expected_bytes = _in_memory(model_dir, whole, tmp_path)
    out = data / "scores.csv"  # written into the folder it reads: never read back
    for _ in range(2):
        result = score_files(model_dir, data, out, chunk_rows=CHUNK, progress=False)
        assert out.read_bytes() == expected_bytes
    assert [p.relative_to(data).as_posix() for p in result.files] == [
        "a.csv", "empty.csv", "part=2/b.parquet", "z.csv"]
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "_SUCCESS").write_text("")
    with pytest.raises(InputError, match="holds no data files"):
        data_files(nothing)


def _bad_csv(frame: pd.DataFrame, path: Path, row: int, value: str) -> Path:
    """``frame`` as CSV with column ``a`` of 1-based data row ``row`` replaced by ``value``."""
    text = frame.iloc[:, 1:].to_csv(index=False, float_format="%.6g").splitlines()
    fields = text[row].split(",")
    fields[1] = value
    text[row] = ",".join(fields)
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.mark.parametrize("row, value, expected", [
    (100_001, "", "first in data row 100001"),
    (120_000, "inf", "first in data row 120000"),
    (130_000, "oops", "['a'] ('oops' in data row 130000)"),
    (90_000, "1e300", "data row 90000, feature 'a'"),
    (110_000, "1,2", "Expected 3 fields in line 110001, saw 4"),
], ids=["nan", "inf", "text", "too-far", "extra-field"])
def test_a_bad_row_is_named_by_its_row_in_the_whole_file(model_dir, frame, tmp_path, row,
                                                         value, expected):
    path = _bad_csv(frame, tmp_path / "bad.csv", row, value)
    with pytest.raises(InputError) as err:
        score_files(model_dir, path, tmp_path / "s.csv", chunk_rows=4096, progress=False)
    msg = str(err.value)
    assert expected in msg and "bad.csv" in msg and "\n" not in msg


def test_a_bad_parquet_row_is_named_by_its_row_in_the_whole_file(model_dir, frame, tmp_path):
    bad = frame.copy()
    bad.loc[70_000 - 1, "b"] = np.nan
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path, index=False, row_group_size=30_000)
    with pytest.raises(InputError, match=r"bad.parquet has 1 missing or infinite values "
                       r"\(NaN/inf\) of data rows .* in columns \['b'\], first in data row "
                       "70000"):
        score_files(model_dir, path, None, chunk_rows=CHUNK, progress=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_nothing_is_written_on_failure(model_dir, frame, tmp_path, suffix):
    path = _bad_csv(frame, tmp_path / "bad.csv", N_ROWS - 5, "")  # fails in the last chunk
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / f"scores{suffix}"
    with pytest.raises(InputError, match="NaN/inf"):
        score_files(model_dir, path, out, chunk_rows=CHUNK, progress=False)
    assert list(out_dir.iterdir()) == []  # no output, no temporary file left behind
    out.write_bytes(b"previous scores")
    with pytest.raises(InputError, match="NaN/inf"):
        score_files(model_dir, path, out, chunk_rows=CHUNK, progress=False)
    assert out.read_bytes() == b"previous scores" and list(out_dir.iterdir()) == [out]
    with pytest.raises(InputError, match="typo does not exist"):
        score_files(model_dir, path, tmp_path / "typo" / "s.csv", progress=False)


def test_empty_inputs_are_one_line_errors(model_dir, tmp_path):
    header_only = tmp_path / "h.csv"
    header_only.write_text("a,b,c\n")
    with pytest.raises(InputError, match="has no data rows"):
        score_files(model_dir, header_only, tmp_path / "s.csv", progress=False)
    empty_dir = tmp_path / "d"
    empty_dir.mkdir()
    (empty_dir / "x.csv").write_text("a,b,c\n")
    with pytest.raises(InputError, match="empty input: .* has no data rows"):
        score_files(model_dir, empty_dir, tmp_path / "s.csv", progress=False)
    with pytest.raises(InputError, match="file not found"):
        score_files(model_dir, tmp_path / "missing.csv", None, progress=False)
    assert not (tmp_path / "s.csv").exists()


# ---------------------------------------------------------------------------- memory bound
_SCORE_AND_REPORT = textwrap.dedent("""
    import resource, sys
    from ocsdf.stream import score_files
    score_files(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def _write_rows(path: Path, n_rows: int, n_features: int = 20, step: int = 100_000) -> None:
    """``n_rows`` random rows with columns f0..f{d-1}, written ``step`` rows at a time (the
    generation itself stays bounded)."""
    rng = np.random.default_rng(0)
    names = [f"f{j}" for j in range(n_features)]
    writer = None
    with open(path, "w" if path.suffix == ".csv" else "wb") as fh:
        for start in range(0, n_rows, step):
            block = pd.DataFrame(rng.normal(size=(min(step, n_rows - start), n_features)),
                                 columns=names)
            if path.suffix == ".csv":
                block.to_csv(fh, index=False, header=start == 0, float_format="%.6g")
            else:
                table = pa.Table.from_pandas(block, preserve_index=False)
                writer = writer or pq.ParquetWriter(fh, table.schema)
                writer.write_table(table)
        if writer is not None:
            writer.close()


def _peak_rss_mb(model: Path, data: Path, out: Path) -> float:
    """Peak resident memory (MB) of a fresh process that streams ``data`` to ``out``
    (``ru_maxrss`` of the child itself, in KiB on Linux)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _SCORE_AND_REPORT, str(model), str(data),
                           str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1]) / 1024


def _memory_growth(tmp_path: Path, suffix: str, n_rows: int) -> tuple[float, float]:
    """Peak RSS (MB) scoring n_rows / 4 rows and n_rows rows of 20 features."""
    if sys.platform != "linux":
        pytest.skip("ru_maxrss is in KiB on Linux only")
    X = pd.DataFrame(np.random.default_rng(2).normal(size=(2000, 20)),
                     columns=[f"f{j}" for j in range(20)])
    model = OCSDF(n_steps=20, width=16, depth=1, random_state=0).fit(X).save(tmp_path / "m")
    peaks = []
    for n in (n_rows // 4, n_rows):
        data = tmp_path / f"rows{suffix}"
        _write_rows(data, n)
        peaks.append(_peak_rss_mb(model, data, tmp_path / f"scores{suffix}"))
        data.unlink()
    return peaks[0], peaks[1]


# Peaks of identical runs vary by up to ~70 MB (allocator caches: 1M Parquet rows gave growths
# of 2 to 71 MB over 8 runs), while reading the whole file would add hundreds of MB (1M x 20
# float64 rows are 160 MB, held in several copies): the bound tells the two apart.
GROWTH_MB = 100


@pytest.mark.parametrize("suffix, n_rows", [(".parquet", 1_000_000), (".csv", 400_000)])
def test_peak_memory_does_not_grow_with_rows(tmp_path, suffix, n_rows):
    quarter, full = _memory_growth(tmp_path, suffix, n_rows)
    assert full - quarter < GROWTH_MB, (quarter, full)


@pytest.mark.slow
@pytest.mark.parametrize("suffix, n_rows", [(".parquet", 4_000_000), (".csv", 2_000_000)])
def test_peak_memory_does_not_grow_with_rows_large(tmp_path, suffix, n_rows):
    quarter, full = _memory_growth(tmp_path, suffix, n_rows)
    assert full - quarter < GROWTH_MB, (quarter, full)


def test_output_folder_must_exist_before_anything_is_read(model_dir, tmp_path):
    with pytest.raises(InputError, match="cannot write .* does not exist"):
        score_files(model_dir, tmp_path / "not-read.csv", tmp_path / "no" / "s.csv",
                    progress=False)


def test_stdout_output_is_csv(model_dir, frame, tmp_path, monkeypatch):
    small = tmp_path / "small.parquet"
    frame.iloc[:50].to_parquet(small, index=False)
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    result = score_files(model_dir, small, None, chunk_rows=7, progress=False)
    assert result.output is None and result.n_rows == 50
    assert buffer.getvalue().splitlines()[0] == "score,decision,label"
    assert len(buffer.getvalue().splitlines()) == 51


# ---------------------------------------------------------------------------- batch scorer
def test_batch_scorer_pickles_its_settings_and_loads_the_model_once(model_dir, frame):
    import pickle

    import torch

    from ocsdf.stream import BatchScorer, load_counts

    scorer = BatchScorer(model_dir)
    batch = frame.iloc[10:1010]
    first = scorer(batch)
    blob = pickle.dumps(scorer)
    assert len(blob) < 1000  # settings only, no weights
    copy = pickle.loads(blob)
    model = OCSDF.load(model_dir)
    expected = model.score_samples(batch[["a", "b", "c"]])
    for got in (first, copy(batch), copy(pa.Table.from_pandas(batch)),
                copy(batch[["a", "b", "c"]].to_numpy())):
        np.testing.assert_array_equal(got["score"].to_numpy(), expected)
        assert list(got.columns) == ["score", "decision", "label"]
    assert first.index.equals(batch.index)
    # one load per process, shared by every unpickled copy (what a task graph ships)
    assert copy.model is scorer.model is pickle.loads(blob).model
    assert load_counts()[(scorer.model_dir, "cpu")] == 1
    previous = torch.get_num_threads()
    BatchScorer(model_dir, n_threads=2)(batch)
    assert torch.get_num_threads() == previous
    with pytest.raises(InputError, match="NaN/inf"):
        scorer(batch.assign(a=np.nan))


def test_batch_scorer_adds_pvalues_for_a_calibrated_model(tmp_path):
    from ocsdf.estimator import conformal_pvalues
    from ocsdf.stream import BatchScorer

    X = np.random.default_rng(3).normal(size=(400, 2))
    model = OCSDF(n_steps=20, width=16, depth=1, fpr=0.1, random_state=0).fit(X)
    model.save(tmp_path / "cal")
    got = BatchScorer(tmp_path / "cal")(X[:50])
    assert list(got.columns) == ["score", "decision", "label", "pvalue"]
    np.testing.assert_array_equal(
        got["pvalue"], conformal_pvalues(model.calibration_scores_, model.score_samples(X[:50])))


def test_cli_chunk_default_is_the_stream_default():
    from ocsdf.cli import score as cli_score
    from ocsdf.stream import DEFAULT_CHUNK_ROWS

    assert cli_score.DEFAULT_CHUNK_ROWS == DEFAULT_CHUNK_ROWS
