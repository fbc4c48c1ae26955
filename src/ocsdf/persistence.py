"""Save and load a fitted :class:`~ocsdf.OCSDF`: safetensors weights + JSON, never pickle.

Layout of a model directory (format version 2)::

    config.json        {"format": "ocsdf", "format_version": 2, "params": {...},
                        "fitted": {...}, "scorer": {...}}
    model.safetensors  what scoring uses (:meth:`ocsdf.Scorer.state`): the exported float64
                       weights and biases, the standardisation mean and scale

Save what is scored: loading copies these numbers and re-solves nothing, so a model scores bit
for bit the same on any device and machine (a model trained on a GPU loads on a CPU), and the
recomputed Lipschitz bound is a float64 SVD of the same stored weights, comparable exactly with
the recorded one.

Version 1 directories (the Cayley *parameters* of the trained network) still load: the weights
are solved once from them (on the CPU) and the network converted to the current layout; the
recorded bound is then compared with a tolerance of 1e-6 (solvers round differently). Saving
such a model again writes version 2.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .core.nn import cayley_full, plain_network
from .core.runtime import torch_device
from .core.scorer import Scorer
from .errors import ModelFileError
from .io import require_folder

if TYPE_CHECKING:
    from .estimator import OCSDF

__all__ = ["save_model", "read_model", "FORMAT_VERSION"]

FORMAT_VERSION = 2
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_model(model: OCSDF, path: str | Path) -> Path:
    """Write the fitted ``model`` to the directory ``path`` atomically (temp dir, then rename).

    The folder holding ``path`` must exist (:class:`InputError` otherwise); the directory and
    its files get the usual permissions (0o777 / 0o666 less the umask).
    """
    path = Path(path)
    fitted = {
        "offset": model.offset_,
        "margin": model.margin_,
        "lipschitz": model.lipschitz_,
        "n_features_in": int(model.n_features_in_),
        "fit_time_s": getattr(model, "fit_time_", None),
        "calibration_scores": (
            model.calibration_scores_.tolist() if hasattr(model, "calibration_scores_") else None
        ),
        "feature_names_in": (
            [str(c) for c in model.feature_names_in_]
            if hasattr(model, "feature_names_in_") else None
        ),
        "image_shape": (None if getattr(model, "image_shape_", None) is None
                        else [int(v) for v in model.image_shape_]),
    }
    params = model.get_params()
    if not isinstance(params["random_state"], int | type(None)):
        params["random_state"] = None  # a RandomState object is not part of the saved model
    state, scorer_meta = model.scorer_.state()
    config = {"format": "ocsdf", "format_version": FORMAT_VERSION, "params": params,
              "fitted": fitted, "scorer": scorer_meta}
    require_folder(path)
    # os.mkdir and open() apply the umask: the usual permissions (0o777 / 0o666 less the
    # umask), so a service running as another user can read the model (mkdtemp and
    # safetensors' own writer would make it private to its owner).
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.mkdir(tmp, 0o777)
    try:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        (tmp / WEIGHTS).write_bytes(save(state, metadata={"format": "ocsdf"}))
        if path.exists():
            if not (path / CONFIG).is_file():
                raise ModelFileError(f"{path} exists and is not an ocsdf model directory")
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_model(path: str | Path, device: str = "cpu") -> tuple[dict, dict, Scorer]:
    """Read a model directory written by :func:`save_model`: ``(params, fitted, scorer)``.

    ``params`` are the estimator's parameters, ``fitted`` its learned values (``offset``,
    ``margin``, ``n_features_in``, ``fit_time_s``, ``calibration_scores``,
    ``feature_names_in``, ``lipschitz``), ``scorer`` the fitted score on ``device``. Raises
    :class:`ModelFileError` with a one-line message for a missing, truncated, foreign or
    inconsistent directory. ``OCSDF.load`` builds the estimator from them.
    """
    path = Path(path)
    cfg_file, w_file = path / CONFIG, path / WEIGHTS
    if not path.is_dir():
        raise ModelFileError(f"model directory not found: {path}")
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise ModelFileError(f"missing model file: {f}")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(
            f"{cfg_file} is not valid JSON (truncated or corrupt): {err}"
        ) from None
    if not isinstance(config, dict) or config.get("format") != "ocsdf":
        raise ModelFileError(f"{cfg_file} is not an ocsdf model config")
    version = config.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ModelFileError(
            f"{cfg_file} has format version {version!r}; this ocsdf reads versions 1 and "
            f"{FORMAT_VERSION} (a newer ocsdf wrote it: upgrade ocsdf to load it)"
        )
    dev = torch_device(device)
    try:
        params, fitted = dict(config["params"]), dict(config["fitted"])
        for key in ("offset", "margin"):
            fitted[key] = float(fitted[key])
        n_features = fitted["n_features_in"] = int(fitted["n_features_in"])
        if fitted.get("fit_time_s") is not None:
            fitted["fit_time_s"] = float(fitted["fit_time_s"])
        if fitted.get("calibration_scores") is not None:
            fitted["calibration_scores"] = np.asarray(fitted["calibration_scores"],
                                                      dtype=np.float64)
        if fitted.get("feature_names_in") is not None:
            fitted["feature_names_in"] = np.asarray(fitted["feature_names_in"], dtype=object)
        if fitted.get("image_shape") is not None:
            fitted["image_shape"] = tuple(int(v) for v in fitted["image_shape"])
            if len(fitted["image_shape"]) != 3:
                raise ValueError(f"image_shape {fitted['image_shape']} is not (C, H, W)")
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{cfg_file} is missing or has a bad entry: {err}") from None
    try:
        state = load_file(str(w_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{w_file} is not a readable safetensors file: {err}") from None
    try:
        if version == 1:
            scorer = _scorer_v1(params, n_features, state, fitted).to(dev)
        else:
            scorer = Scorer.from_state(state, config["scorer"], dev)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise ModelFileError(f"{w_file} does not match the network described in {cfg_file} "
                             f"({err})") from None
    if scorer.n_features != n_features:
        raise ModelFileError(f"{w_file} takes {scorer.n_features} features but {cfg_file} "
                             f"says {n_features}")
    # The bound is recomputed from the loaded weights (never trusted from the file); the saved
    # value only detects weights that are not the ones the model was saved with. Version 2
    # stores the weights scoring uses, so the two are the same float64 SVD of the same numbers.
    saved = fitted.get("lipschitz")
    tol = 1e-9 if version == FORMAT_VERSION else 1e-6
    if saved is not None and abs(float(saved) - scorer.lipschitz) > tol * max(1.0, float(saved)):
        raise ModelFileError(
            f"{w_file} gives Lipschitz bound {scorer.lipschitz:.9g} but {cfg_file} recorded "
            f"{float(saved):.9g}: the weights are not the ones this model was saved with"
        )
    return params, fitted, scorer


def _scorer_v1(params: dict, n_features: int, state: dict, fitted: dict) -> Scorer:
    """The scorer of a version-1 directory: Cayley parameters ``dense.{l}.param`` (``n x n``),
    ``dense.{l}.bias``, ``head.param`` (``1 x width``), ``head.bias`` of a network whose
    GroupSort2 paired neighbouring units ``(2k, 2k+1)`` with the sorted pair in place.

    The weights are solved once on the CPU in float32 with :func:`cayley_full` (the
    same matrices version 1 scored with, up to float32 rounding of the solve), cast to float64,
    and the hidden units of GroupSort2 networks permuted to the current "halves" layout
    (unit ``j`` <- old unit ``perm[j]``, ``perm = (0, 2, 4, ..., 1, 3, 5, ...)``, rows of one
    layer and columns of the next alike): the same function.
    """
    import torch

    from .core.domain import make_domain

    d, width, depth = n_features, int(params["width"]), int(params["depth"])
    activation, domain = params["activation"], params["domain"]
    sizes = [d] + [width] * depth
    ws, bs = [], []
    with torch.no_grad():
        for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            ws.append(cayley_full(state[f"dense.{li}.param"].float(), b, a))
            bs.append(state[f"dense.{li}.bias"].float())
        head = state["head.param"].float()
        ws.append(head / head.norm())
        bs.append(state["head.bias"].float())
    ws = [w.double() for w in ws]
    bs = [b.double() for b in bs]
    if activation == "groupsort2":
        perm = torch.cat((torch.arange(0, width, 2), torch.arange(1, width, 2)))
        for li in range(depth):
            ws[li], bs[li] = ws[li][perm], bs[li][perm]
            ws[li + 1] = ws[li + 1][:, perm]
    net = plain_network(ws, bs, activation, dtype=torch.float64)
    return Scorer(net, np.asarray(fitted["mean"], dtype=np.float64),
                  np.asarray(fitted["scale"], dtype=np.float64),
                  make_domain(domain, params["domain_size"]), clip_to_domain=domain != "unit")
