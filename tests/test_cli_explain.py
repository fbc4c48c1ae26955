"""``ocsdf explain``: the per-row explanation CSV, run in process through ``main([...])``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ocsdf import OCSDF
from ocsdf.certify import lipschitz_in
from ocsdf.cli import main

SMALL = {"width": 32, "depth": 2, "n_steps": 200, "random_state": 0}
NAMES = ["a", "b", "c"]
SCALES = np.array([1.0, 10.0, 0.1])


def _rows(rng: np.random.Generator, n: int, spread: float = 1.0) -> np.ndarray:
    return rng.normal(size=(n, 3)) * SCALES * spread + [0.0, 50.0, 1.0]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ocsdf: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A small model fitted on a DataFrame (names a, b, c), a test CSV with 40 normal and 10
    spread-out rows, and a header-less copy of the same rows."""
    root = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    model = OCSDF(**SMALL).fit(pd.DataFrame(_rows(rng, 300), columns=NAMES))
    model.save(root / "m")
    test = np.r_[_rows(rng, 40), _rows(rng, 10, spread=4.0)]
    frame = pd.DataFrame(test, columns=NAMES)
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])  # non-numeric, not a feature
    frame.to_csv(root / "test.csv", index=False)
    pd.DataFrame(test).to_csv(root / "plain.csv", index=False, header=False)
    return {"root": root, "model": root / "m", "test": root / "test.csv",
            "plain": root / "plain.csv"}


def test_explain_columns_rows_and_radius(setup, tmp_path, capsys):
    out = tmp_path / "ex.csv"
    code = main(["explain", str(setup["model"]), str(setup["test"]), "--top", "2",
                 "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("explained 50 rows of ") and str(out) in printed
    got = pd.read_csv(out, keep_default_na=False, na_values=[""])
    expected = ["score", "certified_radius", "flagged", "distance", "gap", "reached"]
    for j in (1, 2):
        expected += [f"feature_{j}", f"value_{j}", f"normal_value_{j}", f"change_{j}"]
    assert list(got.columns) == expected
    assert len(got) == 50

    model = OCSDF.load(setup["model"])
    X = pd.read_csv(setup["test"])[NAMES]
    score = model.score_samples(X)
    np.testing.assert_allclose(got["score"], score, rtol=0, atol=1e-12)
    radius = got["certified_radius"].to_numpy()
    assert (radius >= 0).all()
    np.testing.assert_allclose(radius, model.certified_radius(X), rtol=1e-12, atol=1e-15)
    single = np.abs(score - model.offset_) / lipschitz_in(model, "raw")
    assert np.all(radius >= single * (1 - 1e-12))
    flagged = got["flagged"].astype(str) == "True"
    np.testing.assert_array_equal(flagged, score < model.offset_)
    assert 5 <= flagged.sum() <= 30  # the spread-out rows are flagged, most normal ones are not
    printed_count = int(printed.split(": ")[1].split(" flagged")[0])
    assert printed_count == flagged.sum()
    # flagged rows name a feature and move it: normal_value - value == change, change != 0
    first = got[flagged]
    assert set(first["feature_1"]) <= set(NAMES)
    np.testing.assert_allclose(first["normal_value_1"] - first["value_1"], first["change_1"],
                               rtol=1e-9, atol=1e-9)
    assert (first["change_1"].abs() > 0).all()
    # rows not flagged need no change
    assert got.loc[~flagged, "feature_1"].isna().all()
    assert (got.loc[~flagged, "distance"] == 0).all()


def test_explain_to_stdout_with_max_features(setup, capsys):
    code = main(["explain", str(setup["model"]), str(setup["test"]), "--max-features", "1",
                 "--top", "3"])
    assert code == 0
    captured = capsys.readouterr()
    assert "explained 50 rows" in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 51 and lines[0].startswith("score,certified_radius,flagged,")
    from io import StringIO

    got = pd.read_csv(StringIO(captured.out))
    flagged = got["flagged"].astype(str) == "True"
    assert flagged.any()
    # one feature may move: the second and third ranked features are empty everywhere
    assert got["feature_2"].isna().all() and got["feature_3"].isna().all()
    # a flagged row names its one feature, unless no single-feature move raised its score
    # (then it stays put and says it did not reach the threshold)
    moved = flagged & (got["distance"] > 0)
    assert moved.sum() >= flagged.sum() - 2
    assert got.loc[moved, "feature_1"].notna().all()
    assert (got.loc[flagged & ~moved, "reached"].astype(str) == "False").all()


def test_explain_header_only_file_gives_header_only(setup, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("id,a,b,c\n")
    out = tmp_path / "ex0.csv"
    assert main(["explain", str(setup["model"]), str(empty), "-o", str(out)]) == 0
    assert "explained 0 rows" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    header = lines[0].split(",")
    assert header[:3] == ["score", "certified_radius", "flagged"]
    assert header[-1] == "change_3"  # top 5 features asked, the model has 3


def test_explain_wrong_width_same_error_as_score(setup, tmp_path, capsys):
    narrow = tmp_path / "narrow.csv"
    pd.DataFrame(np.ones((4, 2))).to_csv(narrow, index=False, header=False)
    assert main(["explain", str(setup["model"]), str(narrow), "-o", str(tmp_path / "x.csv")]) == 2
    line = _one_error_line(capsys)
    assert "has 2 feature columns but the model in" in line and "expects 3" in line
    assert not (tmp_path / "x.csv").exists()
    assert main(["score", str(setup["model"]), str(narrow)]) == 2
    assert _one_error_line(capsys) == line


def test_explain_nan_and_non_numeric_errors(setup, tmp_path, capsys):
    bad = tmp_path / "nan.csv"
    bad.write_text("a,b,c\n0,50,1\n0,,1\n")
    assert main(["explain", str(setup["model"]), str(bad)]) == 2
    line = _one_error_line(capsys)
    assert "missing or infinite values (NaN/inf)" in line and "['b']" in line
    assert "data row 2" in line
    assert main(["score", str(setup["model"]), str(bad)]) == 2
    streamed = _one_error_line(capsys)  # score reads in chunks: it names the chunk's rows too
    for part in ("missing or infinite values (NaN/inf)", "['b']", "first in data row 2"):
        assert part in streamed

    text = tmp_path / "text.csv"
    text.write_text("a,b,c\n0,50,x\n1,51,y\n")
    assert main(["explain", str(setup["model"]), str(text)]) == 2
    line = _one_error_line(capsys)
    assert "non-numeric columns" in line and "'c'" in line


def test_explain_headerless_file_by_position(setup, tmp_path, capsys):
    out = tmp_path / "ex.csv"
    assert main(["explain", str(setup["model"]), str(setup["plain"]), "-o", str(out)]) == 0
    by_name = tmp_path / "named.csv"
    assert main(["explain", str(setup["model"]), str(setup["test"]), "-o", str(by_name)]) == 0
    capsys.readouterr()
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(by_name))


def test_explain_unavailable_device_is_one_line(setup, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; this checks the message where it is not")
    assert main(["explain", str(setup["model"]), str(setup["test"]), "--device", "cuda"]) == 2
    assert "CUDA is not available" in _one_error_line(capsys)
    assert main(["report", str(setup["model"]), str(setup["test"]), "-o", "x.html",
                 "--device", "cuda"]) == 2
    assert "CUDA is not available" in _one_error_line(capsys)


@pytest.mark.parametrize("command", ["explain", "score"])
def test_astronomical_values_are_a_one_line_error(setup, tmp_path, capsys, command):
    """A value like 1e300 used to score -inf with an 'infinite' certified radius (and -1e308
    NaN); it is refused, naming the row and the feature, and no output is written."""
    frame = pd.read_csv(setup["test"])
    frame.loc[3, "b"] = 1e300
    data = tmp_path / "huge.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "out.csv"
    assert main([command, str(setup["model"]), str(data), "-o", str(out)]) == 2
    line = _one_error_line(capsys)
    # score streams the file and names the row by its place in the file (data row 4)
    where = "data row 4, feature 'b'" if command == "score" else "row 3 (0-based), feature 'b'"
    assert f"{where}: 1e+300" in line and "drop it or clip it" in line
    assert not out.exists()
