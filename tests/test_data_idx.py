"""IDX reader and writer: round trips, and every kind of corrupted file named clearly."""

import gzip
import hashlib
import os

import numpy as np
import pytest
import torch

from varbayes.data import idx_magic, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _raw_idx(array: np.ndarray, code: int) -> bytes:
    """Independent IDX encoder used as the oracle for the reader."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_write_then_read_round_trips(tmp_path, dtype, name):
    """write_idx then read_idx returns the same values, dtype and shape, raw or gzipped."""
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / name, array)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


@pytest.mark.parametrize("dtype", list(CODES))
def test_reader_matches_independent_encoder(tmp_path, dtype):
    """read_idx decodes bytes built by hand from the IDX specification (big-endian)."""
    array = np.arange(-6, 6).astype(dtype).reshape(3, 4)
    path = tmp_path / "x"
    path.write_bytes(_raw_idx(array, CODES[dtype]))
    np.testing.assert_array_equal(read_idx(path, dtype=dtype, ndim=2), array)


def test_gzip_is_detected_from_content_not_name(tmp_path):
    """A gzip file without .gz and a raw file named .gz are both read correctly."""
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "gz_no_suffix").write_bytes(gzip.compress(_raw_idx(array, 8)))
    (tmp_path / "raw.gz").write_bytes(_raw_idx(array, 8))
    np.testing.assert_array_equal(read_idx(tmp_path / "gz_no_suffix"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), array)


def test_write_accepts_tensor(tmp_path):
    """write_idx accepts a torch tensor and writes its values."""
    t = torch.arange(10, dtype=torch.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "t", t)), t.numpy())


def test_idx_magic_of_mnist_files():
    """The magic numbers of MNIST images and labels are 0x00000803 and 0x00000801."""
    assert idx_magic(np.uint8, 3) == 0x00000803
    assert idx_magic(np.uint8, 1) == 0x00000801
    assert idx_magic(np.float64, 2) == 0x00000E02


def test_idx_magic_rejects_bad_ndim_and_dtype():
    """idx_magic names ndim or dtype when they cannot be encoded."""
    with pytest.raises(ValueError, match="ndim"):
        idx_magic(np.uint8, 0)
    with pytest.raises(ValueError, match="dtype"):
        idx_magic(np.complex64, 1)


def test_bad_magic_is_rejected(tmp_path):
    """A file that does not start with 00 00 gives a ValueError naming the file and magic."""
    path = tmp_path / "notidx"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match=r"notidx.*bad IDX magic number 0x3C68746D"):
        read_idx(path)


def test_unknown_type_byte_is_rejected(tmp_path):
    """An unknown element type byte (0x0A) is a bad magic number."""
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 0x0A, 1]) + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(ValueError, match="bad IDX magic number 0x00000A01"):
        read_idx(path)


def test_wrong_expected_magic_names_both(tmp_path):
    """Reading a labels file (0x801) as images (0x803) names expected and found magic."""
    path = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match=r"labels.*expected 0x00000803.*found 0x00000801"):
        read_idx(path, dtype=np.uint8, ndim=3)


def test_dtype_without_ndim_is_rejected(tmp_path):
    """dtype and ndim must come together."""
    path = write_idx(tmp_path / "x", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="ndim"):
        read_idx(path, dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_payload_is_rejected(tmp_path, compress):
    """A payload shorter than the header announces gives expected vs found byte counts."""
    data = _raw_idx(np.zeros((2, 3, 4), np.uint8), 8)[:-5]
    path = tmp_path / "short"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ValueError, match=r"short: truncated.*found 19 bytes.*2 x 3 x 4.*24 bytes"):
        read_idx(path)


def test_extra_bytes_are_rejected(tmp_path):
    """A payload longer than the header announces is rejected, not silently cut."""
    path = tmp_path / "long"
    path.write_bytes(_raw_idx(np.zeros(4, np.uint8), 8) + b"\x00")
    with pytest.raises(ValueError, match=r"long: IDX file longer.*4 bytes"):
        read_idx(path)


def test_truncated_header_is_rejected(tmp_path):
    """A header cut inside the dimension sizes is reported as truncated."""
    path = tmp_path / "hdr"
    path.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"))
    with pytest.raises(ValueError, match=r"hdr: truncated.*needs 12 bytes, only 4"):
        read_idx(path)


def test_empty_file_is_rejected(tmp_path):
    """An empty file is not an IDX file."""
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty: not an IDX file"):
        read_idx(path)


def test_truncated_gzip_stream_is_rejected(tmp_path):
    """A gzip stream cut in the middle gives a ValueError naming the file and gzip."""
    rng = np.random.default_rng(1)
    data = gzip.compress(_raw_idx(rng.integers(0, 255, (50, 28, 28), dtype=np.uint8), 8))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz: corrupted or truncated gzip"):
        read_idx(path)


def test_absurd_dimensions_fail_fast_without_allocating(tmp_path):
    """A corrupted header announcing 2^31 x 2^31 elements is a truncation error, not OOM."""
    path = tmp_path / "huge"
    path.write_bytes(bytes([0, 0, 8, 2]) + (2**31).to_bytes(4, "big") * 2 + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated.*found 10 bytes"):
        read_idx(path)


def test_sha256_is_checked(tmp_path):
    """sha256= accepts the hash of the decompressed content and rejects any other."""
    array = np.arange(7, dtype=np.uint8)
    path = write_idx(tmp_path / "x.gz", array)
    good = hashlib.sha256(_raw_idx(array, 8)).hexdigest()
    np.testing.assert_array_equal(read_idx(path, sha256=good.upper()), array)
    with pytest.raises(ValueError, match=r"x\.gz: SHA-256 mismatch.*expected 0+, found " + good):
        read_idx(path, sha256="0" * 64)


def test_write_rejects_unsupported_arrays(tmp_path):
    """write_idx names dtype for complex data and array for a 0-d array; writes nothing."""
    with pytest.raises(ValueError, match="dtype"):
        write_idx(tmp_path / "c", np.zeros(3, np.complex64))
    with pytest.raises(ValueError, match="array"):
        write_idx(tmp_path / "s", np.uint8(3))
    assert os.listdir(tmp_path) == []
