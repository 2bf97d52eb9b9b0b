"""Downloads for real, from a local HTTP server on 127.0.0.1 (no mocks of the HTTP layer).

The server serves a directory tree: ``/good/`` holds correct gzip IDX files,
``/corrupt/`` the same names with other content, ``/html/`` an HTML page under the
file's name, and any other path answers 404. A closed port stands for a mirror that
refuses connections, and a socket that never answers for one that hangs.
"""

import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading
import time

import numpy as np
import pytest
import torch

from varbayes.data import (
    MNIST_FILES,
    DataNotFoundError,
    DownloadError,
    download_file,
    download_mnist,
    load_mnist,
    sha256_of_file,
    write_idx,
)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must not go through a proxy set in the environment."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A threaded HTTP server on 127.0.0.1:<free port> serving tmp_path/served."""
    served = tmp_path / "served"
    for sub in ("good", "corrupt", "html"):
        (served / sub).mkdir(parents=True)
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(served))
    )
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.served = served
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def refused_url():
    """URL of a port on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def synthetic_mnist(server):
    """Small MNIST-format files (train 7, test 3 images) on the server; their checksums."""
    rng = np.random.default_rng(0)
    arrays, checksums = {}, {}
    for split, n in (("train", 7), ("test", 3)):
        images_stem, labels_stem = MNIST_FILES[split]
        arrays[images_stem] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[labels_stem] = rng.integers(0, 10, n, dtype=np.uint8)
    for stem, array in arrays.items():
        path = write_idx(server.served / "good" / (stem + ".gz"), array)
        checksums[stem] = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
        write_idx(server.served / "corrupt" / (stem + ".gz"), array[:-1])
        (server.served / "html" / (stem + ".gz")).write_text("<html>moved</html>")
    return arrays, checksums


def _payload(server, name="f.bin.gz", content=b"hello IDX"):
    path = server.served / "good" / name
    path.write_bytes(gzip.compress(content))
    return hashlib.sha256(content).hexdigest()


def test_download_from_a_good_mirror(server, tmp_path):
    """The file arrives whole at dest, and nothing else is left in the directory."""
    sha = _payload(server)
    out = tmp_path / "out"
    path = download_file([f"{server.base}/good/f.bin.gz"], out / "f.bin.gz", sha)
    assert path == out / "f.bin.gz"
    assert gzip.decompress(path.read_bytes()) == b"hello IDX"
    assert os.listdir(out) == ["f.bin.gz"]


def test_failing_mirrors_are_skipped(server, refused_url, tmp_path):
    """A 404 mirror and a refusing mirror before a good one: the good one is used."""
    sha = _payload(server)
    urls = [
        f"{server.base}/missing/f.bin.gz",
        refused_url + "f.bin.gz",
        f"{server.base}/good/f.bin.gz",
    ]
    path = download_file(urls, tmp_path / "f.bin.gz", sha)
    assert gzip.decompress(path.read_bytes()) == b"hello IDX"
    assert server.requests == ["/missing/f.bin.gz", "/good/f.bin.gz"]


def test_wrong_checksum_is_rejected_and_leaves_nothing(server, tmp_path):
    """A file with another SHA-256 is rejected with both hashes; the directory stays empty."""
    sha = _payload(server)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DownloadError, match=r"f\.bin\.gz[\s\S]*SHA-256 mismatch") as info:
        download_file([f"{server.base}/good/f.bin.gz"], out / "f.bin.gz", "ab" * 32)
    assert "ab" * 32 in str(info.value) and sha in str(info.value)
    assert os.listdir(out) == []


def test_mirror_with_wrong_content_is_skipped(server, tmp_path):
    """A mirror serving a corrupted file is skipped for the next one that serves it right."""
    sha = _payload(server)
    (server.served / "corrupt" / "f.bin.gz").write_bytes(gzip.compress(b"hello IDY"))
    urls = [f"{server.base}/corrupt/f.bin.gz", f"{server.base}/good/f.bin.gz"]
    path = download_file(urls, tmp_path / "f.bin.gz", sha)
    assert gzip.decompress(path.read_bytes()) == b"hello IDX"


def test_non_gzip_response_is_rejected(server, tmp_path):
    """An HTML page served under a .gz name is reported as not gzip, and not kept."""
    (server.served / "html" / "f.bin.gz").write_text("<html>moved</html>")
    with pytest.raises(DownloadError, match="not a valid gzip file"):
        download_file([f"{server.base}/html/f.bin.gz"], tmp_path / "f.bin.gz", "0" * 64)
    assert os.listdir(tmp_path) == ["served"]


def test_failed_download_keeps_the_previous_file(server, tmp_path):
    """An existing dest is left untouched when the new download is rejected."""
    _payload(server)
    dest = tmp_path / "f.bin.gz"
    dest.write_bytes(b"previous")
    with pytest.raises(DownloadError):
        download_file([f"{server.base}/good/f.bin.gz"], dest, "0" * 64)
    assert dest.read_bytes() == b"previous"


def test_uncompressed_file_checksum_is_of_raw_content(server, tmp_path):
    """With decompress=False (no .gz suffix) the SHA-256 is of the bytes as served."""
    (server.served / "good" / "plain.txt").write_bytes(b"plain")
    sha = hashlib.sha256(b"plain").hexdigest()
    path = download_file(f"{server.base}/good/plain.txt", tmp_path / "plain.txt", sha)
    assert path.read_bytes() == b"plain"


def test_all_failures_are_listed(server, refused_url, tmp_path):
    """When every mirror fails, the error lists each URL with its own reason."""
    urls = [f"{server.base}/missing/f.bin.gz", refused_url + "f.bin.gz"]
    with pytest.raises(DownloadError) as info:
        download_file(urls, tmp_path / "f.bin.gz", "0" * 64)
    message = str(info.value)
    assert f"{urls[0]}: HTTP 404" in message
    assert f"{urls[1]}: cannot connect" in message
    assert [u for u, _ in info.value.failures] == urls


def test_hanging_mirror_times_out(tmp_path):
    """A mirror that accepts the connection but never answers fails after the timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/f.gz"
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"timed out \(timeout=0.3 s\)"):
            download_file([url], tmp_path / "f.gz", "0" * 64, timeout=0.3)
        assert time.monotonic() - start < 5
    assert os.listdir(tmp_path) == []


def test_unwritable_directory_is_reported(server, tmp_path):
    """A destination whose parent cannot be created is reported for every URL."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(DownloadError, match="cannot create directory"):
        download_file([f"{server.base}/good/f"], tmp_path / "file" / "sub" / "f", "0" * 64)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"urls": [], "sha256": "0" * 64}, "urls"),
        ({"urls": ["http://x/"], "sha256": "0" * 63}, "sha256"),
        ({"urls": ["http://x/"], "sha256": "g" * 64}, "sha256"),
        ({"urls": ["http://x/"], "sha256": "0" * 64, "timeout": 0}, "timeout"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, name):
    """download_file names the bad argument before touching the network or disk."""
    with pytest.raises(ValueError, match=name):
        download_file(dest=tmp_path / "f", **kwargs)
    assert os.listdir(tmp_path) == []


def test_sha256_of_file_hashes_decompressed_content(tmp_path):
    """sha256_of_file of a .gz equals hashlib of its decompressed bytes; raw files as is."""
    (tmp_path / "a.gz").write_bytes(gzip.compress(b"abc", compresslevel=1))
    (tmp_path / "b").write_bytes(b"abc")
    expected = hashlib.sha256(b"abc").hexdigest()
    assert sha256_of_file(tmp_path / "a.gz") == expected == sha256_of_file(tmp_path / "b")


# ---- load_mnist / download_mnist through the server -----------------------------------


def test_load_mnist_downloads_missing_files(server, refused_url, synthetic_mnist, tmp_path):
    """Missing files are fetched past a 404 and a refusing mirror, verified and loaded."""
    arrays, checksums = synthetic_mnist
    root = tmp_path / "root"
    mirrors = [f"{server.base}/missing/", refused_url, f"{server.base}/good"]
    data = load_mnist("test", root=root, mirrors=mirrors, checksums=checksums)
    images_stem, labels_stem = MNIST_FILES["test"]
    np.testing.assert_array_equal(data.images.numpy(), arrays[images_stem])
    np.testing.assert_array_equal(data.labels.numpy(), arrays[labels_stem])
    assert data.labels.dtype == torch.int64
    assert sorted(os.listdir(root)) == sorted([images_stem + ".gz", labels_stem + ".gz"])


def test_load_mnist_rejects_wrong_checksum_leaving_nothing(server, synthetic_mnist, tmp_path):
    """Files that do not match the checksums are not kept; the error says why."""
    _, checksums = synthetic_mnist
    root = tmp_path / "root"
    with pytest.raises(DataNotFoundError, match="SHA-256 mismatch"):
        load_mnist("train", root=root, mirrors=[f"{server.base}/corrupt/"], checksums=checksums)
    assert not root.exists()


def test_default_checksums_reject_synthetic_files(server, synthetic_mnist, tmp_path):
    """Without checksums=, the real MNIST SHA-256 constants are enforced on downloads."""
    with pytest.raises(DataNotFoundError, match="SHA-256 mismatch"):
        load_mnist("test", root=tmp_path / "r", mirrors=[f"{server.base}/good/"])
    assert not (tmp_path / "r").exists()  # not even the directory made for the download


def test_offline_error_lists_places_reasons_and_remedies(refused_url, tmp_path, monkeypatch):
    """Offline with no files: one error naming the directory, each file, each URL and reason,
    and the ways to provide the files."""
    monkeypatch.setenv("VARBAYES_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("train", mirrors=[refused_url])
    message = str(info.value)
    assert str(tmp_path / "mnist") in message and "VARBAYES_DATA" in message
    for stem in MNIST_FILES["train"]:
        assert f"{refused_url}{stem}.gz: cannot connect" in message
    assert "root=" in message and "copy" in message
    assert isinstance(info.value, FileNotFoundError)


def test_download_mnist_fetches_only_missing_files(server, synthetic_mnist, tmp_path):
    """download_mnist leaves present files alone and fetches the others."""
    arrays, checksums = synthetic_mnist
    root = tmp_path / "root"
    images_stem, labels_stem = MNIST_FILES["train"]
    write_idx(root / (images_stem + ".gz"), arrays[images_stem])
    paths = download_mnist(root, "train", mirrors=[f"{server.base}/good/"], checksums=checksums)
    assert paths == [root / (images_stem + ".gz"), root / (labels_stem + ".gz")]
    assert server.requests == [f"/good/{labels_stem}.gz"]
    assert load_mnist("train", root=root, download=False, checksums=checksums).images.shape == (
        7,
        28,
        28,
    )


def test_download_mnist_rejects_bad_split(tmp_path):
    """download_mnist names split for an unknown split."""
    with pytest.raises(ValueError, match="split"):
        download_mnist(tmp_path, "valid")


def test_load_mnist_rejects_bad_mirrors(tmp_path):
    """mirrors must hold URL strings; the error names mirrors."""
    with pytest.raises(ValueError, match="mirrors must be"):
        load_mnist("test", root=tmp_path, mirrors=[None], checksums={})
