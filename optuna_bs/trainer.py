"""``fit()``: train a model on in-memory tensors, epoch by epoch, under an Optuna trial.

Each epoch it shuffles the training tensors on the device, steps the optimizer over full
batches of ``hparams.batch_size`` (slices of the shuffled tensors, no DataLoader), measures the
validation value and hands it to :class:`~optuna_bs.monitor.TrialMonitor`, which reports it,
prunes and early-stops. At the end the best epoch's weights are restored and the trial's user
attrs record what happened (``best_epoch``, ``epochs_run``, ``n_updates``, ``train_seconds``,
``samples_per_second``, ``stop_reason``, ``metric``).
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch
import torch.nn.functional as F

from optuna_bs._accelerate import Accelerator
from optuna_bs.monitor import TrialMonitor
from optuna_bs.rules import Hyperparameters

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

    from optuna_bs.data import Data
    from optuna_bs.schedules import Schedule

__all__ = [
    "FitResult",
    "fit",
    "evaluate",
    "place_data",
    "resolve_device",
    "METRICS",
    "OPTIMIZERS",
]

_logger = logging.getLogger(__name__)

METRICS = ("error", "loss")
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class FitResult:
    """What one call of :func:`fit` did.

    ``best_value`` is the validation value (error or loss) of ``best_epoch``, whose weights
    the model holds when ``fit`` returns. ``samples_per_second`` counts training samples over
    the time spent in optimizer steps only; ``train_seconds`` is the whole fit, validation
    included.
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
        if self.schedule_path:
            for name in ("batch_size", "lr", "momentum", "noise_scale"):
                attrs[f"epoch_{name}"] = [getattr(h, name) for h in self.schedule_path]
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
        _free_memory(device)
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


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    metric: str = "error",
    task: str = "classification",
    batch_size: int = 4096,
) -> float:
    """Return the classification error or the mean loss of ``model`` on ``(x, y)``."""
    return _evaluate(model, x, y, metric, task, Accelerator(x.device), batch_size)


@torch.no_grad()
def _evaluate(model, x, y, metric, task, accel: Accelerator, batch_size: int = 4096) -> float:
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=accel.device, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        with accel.autocast():
            out = model(accel.inputs(x[start : start + batch_size], train=False))
        target = y[start : start + batch_size].to(accel.device, non_blocking=True)
        if metric == "error":
            total += (out.argmax(dim=1) != target).sum()
        else:
            total += _loss(out.float(), target, task, reduction="sum")
    model.train(was_training)
    return total.item() / len(x)


def fit(
    model: torch.nn.Module,
    data: Data,
    hparams: Hyperparameters,
    *,
    trial: BaseTrial | None = None,
    max_epochs: int = 20,
    patience: int | None = None,
    min_delta: float = 0.0,
    device: str | torch.device = "auto",
    metric: str = "error",
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    resume_from: str | Path | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    augment: str = "none",
    cudnn_benchmark: bool = False,
    schedule: Schedule | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` with ``hparams``, pruning and early-stopping on validation.

    Args:
        model: The network; it is moved to ``device`` and trained in place.
        data: Train, validation and test tensors (:func:`optuna_bs.load_data`). Tensors already
            on ``device`` are not copied again, so a worker can move them once.
        hparams: Batch size, learning rate and momentum (β1 for Adam; ``beta2`` and ``eps``
            are used when set).
        trial: The Optuna trial to report to and record user attrs on, or ``None``.
        max_epochs: The most epochs to train.
        patience: Epochs without improvement before early stopping; ``None`` for never.
        min_delta: The smallest decrease of the validation value that counts as improvement.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        metric: ``"error"`` (classification error) or ``"loss"`` (validation loss, for
            regression or autoencoders).
        optimizer: ``"sgd"`` (with momentum), ``"adam"`` or ``"adamw"``.
        weight_decay: L2 penalty (decoupled for AdamW).
        seed: Seed of the shuffling; ``None`` draws one from torch's global generator.
        checkpoint: A file to save the whole training state to at the end of every epoch
            (model, optimizer, epoch, random states, best-so-far), replaced atomically.
        resume_from: A checkpoint (of this run, or of a dead worker's trial) to continue
            from: training goes on at the epoch after the saved one. Loaded with
            ``weights_only=True``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; a GradScaler for fp16).
        channels_last: NHWC memory format for image models.
        compile: ``torch.compile`` the model.
        augment: ``"none"`` or ``"crop-flip"`` (random padded crop and flip, on the device).
        cudnn_benchmark: let cuDNN choose convolution algorithms for the fixed shapes.
        schedule: What each epoch trains with (:mod:`optuna_bs.schedules`): the batch size,
            lr and momentum of epoch ``e`` are ``schedule.at(e, hparams)``. Each epoch's B, ϵ,
            m and g are recorded (``epoch_batch_size``, ``epoch_lr``, ``epoch_momentum``,
            ``epoch_noise_scale``), and ``n_updates`` counts the updates they make.

    Returns:
        A :class:`FitResult`; the model holds the weights of its ``best_epoch``.

    Raises:
        optuna.TrialPruned: With a trial, when the pruner stops it, or when the loss is NaN
            or inf (``stop_reason="diverged"``), or on a CUDA out-of-memory error
            (``stop_reason="oom"``). Without a trial these end the fit and are returned as its
            ``stop_reason``.
        ValueError: For a bad argument.
    """
    _check_fit_args(data, hparams, max_epochs, metric, optimizer, weight_decay)
    device = resolve_device(device)
    accel = Accelerator(device, precision, channels_last, compile, augment, cudnn_benchmark)
    data = place_data(data, device)
    net = accel.prepare(model)  # what runs forward; ``model`` holds the state
    opt = _make_optimizer(optimizer, model, hparams, weight_decay)
    metric_name = f"val_{metric}"
    monitor = TrialMonitor(trial, patience=patience, min_delta=min_delta, metric=metric_name)
    seed = seed if seed is not None else int(torch.randint(2**62, ()).item())
    gen = torch.Generator(device=data.x_train.device)  # shuffles where the data lives
    gen.manual_seed(seed)
    aug_gen = torch.Generator(device=device)  # augments where the batch lives
    aug_gen.manual_seed(seed + 1)

    if schedule is not None:
        schedule.on_fit_start(hparams, max_epochs)
    path: list[Hyperparameters] = []
    best_state = None
    n_updates, n_samples, step_seconds, seconds_before, resumed_from_epoch = 0, 0, 0.0, 0.0, 0
    should_stop = False
    start = time.perf_counter()
    if resume_from is not None:
        state = _load_checkpoint(resume_from)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        aug_gen.set_state(state["aug_generator"])
        accel.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        monitor.load_state_dict(state["monitor"])
        best_state = state["best_state"]
        n_updates, step_seconds = state["n_updates"], state["step_seconds"]
        n_samples = state["n_samples"]
        seconds_before = state["seconds"]
        resumed_from_epoch = monitor.epoch_
        _logger.info("Resuming from epoch %d of %s.", resumed_from_epoch, resume_from)

    def result(stop_reason: str) -> FitResult:
        return FitResult(
            best_value=monitor.best_value_,
            best_epoch=monitor.best_epoch_,
            epochs_run=monitor.epoch_,
            n_updates=n_updates,
            train_seconds=seconds_before + time.perf_counter() - start,
            samples_per_second=n_samples / step_seconds if step_seconds else 0.0,
            stop_reason=stop_reason,
            metric=metric_name,
            history=tuple(monitor.history_),
            resumed_from_epoch=resumed_from_epoch,
            schedule_path=tuple(path) if schedule is not None else (),
        )

    try:
        if resume_from is not None:
            with warnings.catch_warnings():  # the saved epoch may have been reported already
                warnings.simplefilter("ignore", UserWarning)
                should_stop = monitor.check()
        if schedule is not None:  # the path so far, for a resumed fit
            path = [schedule.at(e, hparams) for e in range(monitor.epoch_)]
        for epoch in range(monitor.epoch_, max_epochs):
            if should_stop:
                break
            setting = hparams if schedule is None else schedule.at(epoch, hparams)
            if schedule is not None:
                path.append(setting)
                _set_hyperparameters(opt, setting)
            batch_size = setting.batch_size
            steps_per_epoch = data.n_train // batch_size  # full batches: B is what g assumes
            tic = time.perf_counter()
            try:
                train_loss = _train_epoch(
                    net, opt, data, batch_size, steps_per_epoch, gen, accel, aug_gen
                )
            except torch.cuda.OutOfMemoryError:
                train_loss = None
            step_seconds += time.perf_counter() - tic
            if train_loss is None:
                # Freed here, outside the except block whose traceback pins the batch.
                _free_memory(device)
                monitor.stop("oom", f"out of memory at batch_size={batch_size}")
                break
            n_updates += steps_per_epoch
            n_samples += steps_per_epoch * batch_size
            # A non-finite training loss goes to the monitor as is: it ends the run "diverged".
            val = train_loss
            if math.isfinite(train_loss):
                val = _evaluate(net, data.x_val, data.y_val, metric, data.task, accel)
            monitor.update(val)
            if monitor.improved_:
                best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                # Saved before the value is reported: a worker killed in between re-reports it.
                _save_checkpoint(
                    checkpoint,
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "generator": gen.get_state(),
                        "aug_generator": aug_gen.get_state(),
                        "scaler": accel.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "monitor": monitor.state_dict(),
                        "best_state": best_state,
                        "n_updates": n_updates,
                        "n_samples": n_samples,
                        "step_seconds": step_seconds,
                        "seconds": seconds_before + time.perf_counter() - start,
                    },
                )
            should_stop = monitor.check()
    except optuna.TrialPruned:
        # The monitor has already written stop_reason and metric: one DB write each saved.
        _record(trial, result(monitor.stop_reason_ or "pruned"), skip=("stop_reason", "metric"))
        raise

    if best_state is not None:
        model.load_state_dict(best_state)
    outcome = result(monitor.stop_reason_ or "completed")
    _record(trial, outcome)
    _logger.debug("fit ended: %s", outcome)
    return outcome


def _save_checkpoint(path: str | Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous epoch's checkpoint


def _load_checkpoint(path: str | Path) -> dict:
    try:
        # weights_only: a checkpoint is data, never code to run.
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ValueError(
            f"`resume_from` must be a checkpoint file, but {path} does not exist."
        ) from err


def _train_epoch(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: Data,
    batch_size: int,
    steps: int,
    gen: torch.Generator,
    accel: Accelerator,
    aug_gen: torch.Generator,
) -> float:
    """One pass over shuffled full batches; the mean training loss (one device sync)."""
    net.train()
    perm = torch.randperm(data.n_train, generator=gen, device=data.x_train.device)
    # One gather per epoch, then contiguous slices: cheaper than indexing every step.
    xs, ys = data.x_train[perm], data.y_train[perm]
    if xs.device.type == "cpu" and accel.device.type == "cuda":
        xs, ys = xs.pin_memory(), ys.pin_memory()  # slices then copy without blocking
    loss_sum = torch.zeros((), device=accel.device)
    for i in range(0, steps * batch_size, batch_size):
        x = accel.inputs(xs[i : i + batch_size], train=True, generator=aug_gen)
        y = ys[i : i + batch_size].to(accel.device, non_blocking=True)
        with accel.autocast():
            loss = _loss(net(x), y, data.task)
        accel.step(loss, opt)
        loss_sum += loss.detach().float()
    return loss_sum.item() / steps


def _set_hyperparameters(opt: torch.optim.Optimizer, setting: Hyperparameters) -> None:
    """Give the optimizer the epoch's lr and momentum (β1 for Adam)."""
    for group in opt.param_groups:
        group["lr"] = setting.lr
        if "momentum" in group:
            group["momentum"] = setting.momentum
        elif "betas" in group:
            group["betas"] = (setting.momentum, group["betas"][1])


def _loss(out: torch.Tensor, target: torch.Tensor, task: str, reduction: str = "mean"):
    if task == "classification":
        return F.cross_entropy(out, target, reduction=reduction)
    return F.mse_loss(out, target, reduction=reduction)


def _make_optimizer(
    name: str, model: torch.nn.Module, hp: Hyperparameters, weight_decay: float
) -> torch.optim.Optimizer:
    params = model.parameters()
    if name == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=weight_decay)
    adam_kwargs = {"betas": (hp.momentum, 0.999 if hp.beta2 is None else hp.beta2)}
    if hp.eps is not None:
        adam_kwargs["eps"] = hp.eps
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=hp.lr, weight_decay=weight_decay, **adam_kwargs)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _record(trial: BaseTrial | None, outcome: FitResult, skip: tuple[str, ...] = ()) -> None:
    if trial is None:
        return
    for key, value in outcome.user_attrs().items():
        if key not in skip:
            trial.set_user_attr(key, value)


def _check_fit_args(data, hparams, max_epochs, metric, optimizer, weight_decay) -> None:
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(
            f"`max_epochs` must be an integer >= 1, but got max_epochs={max_epochs!r}."
        )
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, but got metric={metric!r}.")
    if metric == "error" and data.task != "classification":
        raise ValueError(
            f"`metric` is 'error', but the data set {data.name!r} is a {data.task} task: "
            "use metric='loss'."
        )
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, but got {optimizer!r}.")
    if not weight_decay >= 0:
        raise ValueError(f"`weight_decay` must be >= 0, but got weight_decay={weight_decay!r}.")
    if hparams.batch_size > data.n_train:
        raise ValueError(
            f"`batch_size` must be at most the {data.n_train} training samples, "
            f"but got batch_size={hparams.batch_size}."
        )
    if hparams.n_train != data.n_train:
        _logger.warning(
            "hparams.n_train=%d differs from the data's %d training samples: the noise scale "
            "recorded for this run is not the one it trains at.",
            hparams.n_train,
            data.n_train,
        )
