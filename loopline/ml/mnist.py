"""MNIST in its original IDX format: download with checksums, and a strict reader."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import urllib.request
from pathlib import Path

import numpy as np

from loopline.core.errors import LooplineError

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# MD5 sums published with the dataset (the same ones torchvision checks).
FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(LooplineError, ValueError):
    """An IDX file is corrupt, truncated or fails its checksum."""


def download(
    target: Path, *, mirror: str = MIRROR, files: dict[str, str] = FILES, timeout: float = 60
) -> Path:
    """Fetch the MNIST files into ``target``, verifying each MD5; skip files already good."""
    target.mkdir(parents=True, exist_ok=True)
    for name, md5 in files.items():
        path = target / name
        if path.exists() and _md5(path) == md5:
            continue
        partial = path.with_suffix(path.suffix + ".part")
        with (
            urllib.request.urlopen(mirror + name, timeout=timeout) as response,
            open(partial, "wb") as out,
        ):
            shutil.copyfileobj(response, out)
        got = _md5(partial)
        if got != md5:
            partial.unlink()
            raise IdxError(
                f"{name} from {mirror} has MD5 {got}, expected {md5}; the mirror or the "
                "download is corrupt. Retry, or point --mirror at another copy."
            )
        partial.replace(path)
    return target


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array, checking its header and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise IdxError(f"{path} is not an IDX file: its magic number is wrong.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path} is truncated inside its header.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxError(
            f"{path} holds {len(data) - header} bytes of data but its header {shape} "
            f"needs {expected}; the file is truncated or corrupt. Download it again."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_dir(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) from the train and t10k files in ``folder``."""
    images, labels = [], []
    for prefix in ("train", "t10k"):
        image_file = _find(folder, f"{prefix}-images-idx3-ubyte")
        label_file = _find(folder, f"{prefix}-labels-idx1-ubyte")
        if image_file is None or label_file is None:
            continue
        x, y = read_idx(image_file), read_idx(label_file)
        if len(x) != len(y):
            raise IdxError(f"{image_file} has {len(x)} images but {label_file} {len(y)} labels.")
        images.append(x)
        labels.append(y)
    if not images:
        raise IdxError(f"{folder} holds no MNIST IDX files (e.g. train-images-idx3-ubyte.gz).")
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def is_idx_dir(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*-idx3-ubyte*"))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
