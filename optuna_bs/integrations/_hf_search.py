"""The coupled space as the Hugging Face Trainer's ``hp_space``: ``TrainingArguments`` values
for each trial (:func:`hp_space`), the best run's back for retraining (:func:`training_args`),
and the trial as the callback's monitor sees it while the Trainer's own reports are ignored."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import optuna

from optuna_bs.rules.batch import plan_batch

if TYPE_CHECKING:
    from collections.abc import Mapping

    from optuna.trial import BaseTrial
    from transformers import TrainingArguments
    from transformers.trainer_utils import BestRun

    from optuna_bs.rules.formulas import Hyperparameters
    from optuna_bs.search.space import BatchScalingSpace


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


def mute(trial: optuna.trial.Trial) -> _EpochTrial:
    """Ignore the Trainer's own ``trial.report`` and ``trial.should_prune`` (at its global
    step); the trial returned reaches the real ones, for the callback's epoch reports."""
    trial.report, trial.should_prune = (lambda value, step: None), (lambda: False)
    return _EpochTrial(trial)


def unmute(trial: optuna.trial.Trial | None) -> None:
    """Give the Trainer's own ``report`` and ``should_prune`` back to ``trial``."""
    for name in ("report", "should_prune"):
        getattr(trial, "__dict__", {}).pop(name, None)
