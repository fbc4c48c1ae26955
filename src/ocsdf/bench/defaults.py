"""Study: OCSDF's default network size and training length on tabular data, by measurement.

``defaults_study`` fits :class:`ocsdf.OCSDF` for every (data set, configuration, seed) and
returns one row per (data set, configuration) -- mean and standard deviation of the AUROC over
seeds, mean fit and score times, the margin actually used -- followed by one summary row per
configuration (AUROC averaged over data sets, average rank). ``ocsdf bench defaults`` runs it and
writes ``docs/results/defaults.{md,csv,json}``.

Protocols
---------
``"oc"``
    One-class: train on a random half of the normal rows (:func:`ocsdf.data.split_indices`: the
    split depends on the seed only, the same as in the other studies, so every configuration
    sees the same split for a given seed); AUROC of the other half of the normal rows against
    all anomalies.
``"ad"``
    Unsupervised anomaly detection: train on all rows, AUROC on all rows.

The AUROC takes anomalies as the positive class and ``-score_samples`` as their score.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ..core.runtime import torch_device, torch_threads
from ..data import load_adbench
from ..estimator import AUTO_BY_KIND, OCSDF
from .harness import command_line, rows_value, split_indices, study, timed

__all__ = [
    "DEFAULT_CONFIGS",
    "DEFAULT_DATASETS",
    "PROTOCOLS",
    "config_name",
    "parse_config",
    "defaults_study",
    "register",
    "run",
    "summary_markdown",
]

DEFAULT_DATASETS = ("cardio", "thyroid", "vowels", "satimage-2", "breastw", "wine")
PROTOCOLS = ("oc", "ad")
SUMMARY = "(all data sets)"


def _config(width: int, depth: int, n_steps: int, margin: float | str = "auto",
            **extra) -> dict:
    return {"width": width, "depth": depth, "n_steps": n_steps,
            "warmup_steps": n_steps // 10, "margin": margin, **extra}


#: The configurations compared by default: network sizes at 2,000 steps, training lengths at
#: 128 x 3, and a fixed margin of 0.01 against the label-free rule ("auto").
DEFAULT_CONFIGS: tuple[dict, ...] = (
    _config(64, 2, 2000),
    _config(128, 3, 2000),
    _config(256, 3, 2000),
    _config(256, 4, 2000),
    _config(128, 3, 1000),
    _config(128, 3, 4000),
    _config(128, 3, 2000, margin=0.01),
)

#: Name suffix -> OCSDF parameter and type, in the order names are written.
_SUFFIXES: tuple[tuple[str, str, type], ...] = (
    ("b", "batch_size", int),
    ("t", "n_newton_steps", int),
    ("lr", "learning_rate", float),
    ("w", "warmup_steps", int),
    ("bl", "bias_lr_factor", float),
    ("sched", "lr_schedule", str),
    ("m", "margin", float),
)


def config_name(params: dict) -> str:
    """Short name of a configuration, e.g. ``"128x3-s2000"`` or ``"64x2-s500-b256-lr0.003"``.

    ``WIDTHxDEPTH-sSTEPS``, then ``-bBATCH``, ``-tT`` (Newton steps), ``-lrRATE``, ``-wWARMUP``
    and ``-mMARGIN`` for the parameters that differ from their defaults (warm-up: from
    ``n_steps // 10``; margin: from "auto"). A ``"name"`` key, when present, is used as is.
    :func:`parse_config` reads the names back.
    """
    if "name" in params:
        return str(params["name"])
    est = OCSDF()
    width = rows_value("width", params.get("width", est.width))
    depth = params.get("depth", est.depth)
    steps = rows_value("n_steps", params.get("n_steps", est.n_steps))
    name = f"{width}x{depth}-s{steps}"
    defaults = {"warmup_steps": steps // 10, "margin": "auto",
                **{key: rows_value(key, getattr(est, key)) for _, key, _ in _SUFFIXES
                   if key in AUTO_BY_KIND}}
    for suffix, key, kind in _SUFFIXES:
        value = params.get(key, defaults.get(key, getattr(est, key)))
        if value != defaults.get(key, getattr(est, key)):
            name += f"-{suffix}{value:g}" if kind is not str else f"-{suffix}{value}"
    return name


def parse_config(name: str) -> dict:
    """The parameters of a configuration name written by :func:`config_name`.

    Raises ``ValueError`` naming the part it cannot read.
    """
    parts = name.split("-")
    try:
        width, depth = (int(v) for v in parts[0].split("x"))
        if not parts[1].startswith("s"):
            raise ValueError
        config = _config(width, depth, int(parts[1][1:]))
    except (ValueError, IndexError):
        raise ValueError(f"configuration {name!r} does not start with WIDTHxDEPTH-sSTEPS "
                         "(e.g. 128x3-s1000)") from None
    for part in parts[2:]:
        for suffix, key, kind in sorted(_SUFFIXES, key=lambda s: -len(s[0])):
            if part.startswith(suffix):
                try:
                    config[key] = kind(part[len(suffix):])
                except ValueError:
                    raise ValueError(f"configuration {name!r}: cannot read {part!r}") from None
                break
        else:
            known = ", ".join(f"-{s}" for s, _, _ in _SUFFIXES)
            raise ValueError(f"configuration {name!r}: unknown part {part!r} (known: {known})")
    return config


def _scale_steps(params: dict, steps_scale: float) -> dict:
    params = dict(params)
    if steps_scale != 1.0:
        steps = rows_value("n_steps", params.get("n_steps", "auto"))
        n_steps = max(1, int(round(steps * steps_scale)))
        params["n_steps"] = n_steps
        params["warmup_steps"] = n_steps // 10
    return params


def _fit_one(X, y, params: dict, protocol: str, seed: int, device: str = "cpu") -> dict:
    train_idx, test_idx = split_indices(y, protocol, seed)
    model, fit_s = timed(OCSDF(**{"device": device, **params}, random_state=seed).fit,
                         X[train_idx])
    scores, score_s = timed(model.score_samples, X[test_idx])
    auroc = float(roc_auc_score(y[test_idx], -scores))
    return {"auroc": auroc, "fit_s": fit_s, "score_s": score_s, "margin_": model.margin_}


def defaults_study(
    datasets: Sequence[str] = DEFAULT_DATASETS,
    configs: Sequence[dict] = DEFAULT_CONFIGS,
    seeds: int | Sequence[int] = 3,
    protocol: str = "oc",
    data_dir=None,
    n_threads: int = 1,
    steps_scale: float = 1.0,
    verbose: bool = False,
    device: str = "cpu",
) -> list[dict]:
    """Compare OCSDF configurations over data sets and seeds.

    Parameters
    ----------
    datasets : sequence of str
        ADBench short names (see :data:`ocsdf.data.ADBENCH_FILES`).
    configs : sequence of dict
        ``OCSDF`` keyword arguments (``random_state`` excepted), optionally with a ``"name"``.
    seeds : int or sequence of int
        An int ``k`` means seeds ``0 .. k-1``. The seed sets both the train/test split (``"oc"``)
        and the estimator's ``random_state``.
    protocol : {"oc", "ad"}
    data_dir : path, optional
        Folder holding ``adbench/``; found automatically when ``None``.
    n_threads : int, default 1
        ``torch.set_num_threads`` during the study (restored afterwards).
    steps_scale : float, default 1
        Multiplies every ``n_steps`` (and sets ``warmup_steps = n_steps // 10``), for quick runs.
    verbose : bool, default False
        Print one line per fit to stderr.
    device : str, default "cpu"
        Torch device for training and scoring ("cpu", "cuda", "cuda:1", ...); results are
        identical in format.

    Returns
    -------
    list of dict
        One row per (data set, configuration) -- keys ``dataset, config, width, depth, n_steps,
        margin, margin_, auroc, auroc_std, auroc_seeds, fit_s, score_s, rank, n_seeds`` --
        then one row per configuration with ``dataset = "(all data sets)"``: AUROC, fit and
        score times averaged over data sets and ``rank`` the average rank (1 = best; ties share
        the mean rank). ``auroc_std`` is the sample standard deviation over seeds (0 for one seed).

    Raises
    ------
    FileNotFoundError
        When the benchmark data is absent.
    ValueError
        A bad ``device``, or CUDA asked for and not available (before any work).
    """
    torch_device(device)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("at least one seed is needed")
    configs = [dict(c) for c in configs]
    names = [config_name(c) for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"configuration names must be distinct, got {names}")
    params_list = [_scale_steps({k: v for k, v in c.items() if k != "name"}, steps_scale)
                   for c in configs]

    rows: list[dict] = []
    with torch_threads(int(n_threads)):
        for dataset in datasets:
            X, y = load_adbench(dataset, data_dir)
            runs: dict[str, list[dict]] = {name: [] for name in names}
            for seed in seed_list:
                for name, params in zip(names, params_list, strict=True):
                    result = _fit_one(X, y, params, protocol, seed, device)
                    runs[name].append(result)
                    if verbose:
                        print(f"[defaults] {dataset} {name} seed={seed} "
                              f"auroc={result['auroc']:.4f} fit={result['fit_s']:.1f}s "
                              f"margin={result['margin_']:.4g}", file=sys.stderr, flush=True)
            for name, params in zip(names, params_list, strict=True):
                aurocs = np.array([r["auroc"] for r in runs[name]])
                est = OCSDF(**params)
                rows.append({
                    "dataset": dataset,
                    "config": name,
                    "width": rows_value("width", est.width),
                    "depth": est.depth,
                    "n_steps": rows_value("n_steps", est.n_steps),
                    "margin": str(est.margin),
                    "margin_": float(np.mean([r["margin_"] for r in runs[name]])),
                    "auroc": float(aurocs.mean()),
                    "auroc_std": float(aurocs.std(ddof=1)) if len(aurocs) > 1 else 0.0,
                    "auroc_seeds": " ".join(f"{a:.4f}" for a in aurocs),
                    "fit_s": float(np.mean([r["fit_s"] for r in runs[name]])),
                    "score_s": float(np.mean([r["score_s"] for r in runs[name]])),
                    "n_seeds": len(aurocs),
                })

    per = pd.DataFrame(rows)
    per["rank"] = per.groupby("dataset")["auroc"].rank(ascending=False, method="average")
    rows = per.to_dict("records")
    for name in names:
        sub = per[per["config"] == name]
        first = sub.iloc[0]
        rows.append({
            "dataset": SUMMARY,
            "config": name,
            "width": first["width"],
            "depth": first["depth"],
            "n_steps": first["n_steps"],
            "margin": first["margin"],
            "margin_": float("nan"),
            "auroc": float(sub["auroc"].mean()),
            "auroc_std": float(sub["auroc_std"].mean()),
            "auroc_seeds": "",
            "fit_s": float(sub["fit_s"].mean()),
            "score_s": float(sub["score_s"].mean()),
            "n_seeds": int(first["n_seeds"]),
            "rank": float(sub["rank"].mean()),
        })
    return rows


def summary_markdown(rows: Sequence[dict]) -> str:
    """Readable Markdown of :func:`defaults_study` rows: AUROC (%) mean +- std per data set and
    configuration, then the summary (mean AUROC, average rank, mean seed std, mean fit time)."""
    df = pd.DataFrame(list(rows))
    configs = list(dict.fromkeys(df["config"]))
    per = df[df["dataset"] != SUMMARY]
    summ = df[df["dataset"] == SUMMARY].set_index("config")
    cell = per.assign(value=[f"{100 * a:.1f} ± {100 * s:.1f}"
                             for a, s in zip(per["auroc"], per["auroc_std"], strict=True)])
    grid = cell.pivot(index="dataset", columns="config", values="value")
    grid = grid.reindex(index=list(dict.fromkeys(per["dataset"])), columns=configs)
    margins = per.pivot(index="dataset", columns="config", values="margin_")
    auto = [c for c in configs if (per.loc[per["config"] == c, "margin"] == "auto").all()]
    if auto:
        grid["margin_ (auto)"] = [f"{m:.3g}" for m in margins[auto[0]].reindex(grid.index)]
    extra = pd.DataFrame(
        [
            {c: f"{100 * summ.loc[c, 'auroc']:.1f}" for c in configs},
            {c: f"{summ.loc[c, 'rank']:.2f}" for c in configs},
            {c: f"{100 * summ.loc[c, 'auroc_std']:.1f}" for c in configs},
            {c: f"{summ.loc[c, 'fit_s']:.1f}" for c in configs},
        ],
        index=["**mean AUROC**", "**average rank**", "mean seed std", "mean fit time (s)"],
    )
    grid = pd.concat([grid, extra])
    grid.index.name = "data set"
    return grid.fillna("").to_markdown()


# ---------------------------------------------------------------------- CLI
def register(subparsers) -> argparse.ArgumentParser:
    """Add ``ocsdf bench defaults`` to ``subparsers`` (from ``add_subparsers``)."""
    from ..cli.options import add_device

    p = subparsers.add_parser(
        "defaults",
        help="choose the default network size and training length by measurement",
        description="Fit OCSDF with several widths, depths and step counts on ADBench sets and "
        "write docs/results/defaults.{md,csv,json}.",
    )
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), metavar="NAME",
                   help="ADBench short names (default: %(default)s)")
    p.add_argument("--configs", nargs="+", default=None, metavar="NAME",
                   help="configurations by name: WIDTHxDEPTH-sSTEPS, then optional -bBATCH, "
                   "-tNEWTON_STEPS, -lrRATE, -wWARMUP, -mMARGIN, e.g. 64x2-s500-b256-lr0.003 "
                   f"(default: {' '.join(config_name(c) for c in DEFAULT_CONFIGS)})")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds 0..k-1 (default: 3)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="oc",
                   help="oc: train on half of the normal rows; ad: train and score all rows")
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="multiply every n_steps (quick runs; default: 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--data-dir", default=None, help="folder holding adbench/ (default: found)")
    p.add_argument("--out-dir", default="docs/results", help="output folder (default: %(default)s)")
    p.add_argument("--name", default="defaults", help="output file stem (default: %(default)s)")
    add_device(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the study with the parsed ``args`` and write the tables; returns 0."""
    from .report import write_table

    try:
        configs = ([parse_config(c) for c in args.configs] if args.configs
                   else list(DEFAULT_CONFIGS))
    except ValueError as err:
        print(f"ocsdf bench defaults: {err}", file=sys.stderr)
        return 2
    with study(args) as run_:  # the device first; --threads for the run and the machine line
        rows = defaults_study(args.datasets, configs, args.seeds, protocol=args.protocol,
                              data_dir=args.data_dir, n_threads=args.threads,
                              steps_scale=args.steps_scale, verbose=True, device=run_.device)
        device_text = run_.device_note("Models trained and scored", "fit and score times")
        path = write_table(rows, args.name, out_dir=args.out_dir,
                           title="OCSDF defaults: network size and training length (tabular)",
                           notes=_notes(args, rows, configs, run_.wall_s, device_text),
                           command=command_text(args))
    print(path)
    return 0


def _notes(args: argparse.Namespace, rows: list[dict], configs: list[dict], wall_s: float,
           device_text: str) -> str:
    """The Markdown notes of the table: protocol, threads and wall time, device, summary."""
    names = {config_name(c) for c in configs}
    default_names = [config_name(c) for c in DEFAULT_CONFIGS]
    # "Not run" only for a subset of the default study (a custom list is its own study)
    skipped = ([n for n in default_names if n not in names]
               if names <= set(default_names) else [])
    protocol_text = {
        "oc": "one-class protocol: train on a random half of the normal rows (split by seed), "
              "AUROC of the other half against all anomalies",
        "ad": "anomaly-detection protocol: train on all rows, AUROC on all rows",
    }[args.protocol]
    notes = [
        f"AUROC (%, mean ± sample std over {args.seeds} seed(s)) with the {protocol_text}. "
        "Anomalies are the positive class, score = -score_samples. Configurations are "
        "`WIDTHxDEPTH-sSTEPS` with warmup_steps = n_steps // 10, margin \"auto\" (0.05 x median "
        "nearest-neighbour distance, standardised units) unless `-mVALUE`; `-bB` batch size, "
        "`-tT` Newton steps, `-lrR` learning rate, `-wW` warm-up steps; other parameters are "
        "OCSDF's defaults. Average rank: 1 = best, per data set, averaged over data sets.",
        f"torch.set_num_threads({args.threads}) for every fit (the machine's cores may be shared "
        f"with other processes; times are single-thread unless stated). Total runtime "
        f"{wall_s / 60:.1f} min.",
    ]
    if device_text:
        notes.append(device_text + ".")
    if args.steps_scale != 1.0:
        notes.append(f"Quick run: every n_steps multiplied by {args.steps_scale:g}.")
    if skipped:
        notes.append(f"Not run (time budget): {', '.join(skipped)}.")
    notes += [summary_markdown(rows),
              "All rows (the last ones, data set \"(all data sets)\", are the summary; their "
              "`rank` is the average rank, their `auroc_std` the mean seed std):"]
    return "\n\n".join(notes)


def command_text(args: argparse.Namespace) -> str:
    """The ``ocsdf bench defaults`` command line equivalent to ``args`` (options at their
    default left out)."""
    return command_line(
        "ocsdf bench defaults", args, ["datasets", "seeds", "configs", "protocol", "steps_scale",
                                       "threads", "data_dir", "out_dir", "name", "device"],
        omit={"datasets": list(DEFAULT_DATASETS), "seeds": 3, "protocol": "oc",
              "steps_scale": 1.0, "threads": 1, "name": "defaults"},
        spread={"datasets", "configs"})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ocsdf.bench.defaults ...``: same as ``ocsdf bench defaults ...``."""
    parser = argparse.ArgumentParser(prog="ocsdf bench")
    register(parser.add_subparsers(dest="study", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["defaults", *argv])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
