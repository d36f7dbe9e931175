"""Read CIFAR-10 from its standard python-pickle batches in a local folder; never download.

The folder is the extracted ``cifar-10-python.tar.gz`` (``data_batch_1`` … ``data_batch_5``
and ``test_batch``), or the folder holding its ``cifar-10-batches-py``. The pickles are read
with an unpickler that builds NumPy arrays and nothing else: a data file is data, never code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
_WHERE = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html on a "
    "machine with internet, extract it, and set data.root to the cifar-10-batches-py folder"
)


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def read_cifar10(root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images (uint8, N x 3 x 32 x 32) and labels (int64) of CIFAR-10.

    Raises:
        ValueError: If the folder or one of its batch files is missing or unreadable; the
            message says where the data must go. Nothing is downloaded.
    """
    folder = Path(root).expanduser()
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ValueError(f"`root` must be a CIFAR-10 folder, but {str(root)!r} {what}: {_WHERE}.")
    missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"`root` {str(root)!r} lacks {', '.join(missing)}: {_WHERE}.")
    parts = [_batch(folder / f) for f in CIFAR10_FILES]
    x = np.concatenate([p[0] for p in parts[:5]])
    y = np.concatenate([p[1] for p in parts[:5]])
    return x, y, parts[5][0], parts[5][1]


def _batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            raw = _ArraysOnly(f, encoding="bytes").load()
        images = np.asarray(raw[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(raw[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as err:
        raise ValueError(f"`root`: {path.name} is not a CIFAR-10 python batch ({err}).") from err
    if len(images) != len(labels):
        raise ValueError(f"`root`: {path.name} has {len(images)} images, {len(labels)} labels.")
    return images, labels
