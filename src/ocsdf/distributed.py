"""Data-parallel training with ``torchrun``: one model trained by several processes.

Command (every process runs the same program; ``torchrun`` starts them and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``)::

    torchrun --standalone --nproc_per_node 2 -m ocsdf.distributed fit DATA --model DIR \\
        [--steps N] [--width W] [--depth D] [--seed S] [--batch-size B] [--device cpu|cuda]

What each of the ``P`` processes (ranks) does:

* **Rows.** Every rank reads the whole of ``DATA`` (CSV, NPZ or Parquet, read and checked as
  ``ocsdf fit`` does: :func:`ocsdf.io.load_table`, :func:`~ocsdf.io.select_numeric`,
  :func:`~ocsdf.io.check_finite`; so a bad file gives every rank the same one-line error, which
  rank 0 prints) and keeps rows ``rank::P``. Each rank thus holds the file in memory while it
  reads it; for data larger than one machine's memory, per-rank files are the next step.
* **Standardisation.** Mean and standard deviation of all rows, combined by all-reduce in
  float64 and two passes (sums and the row count give the mean; sums of squared deviations
  from that mean give the variance): the formula of :meth:`Standardizer.fit
  <ocsdf.core.domain.Standardizer.fit>` (``np.mean``, ``np.std`` with ``ddof=0``), constant
  columns mapped to 0 as it does. Every rank gets the same numbers; with one process they are
  Standardizer.fit's on the same (C-ordered) array bit for bit, with several they differ by
  float rounding only (sums in another order).
* **Margin.** The label-free margin (:func:`ocsdf.estimator.label_free_margin`) of a bounded
  sample: each rank draws up to :data:`MARGIN_ROWS_PER_RANK` (2,000) of its standardised rows,
  the samples are all-gathered, and rank 0 computes the margin on them (which draws 2,000 of
  them at most, as ``fit`` does) and broadcasts it.
* **Domain.** Each rank finds its standardised rows outside the box of the negatives; they are
  all-gathered (padded to the largest count) and sorted by file row, so every rank holds the
  same ``domain_rows_`` in the order ``OCSDF.fit`` keeps them: the centres of the balls of
  radius ``margin_`` that B adds (:class:`~ocsdf.core.domain.WithBalls`). All of them are kept
  in memory on every rank.
* **Training.** The network starts from the same seed on every rank (and rank 0's initial
  weights are broadcast, as DistributedDataParallel does). Each rank draws its own positive
  batches and negatives (generator seed ``seed + rank``) and, after every backward pass, the
  gradients are summed over ranks by one all-reduce of a flat buffer and divided by ``P``
  (the ``grad_hook`` of :func:`ocsdf.core.training.train`). Every rank then makes the same
  RMSprop step from the same gradients, so the parameters stay identical on every rank.
  The HKR loss is a mean over each batch, so the averaged gradient is that of one batch of
  ``P x B`` positives and ``P x B`` negatives: a ``P``-process run with ``--batch-size B``
  stands for a one-process ``fit`` with ``batch_size = P x B`` (not bit for bit: the random
  draws differ). With ``P = 1`` the run is ``OCSDF(...).fit`` on the rows as a C-ordered
  array, bit for bit (tested; numpy's column sums, so the statistics' last bits, depend
  on the array's memory layout).
* **Saving.** Rank 0 builds the fitted :class:`~ocsdf.OCSDF` as :meth:`OCSDF.load
  <ocsdf.OCSDF.load>` assembles one (its parameters, then the learned values and the
  :class:`~ocsdf.core.scorer.Scorer` of the exported float64 network) and saves it with
  :meth:`OCSDF.save <ocsdf.OCSDF.save>`; the Lipschitz bound is computed from the saved weights
  as always. Other ranks save nothing. The saved ``batch_size`` is the total, ``P x B``: the
  single-process fit the run stands for. Threshold: ``contamination="auto"`` (``offset_ = 0``);
  this entry point has no calibration split (``--fpr``) and no ``--trim``.

Why not :class:`torch.nn.parallel.DistributedDataParallel`: DDP averages gradients from hooks
that its wrapper's ``forward`` arms, and the training loop never calls ``forward``: it computes
the constrained weights once per step (``weights()``) and evaluates them many times
(``forward_with``: the Newton passes of the negatives, then the loss). The hook does what DDP's
reducer does for this model (every parameter gets a gradient every step, in one bucket).

Backends: gloo on CPUs, NCCL with ``--device cuda`` (one GPU per process, ``cuda:LOCAL_RANK``).
Each process uses one torch thread by default (``--threads``), set for the run and restored
after. The process group is created here unless one exists already, and then destroyed at the
end, even on failure.

Other launchers: :func:`fit_distributed` is the whole run as a function. Ray's
``TorchTrainer`` and Spark's ``TorchDistributor`` start the processes and set the same
environment as ``torchrun`` (``TorchTrainer`` also creates the process group, which is then
used as it is), so calling it in every process they start (``TorchTrainer``'s training
function, ``TorchDistributor(...).run(fit_distributed, DATA, DIR)``) trains the same way;
nothing here depends on them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from .core.domain import Standardizer
from .core.runtime import torch_device, torch_threads
from .core.training import train
from .errors import InputError

if TYPE_CHECKING:
    from .estimator import OCSDF

__all__ = ["MARGIN_ROWS_PER_RANK", "combined_standardizer", "fit_distributed",
           "gradient_averager", "main"]

#: Standardised rows each rank contributes to the sample the label-free margin is computed on.
MARGIN_ROWS_PER_RANK = 2000

_PROG = "ocsdf.distributed"
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def combined_standardizer(x_local: np.ndarray,
                          all_reduce_sum: Callable[[np.ndarray], np.ndarray]) -> Standardizer:
    """The :class:`Standardizer` of the rows of every rank, from this rank's rows ``x_local``
    (raw, ``(n_r, d)``, float64) and ``all_reduce_sum`` (an array's elementwise sum over ranks,
    the same result on every rank).

    Two passes, as ``np.mean`` and ``np.std`` compute them: the sums and the row count give the
    mean; the sums of squared deviations from that mean give the variance (``ddof=0``). With
    one rank (``all_reduce_sum`` the identity) the result is ``Standardizer.fit(x_local)`` bit
    for bit. Raises :class:`InputError` when a statistic overflows float64.
    """
    d = x_local.shape[1]
    first = all_reduce_sum(np.concatenate((np.sum(x_local, axis=0), [float(len(x_local))])))
    n = first[d]
    mean = first[:d] / n
    dev = x_local - mean
    var = all_reduce_sum(np.sum(dev * dev, axis=0)) / n
    std = np.sqrt(var)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
        raise InputError(f"feature(s) {bad.tolist()} (0-based) hold values too large for "
                         "float64 statistics (their mean or standard deviation overflows); "
                         "rescale or remove them")
    # The rule of Standardizer.fit for constant columns (scale 1: they map to 0).
    return Standardizer.from_moments(mean, std)


def gradient_averager(world_size: int, group=None) -> Callable[[Sequence[torch.nn.Parameter]],
                                                                None]:
    """A ``grad_hook`` for :func:`ocsdf.core.training.train` that replaces every gradient by
    its mean over the ``world_size`` processes of ``group`` (default: the whole world).

    One all-reduce of the gradients flattened into one buffer (what DistributedDataParallel
    does with its buckets); parameters without a gradient are left alone (the same ones on every
    rank, since every rank runs the same network and loop).
    """
    def average(params: Sequence[torch.nn.Parameter]) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat.div_(world_size)
        start = 0
        for g in grads:
            g.copy_(flat[start:start + g.numel()].view_as(g))
            start += g.numel()

    return average


def fit_distributed(
    data: str | os.PathLike,
    model_dir: str | os.PathLike,
    *,
    n_steps: int = 1000,
    width: int = 64,
    depth: int = 3,
    batch_size: int = 128,
    seed: int = 0,
    columns: Sequence[str | int] | None = None,
    header: bool | None = None,
    device: str = "cpu",
    n_threads: int | None = 1,
    progress: bool = False,
    dump_params: str | os.PathLike | None = None,
) -> OCSDF | None:
    """Train one OCSDF model on the rows of ``data`` with every process of the job (see the
    module's documentation) and save it to ``model_dir`` from rank 0.

    Run by every process. Creates the process group from the environment that ``torchrun``
    (or Ray's TorchTrainer, Spark's TorchDistributor) sets, unless one exists already, and then
    destroys it before returning, even on failure.

    Parameters
    ----------
    data : path
        CSV, NPZ or Parquet file of normal rows, read by every rank (rows ``rank::P`` kept).
    model_dir : path
        Model directory rank 0 writes (its parent folder must exist).
    n_steps, width, depth : int
        As ``OCSDF``'s; ``warmup_steps = n_steps // 10`` (as ``ocsdf fit --steps``).
    batch_size : int
        Positives (and negatives) per step *per process*; the saved model records the total.
    seed : int
        The model's ``random_state``: the network's initial weights and, with the rank, each
        process's random draws.
    columns, header
        As ``ocsdf fit``'s ``--columns`` and ``--header``/``--no-header``.
    device : {"cpu", "cuda"}
        "cuda": process ``LOCAL_RANK`` trains on ``cuda:LOCAL_RANK`` with NCCL; else gloo.
    n_threads : int or None
        Torch threads per process during the run (None: unchanged).
    progress : bool
        Progress bar on rank 0.
    dump_params : path, optional
        Each rank writes its final parameters, flattened, to ``{dump_params}.rank{r}.pt``
        (for tests).

    Returns
    -------
    OCSDF on rank 0 (saved), None on the other ranks.

    Raises
    ------
    InputError
        Not started by a launcher, a bad data file, too few rows, or a missing parent folder.
    """
    from .estimator import OCSDF
    from .io import require_folder

    dev = torch_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    created = _init_process_group(dev)
    try:
        with torch_threads(n_threads):
            start = time.perf_counter()
            rank, world = dist.get_rank(), dist.get_world_size()
            comm = torch.device("cpu") if dist.get_backend() == "gloo" else dev
            est = OCSDF(width=int(width), depth=int(depth), n_steps=int(n_steps),
                        warmup_steps=int(n_steps) // 10, batch_size=int(batch_size) * world,
                        random_state=int(seed), device=str(device))
            est._validate_params()
            require_folder(model_dir)
            X, names, has_header, path = _read_rows(data, columns, header)
            if len(X) < max(2, world):
                raise InputError(f"{path} has {len(X)} rows: {world} processes need at least "
                                 f"{max(2, world)} (one per process, 2 in all)")
            n_rows, d = X.shape
            X = np.ascontiguousarray(X[rank::world])
            # The seed OCSDF.fit draws from random_state (so that one process is fit exactly).
            train_seed = int(np.random.RandomState(int(seed)).randint(2**31 - 1))
            std = combined_standardizer(X, lambda a: _all_reduce(a, comm))
            z = std.transform(X)
            del X
            est.n_features_in_, est.image_shape_ = d, None
            est._resolve_auto()  # n_steps_ and warmup_steps_ as given; no distance supervision
            est.mean_, est.scale_ = std.mean, std.scale
            domain = est._domain()
            # B's ball centres: the standardised rows outside the box, of every rank
            mask = (domain.distance_outside(torch.as_tensor(z)) > 0).numpy()
            est.domain_rows_ = _gather_rows(z[mask], np.flatnonzero(mask) * world + rank,
                                            world, comm)
            outside = len(est.domain_rows_)
            est.margin_ = _combined_margin(z, rank, world, train_seed, comm)
            config = replace(est._train_config(train_seed), batch_size=int(batch_size))
            net = est._make_network(1, [train_seed]).to(dev)
            with torch.no_grad():
                for p in net.parameters():
                    _broadcast(p, comm)
            data_t = torch.as_tensor(z, dtype=torch.float32, device=dev)
            dist.barrier()
            t0 = time.perf_counter()
            histories = train(net, data_t, domain, config, margins=[est.margin_],
                              seeds=[train_seed + rank], progress=progress and rank == 0,
                              desc=f"{_PROG} fit ({world} processes)",
                              grad_hook=gradient_averager(world))
            train_s = float(_all_reduce(np.array([time.perf_counter() - t0]), comm,
                                        op=dist.ReduceOp.MAX)[0])
            if dump_params is not None:
                flat = torch.cat([p.detach().reshape(-1).cpu() for p in net.parameters()])
                torch.save(flat, f"{dump_params}.rank{rank}.pt")
            if rank != 0:
                return None
            est.history_ = histories[0]
            est.n_trimmed_ = 0
            est.n_outside_domain_ = outside
            est.offset_ = 0.0
            if has_header:
                est.feature_names_in_ = np.asarray(names, dtype=object)
            est._set_scorer(est._scorer(net.export_all(torch.float64)[0]))
            est.fit_time_ = time.perf_counter() - start
            saved = est.save(model_dir)
            if outside:
                print(f"{_PROG}: note: {outside} of {n_rows} training rows "
                      f"({100 * outside / n_rows:.1f} %) lie outside the box of the negatives "
                      f"(B adds a ball of radius m = {est.margin_:.3g} around each: they score "
                      f"at most {est.margin_:.3g})", file=sys.stderr)
            print(f"fitted OCSDF on {n_rows} rows x {d} features of {path} with {world} "
                  f"process{'es' if world > 1 else ''} ({batch_size} rows each per step, "
                  f"{n_steps} steps, "
                  f"{n_steps / max(train_s, 1e-9):.1f} steps/s) in {est.fit_time_:.1f} s; "
                  f"margin m = {est.margin_:.4g}; L = {est.lipschitz_:.4f}; "
                  f"saved model to {saved}", flush=True)
            return est
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def _init_process_group(device: torch.device) -> bool:
    """Create the default process group from the launcher's environment (gloo, or NCCL for a
    CUDA device); False when one exists already. InputError when not started by a launcher."""
    if dist.is_initialized():
        return False
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise InputError(f"{_PROG} runs under torchrun (missing environment variables "
                         f"{', '.join(missing)}): torchrun --standalone --nproc_per_node 2 "
                         f"-m {_PROG} fit DATA --model DIR")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def _read_rows(data, columns, header) -> tuple[np.ndarray, list[str], bool, Path]:
    """All rows of ``data`` as float64, checked as ``ocsdf fit`` checks them."""
    from .io import check_finite, load_table, select_numeric

    table = load_table(data, header=header)
    X, names = select_numeric(table, columns)
    check_finite(X, names, table.path)
    return X, names, table.has_header, table.path


def _all_reduce(a: np.ndarray, comm: torch.device, op=None) -> np.ndarray:
    """Elementwise reduction (default sum) of a float64 array over every rank."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(comm)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op)
    return t.cpu().numpy()


def _broadcast(t: torch.Tensor, comm: torch.device) -> None:
    """Overwrite ``t`` (in place) with rank 0's values."""
    buf = t.detach().to(comm)
    dist.broadcast(buf, src=0)
    t.copy_(buf.to(t.device))


def _gather_rows(rows: np.ndarray, index: np.ndarray, world: int,
                 comm: torch.device) -> np.ndarray:
    """Every rank's ``rows`` (float64 ``(k_r, d)``, at file rows ``index``), gathered on every
    rank and sorted by file row: the same float64 ``(k, d)`` array on every rank, in the order
    ``OCSDF.fit`` keeps them (all of them in memory: few rows for data that suits the box)."""
    d = rows.shape[1]
    counts = torch.zeros(world, dtype=torch.float64, device=comm)
    counts[dist.get_rank()] = len(rows)
    dist.all_reduce(counts)
    k_max = int(counts.max())
    if k_max == 0:
        return np.empty((0, d), dtype=np.float64)
    # the file row in the last column (exact in float64 below 2**53 rows)
    mine = torch.zeros(k_max, d + 1, dtype=torch.float64, device=comm)
    mine[:len(rows), :d] = torch.from_numpy(np.asarray(rows, dtype=np.float64))
    mine[:len(rows), d] = torch.from_numpy(np.asarray(index, dtype=np.float64))
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine)
    both = np.concatenate([p[:int(k)].cpu().numpy() for p, k in zip(parts, counts)])
    return np.ascontiguousarray(both[np.argsort(both[:, d], kind="stable"), :d])


def _combined_margin(z: np.ndarray, rank: int, world: int, seed: int,
                     comm: torch.device) -> float:
    """The label-free margin of up to :data:`MARGIN_ROWS_PER_RANK` standardised rows from each
    rank, computed on rank 0 and broadcast (the same float on every rank).

    A rank holding more rows draws them as ``label_free_margin`` draws its 2,000 (generator
    ``seed + rank``), so one process gets ``fit``'s margin exactly."""
    from .estimator import label_free_margin

    if len(z) > MARGIN_ROWS_PER_RANK:
        pick = np.random.default_rng(seed + rank).choice(len(z), MARGIN_ROWS_PER_RANK,
                                                         replace=False)
        z = z[pick]
    counts = torch.zeros(world, dtype=torch.float64, device=comm)
    counts[rank] = len(z)
    dist.all_reduce(counts)
    k_max = int(counts.max())
    mine = torch.zeros(k_max, z.shape[1], dtype=torch.float64, device=comm)
    mine[:len(z)] = torch.from_numpy(z)
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine)
    margin = torch.zeros(1, dtype=torch.float64, device=comm)
    if rank == 0:
        sample = np.concatenate([p[:int(k)].cpu().numpy() for p, k in zip(parts, counts)])
        margin[0] = label_free_margin(sample, seed=seed)
    dist.broadcast(margin, src=0)
    return float(margin[0])


def _parser() -> argparse.ArgumentParser:
    from .cli.options import add_header, column_list, positive_int

    parser = argparse.ArgumentParser(
        prog=_PROG, description="Data-parallel OCSDF training; start it with torchrun, e.g. "
        f"torchrun --standalone --nproc_per_node 2 -m {_PROG} fit DATA --model DIR")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit one model with every process and save it from rank 0",
                       description="Each process reads DATA, keeps rows rank::world_size, and "
                       "trains the same network on them with averaged gradients; rank 0 saves "
                       "the model directory.")
    p.add_argument("data", help="training data: .csv (header detected), .npz (array X), .parquet")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--columns", type=column_list, metavar="A,B,...",
                   help="columns to use: names or 0-based positions (default: all)")
    add_header(p)
    p.add_argument("--steps", type=positive_int, default=1000, help="training steps (1000)")
    p.add_argument("--width", type=positive_int, default=64,
                   help="hidden width, even (64: OCSDF's default for rows)")
    p.add_argument("--depth", type=positive_int, default=3, help="hidden layers (3)")
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="rows per step per process (128); the total is this x the processes")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (gloo) or cuda (NCCL, one GPU per process: cuda:LOCAL_RANK)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads per process (1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dump-params", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ocsdf.distributed fit ...`` under torchrun; returns the exit status.

    0 on success; 2 on a user error (bad data or option, not started by torchrun), printed as
    one line ``ocsdf.distributed: error: ...`` by rank 0 (every rank reads and checks the same
    file, so every rank meets the same error).
    """
    args = _parser().parse_args(argv)
    try:
        fit_distributed(args.data, args.model, n_steps=args.steps, width=args.width,
                        depth=args.depth, batch_size=args.batch_size, seed=args.seed,
                        columns=args.columns, header=args.header, device=args.device,
                        n_threads=args.threads, progress=not args.quiet,
                        dump_params=args.dump_params)
    except ValueError as err:  # InputError, and scikit-learn's one-line parameter errors
        if os.environ.get("RANK", "0") == "0":
            from .cli.options import first_line

            print(f"{_PROG}: error: {first_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
