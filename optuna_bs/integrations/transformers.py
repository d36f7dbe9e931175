"""The coupled search inside the Hugging Face ``Trainer``'s ``hyperparameter_search``.

::

    from optuna_bs.integrations.transformers import TrialCallback, hp_space

    space = optuna_bs.BatchScalingSpace(n_train=len(train), parameterisation="adam-sqrt",
                                        optimizer="adamw", tau_epochs=(1, 100))
    search = hp_space(space, max_micro_batch=16)
    callback = TrialCallback(search, metric="eval_loss", patience=3)
    trainer = Trainer(model_init=make_model, args=TrainingArguments(eval_strategy="epoch", ...),
                      train_dataset=train, eval_dataset=val, callbacks=[callback])
    best = trainer.hyperparameter_search(
        backend="optuna", hp_space=search, compute_objective=callback.compute_objective,
        n_trials=20, direction="minimize", storage="sqlite:///bert.db", study_name="bert")

:func:`hp_space` maps the space onto ``TrainingArguments``: ``per_device_train_batch_size`` ×
``gradient_accumulation_steps`` × world size = B; ``learning_rate``, ``adam_beta1`` (the
space's momentum), ``adam_beta2``, ``adam_epsilon`` and ``weight_decay`` (from τ, where the
space tunes AdamW's timescale).

:class:`TrialCallback` checks that the Trainer trains at B, reports each evaluation to the
trial as its epoch (so it takes ``eval_strategy="epoch"`` only: evaluations every
``eval_steps`` updates would compare a small B with a large one after different amounts of
data), prunes and early-stops through :class:`~optuna_bs.TrialMonitor`, and records the same
user attrs as :func:`optuna_bs.fit`. The Trainer itself reports at its global
step, which differs from one batch size to another: a pruner comparing trials at one step
then compares runs that have seen different amounts of data, or finds none to compare with.
So while the callback is in charge, the Trainer's own ``trial.report`` and
``trial.should_prune`` calls are ignored, and the callback's epoch reports alone reach the
study. Under DDP (``torchrun``) the Trainer gives the trial to rank 0 only: the callback
broadcasts rank 0's verdict, every rank stops at the same epoch, and rank 0 then raises
:class:`optuna.TrialPruned` (the Trainer's own pruning stops rank 0 alone, and the others
hang). ``compute_objective=callback.compute_objective`` makes the trial's value its best
evaluation's, as ``fit`` does.

To retrain the best run, :func:`training_args` turns ``best`` back into ``TrainingArguments``
(``best.hyperparameters`` are what the space sampled, not ``TrainingArguments`` fields)::

    trainer = Trainer(model_init=make_model, args=training_args(best, search, args), ...)
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any

import optuna

from optuna_bs.integrations._hf_checks import (
    _check_accumulation_scaling,
    _check_eval_strategy,
    _dummy_batches,
    _loss_ignores_item_count,
    _passes_item_count,
    _scaled_gradient_error,
)
from optuna_bs.rules.batch import check_effective_batch, plan_batch
from optuna_bs.train.distributed import broadcast, leave_at_exit
from optuna_bs.train.monitor import TrialMonitor

try:
    from transformers import TrainerCallback
except ImportError as err:
    raise ImportError(
        "optuna_bs.integrations.transformers needs transformers: "
        'pip install "optuna-bs[transformers]"'
    ) from err

if TYPE_CHECKING:
    from collections.abc import Mapping

    from optuna.trial import BaseTrial
    from transformers import TrainingArguments
    from transformers.trainer_utils import BestRun

    from optuna_bs.rules.formulas import Hyperparameters
    from optuna_bs.search.space import BatchScalingSpace

__all__ = [
    "HpSpace",
    "TrialCallback",
    "hp_space",
    "training_args",
]

_logger = logging.getLogger(__name__)


class HpSpace:
    """The ``hp_space`` callable of ``Trainer.hyperparameter_search``: see :func:`hp_space`.

    After each call, :attr:`trial` and :attr:`hparams` are the trial it was called with and
    what the space derived for it (the :class:`TrialCallback` reads them).
    """

    def __init__(
        self,
        space: BatchScalingSpace,
        *,
        max_micro_batch: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if space.family == "sgd" or "adam" not in space.rule.optimizers:
            raise ValueError(
                "The Trainer trains with AdamW by default: give hp_space a space with "
                "parameterisation='adam-sqrt' (and optimizer='adamw'), not an SGD rule."
            )
        self.space = space
        self.max_micro_batch = max_micro_batch
        self.world_size = world_size
        self.trial: BaseTrial | None = None
        self.hparams: Hyperparameters | None = None

    def __call__(self, trial: BaseTrial) -> dict[str, Any]:
        hp = self.space.suggest(trial)
        self.trial, self.hparams = trial, hp
        return self.arguments(hp, self.world_size or int(os.environ.get("WORLD_SIZE", "1")))

    def arguments(self, hp: Hyperparameters, world_size: int) -> dict[str, Any]:
        """The ``TrainingArguments`` values that train ``hp`` on ``world_size`` processes."""
        plan = plan_batch(hp.batch_size, self.max_micro_batch, world_size)
        params: dict[str, Any] = {
            "per_device_train_batch_size": plan.per_device,
            "gradient_accumulation_steps": plan.accumulation,
            "learning_rate": hp.lr,
            "adam_beta1": hp.momentum,
            "weight_decay": hp.weight_decay or 0.0,
        }
        if hp.beta2 is not None:
            params["adam_beta2"] = hp.beta2
        if hp.eps is not None:
            params["adam_epsilon"] = hp.eps
        return params

    def accumulates(self, world_size: int) -> bool:
        """Whether some batch size of the space needs gradient accumulation on ``world_size``
        processes (B / world size over ``max_micro_batch``)."""
        if self.max_micro_batch is None:
            return False
        return max(self.space.batch_sizes) // world_size > self.max_micro_batch


def hp_space(
    space: BatchScalingSpace,
    *,
    max_micro_batch: int | None = None,
    world_size: int | None = None,
) -> HpSpace:
    """The coupled space as ``Trainer.hyperparameter_search(backend="optuna", hp_space=...)``.

    Args:
        space: An Adam-family space (``parameterisation="adam-sqrt"``).
        max_micro_batch: The largest per-device batch that fits in memory; the rest of B is
            made by gradient accumulation. ``None``: B / world size on each device.
        world_size: The processes that train one update; default ``$WORLD_SIZE`` or 1.

    Raises:
        ValueError: If the space is an SGD rule (the Trainer's optimizer is AdamW).
    """
    return HpSpace(space, max_micro_batch=max_micro_batch, world_size=world_size)


def training_args(
    best: BestRun | Mapping[str, Any], search: HpSpace, args: TrainingArguments
) -> TrainingArguments:
    """``args`` with the best run's training values set, as its trial trained: to retrain it.

    ``BestRun.hyperparameters`` holds what the space *sampled* (``log2_batch_size``, the
    reference lr, ``tau_epochs``, ...), not ``TrainingArguments`` fields, so setting them on
    ``trainer.args`` trains at the defaults. This derives, as :func:`hp_space` did for the
    trial, the per-device batch and gradient accumulation that make B (on ``args``' world size,
    unless ``hp_space`` was given one), the learning rate, β1, β2, eps and the weight decay::

        best = trainer.hyperparameter_search(backend="optuna", hp_space=search, ...)
        trainer = Trainer(model_init=make_model, args=training_args(best, search, args), ...)
        trainer.train()

    Args:
        best: What ``hyperparameter_search`` returned, or the trial's ``params``.
        search: The :func:`hp_space` the search ran with.
        args: The ``TrainingArguments`` to start from; it is copied, never changed.

    Raises:
        TypeError: If ``search`` is not an :func:`hp_space`.
        ValueError: If ``best`` lacks a parameter of the space.
    """
    import copy

    if not isinstance(search, HpSpace):
        raise TypeError(
            "`search` must be the hp_space(space) the search ran with, but got an object of "
            f"type {type(search).__name__!r}."
        )
    params = dict(getattr(best, "hyperparameters", best))
    try:
        hp = search.space.suggest(optuna.trial.FixedTrial(params))
    except ValueError as err:
        raise ValueError(
            f"`best` must hold the searched parameters of the space, but got {params}: {err}"
        ) from err
    retrain = copy.deepcopy(args)
    for key, value in search.arguments(hp, search.world_size or args.world_size).items():
        old = getattr(retrain, key)
        setattr(retrain, key, value if old is None else type(old)(value))  # as the Trainer does
    return retrain


def _ignore_report(value: float, step: int) -> None:
    """The Trainer's own report, at its global step: dropped (see the module docstring)."""


def _never_prune() -> bool:
    return False


class _EpochTrial:
    """The real trial, as the monitor sees it while the Trainer's calls are ignored."""

    def __init__(self, trial: optuna.trial.Trial) -> None:
        self._trial = trial
        self.study = trial.study
        self.number = trial.number

    def report(self, value: float, step: int) -> None:
        type(self._trial).report(self._trial, value, step)

    def should_prune(self) -> bool:
        return type(self._trial).should_prune(self._trial)

    def set_user_attr(self, key: str, value: Any) -> None:
        self._trial.set_user_attr(key, value)


class TrialCallback(TrainerCallback):
    """Report, prune, early-stop and record the trial of ``Trainer.hyperparameter_search``.

    Args:
        search: The :func:`hp_space` given to ``hyperparameter_search``.
        metric: The evaluation metric to tune and prune on (``"eval_loss"``, or
            ``"eval_<name>"`` of ``compute_metrics``).
        direction: ``"minimize"`` or ``"maximize"``, as ``hyperparameter_search``'s.
        patience: Evaluations without improvement before stopping; ``None`` never.
        min_delta: The improvement that counts.

    Raises:
        ValueError: When the Trainer is built (before any trial), if ``eval_strategy`` is
            not ``"epoch"`` (each evaluation is reported as an epoch); if ``model_init()``'s
            loss ignores ``num_items_in_batch`` and the search accumulates gradients: the
            Trainer would scale each update; set ``model.accepts_loss_kwargs = False`` in
            ``model_init``. When training begins, if per-device batch × gradient accumulation
            × world size is not the trial's B; at an evaluation without ``metric``.
    """

    def __init__(
        self,
        search: HpSpace,
        *,
        metric: str = "eval_loss",
        direction: str = "minimize",
        patience: int | None = None,
        min_delta: float = 0.0,
    ) -> None:
        if not isinstance(search, HpSpace):
            raise TypeError(
                "`search` must be the hp_space(space) given to hyperparameter_search, but got "
                f"an object of type {type(search).__name__!r}."
            )
        self.search = search
        self.metric, self.direction = metric, direction
        self.patience, self.min_delta = patience, min_delta
        self.monitor: TrialMonitor | None = None
        self._trial: optuna.trial.Trial | None = None
        self._last_step, self._busy, self._losses = 0, 0.0, []
        self._tic: float | None = None
        # Whether the Trainer passes num_items_in_batch (read when it was built); None: unknown.
        self._passes_counts: bool | None = None

    # --- the Trainer's hooks --------------------------------------------------------------

    def on_init_end(self, args, state, control, model=None, **kwargs) -> None:
        """Check, as the Trainer is built and before any trial, what would spoil every trial.

        The Trainer decides here, once, from ``model_init()``'s model, whether it passes
        ``num_items_in_batch`` to the model's loss; if that loss ignores it and the search
        accumulates gradients (or runs on several processes), every such update would be too
        large. The loss is probed on the model's dummy inputs; where it cannot be, the first
        trial probes a training batch instead.

        Raises:
            ValueError: For a model whose loss ignores ``num_items_in_batch`` when the
                Trainer would rely on it (set ``model.accepts_loss_kwargs = False`` in
                ``model_init``).
        """
        _check_eval_strategy(args)
        if model is None:
            return
        self._passes_counts = _passes_item_count(model)
        world_size = self.search.world_size or args.world_size
        if not self._passes_counts or (world_size == 1 and not self.search.accumulates(1)):
            return
        for batch in _dummy_batches(model):
            try:
                ignored = _loss_ignores_item_count(model, batch)
            except Exception:  # labels of another shape: try the next, or leave it to training
                continue
            if ignored:
                raise _scaled_gradient_error(model)
            if ignored is not None:
                return

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        trial, hp = self.search.trial, self.search.hparams
        if hp is None:
            if state.trial_params is not None:  # a search, but not through this space
                raise ValueError(
                    "The Trainer runs a hyperparameter search, but not with this callback's "
                    "space: give hyperparameter_search hp_space=search, the hp_space(...) "
                    "that TrialCallback was built with."
                )
            self.monitor = None  # a plain train(), outside any search: nothing to record
            return
        _check_eval_strategy(args)
        if self._passes_counts is not False and (
            args.gradient_accumulation_steps > 1 or args.world_size > 1
        ):
            _check_accumulation_scaling(kwargs.get("model"), kwargs.get("train_dataloader"))
        plan = check_effective_batch(
            hp.batch_size,
            args.per_device_train_batch_size,
            args.gradient_accumulation_steps,
            args.world_size,
        )
        if args.world_size > 1:
            leave_at_exit()  # the Trainer's process group, destroyed before the interpreter
        shared = None
        if isinstance(trial, optuna.trial.Trial):
            shared = _EpochTrial(trial)
            trial.report, trial.should_prune = _ignore_report, _never_prune
            self._trial = trial
        self.monitor = TrialMonitor(
            shared,
            patience=self.patience,
            min_delta=self.min_delta,
            metric=self.metric,
            direction=self.direction,
        )
        self.monitor.attrs.update(
            micro_batch_size=plan.per_device,
            accumulation_steps=plan.accumulation,
            world_size=plan.world_size,
            resumed_from_epoch=0,
        )
        optimizer = kwargs.get("optimizer")
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
        if optimizer is not None and hasattr(optimizer, "param_groups"):
            from optuna_bs.train.optimizers import optimizer_attrs

            self.monitor.attrs.update(optimizer_attrs(optimizer, hp))
        self._last_step, self._busy, self._losses = state.global_step, 0.0, []
        self._tic: float | None = None

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        if self.monitor is not None:
            self._tic = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if self._tic is not None:
            self._busy += time.perf_counter() - self._tic
            self._tic = None

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if self.monitor is not None and logs and "loss" in logs:
            loss = float(logs["loss"])
            if self.monitor.reference_loss_ is None and math.isfinite(loss):
                self.monitor.reference_loss_ = loss
            self._losses.append(loss)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        metrics = metrics or {}
        if self.metric not in metrics:
            raise ValueError(
                f"`metric` is {self.metric!r}, but the evaluation gave only {sorted(metrics)}."
            )
        train_loss = sum(self._losses) / len(self._losses) if self._losses else None
        updates = state.global_step - self._last_step
        stop = monitor.end_epoch(
            float(metrics[self.metric]),
            train_loss=train_loss,
            updates=updates,
            samples=updates * self.search.hparams.batch_size,
            step_seconds=self._busy,
            share=broadcast if args.world_size > 1 else None,
            defer_prune=True,  # raised once training has ended: every rank stops together
        )
        self._last_step, self._busy, self._losses = state.global_step, 0.0, []
        if stop:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self._release()
        if self.monitor is None:
            return
        self.monitor.finish()
        pruned, self.monitor.pruned_ = self.monitor.pruned_, None
        if pruned is not None:
            raise pruned

    def _release(self) -> None:
        """Give the Trainer's own report and should_prune back to the trial."""
        if self._trial is not None:
            for name in ("report", "should_prune"):
                self._trial.__dict__.pop(name, None)
            self._trial = None

    # --- the trial's value ----------------------------------------------------------------

    def compute_objective(self, metrics: dict[str, float]) -> float:
        """``hyperparameter_search(compute_objective=...)``: the best evaluation so far of
        ``metric``, so the trial completes with its best epoch's value."""
        if self.monitor is None or not self.monitor.history_:
            return float(metrics[self.metric])
        return self.monitor.best_value_
