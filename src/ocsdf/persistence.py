"""Save and load a fitted :class:`~ocsdf.OCSDF`: safetensors weights + JSON, never pickle.

Layout of a model directory (format version 1)::

    config.json        {"format": "ocsdf", "format_version": 1, "params": {...}, "fitted": {...}}
    model.safetensors  the trained network's parameters (state_dict of LipschitzMLP)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ModelFileError
from .nn import make_mlp

if TYPE_CHECKING:
    from .estimator import OCSDF

__all__ = ["save_model", "load_model", "FORMAT_VERSION"]

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_model(model: OCSDF, path: str | Path) -> Path:
    """Write ``model`` to the directory ``path`` atomically (temp dir, then rename)."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, "net_")
    path = Path(path)
    fitted = {
        "mean": model.mean_.tolist(),
        "scale": model.scale_.tolist(),
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
    }
    params = model.get_params()
    if not isinstance(params["random_state"], int | type(None)):
        params["random_state"] = None  # a RandomState object is not part of the saved model
    config = {"format": "ocsdf", "format_version": FORMAT_VERSION, "params": params,
              "fitted": fitted}
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.model_.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "ocsdf"})
        if path.exists():
            if not (path / CONFIG).is_file():
                raise ModelFileError(f"{path} exists and is not an ocsdf model directory")
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_model(path: str | Path, device: str = "cpu") -> OCSDF:
    """Read a model directory written by :func:`save_model`; the network is put on ``device``.

    The estimator's ``device`` parameter becomes ``device`` too (so a refit trains there).
    """
    from .estimator import OCSDF, _torch_device

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
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{cfg_file} has format version {config.get('format_version')!r}; "
            f"this ocsdf reads version {FORMAT_VERSION}"
        )
    try:
        params, fitted = config["params"], config["fitted"]
        model = OCSDF(**{**params, "device": device})
        model.mean_ = np.asarray(fitted["mean"], dtype=np.float64)
        model.scale_ = np.asarray(fitted["scale"], dtype=np.float64)
        model.offset_ = float(fitted["offset"])
        model.margin_ = float(fitted["margin"])
        model.n_features_in_ = int(fitted["n_features_in"])
        if fitted.get("fit_time_s") is not None:
            model.fit_time_ = float(fitted["fit_time_s"])
        if fitted.get("calibration_scores") is not None:
            model.calibration_scores_ = np.asarray(fitted["calibration_scores"], dtype=np.float64)
        if fitted.get("feature_names_in") is not None:
            model.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{cfg_file} is missing or has a bad entry: {err}") from None
    try:
        state = load_file(str(w_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{w_file} is not a readable safetensors file: {err}") from None
    net = make_mlp(model.n_features_in_, int(model.width), int(model.depth), model.activation)
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise ModelFileError(f"{w_file} does not match the network described in {cfg_file}") \
            from None
    model._set_model(net.to(_torch_device(device)))
    # The bound is recomputed from the loaded weights (never trusted from the file); the saved
    # value only detects weights that are not the ones the model was saved with.
    saved = fitted.get("lipschitz")
    if saved is not None and abs(float(saved) - model.lipschitz_) > 1e-9 * max(1.0, float(saved)):
        raise ModelFileError(
            f"{w_file} gives Lipschitz bound {model.lipschitz_:.9g} but {cfg_file} recorded "
            f"{float(saved):.9g}: the weights are not the ones this model was saved with"
        )
    return model
