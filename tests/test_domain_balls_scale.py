"""B's balls around the training rows outside the box (``domain_rows_``) when training at scale:
the streaming fit (:func:`ocsdf.streamfit.fit_stream`) and the torchrun data-parallel fit
(:mod:`ocsdf.distributed`) keep the same rows as ``OCSDF.fit``, so their scorers have the same
:class:`~ocsdf.core.domain.WithBalls`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from ocsdf import OCSDF
from ocsdf.core.domain import WithBalls
from ocsdf.errors import DomainWarning
from ocsdf.streamfit import fit_stream

TINY = dict(n_steps=40, warmup_steps=4, width=16, depth=1, random_state=3)


def _rows_with_outliers(n: int = 600) -> np.ndarray:
    """``n`` Gaussian rows x 5, of which rows 0-3 lie far out in feature 1 (outside the box
    [-5, 5]^5 once standardised) and row 300 far out in features 0 and 4."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 5))
    X[:4, 1] = 12.0 + np.arange(4)
    X[300, [0, 4]] = [-15.0, 20.0]
    return X


def _outside(model: OCSDF, X: np.ndarray) -> np.ndarray:
    """The rows of ``X`` outside the box, standardised by ``model``, in row order."""
    z = (X - model.mean_) / model.scale_
    return z[(np.abs(z) > model.domain_size).any(axis=1)]


def _fit(X, **params) -> OCSDF:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        return OCSDF(**params).fit(X)


def _stream(source, **kwargs) -> OCSDF:
    params = kwargs.pop("params", TINY)
    with pytest.warns(DomainWarning):
        return fit_stream(source, OCSDF(**params), **kwargs)


# ---------------------------------------------------------------------------- streaming
def test_rows_that_fit_give_fits_domain_rows_bit_for_bit():
    X = _rows_with_outliers()
    ref = _fit(X, **TINY)
    assert isinstance(ref.scorer_.domain, WithBalls) and len(ref.domain_rows_) == 5
    parts = [X[i:i + 70] for i in range(0, len(X), 70)]
    for source, chunk_rows in ((X, 64), (parts, 512), (lambda: iter(parts), 512)):
        got = _stream(source, chunk_rows=chunk_rows)
        assert got.stream_info_.in_memory
        assert got.n_outside_domain_ == ref.n_outside_domain_ == 5
        assert got.domain_rows_.dtype == np.float64
        assert np.array_equal(got.domain_rows_, ref.domain_rows_)
        assert isinstance(got.scorer_.domain, WithBalls)
        assert got.scorer_.domain.radius == ref.scorer_.domain.radius == ref.margin_
        assert np.array_equal(got.score_samples(X), ref.score_samples(X))
        assert np.array_equal(got.scorer_.score_terms(X), ref.scorer_.score_terms(X))


def test_streamed_moments_collect_the_rows_outside_in_file_order():
    """Rows that do not fit in the buffer: the second pass keeps every training row outside
    the box (the statistics are fit's up to rounding, so the rows are too)."""
    X = _rows_with_outliers(3000)
    X[2999, 2] = -30.0  # the last row too (the last chunk)
    ref = _fit(X, **TINY)
    got = _stream(X, chunk_rows=256, buffer_rows=500, sample_rows=400)
    assert not got.stream_info_.in_memory
    assert got.n_outside_domain_ == ref.n_outside_domain_ == len(got.domain_rows_) == 6
    assert got.domain_rows_.dtype == np.float64 and got.domain_rows_.shape == (6, 5)
    np.testing.assert_allclose(got.domain_rows_, ref.domain_rows_, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got.domain_rows_, _outside(got, X))
    dom = got.scorer_.domain
    assert isinstance(dom, WithBalls) and dom.radius == got.margin_
    # B holds every training row: each scores at least margin_ by B's term at its centre
    terms = got.scorer_.score_terms(X[(np.abs((X - got.mean_) / got.scale_) > 5).any(axis=1)])
    assert (terms[:, 1] >= got.margin_ - 1e-9).all()


def test_calibration_rows_are_not_ball_centres():
    """With held-out calibration rows, only the training rows outside the box are centres."""
    X = _rows_with_outliers(3000)
    X[::100, 3] = 25.0  # 30 more rows outside, spread over the file
    for buffer_rows in (200_000, 500):  # in memory, then streamed
        got = _stream(X, params={**TINY, "fpr": 0.05}, chunk_rows=256, buffer_rows=buffer_rows,
                      sample_rows=400, calibration_rows=1000)
        assert got.stream_info_.n_calibration == 1000
        assert got.stream_info_.in_memory == (buffer_rows > 2000)
        every = _outside(got, X)
        assert 0 < got.n_outside_domain_ == len(got.domain_rows_) < len(every)
        # a subsequence of every outside row, in file order
        pos = [int(np.flatnonzero(np.isclose(every, r, rtol=1e-12, atol=1e-12).all(axis=1))[0])
               for r in got.domain_rows_]
        assert pos == sorted(set(pos))


def test_rows_inside_the_box_give_no_balls():
    X = np.random.default_rng(1).normal(size=(3000, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        got = fit_stream(X, OCSDF(**TINY), chunk_rows=256, buffer_rows=500, sample_rows=400)
    assert got.n_outside_domain_ == 0 and got.domain_rows_.shape == (0, 3)
    assert not isinstance(got.scorer_.domain, WithBalls)


# ---------------------------------------------------------------------------- torchrun
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _csv(path, X: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(X, columns=list("abcde"))
    frame.to_csv(path, index=False)
    return frame


def test_one_process_keeps_fits_domain_rows(tmp_path, monkeypatch, capsys):
    from ocsdf.distributed import main

    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port())),
                       ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    frame = _csv(tmp_path / "rows.csv", _rows_with_outliers())
    assert main(["fit", str(tmp_path / "rows.csv"), "--model", str(tmp_path / "m"),
                 "--steps", "40", "--width", "16", "--depth", "1", "--batch-size", "32",
                 "--seed", "3", "--quiet"]) == 0
    assert "5 of 600 training rows" in capsys.readouterr().err
    got = OCSDF.load(tmp_path / "m")
    ref = _fit(np.ascontiguousarray(frame.to_numpy()), width=16, depth=1, n_steps=40,
               warmup_steps=4, batch_size=32, random_state=3)
    assert len(got.domain_rows_) == ref.n_outside_domain_ == 5  # saved as B's centres
    assert np.array_equal(got.domain_rows_, ref.domain_rows_)
    assert np.array_equal(got.score_samples(frame), ref.score_samples(frame.to_numpy()))


def test_two_processes_gather_the_rows_outside_of_every_rank(tmp_path):
    """A real 2-process gloo job: rows 0-3 are on both ranks (0, 2 on rank 0; 1, 3 on rank 1)
    and row 300 on rank 0; the saved model has all five, in file order."""
    X = _rows_with_outliers()
    frame = _csv(tmp_path / "rows.csv", X)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "ocsdf.distributed", "fit", str(tmp_path / "rows.csv"), "--model",
           str(tmp_path / "m"), "--steps", "40", "--width", "16", "--depth", "1",
           "--batch-size", "32", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "5 of 600 training rows" in proc.stderr
    model = OCSDF.load(tmp_path / "m")
    every = _outside(model, frame.to_numpy())
    assert len(every) == len(model.domain_rows_) == 5  # saved as B's centres
    np.testing.assert_allclose(model.domain_rows_, every, rtol=1e-12, atol=1e-12)
    assert isinstance(model.scorer_.domain, WithBalls)
    assert model.scorer_.domain.radius == model.margin_
    rows = X[(np.abs((X - model.mean_) / model.scale_) > model.domain_size).any(axis=1)]
    assert (model.scorer_.score_terms(rows)[:, 1] >= model.margin_ - 1e-9).all()
    assert torch.isfinite(torch.as_tensor(model.score_samples(frame))).all()
