"""Data-parallel training with torchrun (:mod:`ocsdf.distributed`): statistics combined over
ranks, one process equal to ``OCSDF.fit``, and a real 2-process run on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from ocsdf import OCSDF
from ocsdf.core.domain import Standardizer
from ocsdf.data import make_toy
from ocsdf.distributed import combined_standardizer, main


class _ThreadAllReduce:
    """An all-reduce (sum) between threads standing for ranks: the collective the statistics
    use, without processes."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world)
        self.parts: dict[int, np.ndarray] = {}
        self.total: np.ndarray | None = None

    def __call__(self, rank: int, a: np.ndarray) -> np.ndarray:
        self.parts[rank] = a
        if self.barrier.wait() == 0:
            self.total = sum(self.parts[r] for r in sorted(self.parts))
        self.barrier.wait()
        total = self.total.copy()
        self.barrier.wait()  # everyone has read it before the next call overwrites it
        return total


def _shards_standardizer(X: np.ndarray, world: int) -> list[Standardizer]:
    reduce = _ThreadAllReduce(world)
    out: list[Standardizer | None] = [None] * world

    def run(rank: int) -> None:
        out[rank] = combined_standardizer(X[rank::world], lambda a: reduce(rank, a))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def test_statistics_combined_over_shards_are_those_of_all_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(loc=[0.0, 1e6, -3.0, 7.0], scale=[1.0, 2.0, 1e-3, 1.0], size=(1001, 4))
    X[:, 3] = 7.0  # a constant column: scale 1, as Standardizer.fit sets it
    ref = Standardizer.fit(X)
    for world in (2, 3):
        stds = _shards_standardizer(X, world)
        for s in stds:  # every rank gets the same numbers
            assert np.array_equal(s.mean, stds[0].mean) and np.array_equal(s.scale, stds[0].scale)
        np.testing.assert_allclose(stds[0].mean, ref.mean, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(stds[0].scale, ref.scale, rtol=1e-9)
        assert stds[0].scale[3] == 1.0
    one = combined_standardizer(X, lambda a: a)  # one rank: bit for bit Standardizer.fit
    assert np.array_equal(one.mean, ref.mean) and np.array_equal(one.scale, ref.scale)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def world_of_one(monkeypatch):
    """The environment torchrun gives a job of one process."""
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port())),
                       ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)


def _moons_csv(path) -> pd.DataFrame:
    frame = pd.DataFrame(make_toy("moons", n=2000, seed=0), columns=["a", "b"])
    frame.to_csv(path, index=False)
    return frame


def test_one_process_is_fit_bit_for_bit(tmp_path, world_of_one, capsys):
    """With one process the run is ``OCSDF.fit`` with the same settings: same statistics,
    margin, initial weights and draws (the gradient all-reduce of one rank changes nothing)."""
    X = _moons_csv(tmp_path / "moons.csv")
    assert main(["fit", str(tmp_path / "moons.csv"), "--model", str(tmp_path / "m"),
                 "--steps", "40", "--width", "16", "--depth", "1", "--batch-size", "32",
                 "--seed", "3", "--quiet"]) == 0
    assert not torch.distributed.is_initialized()  # destroyed at the end
    assert "with 1 process (" in capsys.readouterr().out
    got = OCSDF.load(tmp_path / "m")
    # The rows as a C-ordered array, as each rank holds them (numpy's column sums, hence the
    # statistics' last bits, depend on the memory layout).
    ref = OCSDF(width=16, depth=1, n_steps=40, warmup_steps=4, batch_size=32,
                random_state=3).fit(np.ascontiguousarray(X.to_numpy()))
    assert got.get_params() == ref.get_params()
    assert got.margin_ == ref.margin_ and got.offset_ == 0.0
    assert np.array_equal(got.mean_, ref.mean_) and np.array_equal(got.scale_, ref.scale_)
    assert list(got.feature_names_in_) == ["a", "b"]
    assert np.array_equal(got.score_samples(X), ref.score_samples(X.to_numpy()))


def test_user_errors_are_one_line(tmp_path, monkeypatch, capsys, world_of_one):
    assert main(["fit", str(tmp_path / "missing.csv"), "--model", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ocsdf.distributed: error: ") and "missing.csv" in err
    assert "\n" not in err and not torch.distributed.is_initialized()
    monkeypatch.delenv("RANK")
    assert main(["fit", "x.csv", "--model", str(tmp_path / "m")]) == 2
    assert "runs under torchrun" in capsys.readouterr().err


def test_two_processes_with_torchrun(tmp_path):
    """A real 2-process gloo job on loopback (``--standalone`` picks a free port): parameters
    identical on both ranks after training, a sound Lipschitz bound, and a model like the
    one-process fit with the same total batch (2 x 64 against 128).

    Not bit for bit (each rank draws its own negatives), so the check is on quality: two moons
    against uniform noise at least 0.3 from every training row, AUROC > 0.9 for both, within
    0.05 of each other (measured with T = 1, the rows default since 2026-12-01: 0.965 one
    process, 0.928 two; two-process seeds 0-3 give 0.928-0.966 and one-process seeds 0-4
    0.953-0.965, so one draw of either may sit 0.04 from the other), and scores correlated
    > 0.9 (the same initial weights; 0.87-0.99 between one-process fits with different
    seeds)."""
    X = _moons_csv(tmp_path / "moons.csv")
    steps, env = 600, {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "ocsdf.distributed", "fit", str(tmp_path / "moons.csv"), "--model",
           str(tmp_path / "m"), "--steps", str(steps), "--width", "16", "--depth", "1",
           "--batch-size", "64", "--quiet", "--dump-params", str(tmp_path / "params")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "with 2 processes" in proc.stdout
    ranks = [torch.load(tmp_path / f"params.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].numel() > 0 and torch.equal(ranks[0], ranks[1])
    two = OCSDF.load(tmp_path / "m")
    assert two.lipschitz_ <= 1 + 1e-4
    assert two.batch_size == 128 and two.n_steps == steps
    one = OCSDF(width=16, depth=1, n_steps=steps, warmup_steps=steps // 10, batch_size=128,
                random_state=0).fit(X)
    normal = make_toy("moons", n=1000, seed=1)
    noise = np.random.default_rng(1).uniform(-3, 3, size=(4000, 2))
    far = NearestNeighbors(n_neighbors=1).fit(X.to_numpy()).kneighbors(noise)[0][:, 0] > 0.3
    rows = pd.DataFrame(np.vstack([normal, noise[far][:1000]]), columns=["a", "b"])
    y = np.r_[np.ones(len(normal)), np.zeros(len(rows) - len(normal))]
    s_one, s_two = one.score_samples(rows), two.score_samples(rows)
    auc_one, auc_two = roc_auc_score(y, s_one), roc_auc_score(y, s_two)
    assert auc_one > 0.9 and auc_two > 0.9 and abs(auc_one - auc_two) < 0.05, (auc_one, auc_two)
    corr = np.corrcoef(s_one, s_two)[0, 1]
    assert corr > 0.9, corr
