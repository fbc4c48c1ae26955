"""3-D implicit surfaces: ``ocsdf.surface``, ``ocsdf reconstruct`` and ``ocsdf bench shapes``."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import trimesh

from ocsdf import surface
from ocsdf.cli import main
from ocsdf.data import find_data_dir
from ocsdf.errors import InputError


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    """A unit sphere (radius 1, centred at (1, 2, 3) so the frame's centring matters)."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    mesh.apply_translation([1.0, 2.0, 3.0])
    return mesh


@pytest.fixture(scope="module")
def sphere_fit(sphere):
    """OCSDF fitted on 2,048 points inside the sphere (1,000 steps) and its 96-grid surface."""
    torch.set_num_threads(1)
    pts = surface.sample_inside(sphere, 2048, seed=0)
    fit = surface.fit_surface(pts, n_steps=1000, seed=0)
    return pts, fit, surface.extract_surface(fit, 96)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ocsdf: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------- library
def test_sample_inside_sphere(sphere):
    pts = surface.sample_inside(sphere, 500, seed=1)
    assert pts.shape == (500, 3)
    r = np.linalg.norm(pts - [1.0, 2.0, 3.0], axis=1)
    assert r.max() < 1.0
    # uniform in the ball: P(r < 0.5) = 1/8
    assert abs(np.mean(r < 0.5) - 0.125) < 0.05


def test_winding_number_tolerates_a_hole(sphere):
    holed = sphere.copy()
    holed.update_faces(np.arange(len(holed.faces)) >= 8)  # drop 8 faces: not watertight
    assert not holed.is_watertight
    q = np.array([[1.0, 2.0, 3.0], [1.3, 2.2, 2.9], [3.0, 2.0, 3.0], [1.0, 2.0, 4.5]])
    w = surface.winding_number(holed, q)
    assert w[0] > 0.9 and w[1] > 0.9
    assert w[2] < 0.1 and w[3] < 0.1
    pts = surface.sample_inside(holed, 200, seed=0)
    assert np.linalg.norm(pts - [1.0, 2.0, 3.0], axis=1).max() < 1.0


def _winding_number_numpy(mesh, query: np.ndarray) -> np.ndarray:
    """The former plain-numpy winding number (van Oosterom & Strackee), as the reference."""
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)]
    rel = tri[None, :, :, :] - np.asarray(query, dtype=np.float64)[:, None, None, :]
    a, b, c = rel[:, :, 0], rel[:, :, 1], rel[:, :, 2]
    la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))
    det = np.einsum("qfi,qfi->qf", a, np.cross(b, c))
    den = (la * lb * lc + np.einsum("qfi,qfi->qf", a, b) * lc
           + np.einsum("qfi,qfi->qf", a, c) * lb + np.einsum("qfi,qfi->qf", b, c) * la)
    return np.abs(np.arctan2(det, den).sum(axis=1) / (2.0 * np.pi))


def test_winding_number_matches_the_numpy_formula(sphere):
    holed = sphere.copy()
    holed.update_faces(np.arange(len(holed.faces)) >= 8)
    q = np.random.default_rng(0).uniform(-0.5, 4.5, size=(300, 3))
    ref = _winding_number_numpy(holed, q)
    # small chunks: several (points x faces) blocks, the last one partial
    for chunk in (1_000, 100_000):
        np.testing.assert_allclose(surface.winding_number(holed, q, chunk_pairs=chunk), ref,
                                   rtol=0, atol=1e-9)
    assert surface.winding_number(holed, np.empty((0, 3))).shape == (0,)


def test_sample_inside_refuses_a_double_sided_sheet():
    # two double-sided unit squares at z = 0 and z = 1: winding number 0 everywhere
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float)
    v = np.vstack([v, v + [0, 0, 1]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    faces = np.vstack([f, f[:, ::-1], f + 4, f[:, ::-1] + 4])
    sheet = trimesh.Trimesh(v, faces, process=False)
    with pytest.raises(InputError, match="encloses almost no volume"):
        surface.sample_inside(sheet, 100, seed=0)


def test_frame_is_isotropic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3)) * [10.0, 1.0, 0.1] + [5.0, 0.0, -2.0]
    frame = surface.Frame.fit(x)
    assert np.isscalar(frame.scale) and frame.scale > 0
    d_raw = np.linalg.norm(x[0] - x[1])
    z = frame.to_std(x)
    assert np.linalg.norm(z[0] - z[1]) * frame.scale == pytest.approx(d_raw)
    np.testing.assert_allclose(frame.to_raw(z), x)


def test_sphere_reconstruction(sphere, sphere_fit):
    pts, fit, res = sphere_fit
    mesh = res.mesh
    assert mesh.is_watertight
    assert fit.lipschitz <= 1.001
    chamfer, nc = surface.chamfer_normal_consistency(mesh, sphere, 20_000)
    # Measured (1000 steps, grid 96, seeds 0 / 1): chamfer 0.043 / 0.040 (radius 1), normal
    # consistency 0.989 / 0.987, volume 4.44 / 4.40 (true 4.19).
    assert chamfer < 0.06
    assert nc > 0.97
    assert mesh.volume == pytest.approx(4.0 / 3.0 * np.pi, rel=0.12)
    # The level is the first percentile of f over the training points: ~99 % of them inside.
    f = fit.score_raw(pts)
    assert np.mean(f >= 0) == pytest.approx(0.99, abs=0.005)


def test_sdf_error_near_sphere(sphere, sphere_fit):
    _, fit, _ = sphere_fit
    x = surface.near_surface_points(sphere, 2000, sigma=0.02, seed=0)
    sdf = surface.true_sdf(sphere, x)
    r = np.linalg.norm(x - [1.0, 2.0, 3.0], axis=1)
    assert np.allclose(sdf, 1.0 - r, atol=0.01)  # icosphere facets: ~0.005 from the sphere
    err = surface.sdf_error(fit, x, sdf)
    assert err.mean() < 0.045  # measured 0.027 (seeds 0 and 1)


def test_pruned_grid_gives_the_full_grid_mesh(sphere_fit):
    _, fit, pruned = sphere_fit
    full = surface.extract_surface(fit, 96, prune=False)
    assert pruned.n_evaluated < 0.6 * full.n_evaluated  # measured 0.41-0.43 at grid 96
    assert pruned.mesh.vertices.shape == full.mesh.vertices.shape
    np.testing.assert_allclose(np.sort(pruned.mesh.vertices, axis=0),
                               np.sort(full.mesh.vertices, axis=0), atol=1e-9)


def test_chamfer_of_known_meshes(sphere):
    chamfer, nc = surface.chamfer_normal_consistency(sphere, sphere, 20_000)
    assert chamfer < 0.02 and nc > 0.99
    big = trimesh.creation.icosphere(subdivisions=3, radius=1.1)
    big.apply_translation([1.0, 2.0, 3.0])
    chamfer, nc = surface.chamfer_normal_consistency(big, sphere, 20_000)
    assert chamfer == pytest.approx(0.1, abs=0.02)
    assert nc > 0.99


def test_deepsdf_baseline_runs(sphere):
    pts = surface.sample_inside(sphere, 2048, seed=0)
    fit = surface.fit_deepsdf(pts, n_steps=300, seed=0)
    assert fit.lipschitz is None and fit.level == 0.0
    res = surface.extract_surface(fit, 48)
    assert res.n_evaluated == res.n_nodes  # no Lipschitz bound: no pruning
    chamfer, _ = surface.chamfer_normal_consistency(res.mesh, sphere, 20_000)
    assert chamfer < 0.3


@pytest.mark.parametrize(
    "points, message",
    [
        (np.empty((0, 3)), "no points"),
        (np.array([[0.0, 0.0, np.nan]] + [[1.0, 2.0, 3.0]] * 20), "NaN"),
        (np.ones((20, 2)), "3 coordinates"),
        (np.ones(20), "(n, 3) array"),
        (np.ones((5, 3)) * np.arange(5)[:, None], "at least 10"),
    ],
)
def test_validate_points_errors(points, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        surface.validate_points(points)


# ---------------------------------------------------------------------------- CLI
def test_cli_writes_a_readable_mesh(sphere, tmp_path, capsys):
    src = tmp_path / "sphere.stl"
    sphere.export(src)
    out = tmp_path / "out.ply"
    code = main(["reconstruct", str(src), "-o", str(out), "--steps", "300", "--grid", "40",
                 "--points", "1024", "--quiet"])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "1024 points (sampled inside the mesh)" in text and "watertight" in text
    mesh = trimesh.load(out, force="mesh")
    assert len(mesh.faces) > 500
    assert np.abs(mesh.bounds - sphere.bounds).max() < 0.5
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_point_cloud_to_obj(sphere, tmp_path, capsys):
    pts = surface.sample_inside(sphere, 600, seed=3)
    src = tmp_path / "cloud.xyz"
    np.savetxt(src, pts)
    out = tmp_path / "out.obj"
    code = main(["reconstruct", str(src), "-o", str(out), "--steps", "200", "--grid", "32",
                 "--preview", str(tmp_path / "p.png"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "600 points (point cloud)" in capsys.readouterr().out
    assert len(trimesh.load(out, force="mesh").faces) > 100
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such file"),
        ("extension", "unknown extension"),
        ("empty", "no points"),
        ("nan", "NaN"),
        ("two_d", "3 coordinates"),
        ("out_ext", "unknown output extension"),
    ],
)
def test_cli_bad_inputs(kind, message, tmp_path, capsys):
    out = tmp_path / "out.ply"
    src = tmp_path / "in.npy"
    good = np.random.default_rng(0).normal(size=(50, 3))
    if kind == "missing":
        src = tmp_path / "absent.ply"
    elif kind == "extension":
        src = tmp_path / "in.csv"
        src.write_text("1,2,3\n")
    elif kind == "empty":
        src = tmp_path / "in.xyz"
        src.write_text("# nothing here\n")
    elif kind == "nan":
        bad = good.copy()
        bad[7, 1] = np.nan
        np.save(src, bad)
    elif kind == "two_d":
        np.save(src, good[:, :2])
    elif kind == "out_ext":
        np.save(src, good)
        out = tmp_path / "out.vtk"
    code = main(["reconstruct", str(src), "-o", str(out), "--steps", "5", "--quiet"])
    assert code == 2
    line = _one_error_line(capsys)
    assert message in line
    assert not out.exists()


# ---------------------------------------------------------------------------- bench
def test_register_adds_shapes_subcommand():
    from ocsdf.bench import shapes

    parser = argparse.ArgumentParser()
    shapes.register(parser.add_subparsers())
    args = parser.parse_args(["shapes", "--meshes", "box,torus", "--steps", "7"])
    assert args.meshes == "box,torus" and args.steps == 7 and args.grid == 200


def test_shapes_study_small(tmp_path):
    data = find_data_dir()
    if data is None or not (data / "meshes" / "unit_sphere.STL").is_file():
        pytest.skip("../shared/data/meshes/unit_sphere.STL not available")
    from ocsdf.bench import shapes

    rows, figures = shapes.shapes_study(
        [data / "meshes" / "unit_sphere.STL"], n_points=512, n_steps=200, grid=40,
        n_metric_samples=20_000, n_sdf_points=2000, fig_dir=tmp_path / "shapes")
    assert [r["method"] for r in rows] == ["ocsdf", "deepsdf-baseline"]
    ours, base = rows
    assert ours["watertight"] and base["watertight"]  # capped at the grid box if needed
    # Measured at this tiny size (seeds 0 / 1): chamfer 0.039 / 0.027 (ours), 0.038 / 0.041
    # (baseline), in bounding-box diagonal units (sqrt(12) here); normal consistency >= 0.946.
    assert ours["chamfer"] < 0.06 and base["chamfer"] < 0.06
    assert ours["normal_consistency"] > 0.9
    assert base["evaluated"] == 1.0  # no Lipschitz bound: no pruning
    assert ours["fit_s"] > 0 and ours["extract_s"] > 0
    assert figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shapes_run_merges_into_the_existing_table(tmp_path, monkeypatch):
    import json

    import pandas as pd

    from ocsdf.bench import shapes
    from ocsdf.bench.report import write_table

    out = tmp_path / "results"
    (out / "shapes").mkdir(parents=True)
    (out / "shapes" / "a.png").write_bytes(b"png")
    old = [{"mesh": m, "method": k, "chamfer": c}
           for m, c in (("a.STL", 0.1), ("b.STL", 0.2)) for k in ("ocsdf", "deepsdf-baseline")]
    write_table(old, "shapes", out, notes="Whole run: 640 s wall.", command="ocsdf bench old")
    (tmp_path / "meshes").mkdir()
    for name in ("b.STL", "c.obj", "d.obj"):
        (tmp_path / "meshes" / name).write_text("")

    def fake_study(meshes, **kw):
        rows = [{"mesh": p.name, "method": "ocsdf", "chamfer": 0.5} if p.name != "d.obj"
                else {"mesh": p.name, "method": "-", "error": "no volume"} for p in meshes]
        kw["on_mesh"](rows, [])
        return rows, []

    monkeypatch.setattr(shapes, "shapes_study", fake_study)
    parser = argparse.ArgumentParser()
    shapes.register(parser.add_subparsers())
    args = parser.parse_args(["shapes", "--meshes", "c,b", "--steps", "7", "--data-dir",
                              str(tmp_path), "--out-dir", str(out)])
    assert shapes.run(args) == 0
    df = pd.read_csv(out / "shapes.csv")
    assert list(zip(df["mesh"], df["method"], df["chamfer"], strict=True)) == [
        ("a.STL", "ocsdf", 0.1), ("a.STL", "deepsdf-baseline", 0.1),
        ("b.STL", "ocsdf", 0.5), ("c.obj", "ocsdf", 0.5)]
    md = (out / "shapes.md").read_text()
    assert "Command: `ocsdf bench shapes --meshes c,b --steps 7" in md
    assert "rows of a.STL are kept from the previous table" in md
    assert "- a.STL: `ocsdf bench old`" in md and "640 s wall" in md
    assert "shapes/a.png" in md
    meta = json.loads((out / "shapes.json").read_text())
    assert [p["meshes"] for p in meta["parts"]] == [["a.STL"], ["c.obj", "b.STL"]]
    assert len(meta["rows"]) == 4
    # a second merge keeps the parts; a mesh that failed goes to the notes, not the rows
    args = parser.parse_args(["shapes", "--meshes", "b,d", "--data-dir", str(tmp_path),
                              "--out-dir", str(out)])
    assert shapes.run(args) == 0
    meta = json.loads((out / "shapes.json").read_text())
    assert [p["meshes"] for p in meta["parts"]] == [["a.STL"], ["c.obj"], ["b.STL", "d.obj"]]
    assert meta["parts"][-1]["errors"] == {"d.obj": "no volume"}
    df = pd.read_csv(out / "shapes.csv")
    assert list(df["mesh"]) == ["a.STL", "a.STL", "b.STL", "c.obj"]
    assert "error" not in df.columns
    assert "d.obj is not in the table: no volume." in (out / "shapes.md").read_text()
    args = parser.parse_args(["shapes", "--meshes", "c", "--data-dir", str(tmp_path),
                              "--out-dir", str(out)])
    assert shapes.run(args) == 0  # the earlier failure stays in the notes
    assert "d.obj is not in the table: no volume." in (out / "shapes.md").read_text()
    assert len(json.loads((out / "shapes.json").read_text())["parts"]) == 3
