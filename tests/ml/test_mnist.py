import gzip
import hashlib
import http.server
import struct
import threading
from functools import partial

import numpy as np
import pytest

from loopline.ml import mnist
from loopline.ml.sources import load


def write_idx(path, array: np.ndarray, *, gz: bool = True) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)
    return path.read_bytes()


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 4)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_reads_train_and_test_idx_files(idx_folder):
    images, labels = mnist.load_dir(idx_folder)
    assert images.shape == (16, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [*(np.arange(12) % 10), *range(4)]
    raw = load(str(idx_folder))
    assert raw.input_shape == [1, 28, 28] and raw.x.max() <= 1.0


def test_truncated_and_foreign_files_are_rejected(tmp_path):
    data = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 28, 28)), gz=False)
    (tmp_path / "x-idx3-ubyte").write_bytes(data[:-10])
    with pytest.raises(mnist.IdxError, match="truncated or corrupt"):
        mnist.read_idx(tmp_path / "x-idx3-ubyte")
    (tmp_path / "y").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(mnist.IdxError, match="magic number"):
        mnist.read_idx(tmp_path / "y")


@pytest.fixture
def mirror(idx_folder):
    """A loopback HTTP server standing in for the dataset mirror."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(idx_folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_verifies_checksums(idx_folder, mirror, tmp_path):
    name = "train-images-idx3-ubyte.gz"
    good = hashlib.md5((idx_folder / name).read_bytes()).hexdigest()
    target = mnist.download(tmp_path / "dl", mirror=mirror, files={name: good})
    assert (target / name).read_bytes() == (idx_folder / name).read_bytes()
    with pytest.raises(mnist.IdxError, match="expected 0{32}"):
        mnist.download(tmp_path / "bad", mirror=mirror, files={name: "0" * 32})
    assert not list((tmp_path / "bad").iterdir())  # nothing half-written is left behind
