"""``ocsdf export``: write a saved model as an ONNX graph (:func:`ocsdf.deploy.to_onnx`)."""

from __future__ import annotations

import argparse
import os
import sys

from .options import positive_int

__all__ = ["register", "cmd_export", "export_command"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command to the ``ocsdf`` parser."""
    p = subparsers.add_parser(
        "export", help="write a saved model as an ONNX graph",
        description="Write a saved model as an ONNX graph that scores rows in raw units "
        "(outputs score and rounding; metadata: threshold, lipschitz_raw).",
    )
    p.add_argument("model", metavar="DIR", help="model directory written by 'ocsdf fit'")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="ONNX file to write")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="element type of the graph's input, weights and output (float32; the "
                   "'rounding' output bounds the difference to the float64 score)")
    p.add_argument("--opset", type=positive_int, default=17,
                   help="ONNX opset version, 13 or newer (17)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``ocsdf export``: load a model directory, write its ONNX graph. Returns 0."""
    try:
        print(export_command(args.model, args.output, opset=args.opset, dtype=args.dtype))
    except ImportError as err:
        print(f"ocsdf: error: {err}", file=sys.stderr)
        return 2
    return 0


def export_command(model_dir: str | os.PathLike, output: str | os.PathLike, opset: int = 17,
                   dtype: str = "float32") -> str:
    """``ocsdf export DIR -o FILE``: load a saved model, write its ONNX graph, return a summary.

    Errors propagate (ModelFileError for a bad directory, ImportError without onnx).
    """
    from ..deploy import onnx_metadata, to_onnx
    from ..estimator import OCSDF

    model = OCSDF.load(model_dir)
    path = to_onnx(model, output, opset=opset, dtype=dtype)
    meta = onnx_metadata(path)
    return (f"wrote {path}: {meta['n_features']} features in raw units -> score ({dtype}, "
            f"opset {opset}); threshold {float(meta['threshold']):.6g}, "
            f"l2 Lipschitz bound {float(meta['lipschitz_raw']):.6g} (raw units)")
