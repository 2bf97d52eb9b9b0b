"""The .amat loader of fixed-binarization MNIST, on small files written by the tests."""

import numpy as np
import pytest
import torch

from varbayes.data import DataNotFoundError, load_binarized_mnist, read_amat


def _rows(n, seed=0):
    return (np.random.default_rng(seed).random((n, 784)) < 0.3).astype(np.uint8)


def _write(path, rows, *, sep=" ", end="\n", final=True):
    if (sep, end, final) == (" ", "\n", True):  # the standard layout, built at NumPy speed
        buf = np.full((len(rows), 2 * rows.shape[1]), ord(" "), dtype=np.uint8)
        buf[:, 0::2] = rows + ord("0")
        buf[:, -1] = ord("\n")
        path.write_bytes(buf.tobytes())
        return path
    text = end.join(sep.join(str(v) for v in row) for row in rows)
    path.write_text(text + (end if final else ""), newline="")
    return path


def test_read_amat_returns_the_written_values(tmp_path):
    """read_amat returns a (rows, 784) uint8 array equal to what was written."""
    rows = _rows(5)
    out = read_amat(_write(tmp_path / "x.amat", rows))
    assert out.dtype == np.uint8 and out.shape == (5, 784)
    np.testing.assert_array_equal(out, rows)


@pytest.mark.parametrize(
    "fmt", [{"end": "\r\n"}, {"final": False}, {"end": " \n"}, {"sep": "  "}, {"sep": "\t"}]
)
def test_read_amat_tolerates_whitespace_variants(tmp_path, fmt):
    """CRLF, no final newline, trailing spaces and tabs or double spaces are read alike."""
    rows = _rows(4)
    np.testing.assert_array_equal(read_amat(_write(tmp_path / "x.amat", rows, **fmt)), rows)


def test_read_amat_accepts_float_spellings(tmp_path):
    """Values written as 0.0 / 1.0 are read as 0 / 1."""
    rows = _rows(3)
    path = tmp_path / "f.amat"
    path.write_text("\n".join(" ".join(f"{v:.1f}" for v in r) for r in rows) + "\n")
    np.testing.assert_array_equal(read_amat(path), rows)


def test_read_amat_across_block_boundaries(tmp_path):
    """A file longer than one parsing block (2048 lines) is read whole and in order."""
    rows = _rows(4500, seed=3)
    np.testing.assert_array_equal(read_amat(_write(tmp_path / "big.amat", rows)), rows)


@pytest.mark.parametrize("line", [1, 2048, 2049, 4500])
def test_wrong_value_count_names_file_and_line(tmp_path, line):
    """A line with 783 values is reported with the file name and its 1-based line number."""
    rows = _rows(4500, seed=4)
    path = _write(tmp_path / "bad.amat", rows)
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1][:-2]  # drop the last value
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(
        ValueError, match=rf"bad\.amat, line {line}: expected 784 values, found 783"
    ):
        read_amat(path)


@pytest.mark.parametrize("token", ["2", "0.5", "-1", "x", "10", "nan"])
def test_value_other_than_0_or_1_names_file_line_and_value(tmp_path, token):
    """A value other than 0/1 is reported with file, line, position and the value."""
    rows = _rows(3).astype(str)
    rows[1, 9] = token
    path = tmp_path / "v.amat"
    path.write_text("\n".join(" ".join(r) for r in rows) + "\n")
    with pytest.raises(
        ValueError, match=rf"v\.amat, line 2, value 10: expected 0 or 1, found '{token}'"
    ):
        read_amat(path)


def test_blank_line_inside_is_rejected(tmp_path):
    """An empty line between rows is a line with 0 values."""
    rows = _rows(3)
    path = tmp_path / "b.amat"
    path.write_text(" ".join(map(str, rows[0])) + "\n\n" + " ".join(map(str, rows[1])) + "\n")
    with pytest.raises(ValueError, match=r"b\.amat, line 2: expected 784 values, found 0"):
        read_amat(path)


def test_empty_file_is_rejected(tmp_path):
    """A file with no rows is a ValueError naming it."""
    path = tmp_path / "e.amat"
    path.write_text("\n")
    with pytest.raises(ValueError, match=r"e\.amat: the file holds no rows"):
        read_amat(path)


def test_expected_rows_is_checked(tmp_path):
    """expected_rows rejects a file with another number of rows, naming file and counts."""
    path = _write(tmp_path / "x.amat", _rows(4))
    assert read_amat(path, expected_rows=4).shape == (4, 784)
    with pytest.raises(ValueError, match=r"x\.amat: expected 5 rows, found 4"):
        read_amat(path, expected_rows=5)
    with pytest.raises(ValueError, match="expected_rows"):
        read_amat(path, expected_rows=-1)


def test_load_binarized_mnist_from_root(tmp_path):
    """load_binarized_mnist returns (N, 28, 28) images of the requested dtype."""
    rows = _rows(6)
    _write(tmp_path / "binarized_mnist_valid.amat", rows)
    x = load_binarized_mnist("valid", root=tmp_path, check_rows=False)
    assert x.shape == (6, 28, 28) and x.dtype == torch.uint8
    np.testing.assert_array_equal(x.reshape(6, 784).numpy(), rows)
    xf = load_binarized_mnist("valid", root=tmp_path, dtype=torch.float32, check_rows=False)
    assert xf.dtype == torch.float32 and torch.equal(xf, x.float())


def test_load_binarized_mnist_checks_standard_counts(tmp_path):
    """By default a split must hold its standard number of images (50,000 for train)."""
    _write(tmp_path / "binarized_mnist_train.amat", _rows(3))
    with pytest.raises(
        ValueError, match=r"binarized_mnist_train\.amat: expected 50000 rows, found 3"
    ):
        load_binarized_mnist("train", root=tmp_path)


def test_load_binarized_mnist_uses_varbayes_data(tmp_path, monkeypatch):
    """Without root, files are read from $VARBAYES_DATA/binarized_mnist."""
    (tmp_path / "binarized_mnist").mkdir()
    _write(tmp_path / "binarized_mnist" / "binarized_mnist_test.amat", _rows(2))
    monkeypatch.setenv("VARBAYES_DATA", str(tmp_path))
    assert load_binarized_mnist("test", check_rows=False).shape == (2, 28, 28)


def test_missing_file_says_where_and_how(tmp_path):
    """A missing file is a DataNotFoundError naming the path and how to provide it."""
    with pytest.raises(DataNotFoundError, match=r"binarized_mnist_test\.amat") as info:
        load_binarized_mnist("test", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "VARBAYES_DATA" in message and "root" in message
    assert isinstance(info.value, FileNotFoundError)


def test_bad_split_and_dtype_are_rejected(tmp_path):
    """split and dtype are validated before any file is read."""
    with pytest.raises(ValueError, match="split must be one of"):
        load_binarized_mnist("validation", root=tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        load_binarized_mnist("test", root=tmp_path, dtype=torch.int64)
