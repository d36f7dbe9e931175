"""Built-in data sets as in-memory tensors, split into train, validation and test.

The validation split that is tuned and pruned on is always taken from the *training* data,
stratified by class and seeded by ``seed``; a data set's own test split is kept apart and never
depends on ``seed`` (docs/design.md §7).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import numbers
import random

import numpy as np
import torch

from optuna_bs._validation import check_int
from optuna_bs.data._cifar import read_cifar10

_logger = logging.getLogger(__name__)

DATASETS = ("mnist1d", "digits", "synthetic", "cifar10")
TASKS = ("classification", "regression")
_SPLITS = ("train", "val", "test")
_OPTIONS = {
    "mnist1d": ("data_seed",),
    "digits": ("image",),
    "synthetic": ("n_samples", "n_features", "n_classes", "task", "n_targets", "data_seed"),
    "cifar10": ("root",),
}


@dataclasses.dataclass(frozen=True, repr=False)
class Data:
    """Train, validation and test tensors of one data set.

    ``x_*`` are float32 inputs. ``y_*`` are int64 class indices of shape ``(n,)`` for
    classification, or float32 targets of shape ``(n, n_outputs)`` for regression. The
    validation split (tuned and pruned on) comes from the training data; the test split is
    evaluated only for the best trial. ``n_outputs`` is the number of classes or of regression
    targets, ``task`` is ``"classification"`` or ``"regression"`` and ``name`` the data set's.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_outputs: int
    task: str
    name: str

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}, but got task={self.task!r}.")
        sizes = [(len(getattr(self, f"x_{s}")), len(getattr(self, f"y_{s}"))) for s in _SPLITS]
        if any(n_x != n_y for n_x, n_y in sizes):
            raise ValueError(f"`x_*` and `y_*` must have equal lengths, but got {sizes}.")

    @property
    def n_train(self) -> int:
        """Number of training samples (N in the noise scale)."""
        return len(self.x_train)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. ``(40,)`` for MNIST-1D."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Data:
        """Return a copy with every tensor moved to ``device``."""
        tensors = {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **{k: v.to(device) for k, v in tensors.items()})

    def pin_memory(self) -> Data:
        """Return a copy in pinned host memory, for non-blocking copies to a GPU."""
        tensors = {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **{k: v.pin_memory() for k, v in tensors.items()})

    def __repr__(self) -> str:
        return (
            f"Data(name={self.name!r}, task={self.task!r}, n_train={self.n_train}, "
            f"n_val={len(self.x_val)}, n_test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, n_outputs={self.n_outputs})"
        )


def load_data(
    name: str = "mnist1d",
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    num_samples: int | None = None,
    **options: object,
) -> Data:
    """Load a built-in data set and split a validation set off its training data.

    - ``"mnist1d"``: MNIST-1D generated locally (no download): 40 features, 10 classes, 4000
      train and 1000 test samples. Option ``data_seed=42`` (42 gives the published data set).
    - ``"digits"``: scikit-learn's 1797 8×8 digits scaled to [0, 1], a fixed 20% kept for test.
      Option ``image=False``; True gives inputs of shape (1, 8, 8) instead of (64,).
    - ``"synthetic"``: a generated task of any size, for tests. Options ``n_samples=1000``
      (20% test), ``n_features=20``, ``task="classification"`` (``n_classes=2``) or
      ``"regression"`` (``n_targets=1``), ``data_seed=0``. Features are standardised.
    - ``"cifar10"``: CIFAR-10 read from the python batches in the folder ``root`` (required;
      nothing is downloaded): 50000 train and 10000 test images of shape (3, 32, 32),
      normalised per channel with training statistics.

    Args:
        name: One of :data:`DATASETS`.
        seed: Seed of the validation split only; the data and the test split stay fixed.
        val_fraction: Fraction of the training data held out for validation, in (0, 1).
        num_samples: ``"mnist1d"`` only: total number of samples to generate, at least 100
            (rounded down to a multiple of 10; 80% train). Default 5000.
        **options: Options of the data set, listed above.

    Returns:
        The train, validation and test tensors on the CPU.

    Raises:
        TypeError: If an argument has the wrong type or an option is unknown.
        ValueError: If an argument has a bad value.

    Example:
        >>> data = load_data("synthetic", n_samples=500, n_features=8)
        >>> data.n_train, len(data.x_val), len(data.x_test), data.input_shape
        (320, 80, 100, (8,))
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, but got {type(name).__name__}: {name!r}.")
    if name not in DATASETS:
        choices = ", ".join(repr(d) for d in DATASETS)
        raise ValueError(f"`name` must be one of {choices}, but got name={name!r}.{_hint(name)}")
    check_int("seed", seed, low=0)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
        raise TypeError(f"`val_fraction` must be a float, but got val_fraction={val_fraction!r}.")
    if not 0 < val_fraction < 1:
        raise ValueError(f"`val_fraction` must be in (0, 1), but got val_fraction={val_fraction}.")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        # Every keyword the data set takes, the common ones too: a typo of num_samples
        # is told so, not shown only data_seed.
        valid = [*(["num_samples"] if name == "mnist1d" else []), *_OPTIONS[name]]
        valid += ["seed", "val_fraction"]
        allowed = ", ".join(repr(o) for o in valid)
        raise TypeError(
            f"load_data() got unexpected option(s) {', '.join(map(repr, unknown))} for data set "
            f"{name!r}; allowed options: {allowed}.{_hint(unknown[0], valid)}"
        )
    if num_samples is not None:
        if name != "mnist1d":
            raise ValueError(
                "`num_samples` applies only to 'mnist1d' (for 'synthetic' use the option "
                f"n_samples), but got num_samples={num_samples!r} for {name!r}."
            )
        check_int("num_samples", num_samples, low=100)
    n_outputs, task = 10, "classification"  # all but "synthetic"
    if name == "mnist1d":
        data_seed = options.get("data_seed", 42)
        check_int("data_seed", data_seed, low=0)
        x, y, x_test, y_test = _mnist1d_arrays(num_samples or 5000, data_seed)
    elif name == "digits":
        x, y, x_test, y_test = _digits_arrays(options.get("image", False))
    elif name == "cifar10":
        if "root" not in options:
            raise ValueError(
                "'cifar10' needs the option `root`: the folder of its python "
                "batches (nothing is downloaded)."
            )
        x, y, x_test, y_test = _cifar10_arrays(str(options["root"]))
    else:
        x, y, x_test, y_test, n_outputs, task = _synthetic_arrays(**options)

    train, val = _split(len(x), y if task == "classification" else None, val_fraction, seed)
    y_type = np.int64 if task == "classification" else np.float32
    data = Data(
        *_tensors(x[train], y[train], y_type),
        *_tensors(x[val], y[val], y_type),
        *_tensors(x_test, y_test, y_type),
        n_outputs=n_outputs,
        task=task,
        name=name,
    )
    _logger.debug("Loaded %r (seed=%d).", data, seed)
    return data


def _cifar10_arrays(root: str) -> tuple[np.ndarray, ...]:
    x, y, x_test, y_test = read_cifar10(root)
    # Per-channel statistics of the training images, applied to both splits.
    mean = x.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
    std = x.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
    return (x.astype(np.float32) - mean) / std, y, (x_test.astype(np.float32) - mean) / std, y_test


def _hint(value: str, choices: tuple[str, ...] = DATASETS) -> str:
    close = difflib.get_close_matches(value.lower(), choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _tensors(x: np.ndarray, y: np.ndarray, y_type: type) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.array(x, np.float32)), torch.as_tensor(np.array(y, y_type))


def _split(n: int, y: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Sorted train and validation indices; stratified when class labels ``y`` are given."""
    rng = np.random.default_rng(seed)
    n_val = round(fraction * n)
    if y is None:
        val = rng.permutation(n)[:n_val]
    else:
        classes, counts = np.unique(y, return_counts=True)
        quota = fraction * counts
        k_val = np.floor(quota).astype(int)
        # Largest remainders get the samples left over, so the total is round(fraction * n).
        k_val[np.argsort(k_val - quota, kind="stable")[: n_val - k_val.sum()]] += 1
        picks = zip(classes, k_val, strict=True)
        val = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k] for c, k in picks])
    val = np.sort(val)
    train = np.setdiff1d(np.arange(n), val)
    if len(val) == 0 or len(train) == 0:
        raise ValueError(
            f"`val_fraction` must leave at least one training and one validation sample out of "
            f"{n}, but got val_fraction={fraction}."
        )
    return train, val


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int, data_seed: int) -> tuple[np.ndarray, ...]:
    """Generate MNIST-1D once per process (about 1 s); callers copy, never modify."""
    import mnist1d.data  # imports matplotlib and requests: slow, so only when asked for

    args = mnist1d.data.get_dataset_args()
    args.num_samples, args.seed = num_samples, data_seed
    # make_dataset reseeds the global RNGs; restore them so a worker's own seeding stands.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    _logger.debug("Generated MNIST-1D: num_samples=%d, data_seed=%d.", num_samples, data_seed)
    return tuple(np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test"))


def _digits_arrays(image: object) -> tuple[np.ndarray, ...]:
    if not isinstance(image, bool):
        raise TypeError(f"`image` must be a bool, but got image={image!r}.")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data / 16.0
    if image:
        x = x.reshape(-1, 1, 8, 8)
    # A fixed random_state: the test set never changes, whatever `seed` is.
    x, x_test, y, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return x, y, x_test, y_test


def _synthetic_arrays(
    n_samples: int = 1000,
    n_features: int = 20,
    n_classes: int = 2,
    task: str = "classification",
    n_targets: int = 1,
    data_seed: int = 0,
) -> tuple:
    check_int("n_samples", n_samples, low=20)
    check_int("n_features", n_features, low=1)
    check_int("n_classes", n_classes, low=2)
    check_int("n_targets", n_targets, low=1)
    check_int("data_seed", data_seed, low=0)
    if task not in TASKS:
        raise ValueError(
            f"`task` must be one of {TASKS}, but got task={task!r}.{_hint(str(task), TASKS)}"
        )
    if task == "classification":
        from sklearn.datasets import make_classification

        n_informative = min(n_features, 10)
        if n_classes > 2**n_informative:  # make_classification's limit
            limit = f"at most 2 ** min(n_features, 10) = {2**n_informative}"
            raise ValueError(f"`n_classes` must be {limit}, but got n_classes={n_classes}.")
        redundant = min(2, n_features - n_informative)
        x, y = make_classification(
            n_samples, n_features, n_informative=n_informative, n_redundant=redundant,
            n_classes=n_classes, n_clusters_per_class=1, random_state=data_seed,
        )  # fmt: skip
        n_outputs = n_classes
    else:
        rng = np.random.default_rng(data_seed)
        x = rng.standard_normal((n_samples, n_features))
        weights = rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features)
        y = x @ weights + 0.1 * rng.standard_normal((n_samples, n_targets))
        n_outputs = n_targets
    n_fit = n_samples - round(0.2 * n_samples)  # the rows are already in random order
    mean, std = x[:n_fit].mean(axis=0), x[:n_fit].std(axis=0) + 1e-8
    x = (x - mean) / std
    return x[:n_fit], y[:n_fit], x[n_fit:], y[n_fit:], n_outputs, task
