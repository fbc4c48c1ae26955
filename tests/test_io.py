"""Reading data files (CSV, NPZ, Parquet) and atomic CSV writing."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

from ocsdf.errors import InputError
from ocsdf.io import load_table, read_table, write_csv_atomic


def _write(path, text: str):
    path.write_text(text)
    return path


def test_csv_with_header(tmp_path):
    f = _write(tmp_path / "data.csv", "a,b,c\n1,2,3\n4.5,-6,7e-1\n")
    X, names = read_table(f)
    assert names == ["a", "b", "c"]
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, [[1, 2, 3], [4.5, -6, 0.7]])
    assert load_table(f).has_header


def test_csv_without_header(tmp_path):
    f = _write(tmp_path / "data.csv", "1,2\n3,4\n5,6\n")
    X, names = read_table(f)
    assert names == ["x0", "x1"]
    assert X.shape == (3, 2)
    np.testing.assert_array_equal(X[0], [1, 2])
    assert not load_table(f).has_header


def test_csv_first_row_with_missing_value_is_data(tmp_path):
    f = _write(tmp_path / "data.csv", "1,,3\n4,5,6\n")
    X, names = read_table(f)
    assert names == ["x0", "x1", "x2"]
    assert X.shape == (2, 3) and np.isnan(X[0, 1])


def test_tsv(tmp_path):
    f = _write(tmp_path / "data.tsv", "a\tb\n1\t2\n")
    X, names = read_table(f)
    assert names == ["a", "b"] and X.tolist() == [[1.0, 2.0]]


def test_columns_by_name_and_position(tmp_path):
    f = _write(tmp_path / "data.csv", "city,a,b\nParis,1,2\nRome,3,4\n")
    X, names = read_table(f, columns=["b", "a"])
    assert names == ["b", "a"]
    np.testing.assert_array_equal(X, [[2, 1], [4, 3]])
    X, names = read_table(f, columns=["2", 1])
    assert names == ["b", "a"]
    np.testing.assert_array_equal(X, [[2, 1], [4, 3]])


def test_columns_positions_without_header(tmp_path):
    f = _write(tmp_path / "data.csv", "1,2,3\n4,5,6\n")
    X, names = read_table(f, columns=["x2", "0"])
    assert names == ["x2", "x0"]
    np.testing.assert_array_equal(X, [[3, 1], [6, 4]])


def test_nan_and_inf_are_kept(tmp_path):
    f = _write(tmp_path / "data.csv", "a,b\n1,nan\ninf,2\n")
    X, _ = read_table(f)
    assert np.isnan(X[0, 1]) and np.isinf(X[1, 0])


def test_npz_named_x_and_single_array(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savez(tmp_path / "a.npz", X=arr, y=np.zeros(4))
    X, names = read_table(tmp_path / "a.npz")
    assert X.dtype == np.float64 and names == ["x0", "x1", "x2"]
    np.testing.assert_array_equal(X, arr)
    np.savez(tmp_path / "b.npz", features=arr)
    X, _ = read_table(tmp_path / "b.npz", columns=["1"])
    np.testing.assert_array_equal(X[:, 0], arr[:, 1])


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_npz_not_2d(tmp_path, shape):
    np.savez(tmp_path / "d.npz", X=np.zeros(shape))
    with pytest.raises(InputError, match="expected 2-D") as err:
        read_table(tmp_path / "d.npz")
    assert "d.npz" in str(err.value)


def test_npz_several_arrays_without_x(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(InputError, match="none is named 'X'"):
        read_table(tmp_path / "d.npz")


def test_npz_corrupt(tmp_path):
    f = tmp_path / "d.npz"
    f.write_bytes(b"PK\x03\x04 this is not really a zip file")
    with pytest.raises(InputError, match="cannot read .*d.npz"):
        read_table(f)


def test_file_not_found(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        read_table(tmp_path / "missing.csv")
    assert "missing.csv" in str(err.value)


def test_unknown_extension(tmp_path):
    f = _write(tmp_path / "data.xlsx", "1,2\n")
    with pytest.raises(InputError, match="unknown file extension '.xlsx'"):
        read_table(f)


@pytest.mark.parametrize("text", ["", "\n\n", "a,b\n"])
def test_empty_csv(tmp_path, text):
    f = _write(tmp_path / "data.csv", text)
    with pytest.raises(InputError, match="empty") as err:
        read_table(f)
    assert "data.csv" in str(err.value)


def test_non_numeric_columns_named(tmp_path):
    f = _write(tmp_path / "data.csv", "city,a,zone\nParis,1,x\nRome,2,y\n")
    with pytest.raises(InputError) as err:
        read_table(f)
    msg = str(err.value)
    assert "non-numeric columns" in msg and "data.csv" in msg
    assert "['city', 'zone']" in msg and "--columns" in msg
    assert "\n" not in msg
    X, names = read_table(f, columns=["a"])  # choosing numeric columns avoids the error
    assert names == ["a"] and X.ravel().tolist() == [1.0, 2.0]


def test_unknown_column(tmp_path):
    f = _write(tmp_path / "data.csv", "a,b\n1,2\n")
    with pytest.raises(InputError, match="unknown column 'z'"):
        read_table(f, columns=["a", "z"])
    with pytest.raises(InputError, match="out of range"):
        read_table(f, columns=["5"])
    with pytest.raises(InputError, match="chosen twice"):
        read_table(f, columns=["a", "0"])


def test_malformed_csv_is_one_line(tmp_path):
    f = _write(tmp_path / "data.csv", "a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(InputError, match="cannot parse") as err:
        read_table(f)
    assert "\n" not in str(err.value)


def test_binary_file_as_csv(tmp_path):
    f = tmp_path / "data.csv"
    f.write_bytes(b"\xff\xfe\x00\x81\x82garbage\x00\x9c")
    with pytest.raises(InputError) as err:
        read_table(f)
    assert "data.csv" in str(err.value) and "\n" not in str(err.value)


def test_parquet(tmp_path):
    f = tmp_path / "data.parquet"
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]})
    if importlib.util.find_spec("pyarrow") is None:
        f.write_bytes(b"PAR1 not really parquet")
        with pytest.raises(InputError, match="pip install pyarrow"):
            read_table(f)
        return
    df.to_parquet(f)
    X, names = read_table(f)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(X, df.to_numpy(dtype=float))


def test_write_csv_atomic(tmp_path):
    out = tmp_path / "sub" / "out.csv"
    frame = pd.DataFrame({"score": [0.1, -1 / 3], "label": [1, -1]})
    with pytest.raises(InputError, match=r"cannot write .*out.csv: the folder .*sub does not "
                                         r"exist"):
        write_csv_atomic(frame, out, header=True)  # a mistyped folder is not created
    assert not out.parent.exists()
    out.parent.mkdir()
    write_csv_atomic(frame, out, header=True)
    back = pd.read_csv(out)
    assert list(back.columns) == ["score", "label"]
    assert back["score"].tolist() == [0.1, -1 / 3]  # full precision
    write_csv_atomic(np.eye(2), out, header=["p", "q"])
    assert out.read_text().splitlines()[0] == "p,q"
    assert [p.name for p in out.parent.iterdir()] == ["out.csv"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask  # usual permissions, not mkstemp's


def test_write_csv_atomic_failure_leaves_old_file(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old\n")

    class Boom(pd.DataFrame):
        def to_csv(self, *args, **kwargs):  # writes part of the file, then fails
            args[0].write("partial")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv_atomic(Boom({"a": [1]}), out)
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_load_table_allow_empty_gives_zero_rows(tmp_path):
    f = tmp_path / "header_only.csv"
    f.write_text("a,b\n")
    with pytest.raises(InputError, match="no data rows"):
        load_table(f)
    table = load_table(f, allow_empty=True)
    assert table.frame.shape == (0, 2) and list(table.frame.columns) == ["a", "b"]
    assert all(t == np.float64 for t in table.frame.dtypes) and table.has_header
