"""Scoring Dask collections (:mod:`ocsdf.dask`) on a real ``dask.distributed.LocalCluster``:
two worker processes with one thread each, on loopback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe", reason="needs dask[dataframe]: pip install 'ocsdf[dask]'")
pytest.importorskip("distributed", reason="needs dask[distributed]: pip install 'ocsdf[dask]'")

import dask.array as da  # noqa: E402
import dask.dataframe as dd  # noqa: E402
from conftest import small_saved_model

from ocsdf import OCSDF, InputError  # noqa: E402
from ocsdf.core.scorer import SCORE_BATCH  # noqa: E402
from ocsdf.dask import load_counts, score_dask_array, score_dask_dataframe  # noqa: E402
from ocsdf.estimator import conformal_pvalues  # noqa: E402

FEATURES = [f"f{j}" for j in range(8)]


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes x 1 thread on 127.0.0.1, closed at the end."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """20,000 rows: 8 standard normal features and an ``id`` column the model does not use,
    indexed from 1000 (the index must come back unchanged)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(20_000, len(FEATURES))), columns=FEATURES)
    df.insert(0, "id", np.arange(len(df)))
    df.index = pd.RangeIndex(1000, 1000 + len(df))
    return df


@pytest.fixture(scope="module")
def saved(tmp_path_factory, frame) -> tuple[OCSDF, str]:
    """A small calibrated model fitted on the features (few steps), and its folder."""
    return small_saved_model(tmp_path_factory, frame[FEATURES], 0.1, "dask")


def test_dataframe_scores_equal_in_process_scores_and_each_worker_loads_once(
        client, frame, saved):
    model, folder = saved
    ddf = dd.from_pandas(frame, npartitions=8)
    scores = score_dask_dataframe(folder, ddf)
    assert list(scores.columns) == ["score", "decision", "label", "pvalue"]
    assert scores.npartitions == ddf.npartitions
    got = scores.compute()
    assert list(got.dtypes.astype(str)) == ["float64", "float64", "int64", "float64"]
    assert got.index.equals(frame.index)
    # Each partition (< SCORE_BATCH rows) is one scoring batch: bit for bit score_samples on
    # that partition. Against the whole table (scored in SCORE_BATCH-row batches from row 0) a
    # matrix product may round the last bit differently on another machine or BLAS (it did not
    # on the machine this was written on), hence the tolerance there.
    lengths = ddf.map_partitions(len).compute().tolist()
    assert len(lengths) >= 2 and max(lengths) <= SCORE_BATCH
    bounds = np.cumsum([0] + lengths)
    expected = np.concatenate([model.score_samples(frame[FEATURES].iloc[a:b])
                               for a, b in zip(bounds[:-1], bounds[1:])])
    assert np.array_equal(got["score"].to_numpy(), expected)
    whole = model.score_samples(frame[FEATURES])
    assert np.abs(got["score"].to_numpy() - whole).max() <= 1e-12
    assert np.array_equal(got["decision"].to_numpy(), expected - model.offset_)
    assert np.array_equal(got["label"].to_numpy(), np.where(expected >= model.offset_, 1, -1))
    assert np.array_equal(got["pvalue"].to_numpy(),
                          conformal_pvalues(model.calibration_scores_, expected))
    # a second computation (and the array path) reuses the workers' models
    score_dask_dataframe(folder, ddf).compute()
    arr = da.from_array(frame[FEATURES].to_numpy(), chunks=(2_500, -1))
    blocks = score_dask_array(folder, arr).compute()
    assert np.array_equal(blocks, np.concatenate([model.score_samples(frame[FEATURES][s:s + 2_500])
                                                  for s in range(0, len(frame), 2_500)]))
    per_worker = client.run(lambda: (os.getpid(), load_counts()))
    pids = {pid for pid, _ in per_worker.values()}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes
    loads = [counts.get((folder, "cpu"), 0) for _, counts in per_worker.values()]
    # 8 + 8 partitions and 8 blocks were scored, yet no worker loaded the model twice
    assert max(loads) == 1, per_worker


def test_array_scores_are_a_lazy_float64_vector(client, frame, saved):
    model, folder = saved
    X = frame[FEATURES].to_numpy()
    arr = da.from_array(X, chunks=(5_000, -1))
    scores = score_dask_array(folder, arr, n_threads=1)
    assert scores.shape == (len(X),) and scores.dtype == np.float64
    assert scores.chunks == (arr.chunks[0],)
    expected = np.concatenate([model.score_samples(frame[FEATURES][s:s + 5_000])
                               for s in range(0, len(X), 5_000)])
    assert np.array_equal(scores.compute(), expected)


def test_an_array_split_along_columns_is_refused_in_one_line(saved, frame):
    _, folder = saved
    arr = da.from_array(frame[FEATURES].to_numpy(), chunks=(5_000, 3))
    with pytest.raises(ValueError, match=r"chunked along rows only.*rechunk") as err:
        score_dask_array(folder, arr)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="must be 2-D"):
        score_dask_array(folder, da.zeros(10, chunks=5))


def test_wrong_inputs_fail_in_the_client_before_any_work(saved, frame):
    _, folder = saved
    with pytest.raises(TypeError, match="dask.dataframe.DataFrame.*from_pandas"):
        score_dask_dataframe(folder, frame)
    with pytest.raises(InputError, match=r"lacks columns the model was fitted on: \['f7'\]"):
        score_dask_dataframe(folder, dd.from_pandas(frame.drop(columns="f7"), npartitions=2))
    with pytest.raises(InputError, match="has 7 feature columns"):
        score_dask_array(folder, da.from_array(frame[FEATURES[:7]].to_numpy(), chunks=(500, -1)))
    from ocsdf.errors import ModelFileError

    with pytest.raises(ModelFileError):
        score_dask_dataframe(os.path.join(folder, "nope"), dd.from_pandas(frame, npartitions=2))


def test_missing_dask_is_a_one_line_import_error(monkeypatch, saved, frame):
    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(ImportError, match=r"pip install 'ocsdf\[dask\]'") as err:
        score_dask_dataframe(saved[1], frame)
    assert "\n" not in str(err.value)


def test_importing_the_module_does_not_import_dask():
    # ocsdf/dask.py does not shadow the real package: its absolute imports get dask itself
    code = ("import sys, pathlib, ocsdf.dask; assert 'dask' not in sys.modules; "
            "ocsdf.dask._import('dask.dataframe', 'test'); import dask; "
            "assert pathlib.Path(dask.__file__).parent.name == 'dask', dask.__file__; "
            "assert not pathlib.Path(dask.__file__).is_relative_to("
            "pathlib.Path(ocsdf.dask.__file__).parent), dask.__file__; print(dask.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "dask", proc.stderr[-300:]
