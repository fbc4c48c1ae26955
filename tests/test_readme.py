"""The README's Python examples run as written, in order, in one namespace (a new user copies
them): every name they use is defined in them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_the_examples_this_test_runs():
    blocks = _python_blocks()
    assert len(blocks) == 6
    assert "OCSDF(" in blocks[0] and "InferenceSession" in blocks[-1]


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path, monkeypatch):
    """About 40 s on one core: the examples fit default-size models (1000 steps)."""
    pytest.importorskip("pyod", reason="PyOD not installed (pip install pyod)")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    blocks = _python_blocks()
    for block in blocks[:-1]:
        exec(compile(block, str(README), "exec"), ns)  # noqa: S102 - our own README
    ns["model"].to_onnx("model.onnx")  # the README's `ocsdf export ... -o model.onnx` step
    exec(compile(blocks[-1], str(README), "exec"), ns)  # noqa: S102
    assert ns["label"].shape == (5,) and np.all(ns["radius"] >= 0)
    assert (tmp_path / "moons-model" / "model.safetensors").is_file()
    assert len(ns["models"]) == 2 and ns["ex"].x_star.shape == (10, 2)
    assert ns["image_model"].image_shape_ == (1, 8, 8)
