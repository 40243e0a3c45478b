"""Fashion-MNIST for the benchmarks, read from the Debian package ``dataset-fashion-mnist``.

One loader for every ``bench_*.py``; when the files are missing each benchmark falls back to the
8x8 digits bundled with slim-core and says so. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

FASHION = Path(os.environ.get("SLIM_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array of its declared shape."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def available() -> bool:
    return all((FASHION / f).is_file() for pair in FILES.values() for f in pair)


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: float32 NCHW images in [0, 1] (60000 / 10000) and int64 labels."""
    out = []
    for img, lab in FILES.values():
        out.append(read_idx(FASHION / img).astype("float32")[:, None] / 255.0)
        out.append(read_idx(FASHION / lab).astype("int64"))
    return out[0], out[1], out[2], out[3]


def fashion_or_digits(tag: str, n_train: int | None = None) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(name, x, y, x_test, y_test)``: Fashion-MNIST when installed, else slim-core's bundled digits (with a message).

    ``n_train``: keep a random subset (seed 0) of that many Fashion-MNIST training images.
    """
    if available():
        x, y, xt, yt = fashion_mnist()
        if n_train is not None:
            order = np.random.default_rng(0).permutation(len(y))[:n_train]
            x, y = x[order], y[order]
        return "Fashion-MNIST", x, y, xt, yt
    print(f"[{tag}] {FASHION} not found (apt-get install dataset-fashion-mnist); using the bundled 8x8 digits instead")
    from slim_core import demo

    x, y = demo.load_digits("train")
    xt, yt = demo.load_digits("test")
    return "digits (8x8)", x, y, xt, yt
