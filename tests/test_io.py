"""Reading data files (CSV, NPZ, Parquet) and atomic CSV writing."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

from ocsdf.errors import InputError
from ocsdf.io import load_table, read_table, select_numeric, write_csv_atomic


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


# ---------------------------------------------------------------- delimiter, decimal, header
def test_numeric_header_over_floats_is_ambiguous(tmp_path):
    f = _write(tmp_path / "data.csv", "1,2,3\n0.5,0.25,1.5\n2.5,3.5,4.5\n")
    with pytest.raises(InputError, match="give --header or --no-header") as err:
        load_table(f)
    msg = str(err.value)
    assert "data.csv" in msg and "(1,2,3)" in msg and "\n" not in msg
    table = load_table(f, header=True)  # the rows are not shifted
    assert table.has_header and list(table.frame.columns) == ["1", "2", "3"]
    X, names = read_table(f, header=True)
    np.testing.assert_array_equal(X, [[0.5, 0.25, 1.5], [2.5, 3.5, 4.5]])
    X, names = read_table(f, header=False)
    assert names == ["x0", "x1", "x2"] and X.shape == (3, 3) and X[0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("text", [
    "0,1,2,3\n5,7,1,0\n2,2,2,2\n",  # 0..d-1 over integers it does not continue
    "1,2,3,4,5,6\n12,0,3,45,2,1\n",  # 1..d likewise
    "7,3,11\n0.5,1,2\n",  # distinct integers over non-integers
])
def test_label_like_first_lines_are_ambiguous(tmp_path, text):
    f = _write(tmp_path / "data.csv", text)
    with pytest.raises(InputError, match="--header or --no-header"):
        load_table(f)


@pytest.mark.parametrize("text", [
    "0.5,1.5\n2.5,3.5\n4.5,5.5\n",  # floats throughout
    "1,2,3\n4,5,6\n",  # integers: 1..d continued by the next line
    "0,1\n1,0\n1,1\n",  # two columns of integers
    "1,1,2\n0.5,0.5,0.25\n",  # repeated integers are not labels
    "1,2,3\n0.5,x,1\n",  # the second line is not all numbers
    "1\n0.5\n0.25\n",  # one column
])
def test_headerless_numbers_stay_headerless(tmp_path, text):
    table = load_table(_write(tmp_path / "data.csv", text))
    assert not table.has_header and table.frame.columns[0] == "x0"
    assert len(table.frame) == len(text.splitlines())


def test_header_option_forces_the_choice(tmp_path):
    f = _write(tmp_path / "data.csv", "a,b\n1,2\n")
    with pytest.raises(InputError, match=r"non-numeric columns .*\['x0', 'x1'\]"):
        read_table(f, header=False)
    g = _write(tmp_path / "plain.csv", "1,2\n3,4\n")
    X, names = read_table(g, header=True)
    assert names == ["1", "2"] and X.tolist() == [[3.0, 4.0]]


def test_semicolon_with_decimal_commas_reads_the_same_numbers(tmp_path):
    comma = _write(tmp_path / "comma.csv", "a,b,c\n1.5,2.25,-3\n4e2,0.125,7\n")
    semi = _write(tmp_path / "semi.csv", "a;b;c\n1,5;2,25;-3\n4e2;0,125;7\n")
    X1, n1 = read_table(comma)
    X2, n2 = read_table(semi)
    assert n1 == n2 == ["a", "b", "c"]
    np.testing.assert_array_equal(X1, X2)
    table = load_table(semi)
    assert table.delimiter == ";" and table.decimal == ","
    headerless = _write(tmp_path / "nohead.csv", "1,5;2,25;-3\n4e2;0,125;7\n")
    X3, names = read_table(headerless)
    assert names == ["x0", "x1", "x2"]
    np.testing.assert_array_equal(X3, X1)


def test_semicolon_decimal_commas_beside_a_label_column(tmp_path):
    f = _write(tmp_path / "data.csv", "a;b;city\n1,5;2;Paris\n3;4,75;Rome\n")
    X, names = read_table(f, columns=["a", "b"])
    assert X.tolist() == [[1.5, 2.0], [3.0, 4.75]]


def test_semicolon_with_decimal_points(tmp_path):
    f = _write(tmp_path / "data.csv", "a;b\n1.5;2\n3;4.75\n")
    table = load_table(f)
    assert table.delimiter == ";" and table.decimal == "."
    X, _ = read_table(f)
    assert X.tolist() == [[1.5, 2.0], [3.0, 4.75]]


@pytest.mark.parametrize("sep", ["\t", "|", ";"])
def test_other_delimiters(tmp_path, sep):
    text = f"a{sep}b{sep}c\n0.5{sep}1{sep}2\n3{sep}-4.5{sep}5e-1\n"
    f = _write(tmp_path / "data.csv", text)
    X, names = read_table(f)
    assert names == ["a", "b", "c"] and load_table(f).delimiter == sep
    np.testing.assert_array_equal(X, [[0.5, 1, 2], [3, -4.5, 0.5]])
    g = _write(tmp_path / "nohead.txt", text.split("\n", 1)[1])
    X, names = read_table(g)
    assert names == ["x0", "x1", "x2"] and X.shape == (2, 3)


def test_tab_in_tsv_wins_over_commas_in_the_fields(tmp_path):
    f = _write(tmp_path / "data.tsv", "a\tb\n1,5\t2\n3\t4,25\n")
    table = load_table(f)
    assert table.delimiter == "\t" and table.decimal == ","
    assert read_table(f)[0].tolist() == [[1.5, 2.0], [3.0, 4.25]]


def test_single_column_stays_one_column(tmp_path):
    f = _write(tmp_path / "data.csv", "value\n1.5\n2\n")
    X, names = read_table(f)
    assert names == ["value"] and X.tolist() == [[1.5], [2.0]]


def test_quoted_delimiters_do_not_count(tmp_path):
    f = _write(tmp_path / "data.csv", '"a;x",b\n1,2\n3,4\n')
    X, names = read_table(f)
    assert names == ["a;x", "b"] and X.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("text", [
    "a;b\n1;2\n3;4;5\n",  # ragged ';' lines read as one ',' column
    "a,b,c\n1;2;3\n4;5;6\n",  # a ',' header over ';' data
])
def test_mixed_delimiters_error_names_the_delimiter(tmp_path, text):
    f = _write(tmp_path / "data.csv", text)
    with pytest.raises(InputError) as err:
        read_table(f)
    msg = str(err.value)
    assert "data.csv looks ';'-separated but was read as ','-separated" in msg
    assert "\n" not in msg


def test_many_lines_sampled_and_crlf(tmp_path):
    rows = "".join(f"{i},{i / 3:.6f}\r\n" for i in range(200))
    f = _write(tmp_path / "data.csv", "a,b\r\n" + rows)
    X, names = read_table(f)
    assert names == ["a", "b"] and X.shape == (200, 2)


def test_label_column_error_says_how_to_leave_it_out(tmp_path):
    f = _write(tmp_path / "data.csv", "v1,v2,v3,v4,v5,v6,kind\n1,2,3,4,5,6,cat\n")
    with pytest.raises(InputError) as err:
        read_table(f)
    msg = str(err.value)
    assert msg == ("non-numeric columns in " + str(f) + ": ['kind']; leave them out with "
                   "--columns v1,v2,v3,v4,... (the 6 numeric columns)")
    table = load_table(f)
    with pytest.raises(InputError, match=r"give a label column with --labels COL$"):
        select_numeric(table, labels_option="--labels")
    with pytest.raises(InputError, match="none of the chosen columns is numeric"):
        select_numeric(table, ["kind"])
