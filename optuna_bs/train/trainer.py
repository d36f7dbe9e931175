"""``fit()``: train a model epoch by epoch under an Optuna trial, at the trial's batch size.

The data come from a source (:mod:`optuna_bs.train.sources`): in-memory tensors, shuffled and
sliced on their device, or the user's Datasets through a DataLoader that ``fit`` builds for the
epoch's batch size. Either way each epoch is ``N // B`` full batches of exactly B, the
statistical batch that the noise scale and the scaling rules are about.

**Memory decides only the micro-batch.** Each update averages B samples; with a micro-batch
b < B it accumulates B/b backward passes, each weighted b/B, so the update is the one at b = B.
On a CUDA out-of-memory error ``fit`` halves b, doubles the accumulation and redoes the update:
B, and so the tuned learning rate, stay put (docs/design.md §4).

Each epoch's validation value goes to :class:`~optuna_bs.train.TrialMonitor`, which reports
it, prunes, early-stops and records the run on the trial. At the end the best epoch's weights
are restored.
"""

from __future__ import annotations

import gc
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from optuna_bs._validation import check_int, check_real
from optuna_bs.data.datasets import Data
from optuna_bs.rules.batch import plan_batch
from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.train._accelerate import Accelerator
from optuna_bs.train._checkpoints import owner_of
from optuna_bs.train._loop import EpochLoop
from optuna_bs.train.distributed import broadcast, is_distributed_trial, world
from optuna_bs.train.metrics import (
    METRICS,
    Metric,
    Validator,
    default_loss,
    evaluate,
    evaluate_split,
    free_memory,
    resolve_metric,
)
from optuna_bs.train.monitor import TrialMonitor
from optuna_bs.train.optimizers import _make_optimizer, _weight_decay, optimizer_attrs
from optuna_bs.train.policies import CheckpointPolicy, DevicePath, MemoryPolicy, grouped
from optuna_bs.train.schedules import epoch_attrs
from optuna_bs.train.sources import (
    DatasetSource,
    TensorSource,
    as_source,
)
from optuna_bs.train.state import TrainingState, check_writable
from optuna_bs.vocabulary import DEFAULTS, OOM_POLICIES, OPTIMIZERS

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

    from optuna_bs.train.schedules import Schedule
    from optuna_bs.train.sources import Datasets

#: Also the names of the flat layout's ``optuna_bs.trainer``, which still imports as this module.
__all__ = [
    "CheckpointPolicy",
    "DevicePath",
    "FitResult",
    "MemoryPolicy",
    "TrainingState",
    "fit",
    "evaluate",
    "evaluate_split",
    "place_data",
    "resolve_device",
    "METRICS",
    "OPTIMIZERS",
    "OOM_POLICIES",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    """What one call of :func:`fit` did.

    ``best_value`` is the validation value of ``best_epoch``, whose weights the model holds
    when ``fit`` returns. ``samples_per_second`` counts training samples over the time spent
    in optimizer steps only; ``train_seconds`` is the whole fit, validation included.
    ``micro_batch_size`` and ``accumulation_steps`` are those of the last update (B is their
    product).
    """

    best_value: float
    best_epoch: int
    epochs_run: int
    n_updates: int
    train_seconds: float
    samples_per_second: float
    stop_reason: str
    metric: str
    history: tuple[float, ...]
    resumed_from_epoch: int = 0
    schedule_path: tuple[Hyperparameters, ...] = ()
    micro_batch_size: int = 0
    accumulation_steps: int = 1

    def user_attrs(self) -> dict[str, float | int | str | list]:
        """The trial user attrs of this fit, as the dashboard shows them.

        With a schedule, each epoch's B, ϵ, m and g are lists ``epoch_batch_size``,
        ``epoch_lr``, ``epoch_momentum`` and ``epoch_noise_scale``.
        """
        attrs = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("best_value", "history", "schedule_path")
        }
        attrs.update(epoch_attrs(self.schedule_path))
        return attrs


def place_data(data: Data, device: torch.device) -> Data:
    """``data`` on ``device``; if it does not fit in GPU memory, in pinned host memory.

    Tensors already on ``device`` are not copied. From pinned memory every batch is copied to
    the GPU without blocking the host.
    """
    if data.x_train.device == device:
        return data
    try:
        return data.to(device)
    except torch.cuda.OutOfMemoryError:
        free_memory(device)
        _logger.warning(
            "The data does not fit on %s: batches come from pinned host memory.", device
        )
        return data.to("cpu").pin_memory()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when it is there, else the CPU; check any other name.

    Raises:
        ValueError: If the device is unknown, or CUDA is asked for and is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N', but got device={device!r}."
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {device!r}, but CUDA is not available on this machine.")
    return resolved


def fit(
    model: torch.nn.Module,
    data: Data | Datasets | tuple,
    hparams: Hyperparameters,
    *,
    trial: BaseTrial | None = None,
    max_epochs: int = DEFAULTS["max_epochs"],
    patience: int | None = DEFAULTS["patience"],
    min_delta: float = 0.0,
    metric: str | Metric = DEFAULTS["metric"],
    optimizer: str | Callable = DEFAULTS["optimizer"],
    weight_decay: float | None = None,
    schedule: Schedule | None = None,
    loss_fn: Callable | None = None,
    batch_loss: Callable | None = None,
    max_grad_norm: float | None = None,
    augment: str = DEFAULTS["augment"],
    seed: int | None = None,
    device: str | torch.device | DevicePath = "auto",
    checkpoint: str | Path | CheckpointPolicy | None = None,
    memory: MemoryPolicy | None = None,
    **moved: object,
) -> FitResult:
    """Train ``model`` on ``data`` with ``hparams``, pruning and early-stopping on validation.

    Args:
        model: The network; it is moved to ``device`` and trained in place.
        data: In-memory tensors (:func:`optuna_bs.load_data`; tensors already on ``device``
            are not copied again), a :class:`~optuna_bs.Datasets`, or a ``(train, val)`` pair
            of map-style torch Datasets. N is the number of training samples.
        hparams: Batch size B, learning rate and momentum (β1 for Adam; ``beta2`` and ``eps``
            are used when set).
        trial: The Optuna trial to report to and record user attrs on, or ``None``.
        max_epochs: The most epochs to train.
        patience: Epochs without improvement before early stopping; ``None`` for never.
        min_delta: The smallest improvement of the validation value that counts.
        metric: ``"error"`` (classification error), ``"loss"`` (validation loss), or a
            :class:`~optuna_bs.Metric` of your own, which says whether lower is better.
        optimizer: ``"sgd"`` (with momentum), ``"adam"``, ``"adamw"``, or a callable
            ``(params, hparams) -> torch.optim.Optimizer`` that uses ``hparams.lr``.
        weight_decay: L2 penalty (decoupled for AdamW) of a named optimizer; default
            ``hparams.weight_decay``, else 0. The optimizer's real weight decay, betas and
            eps are recorded on the trial (``weight_decay``, ``tau_epochs``, ``beta2``,
            ``eps``), with its name as ``optimizer``.
        schedule: What each epoch trains with (:mod:`optuna_bs.train.schedules`): epoch ``e``
            trains at ``schedule.at(e, hparams)``, and a per-step schedule (``Cosine``,
            ``Warmup(per_step=True)``) scales ϵ before every update. Each epoch's B, ϵ, m and
            g are recorded (``epoch_batch_size``, ...).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, the batch mean; default
            cross-entropy (classification) or MSE (regression).
        batch_loss: ``batch_loss(model, batch) -> scalar`` (the batch mean), for batches
            that are not ``(inputs, targets)`` pairs or target dicts; it replaces ``loss_fn``.
        max_grad_norm: Clip the gradient's total norm to this before each update.
        augment: ``"none"`` or ``"crop-flip"`` (random padded crop and flip, on the device).
        seed: Seed of the shuffling; ``None`` draws one from torch's global generator.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or a
            :class:`~optuna_bs.train.DevicePath` that adds precision, channels-last, compile
            and cuDNN's benchmark.
        checkpoint: A file to save the whole :class:`TrainingState` to at the end of every
            epoch, or a :class:`~optuna_bs.train.CheckpointPolicy` that also names one to
            resume from (of this run, or of a dead worker's trial).
        memory: A :class:`~optuna_bs.train.MemoryPolicy`: the micro-batch that makes B, what
            an out-of-memory error does, the validation batch. Default: b = B, halved on
            out of memory, so the trial keeps its B.
        **moved: The flat keywords of earlier releases (``precision``, ``channels_last``,
            ``compile``, ``cudnn_benchmark``, ``resume_from``, ``micro_batch_size``,
            ``on_oom``, ``eval_batch_size``), each taken into its group with a
            ``FutureWarning``.

    Returns:
        A :class:`FitResult`; the model holds the weights of its ``best_epoch``.

    Raises:
        optuna.TrialPruned: With a trial, when the pruner stops it, or when the loss is NaN
            or inf (``stop_reason="diverged"``), or out of memory (``stop_reason="oom"``).
            Without a trial these end the fit and are returned as its ``stop_reason``.
        TypeError: For an argument of the wrong type (a ``data`` that is not a source, a
            non-callable loss, Dataset items that cannot be unpacked).
        ValueError: For a bad value.
    """
    path, saving, memory = grouped(device, checkpoint, memory, moved)
    checkpoint, resume_from = saving.path, saving.resume_from
    on_oom, eval_batch_size = memory.on_oom, memory.eval_batch_size
    device = resolve_device(path.device)
    if isinstance(data, Data):
        data = place_data(data, device)
    source = as_source(data)
    weight_decay = _weight_decay(weight_decay, hparams)
    _check_fit_args(source, hparams, max_epochs, optimizer, weight_decay)
    _check_callables(loss_fn, batch_loss, max_grad_norm)
    # With a batch_loss and a validation loss, the items need not unpack (nor have a task).
    own_loss = batch_loss is not None and metric == "loss"
    if isinstance(source, DatasetSource):  # unusable items fail here, in one line
        source.check(needs_targets=not own_loss, has_batch_loss=batch_loss is not None)
    task = "regression" if own_loss else source.task
    loss_fn = loss_fn or default_loss(task)
    metric = resolve_metric(metric, task, loss_fn)
    rank, world_size = world()
    if world_size > 1:
        _check_distributed(trial, hparams, world_size)
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        warnings.warn(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']}, but torch.distributed is not initialized: "
            "this process trains alone (call optuna_bs.train.distributed.init_from_env() first).",
            stacklevel=2,
        )
    b = _check_micro_batch(memory.micro_batch_size, hparams.batch_size // world_size)
    accel = Accelerator(
        device, path.precision, path.channels_last, path.compile, augment, path.cudnn_benchmark
    )
    net = eval_net = accel.prepare(model)  # what runs forward; ``model`` holds the state
    if world_size > 1:  # also makes every rank start from rank 0's weights
        ids = None
        if device.type == "cuda":
            ids = [torch.cuda.current_device() if device.index is None else device.index]
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
    opt = _make_optimizer(optimizer, model, hparams, weight_decay)
    monitor = TrialMonitor(
        trial,
        patience=patience,
        min_delta=min_delta,
        metric=metric.name,
        direction=metric.direction,
        chance_value=_chance_error(source, metric),
    )
    seed = seed if seed is not None else int(torch.randint(2**62, ()).item())
    seed = broadcast(seed)  # every rank shuffles alike, and takes its share of each batch
    state = TrainingState(
        model=model,
        optimizer=opt,
        generator=torch.Generator(device=source.generator_device).manual_seed(seed),
        aug_generator=torch.Generator(device=device).manual_seed(seed + 1),
        accelerator=accel,
        monitor=monitor,
        micro_cap=b,
        lr_base=[g["lr"] for g in opt.param_groups],
        owner=owner_of(trial),
    )
    if checkpoint is not None and rank == 0:  # rank 0 alone writes it
        check_writable(checkpoint)  # before an epoch of training, not after it
    resumed_from_epoch = 0
    if resume_from is not None:
        state.load(resume_from)
        resumed_from_epoch = monitor.epoch_
        _logger.info("Resuming from epoch %d of %s.", resumed_from_epoch, resume_from)
    if eval_batch_size is None:
        eval_batch_size = (
            4096 if isinstance(source, TensorSource) else max(256, hparams.batch_size)
        )
        if state.micro_cap is not None:  # B does not fit: neither would a bigger eval batch
            eval_batch_size = min(eval_batch_size, 2 * state.micro_cap)
    loop = EpochLoop(
        state,
        net,
        source,
        hparams,
        schedule,
        loss_fn,
        batch_loss,
        max_grad_norm,
        on_oom,
        Validator(source, metric, batch_loss, accel, eval_batch_size, "val"),
        eval_net=eval_net,
        shard=(rank, world_size),
    )
    monitor.attrs.update(resumed_from_epoch=resumed_from_epoch, world_size=world_size)
    monitor.attrs.update(optimizer_attrs(opt, hparams))
    try:
        loop.run(max_epochs, checkpoint, resuming=resume_from is not None)
    finally:
        if world_size > 1:
            # A DistributedDataParallel left to the garbage collector can outlive its process
            # group (destroyed by the caller), and then aborts the process.
            loop.net = net = None
            gc.collect()
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    attrs = monitor.finish()
    outcome = FitResult(
        best_value=monitor.best_value_,
        best_epoch=monitor.best_epoch_,
        epochs_run=monitor.epoch_,
        n_updates=monitor.n_updates_,
        train_seconds=attrs["train_seconds"],
        samples_per_second=attrs["samples_per_second"],
        stop_reason=attrs["stop_reason"],
        metric=metric.name,
        history=tuple(monitor.history_),
        resumed_from_epoch=resumed_from_epoch,
        schedule_path=tuple(loop.path),
        micro_batch_size=loop.micro_batch_size,
        accumulation_steps=loop.accumulation,
    )
    _logger.debug("fit ended: %s", outcome)
    return outcome


def _check_distributed(trial, hparams: Hyperparameters, world_size: int) -> None:
    """Under ``torch.distributed``: a trial every rank shares, and a B that K divides."""
    if trial is not None and not is_distributed_trial(trial):
        raise ValueError(
            f"`trial` must be shared by all {world_size} ranks under torch.distributed (an "
            "optuna_integration.TorchDistributedTrial, as optuna_bs.train.optimize "
            "gives every rank), or every rank would prune on its own."
        )
    plan_batch(hparams.batch_size, world_size=world_size)  # a clear error if K does not divide B


def _chance_error(source, metric: Metric) -> float | None:
    """The error of guessing, 1 − 1/C, where the metric is the error and C is known."""
    if metric.name != "val_error":
        return None
    tensors = isinstance(source, TensorSource)
    classes = source.data.n_outputs if tensors else source.datasets.known_n_outputs()
    return 1 - 1 / classes if classes and classes > 1 else None


def _check_micro_batch(value: int | str, batch_size: int) -> int | None:
    if value == "auto":  # (its type and sign: MemoryPolicy's)
        return None
    if batch_size % value:
        raise ValueError(
            f"`micro_batch_size` must divide batch_size={batch_size}, but got "
            f"micro_batch_size={value}."
        )
    return value


def _check_callables(loss_fn, batch_loss, max_grad_norm) -> None:
    for arg, fn in (("loss_fn", loss_fn), ("batch_loss", batch_loss)):
        if fn is not None and not callable(fn):
            raise TypeError(f"`{arg}` must be callable or None, but got {arg}={fn!r}.")
    if loss_fn is not None and batch_loss is not None:
        raise ValueError("Give `loss_fn` or `batch_loss`, not both: batch_loss replaces it.")
    if max_grad_norm is not None:
        check_real("max_grad_norm", max_grad_norm, 0.0, low_open=True, finite=False)


def _check_fit_args(source, hparams, max_epochs, optimizer, weight_decay) -> None:
    check_int("max_epochs", max_epochs, low=1)
    if not callable(optimizer) and optimizer not in OPTIMIZERS:
        raise ValueError(
            f"`optimizer` must be one of {OPTIMIZERS} or a callable (params, hparams) -> "
            f"Optimizer, but got {optimizer!r}."
        )
    if not weight_decay >= 0:
        raise ValueError(f"`weight_decay` must be >= 0, but got weight_decay={weight_decay!r}.")
    if hparams.batch_size > source.n_train:
        raise ValueError(
            f"`batch_size` must be at most the {source.n_train} training samples, "
            f"but got batch_size={hparams.batch_size}."
        )
    if hparams.n_train != source.n_train:
        _logger.warning(
            "hparams.n_train=%d differs from the data's %d training samples: the noise scale "
            "recorded for this run is not the one it trains at.",
            hparams.n_train,
            source.n_train,
        )
