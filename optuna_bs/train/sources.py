"""Where :func:`optuna_bs.fit` gets its batches: in-memory tensors or the user's Datasets.

Two sources, one contract. Each epoch a source yields ``n_train // B`` full batches of exactly
``B`` samples (the batch the noise scale assumes), in an order drawn from a seeded generator,
so a fit is reproducible and a resumed fit goes on with the same order:

* :class:`~optuna_bs.data.Data` (tensors): shuffled on their device and sliced, no DataLoader.
  This is the fast path of the built-in data sets.
* :class:`Datasets`, or a plain ``(train, val)`` pair of map-style
  :class:`torch.utils.data.Dataset`: a :class:`~torch.utils.data.DataLoader` that ``fit``
  builds for the epoch's B (and rebuilds when a schedule changes B), with the user's
  ``collate_fn``, ``num_workers`` and ``pin_memory``.

A batch is a ``(inputs, targets)`` tuple or list, or a dict whose targets sit under one of
:data:`TARGET_KEYS`: with one other entry, that entry is the model's input; with several,
they are its keyword arguments. :func:`split`
cuts any such batch into micro-batches for gradient accumulation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from torch.utils.data.dataloader import default_collate

from optuna_bs._validation import check_int
from optuna_bs.data.datasets import TASKS, Data

_logger = logging.getLogger(__name__)

#: The keys of a dict batch under which ``fit`` looks for the targets, in this order.
TARGET_KEYS = ("labels", "label", "targets", "target", "y")


class Datasets:
    """Your own train and validation Datasets, with the loader settings ``fit`` should use.

    ``fit`` accepts a plain ``(train, val)`` pair too; this wrapper adds a test split (which
    is only ever evaluated for a study's best trial) and the DataLoader settings.

    Args:
        train: A map-style Dataset (``__getitem__`` and ``__len__``); N is ``len(train)``.
        val: The validation Dataset that the study tunes and prunes on. Take it from the
            *training* data, never from the test split.
        test: An optional test Dataset.
        collate_fn: How a list of items becomes a batch (default: torch's ``default_collate``).
        num_workers: DataLoader worker processes (0 loads in the main process).
        pin_memory: Page-locked batches, for faster copies to a GPU.
        task: ``"classification"`` or ``"regression"``; ``None`` infers it from the targets'
            dtype (integers are class indices).
        n_outputs: The number of classes or regression targets, for a built-in model;
            ``None`` infers it when it is needed.
        name: What the report and the logs call this data.

    Raises:
        TypeError: If a split is not a map-style Dataset, ``collate_fn`` is not callable, or
            ``num_workers`` or ``n_outputs`` is not an integer.
        ValueError: If ``num_workers`` < 0, ``n_outputs`` < 1, ``task`` is unknown, or a split
            is empty.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> x, y = torch.randn(100, 3), torch.randint(0, 2, (100,))
        >>> Datasets(TensorDataset(x[:80], y[:80]), TensorDataset(x[80:], y[80:]))
        Datasets(name='datasets', n_train=80, n_val=20, n_test=0, num_workers=0)
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset,
        test: Dataset | None = None,
        *,
        collate_fn: Callable[[list], Any] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        task: str | None = None,
        n_outputs: int | None = None,
        name: str = "datasets",
    ) -> None:
        for arg, ds in (("train", train), ("val", val), ("test", test)):
            if ds is not None or arg != "test":
                _check_dataset(arg, ds)
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"`collate_fn` must be callable or None, but got {collate_fn!r}.")
        check_int("num_workers", num_workers, low=0)
        if task is not None and task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS} or None, but got task={task!r}.")
        if n_outputs is not None:
            check_int("n_outputs", n_outputs, low=1)
        self.train, self.val, self.test = train, val, test
        self.collate_fn = collate_fn or default_collate
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.name = name
        self._task = task
        self._n_outputs = n_outputs

    @property
    def n_train(self) -> int:
        """N in the noise scale: ``len(train)``."""
        return len(self.train)

    def sample_batch(self, split: str = "train", n: int = 2) -> Any:
        """A collated batch of the first ``n`` items of ``split``, to check and infer from."""
        ds = getattr(self, split)
        return self.collate_fn([ds[i] for i in range(min(n, len(ds)))])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``, as given or from the targets' dtype."""
        if self._task is None:
            _, targets = unpack(self.sample_batch())
            floating = torch.is_tensor(targets) and targets.is_floating_point()
            self._task = "regression" if floating else "classification"
        return self._task

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input sample (for a built-in model)."""
        inputs, _ = unpack(self.sample_batch())
        if not torch.is_tensor(inputs):
            raise TypeError(
                "The Datasets' inputs are not one tensor, so a built-in model cannot be sized "
                "from them: use your own model ([model] name = 'package.module:factory')."
            )
        return tuple(inputs.shape[1:])

    @property
    def n_outputs(self) -> int:
        """The number of classes (from ``train.classes``, else the largest label + 1) or of
        regression targets, as given or inferred."""
        if self._n_outputs is None:
            if self.task == "regression":
                _, targets = unpack(self.sample_batch())
                self._n_outputs = int(targets.shape[1]) if targets.dim() > 1 else 1
            elif hasattr(self.train, "classes"):
                self._n_outputs = len(self.train.classes)
            else:
                loader = DataLoader(self.train, batch_size=1024, collate_fn=self.collate_fn)
                self._n_outputs = 1 + max(int(unpack(b)[1].max()) for b in loader)
                _logger.info("%s: %d classes, from the largest label.", self.name, self._n_outputs)
        return self._n_outputs

    def known_input_shape(self) -> tuple[int, ...] | None:
        """:attr:`input_shape`, or ``None`` when the inputs are not one tensor."""
        try:
            return self.input_shape
        except TypeError:
            return None

    def known_n_outputs(self) -> int | None:
        """:attr:`n_outputs` where it needs no pass over the data (given, ``classes``, or
        regression targets); ``None`` otherwise."""
        if self._n_outputs is None and self.task == "classification":
            if not hasattr(self.train, "classes"):
                return None
        return self.n_outputs

    def __repr__(self) -> str:
        n_test = 0 if self.test is None else len(self.test)
        return (
            f"Datasets(name={self.name!r}, n_train={self.n_train}, n_val={len(self.val)}, "
            f"n_test={n_test}, num_workers={self.num_workers})"
        )


def _check_dataset(arg: str, ds: object) -> None:
    if isinstance(ds, IterableDataset):
        raise TypeError(
            f"`{arg}` must be a map-style Dataset (with __getitem__ and __len__): fit shuffles "
            f"it into full batches of B, which an IterableDataset cannot do."
        )
    if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        raise TypeError(
            f"`{arg}` must be a torch.utils.data.Dataset with __getitem__ and __len__, but got "
            f"an object of type {type(ds).__name__!r}."
        )
    if len(ds) == 0:
        raise ValueError(f"`{arg}` must hold at least one sample, but it is empty.")


# --- batches ------------------------------------------------------------------------------


def unpack(batch: Any) -> tuple[Any, Any]:
    """Split a batch into ``(inputs, targets)``.

    A tuple or list must hold exactly two entries. A dict gives its entry under the first
    of :data:`TARGET_KEYS` as the targets and the rest as the inputs (a dict of the model's
    keyword arguments, or the one remaining value).

    Raises:
        TypeError: If the batch has another shape; the message says to pass ``batch_loss``.

    Example:
        >>> x, y = unpack({"x": torch.zeros(2, 3), "label": torch.tensor([0, 1])})
        >>> x.shape, y.tolist()
        (torch.Size([2, 3]), [0, 1])
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        key = next((k for k in TARGET_KEYS if k in batch), None)
        if key is not None:
            inputs = {k: v for k, v in batch.items() if k != key}
            if len(inputs) == 1:
                return next(iter(inputs.values())), batch[key]
            return inputs, batch[key]
    raise TypeError(
        f"a batch must be an (inputs, targets) pair or a dict with one of the keys "
        f"{TARGET_KEYS}, but got {_describe(batch)}: pass `batch_loss=(model, batch) -> loss` "
        "to fit, or return pairs from the Dataset."
    )


def forward(model: torch.nn.Module, inputs: Any) -> Any:
    """Call ``model`` on unpacked inputs: a dict as keyword arguments, else positionally."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def logits(outputs: Any) -> torch.Tensor:
    """The prediction tensor of a model's outputs: itself, ``outputs["logits"]``, or the
    first entry of a tuple (a Hugging Face ``ModelOutput`` is a dict with ``logits``)."""
    if torch.is_tensor(outputs):
        return outputs
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    if isinstance(outputs, (tuple, list)) and outputs and torch.is_tensor(outputs[0]):
        return outputs[0]
    raise TypeError(
        f"the model returned {_describe(outputs)}, and a default loss or metric needs a tensor "
        "(or a dict with 'logits'): pass `loss_fn` and a metric that take these outputs."
    )


def batch_len(batch: Any) -> int:
    """The number of samples in a batch: the length of its first tensor along dim 0."""
    if torch.is_tensor(batch):
        return len(batch)
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"cannot tell the size of a batch of {_describe(batch)}.")
    for v in values:
        if torch.is_tensor(v) or isinstance(v, (Mapping, tuple, list)):
            return batch_len(v)
    return len(batch)


def split(batch: Any, size: int) -> list[Any]:
    """Cut a batch into micro-batches of ``size`` samples along dim 0 (the last may be smaller).

    Tensors are split into views (no copy); tuples, lists and dicts are split entry by entry.

    Example:
        >>> [len(x) for x, _ in split((torch.zeros(8, 2), torch.zeros(8)), 4)]
        [4, 4]
    """
    if torch.is_tensor(batch):
        return list(batch.split(size))
    if isinstance(batch, Mapping):
        parts = {k: split(v, size) for k, v in batch.items()}
        n = len(next(iter(parts.values())))
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    if isinstance(batch, (tuple, list)):
        if batch and all(
            torch.is_tensor(v) or isinstance(v, (Mapping, tuple, list)) for v in batch
        ):
            parts = [split(v, size) for v in batch]
            wrap = list if isinstance(batch, list) else tuple
            return [wrap(p) for p in zip(*parts, strict=True)]
        return [batch[i : i + size] for i in range(0, len(batch), size)]  # e.g. strings
    raise TypeError(f"cannot split a batch of {_describe(batch)} into micro-batches.")


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a batch to ``device`` (without blocking, from pinned memory)."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        moved = [to_device(v, device) for v in batch]
        return moved if isinstance(batch, list) else tuple(moved)
    return batch


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {sorted(map(str, obj))}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} entries"
    return f"an object of type {type(obj).__name__!r}"


# --- sources ------------------------------------------------------------------------------


def _shard(indices: torch.Tensor, steps: int, shard: tuple[int, int]) -> torch.Tensor:
    """Rank r's contiguous share of each of ``steps`` equal batches of ``indices``."""
    rank, size = shard
    if size == 1:
        return indices
    return indices.view(steps, size, -1)[:, rank].reshape(-1)


class TensorSource:
    """Batches of in-memory tensors: one gather per epoch, then contiguous slices."""

    def __init__(self, data: Data) -> None:
        self.data = data
        self.n_train = data.n_train
        self.task = data.task
        self.generator_device = data.x_train.device

    def train_batches(
        self,
        batch_size: int,
        steps: int,
        gen: torch.Generator,
        pin: bool,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``steps`` batches of B = ``batch_size``; with ``shard=(rank, K)``, this rank's
        B/K share of each (every rank draws the same permutation)."""
        data = self.data
        perm = torch.randperm(data.n_train, generator=gen, device=data.x_train.device)
        perm = _shard(perm[: steps * batch_size], steps, shard)
        xs, ys = data.x_train[perm], data.y_train[perm]
        if pin and xs.device.type == "cpu":
            xs, ys = xs.pin_memory(), ys.pin_memory()  # slices then copy without blocking
        local = batch_size // shard[1]
        for i in range(0, steps * local, local):
            yield xs[i : i + local], ys[i : i + local]

    def eval_batches(
        self, split: str, batch_size: int, pin: bool = False
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches of the ``"val"`` or ``"test"`` split, in order."""
        x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    def split_size(self, split: str) -> int:
        return len(getattr(self.data, f"x_{split}"))


class _EpochSampler(Sampler[int]):
    """The indices of one epoch, set by the source before the loader is iterated."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class DatasetSource:
    """Batches from the user's Datasets through a DataLoader built for the epoch's B."""

    def __init__(self, datasets: Datasets) -> None:
        self.datasets = datasets
        self.n_train = datasets.n_train
        self.generator_device = torch.device("cpu")
        self._sampler = _EpochSampler()
        # Seeds each epoch's workers from fit's checkpointed shuffle generator, never from
        # torch's global one, so a resumed fit with num_workers > 0 replays the same epochs.
        self._worker_seed = torch.Generator()
        self._loaders: dict[int, DataLoader] = {}
        self._eval_loaders: dict[tuple[str, int], DataLoader] = {}

    @property
    def task(self) -> str:
        return self.datasets.task

    def _loader(self, dataset: Dataset, batch_size: int, sampler=None, pin=False) -> DataLoader:
        ds = self.datasets
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=sampler is not None,  # full batches of exactly B in training
            collate_fn=ds.collate_fn,
            num_workers=ds.num_workers,
            pin_memory=ds.pin_memory or pin,
            persistent_workers=ds.num_workers > 0,
            generator=self._worker_seed,
        )

    def train_batches(
        self,
        batch_size: int,
        steps: int,
        gen: torch.Generator,
        pin: bool,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Any]:
        """As :meth:`TensorSource.train_batches`: only this rank's share is loaded."""
        perm = torch.randperm(self.n_train, generator=gen)
        self._sampler.indices = _shard(perm[: steps * batch_size], steps, shard).tolist()
        self._worker_seed.manual_seed(int(torch.randint(2**62, (), generator=gen)))
        local = batch_size // shard[1]
        if local not in self._loaders:  # built once per B, rebuilt when B changes
            self._loaders = {local: self._loader(self.datasets.train, local, self._sampler, pin)}
        return iter(self._loaders[local])

    def eval_batches(self, split: str, batch_size: int, pin: bool = False) -> Iterator[Any]:
        """Batches of the ``"val"`` or ``"test"`` Dataset, in order (one loader per split and
        batch size, so its workers persist from epoch to epoch)."""
        key = (split, batch_size)
        if key not in self._eval_loaders:
            dataset = getattr(self.datasets, split)
            self._eval_loaders[key] = self._loader(dataset, batch_size, pin=pin)
        return iter(self._eval_loaders[key])

    def split_size(self, split: str) -> int:
        ds = getattr(self.datasets, split)
        return 0 if ds is None else len(ds)

    def check(self, needs_targets: bool, has_batch_loss: bool = False) -> None:
        """Fail at the start, with one clear line, on items the loop could not use."""
        try:
            batch = self.datasets.sample_batch()
        except Exception as err:  # the user's Dataset or collate_fn
            raise TypeError(
                f"cannot build a batch from the train Dataset's first items "
                f"({type(err).__name__}: {err}); check its __getitem__ and `collate_fn`."
            ) from err
        if needs_targets:
            try:
                unpack(batch)
            except TypeError as err:
                if not has_batch_loss:
                    raise
                raise TypeError(
                    f"with `batch_loss`, training needs no (inputs, targets), but validation "
                    f"by 'error' or a Metric does, and the batches are {_describe(batch)}: "
                    "use metric='loss' (the validation loss by batch_loss)."
                ) from err
        batch_len(batch)


def as_source(data: object) -> TensorSource | DatasetSource:
    """The source for ``fit``'s ``data`` argument.

    Raises:
        TypeError: If ``data`` is not a ``Data``, a ``Datasets`` or a ``(train, val)`` pair
            of Datasets.
    """
    if isinstance(data, Data):
        return TensorSource(data)
    if isinstance(data, Datasets):
        return DatasetSource(data)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and len(data) == 2:
        if all(torch.is_tensor(d) for d in data):
            raise TypeError(
                "`data` is a pair of tensors, which reads as (train, val) Datasets: pass "
                "optuna_bs.Data, or (TensorDataset(x_train, y_train), TensorDataset(x_val, "
                "y_val))."
            )
        return DatasetSource(Datasets(data[0], data[1]))
    raise TypeError(
        "`data` must be an optuna_bs.Data, an optuna_bs.Datasets, or a (train, val) pair of "
        f"torch Datasets, but got {_describe(data)}."
    )
