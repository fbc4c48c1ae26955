"""The ``ocsdf`` command line, run in process through ``main([...])``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ocsdf import OCSDF
from ocsdf.cli import import_optional, main

TINY = ["--steps", "30", "--width", "16", "--depth", "1", "--quiet"]


def _one_error_line(capsys) -> str:
    """The captured stderr, asserted to be a single ``ocsdf: error:`` line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ocsdf: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory) -> Path:
    """A CSV with a header, a non-numeric column and two numeric features (200 rows)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2)) * [1.0, 10.0] + [0.0, 50.0]
    df = pd.DataFrame({"id": [f"r{i}" for i in range(200)], "a": X[:, 0], "b": X[:, 1]})
    path = tmp_path_factory.mktemp("data") / "train.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def model_dir(train_csv) -> Path:
    """A tiny model fitted by ``ocsdf fit`` on columns a, b of ``train_csv``."""
    out = train_csv.parent / "model"
    assert main(["fit", str(train_csv), "--model", str(out), "--columns", "a,b", *TINY]) == 0
    return out


def test_fit_summary(train_csv, tmp_path, capsys):
    out = tmp_path / "m"
    code = main(["fit", str(train_csv), "--model", str(out), "--columns", "1,2",
                 "--margin", "0.1", "--contamination", "0.1", *TINY])
    assert code == 0
    text = capsys.readouterr().out
    assert "200 rows x 2 features" in text
    assert "L = " in text and "(l2, standardised units)" in text
    assert "margin m = 0.1" in text
    assert str(out) in text
    model = OCSDF.load(out)
    assert list(model.feature_names_in_) == ["a", "b"]
    assert model.margin_ == 0.1 and model.offset_ != 0.0


def test_fit_trim_option(train_csv, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["fit", str(train_csv), "--model", str(out), "--columns", "a,b", "--trim",
                 "0.1", *TINY]) == 0
    assert OCSDF.load(out).trim == 0.1
    capsys.readouterr()
    assert main(["fit", str(train_csv), "--model", str(out), "--trim", "0.5", *TINY]) == 2
    assert "--trim: expected a fraction in [0, 0.5), got '0.5'" in capsys.readouterr().err


def test_fit_negative_spread_option(train_csv, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["fit", str(train_csv), "--model", str(out), "--columns", "a,b",
                 "--negative-spread", "0.5", *TINY]) == 0
    assert OCSDF.load(out).negative_spread == 0.5
    capsys.readouterr()
    for bad in ("0", "1.5"):
        assert main(["fit", str(train_csv), "--model", str(out), "--negative-spread", bad,
                     *TINY]) == 2
        assert (f"--negative-spread: expected a number in (0, 1], got '{bad}'"
                in capsys.readouterr().err)


def test_fit_output_aliases_write_the_same_model(model_dir, train_csv, tmp_path):
    """``-o`` / ``--output`` name the model directory, as they name what every other command
    writes; the model is the one ``--model`` writes (same seed, same scores)."""
    X = pd.read_csv(train_csv)[["a", "b"]]
    want = OCSDF.load(model_dir).score_samples(X)
    for flag in ("-o", "--output"):
        out = tmp_path / flag.strip("-")
        assert main(["fit", str(train_csv), flag, str(out), "--columns", "a,b", *TINY]) == 0
        np.testing.assert_array_equal(OCSDF.load(out).score_samples(X), want)


def test_fit_then_score_round_trip(model_dir, train_csv, tmp_path, capsys):
    capsys.readouterr()
    scores = tmp_path / "scores.csv"
    # no --columns: the model's feature names pick a, b (the id column is skipped)
    assert main(["score", str(model_dir), str(train_csv), "-o", str(scores)]) == 0
    assert "flagged as outliers" in capsys.readouterr().out
    got = pd.read_csv(scores)
    assert list(got.columns) == ["score", "decision", "label"]
    assert len(got) == 200
    model = OCSDF.load(model_dir)
    X = pd.read_csv(train_csv)[["a", "b"]]
    np.testing.assert_allclose(got["score"], model.score_samples(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["decision"], model.decision_function(X), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got["label"], model.predict(X))


def test_score_to_stdout_and_by_position(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    f = tmp_path / "rows.csv"
    np.savetxt(f, rng.normal(size=(7, 2)) * [1.0, 10.0] + [0.0, 50.0], delimiter=",")
    capsys.readouterr()
    assert main(["score", str(model_dir), str(f)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "score,decision,label" and len(lines) == 8
    assert "scored 7 rows" in captured.err


def test_score_npz(model_dir, tmp_path, capsys):
    f = tmp_path / "rows.npz"
    np.savez(f, X=np.array([[0.0, 50.0], [30.0, -400.0]]))
    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(f), "-o", str(out)]) == 0
    got = pd.read_csv(out)
    assert got["label"].tolist()[1] == -1  # far away: an outlier
    assert got["score"][0] > got["score"][1]


def test_fit_npz_no_feature_names(tmp_path, capsys):
    f = tmp_path / "train.npz"
    np.savez(f, X=np.random.default_rng(0).normal(size=(50, 3)))
    assert main(["fit", str(f), "--model", str(tmp_path / "m"), *TINY]) == 0
    assert not hasattr(OCSDF.load(tmp_path / "m"), "feature_names_in_")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("a,b\n1,2\nnan,4\n3,5\n", "NaN/inf"),
        ("a,b\n1,2\ninf,4\n3,5\n", "NaN/inf"),
        ("a\n1\n2\n", "lacks columns"),
        ("", "empty"),
        ("a,b\n1,x\n2,y\n", "non-numeric columns"),
    ],
    ids=["nan", "inf", "missing-column", "empty", "non-numeric"],
)
def test_score_bad_inputs(model_dir, tmp_path, capsys, content, expected):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    capsys.readouterr()
    assert main(["score", str(model_dir), str(f)]) == 2
    line = _one_error_line(capsys)
    assert expected in line and "bad.csv" in line


def test_score_wrong_feature_count(model_dir, tmp_path, capsys):
    f = tmp_path / "three.csv"
    f.write_text("1,2,3\n4,5,6\n")
    g = tmp_path / "three.npz"
    np.savez(g, X=np.zeros((2, 3)))
    for path in (f, g):
        capsys.readouterr()
        assert main(["score", str(model_dir), str(path)]) == 2
        assert "has 3 feature columns but the model" in _one_error_line(capsys)
    # with a header, the model's columns are chosen by name: extra columns are fine
    h = tmp_path / "extra.csv"
    h.write_text("c,b,a\n9,50,0\n")
    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(h), "-o", str(out)]) == 0
    expected = OCSDF.load(model_dir).score_samples(pd.DataFrame({"a": [0.0], "b": [50.0]}))
    assert pd.read_csv(out)["score"].tolist() == pytest.approx(expected.tolist(), abs=1e-12)


def test_score_notes_ignored_extra_columns(model_dir, tmp_path, capsys):
    """Columns beyond the model's are left out with one note on stderr; same scores."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(9, 2)) * [1.0, 10.0] + [0.0, 50.0]
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1]}).to_csv(plain, index=False)
    wide = tmp_path / "wide.csv"
    pd.DataFrame({"id": [f"r{i}" for i in range(9)], "b": X[:, 1], "extra": rng.normal(size=9),
                  "a": X[:, 0]}).to_csv(wide, index=False)
    capsys.readouterr()
    assert main(["score", str(model_dir), str(wide), "-o", str(tmp_path / "wide_s.csv")]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("ocsdf: note:")]
    assert notes == ["ocsdf: note: ignored columns not used by the model: ['id', 'extra']"], err
    assert main(["score", str(model_dir), str(plain), "-o", str(tmp_path / "plain_s.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "wide_s.csv"),
                                  pd.read_csv(tmp_path / "plain_s.csv"))
    # explicit --columns: the choice is the user's, no note
    capsys.readouterr()
    assert main(["score", str(model_dir), str(wide), "--columns", "a,b",
                 "-o", str(tmp_path / "cols_s.csv")]) == 0
    assert "ocsdf: note" not in capsys.readouterr().err


def test_score_no_note_with_exactly_the_model_columns(model_dir, tmp_path, capsys):
    f = tmp_path / "exact.csv"
    f.write_text("b,a\n50,0\n40,1\n")
    capsys.readouterr()
    assert main(["score", str(model_dir), str(f)]) == 0
    captured = capsys.readouterr()
    assert "ocsdf: note" not in captured.err and "ignored columns" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scored 2 rows"), captured.err


@pytest.mark.parametrize(
    "content, expected",
    [
        ("a,b\n1,2\n,4\n3,5\n", "NaN/inf"),
        ("", "empty"),
        ("a,b\n", "empty"),
        ("city,a\nParis,1\nRome,2\n", "non-numeric columns in"),
        ("a,b\n1,2\n", "minimum of 2"),
    ],
    ids=["nan", "empty", "header-only", "non-numeric", "one-row"],
)
def test_fit_bad_inputs(tmp_path, capsys, content, expected):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    assert main(["fit", str(f), "--model", str(tmp_path / "m"), *TINY]) == 2
    assert expected in _one_error_line(capsys)
    assert not (tmp_path / "m").exists()


def test_missing_data_file(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope.csv"), "--model", str(tmp_path / "m")]) == 2
    line = _one_error_line(capsys)
    assert "not found" in line and "nope.csv" in line


def test_missing_model_dir(tmp_path, train_csv, capsys):
    assert main(["score", str(tmp_path / "no-model"), str(train_csv)]) == 2
    line = _one_error_line(capsys)
    assert "model directory not found" in line


def test_unknown_column_option(train_csv, tmp_path, capsys):
    code = main(["fit", str(train_csv), "--model", str(tmp_path / "m"), "--columns", "a,zz",
                 *TINY])
    assert code == 2
    assert "unknown column 'zz'" in _one_error_line(capsys)


def test_estimator_value_error_is_one_line(train_csv, tmp_path, capsys):
    code = main(["fit", str(train_csv), "--model", str(tmp_path / "m"), "--columns", "a,b",
                 "--steps", "5", "--width", "15", "--depth", "1", "--quiet"])
    assert code == 2
    assert "width must be even" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [[], ["fit"], ["frobnicate"], ["fit", "x.csv", "--model", "m", "--margin", "-1"],
     ["fit", "x.csv", "--model", "m", "--contamination", "0.9"],
     ["fit", "x.csv", "--model", "m", "--steps", "0"], ["demo", "--dataset", "spiral"]],
)
def test_usage_errors_return_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_returns_0(capsys):
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


def test_bench_import_skips_only_missing_study_module(monkeypatch):
    assert import_optional("bench.no_such_study_xyz") is None
    import importlib

    def broken(name):
        raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError):
        import_optional("bench.speed")


@pytest.fixture
def one_torch_thread():
    """One torch thread for the demo's 150 steps: on a busy 2-core machine two threads
    oversubscribe and the fit runs 10-20x slower; on an idle one it makes little difference."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_demo_writes_png(tmp_path, capsys, one_torch_thread):
    png = tmp_path / "demo.png"
    assert main(["demo", "--steps", "150", "--out", str(png), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "AUROC = " in out and "L = " in out and str(png) in out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    auroc = float(out.split("AUROC = ")[1].split()[0])
    assert 0.5 < auroc <= 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["demo.png"]


def test_console_help_subprocess():
    proc = subprocess.run([sys.executable, "-m", "ocsdf.cli", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fit" in proc.stdout and "score" in proc.stdout and "bench" in proc.stdout


def test_console_error_exit_code_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ocsdf.cli", "score", str(tmp_path / "m"), "x.csv"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ocsdf: error: ")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_output_is_one_line(model_dir, train_csv, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    capsys.readouterr()
    assert main(["score", str(model_dir), str(train_csv), "-o", str(blocker / "s.csv")]) == 2
    assert "cannot write" in _one_error_line(capsys)


def test_score_and_certify_take_a_device(model_dir, train_csv, tmp_path, capsys):
    import torch

    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(train_csv), "-o", str(out), "--device", "cpu"]) == 0
    assert len(pd.read_csv(out)) == 200
    if torch.cuda.is_available():
        return
    capsys.readouterr()
    argv = ["certify", str(model_dir), str(train_csv), str(train_csv), "--no-attack",
            "--png", str(tmp_path / "r.png"), "--device", "cuda"]
    assert main(argv) == 2
    assert "CUDA is not available" in _one_error_line(capsys)


def test_missing_optional_dependency_is_one_line(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "trimesh", None)  # as if the mesh extra were absent
    pts = tmp_path / "p.xyz"
    np.savetxt(pts, np.random.default_rng(0).normal(size=(50, 3)))
    assert main(["reconstruct", str(pts), "-o", str(tmp_path / "m.ply")]) == 2
    line = _one_error_line(capsys)
    assert "needs the package 'trimesh'" in line and "ocsdf[mesh]" in line


@pytest.mark.parametrize("command", ["score", "export"])
def test_output_into_a_missing_folder_is_an_error(command, model_dir, train_csv, tmp_path,
                                                  capsys):
    """A mistyped -o folder is a one-line error that names it; nothing is created."""
    if command == "export":
        pytest.importorskip("onnx", reason="onnx not installed (pip install 'ocsdf[deploy]')")
        argv = ["export", str(model_dir), "-o", str(tmp_path / "typo" / "m.onnx")]
    else:
        argv = ["score", str(model_dir), str(train_csv), "-o", str(tmp_path / "typo" / "s.csv")]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "typo does not exist" in line
    assert not (tmp_path / "typo").exists()


def test_certify_draws_no_plot_unless_asked(model_dir, train_csv, tmp_path, capsys,
                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["certify", str(model_dir), str(train_csv), str(train_csv), "--no-attack",
                 "--eps", "0,0.1"])
    assert code == 0
    assert list(tmp_path.iterdir()) == []  # no robustness.png written (or overwritten) here
    assert "certified_auroc" in capsys.readouterr().out


def test_fit_summary_says_what_was_held_out_and_trimmed(train_csv, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["fit", str(train_csv), "--model", str(out), "--columns", "a,b", "--fpr", "0.1",
                 "--trim", "0.1", *TINY]) == 0
    text = capsys.readouterr().out
    model = OCSDF.load(out)
    n_cal = len(model.calibration_scores_)  # auto: 10 / fpr = 100 of the 200 rows
    assert n_cal == 100
    assert (f"trained on {200 - n_cal - 10} rows; {n_cal} held out to calibrate the threshold; "
            "10 left out of the second fit by --trim 0.1") in text
    assert model.verbose is False  # the saved model draws no progress bar when refit


def test_fpr_option_error_names_the_range_only(train_csv, tmp_path, capsys):
    assert main(["fit", str(train_csv), "--model", str(tmp_path / "m"), "--fpr", "auto"]) == 2
    err = capsys.readouterr().err
    assert "expected a number between 0 and 1, got 'auto'" in err


def test_export_help_explains_every_option(capsys):
    assert main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "element type of the graph's input" in text and "ONNX opset version" in text


def test_fit_on_npz_with_labels_says_so(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(120, 2)), rng.normal(size=(8, 2)) + 6]
    y = np.r_[np.zeros(120), np.ones(8)]
    data = tmp_path / "set.npz"
    np.savez(data, X=X, y=y)
    assert main(["fit", str(data), "--model", str(tmp_path / "all"), *TINY]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ocsdf: note: {data} also holds labels y (8 of 128 rows non-zero); every "
                   "row was used for training, anomalies included (--normal-only trains on the "
                   "rows with y == 0)"]
    assert main(["fit", str(data), "--model", str(tmp_path / "normal"), "--normal-only",
                 *TINY]) == 0
    captured = capsys.readouterr()
    assert "fitted OCSDF on 120 rows" in captured.out
    assert "leaving out 8 labelled anomalies" in captured.err
    np.savez(tmp_path / "plain.npz", X=X)
    assert main(["fit", str(tmp_path / "plain.npz"), "--model", str(tmp_path / "p"),
                 "--normal-only", *TINY]) == 2
    assert "--normal-only needs labels" in _one_error_line(capsys)


# ---------------------------------------------------------------- CSV files (issue 18 item 3)
@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A tiny model fitted on a headerless CSV of floats (no feature names), and its rows."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3)).round(4) + 0.5
    folder = tmp_path_factory.mktemp("plain")
    data = folder / "train.csv"
    data.write_text("".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in X))
    out = folder / "model"
    assert main(["fit", str(data), "--model", str(out), *TINY]) == 0
    assert getattr(OCSDF.load(out), "feature_names_in_", None) is None
    return out, X


def _score(model, data, tmp_path, *extra) -> pd.DataFrame:
    out = tmp_path / "scores.csv"
    assert main(["score", str(model), str(data), "-o", str(out), *extra]) == 0
    return pd.read_csv(out)


def test_numeric_header_needs_header_option_and_is_not_shifted(plain_model, tmp_path,
                                                               capsys):
    model, X = plain_model
    body = "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in X[:10])
    plain = tmp_path / "plain.csv"
    plain.write_text(body)
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("1,2,3\n" + body)
    capsys.readouterr()
    assert main(["score", str(model), str(labelled)]) == 2
    line = _one_error_line(capsys)
    assert "labelled.csv" in line and "--header or --no-header" in line
    expected = _score(model, plain, tmp_path)
    got = _score(model, labelled, tmp_path, "--header")
    assert len(got) == 10
    np.testing.assert_array_equal(got["score"], expected["score"])
    shifted = _score(model, labelled, tmp_path, "--no-header")
    assert len(shifted) == 11
    np.testing.assert_allclose(shifted["score"].iloc[1:], expected["score"], rtol=1e-6,
                               atol=1e-9)  # another batch size: last-bit differences
    capsys.readouterr()
    assert main(["score", str(model), str(labelled), "--header", "--no-header"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_semicolon_decimal_comma_file_scores_like_the_comma_file(plain_model, tmp_path):
    model, X = plain_model
    comma = tmp_path / "comma.csv"
    comma.write_text("a,b,c\n" + "".join(",".join(f"{v:.4f}" for v in row) + "\n"
                                         for row in X[:8]))
    semi = tmp_path / "semi.csv"
    semi.write_text("a;b;c\n" + "".join(";".join(f"{v:.4f}".replace(".", ",") for v in row)
                                        + "\n" for row in X[:8]))
    tab = tmp_path / "tab.tsv"
    tab.write_text(comma.read_text().replace(",", "\t"))
    expected = _score(model, comma, tmp_path)["score"]
    np.testing.assert_array_equal(_score(model, semi, tmp_path)["score"], expected)
    np.testing.assert_array_equal(_score(model, tab, tmp_path)["score"], expected)


def test_label_column_error_says_how_to_leave_it_out(plain_model, tmp_path, capsys):
    model, X = plain_model
    data = tmp_path / "data.csv"
    data.write_text("a,b,c,kind\n" + "".join(",".join(f"{v:.4f}" for v in row) + ",cat\n"
                                             for row in X[:5]))
    capsys.readouterr()
    assert main(["report", str(model), str(data), "-o", str(tmp_path / "r.html")]) == 2
    line = _one_error_line(capsys)
    assert "non-numeric columns" in line and "['kind']" in line
    assert "--columns a,b,c" in line and "--labels COL" in line
    assert main(["score", str(model), str(data)]) == 2
    line = _one_error_line(capsys)
    assert "['kind']" in line and "--columns a,b,c" in line and "--labels" not in line


@pytest.mark.parametrize("command", ["fit", "score", "explain", "report", "certify"])
def test_data_commands_take_header_options(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--header" in text and "--no-header" in text


def test_fit_notes_rows_outside_the_domain_and_cover_removes_them(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(200, 3))
    X[:2, 1] = 40.0
    path = tmp_path / "tails.csv"
    pd.DataFrame(X, columns=["a", "b", "c"]).to_csv(path, index=False)
    assert main(["fit", str(path), "--model", str(tmp_path / "m1"), *TINY]) == 0
    err = capsys.readouterr().err
    assert ("ocsdf: note: 2 of 200 training rows (1.0 %) lie outside the box of the negatives "
            "(beyond 5 standard deviations from the mean in b); B adds a ball of radius m = "
            ) in err
    assert "Warning" not in err and "--cover" in err
    assert main(["fit", str(path), "--model", str(tmp_path / "m2"), "--cover", *TINY]) == 0
    assert "lie outside" not in capsys.readouterr().err
    model = OCSDF.load(tmp_path / "m2")
    assert model.standardize == "cover"
    assert np.abs(model.scorer_.standardize(X)).max() <= 4.0 + 1e-9


def test_fit_help_states_the_estimators_defaults():
    import inspect

    from ocsdf.cli.fit import FIT_DEFAULTS

    sig = inspect.signature(OCSDF)
    assert {k: sig.parameters[k].default for k in FIT_DEFAULTS} == FIT_DEFAULTS
    from ocsdf.cli.fit import NEGATIVE_TRANSFORMS
    from ocsdf.core.augment import TRANSFORM_SETS

    assert NEGATIVE_TRANSFORMS == ("auto", "none", *TRANSFORM_SETS)
