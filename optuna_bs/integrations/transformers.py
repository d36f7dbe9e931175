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

:class:`TrialCallback` checks that the Trainer trains at B and takes, at each evaluation, the
end-of-epoch decision that ``fit`` takes (:meth:`~optuna_bs.TrialMonitor.end_epoch`), so it
takes ``eval_strategy="epoch"`` only: evaluations every ``eval_steps`` updates would compare a
small B with a large one after different amounts of data. For the same reason the Trainer's
own ``trial.report`` and ``should_prune`` (at its global step) are ignored while the callback
is in charge. Under DDP (``torchrun``) every rank takes rank 0's decision, stops at the same
epoch, and rank 0 then raises :class:`optuna.TrialPruned`.
``compute_objective=callback.compute_objective`` makes the trial's value its best
evaluation's, as ``fit`` does.

To retrain the best run, :func:`training_args` turns ``best`` back into ``TrainingArguments``
(``best.hyperparameters`` are what the space sampled, not ``TrainingArguments`` fields)::

    trainer = Trainer(model_init=make_model, args=training_args(best, search, args), ...)
"""

from __future__ import annotations

import optuna

from optuna_bs.integrations._hf_checks import (
    _check_accumulation_scaling,
    _check_eval_strategy,
    check_model,
)
from optuna_bs.integrations._hf_search import HpSpace, hp_space, mute, training_args, unmute
from optuna_bs.rules.batch import check_effective_batch
from optuna_bs.train._tally import EpochTally
from optuna_bs.train.distributed import broadcast, leave_at_exit
from optuna_bs.train.monitor import TrialMonitor
from optuna_bs.train.optimizers import optimizer_attrs

try:
    from transformers import TrainerCallback
except ImportError as err:
    raise ImportError(
        "optuna_bs.integrations.transformers needs transformers: "
        'pip install "optuna-bs[transformers]"'
    ) from err

__all__ = ["HpSpace", "TrialCallback", "hp_space", "training_args"]


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
            not ``"epoch"``, or if the search accumulates gradients and ``model_init()``'s
            loss ignores ``num_items_in_batch`` (the Trainer would scale each update; set
            ``model.accepts_loss_kwargs = False`` in ``model_init``). When training begins,
            if per-device batch × accumulation × world size is not the trial's B; at an
            evaluation without ``metric``.
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
        self.tally: EpochTally | None = None
        self._trial: optuna.trial.Trial | None = None
        # Whether the Trainer passes num_items_in_batch (read when it was built); None: unknown.
        self._passes_counts: bool | None = None

    def on_init_end(self, args, state, control, model=None, **kwargs) -> None:
        """Check, as the Trainer is built and before any trial, what would spoil every trial:
        evaluations that are not epochs, and a loss the Trainer would scale."""
        _check_eval_strategy(args)
        world_size = self.search.world_size or args.world_size
        accumulates = world_size > 1 or self.search.accumulates(1)
        self._passes_counts = check_model(model, accumulates)

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        trial, hp = self.search.trial, self.search.hparams
        if hp is None:
            if state.trial_params is not None:  # a search, but not through this space
                raise ValueError(
                    "The Trainer runs a hyperparameter search, but not with this callback's "
                    "space: give hyperparameter_search hp_space=search, the hp_space(...) "
                    "that TrialCallback was built with."
                )
            self.monitor = self.tally = None  # a plain train(), outside any search
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
        live = isinstance(trial, optuna.trial.Trial)
        self._trial = trial if live else None
        self.monitor = TrialMonitor(
            mute(trial) if live else None,
            patience=self.patience,
            min_delta=self.min_delta,
            metric=self.metric,
            direction=self.direction,
        )
        self.monitor.attrs.update(**plan.attrs, resumed_from_epoch=0)
        optimizer = kwargs.get("optimizer")
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
        if optimizer is not None and hasattr(optimizer, "param_groups"):
            self.monitor.attrs.update(optimizer_attrs(optimizer, hp))
        self.tally = EpochTally(self.monitor, state.global_step)

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        if self.tally is not None:
            self.tally.tic()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if self.tally is not None:
            self.tally.toc()

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if self.tally is not None and logs and "loss" in logs:
            self.tally.add(float(logs["loss"]))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
        if self.tally is None:
            return
        metrics = metrics or {}
        if self.metric not in metrics:
            raise ValueError(
                f"`metric` is {self.metric!r}, but the evaluation gave only {sorted(metrics)}."
            )
        if self.tally.end_epoch(
            metrics[self.metric],
            state.global_step,
            batch_size=self.search.hparams.batch_size,
            share=broadcast if args.world_size > 1 else None,
        ):
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs) -> None:
        unmute(self._trial)
        self._trial = None
        if self.monitor is None:
            return
        self.monitor.finish()
        pruned, self.monitor.pruned_ = self.monitor.pruned_, None
        if pruned is not None:
            raise pruned

    def compute_objective(self, metrics: dict[str, float]) -> float:
        """``hyperparameter_search(compute_objective=...)``: the best evaluation so far of
        ``metric``, so the trial completes with its best epoch's value."""
        if self.monitor is None or not self.monitor.history_:
            return float(metrics[self.metric])
        return self.monitor.best_value_
