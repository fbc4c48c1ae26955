"""The ``ocsdf`` command line: :func:`main` and :func:`build_parser`.

Each command lives in its own module ``ocsdf.cli.NAME`` (listed in :data:`COMMANDS`), which
defines ``register(subparsers)`` and the function the command runs; the option types and the
readers they share are in :mod:`ocsdf.cli.options`. The modules are imported when the parser
is built, so importing this package stays light.

Every user error (bad data, bad model directory, bad option) is printed as one line
``ocsdf: error: ...`` on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from ..errors import InputError, ModelFileError

__all__ = ["BENCH_MODULES", "COMMANDS", "build_parser", "import_optional", "main"]

# Studies of ``ocsdf bench``: modules ``ocsdf.bench.NAME``, each with ``register(subparsers)``;
# a name whose module is absent is skipped.
BENCH_MODULES = ["speed", "defaults", "tabular", "robustness", "thresholds", "toy", "explain",
                 "shapes", "images", "frontier"]
# Top-level commands, in the order of ``ocsdf --help``: modules ``ocsdf.cli.NAME``.
COMMANDS = ["fit", "score", "demo", "certify", "data", "export", "reconstruct", "explain",
            "report", "sample", "hist", "bench"]
_USER_ERRORS = (InputError, ModelFileError, FileNotFoundError, ValueError, OSError)
# Optional dependencies -> the pyproject extra that installs them (for a one-line error).
_EXTRAS = {"trimesh": "mesh", "skimage": "mesh", "rtree": "mesh", "scipy": "mesh",
           "onnx": "deploy", "onnxruntime": "deploy", "pyod": "pyod", "shap": "bench",
           "deel": "bench", "pyarrow": "parquet"}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``ocsdf`` argument parser (every command of :data:`COMMANDS`).

    With ``argv`` (the arguments about to be parsed) that do not name ``bench``, the bench
    studies are not registered: their modules import torch and pandas, which would cost every
    command (``ocsdf --version`` included) about 3 s of start-up; ``ocsdf bench ...`` and
    ``build_parser()`` register them all.
    """
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="ocsdf",
        description="One-class anomaly detection with a learned signed distance function "
        "(1-Lipschitz network, OCSDF).",
    )
    parser.add_argument("--version", action="version", version=f"ocsdf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    with_studies = argv is None or "bench" in argv
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        if name == "bench":
            module.register(sub, studies=with_studies)
        else:
            module.register(sub)
    return parser


def import_optional(name: str) -> ModuleType | None:
    """``ocsdf.NAME`` (e.g. ``"bench.toy"``), or None when that module does not exist (yet).

    Any other import failure (a missing dependency inside the module) propagates.
    """
    full = f"ocsdf.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as err:
        if err.name == full:
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    """Run the ``ocsdf`` command line; returns the exit status.

    0 on success; 2 on a usage error or a user error (printed as one line
    ``ocsdf: error: ...`` on stderr); 130 when interrupted.
    """
    from .options import first_line

    try:
        args_list = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(args_list)
        args = parser.parse_args(args_list)
        return int(args.func(args) or 0)
    except SystemExit as exc:
        return _exit_status(exc.code)
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        print("ocsdf: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top not in _EXTRAS:
            raise
        print(f"ocsdf: error: this command needs the package {top!r}: "
              f"pip install 'ocsdf[{_EXTRAS[top]}]'", file=sys.stderr)
        return 2
    except _USER_ERRORS as err:
        print(f"ocsdf: error: {first_line(err)}", file=sys.stderr)
        return 2


def _exit_status(code: object) -> int:
    """``SystemExit.code`` as an exit status (None → 0, a message → 1 after printing it)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """After a closed pipe (``ocsdf score ... | head``): point stdout at /dev/null so Python's
    final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
