"""``ocsdf reconstruct INPUT -o OUT``: implicit surface of a shape from points inside it.

INPUT is a mesh (.off/.obj/.ply/.stl: points are sampled inside it) or a point cloud
(.ply without faces, .xyz, .npy). OCSDF is fitted on the points, evaluated on a grid, and the
level set at the first percentile of ``f`` over the training points is extracted with marching
cubes (Lewiner) and written as PLY, OBJ or STL, with a three-view PNG preview.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import InputError
from .options import add_device, positive_int

__all__ = ["register", "cmd_reconstruct"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ocsdf reconstruct``."""
    from ..surface import DEFAULT_STEPS

    p = subparsers.add_parser(
        "reconstruct", help="reconstruct a surface from points inside a shape",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("input", help="mesh (.off .obj .ply .stl) or point cloud (.ply .xyz .npy)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="mesh to write: .ply, .obj or .stl")
    p.add_argument("--points", type=positive_int, default=2048,
                   help="points sampled inside a mesh input (2048; ignored for point clouds)")
    p.add_argument("--grid", type=positive_int, default=200,
                   help="grid nodes along the longest side (200)")
    p.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS,
                   help=f"training steps ({DEFAULT_STEPS})")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--preview", metavar="PNG",
                   help="preview image (default: OUT with .png)")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reconstruct)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Run ``ocsdf reconstruct``; prints a one-line summary and returns 0."""
    from .. import surface

    out = Path(args.output)
    if out.suffix.lower() not in surface.OUTPUT_EXTENSIONS:
        raise InputError(
            f"{out}: unknown output extension {out.suffix or '(none)'!r}; expected one of "
            f"{', '.join(surface.OUTPUT_EXTENSIONS)}"
        )
    preview = Path(args.preview) if args.preview else out.with_suffix(".png")
    if preview.suffix.lower() != ".png":
        raise InputError(f"{preview}: the preview must be a .png file")
    if args.grid < 8:
        raise InputError(f"--grid must be at least 8, got {args.grid}")
    start = time.perf_counter()
    points, mesh = surface.load_points(args.input, args.points, args.seed)
    fit = surface.fit_surface(points, n_steps=args.steps, seed=args.seed, device=args.device,
                              verbose=not args.quiet)
    result = surface.extract_surface(fit, args.grid, device=args.device)
    try:
        surface.write_mesh(result.mesh, out)
        surface.render_preview([("OCSDF", result.mesh)], preview,
                               title=f"{Path(args.input).name}: {len(points)} points")
    except OSError as err:
        raise InputError(f"cannot write {out}: {err.strerror or err}") from None
    total = time.perf_counter() - start
    source = "sampled inside the mesh" if mesh is not None else "point cloud"
    print(f"{Path(args.input).name}: {len(points)} points ({source}); fit {fit.fit_seconds:.1f} s"
          f" + extract {result.seconds:.1f} s ({args.grid} grid), total {total:.1f} s; "
          f"{len(result.mesh.vertices)} vertices / {len(result.mesh.faces)} faces, watertight: "
          f"{'yes' if result.mesh.is_watertight else 'no'}"
          f"{' (capped at the grid box)' if result.clipped else ''}; wrote {out} and {preview}")
    return 0
