"""The package's words, written once: every choice list, the shared defaults, the user attrs.

Torch-free and Optuna-free, so the study files, the CLI's ``--help`` and the rules can read it
at no cost. Every other module imports its lists and defaults from here, and so do the error
messages; ``tests/test_vocabulary.py`` fails on a copy that drifts. To add a choice (an
optimizer, say), add it here and where it is built (``train.optimizers._make_optimizer``):
the Python API, the CLI and the study files then accept it alike.
"""

from __future__ import annotations

__all__ = [
    "METRICS",
    "OPTIMIZERS",
    "PRECISIONS",
    "AUGMENTATIONS",
    "SCHEDULES",
    "SAMPLERS",
    "PRUNERS",
    "SECOND_OBJECTIVES",
    "OOM_POLICIES",
    "DIRECTIONS",
    "STOP_REASONS",
    "RUN_ATTRS",
    "HPARAM_ATTRS",
    "RECORD_ATTRS",
    "USER_ATTRS",
    "DEFAULTS",
    "LR_RANGES",
    "metric_name",
]

#: ``fit``'s built-in validation values (its ``metric``; a study file's ``[train] metric``).
METRICS = ("error", "loss")
#: The optimizers built by name (``fit(optimizer=...)``, ``[train] optimizer``).
OPTIMIZERS = ("sgd", "adam", "adamw", "nadam")
#: Autocast precisions (``fp16`` with a GradScaler).
PRECISIONS = ("fp32", "bf16", "fp16")
#: On-device augmentations of image batches.
AUGMENTATIONS = ("none", "crop-flip")
#: The epoch schedules of :mod:`optuna_bs.train.schedules`, by study-file name.
SCHEDULES = ("constant", "lr-decay", "batch-ramp", "momentum-ramp", "cosine")
#: The samplers a study file names: Optuna's, and optuna-bs's ``"ladder"``
#: (:class:`optuna_bs.search.BatchLadderSampler`: g* first, then the largest B that keeps it).
SAMPLERS = ("tpe", "random", "gp", "cmaes", "ladder")
#: Optuna pruners a study file names.
PRUNERS = ("median", "hyperband", "none")
#: The cost a two-objective study minimises beside the validation value.
SECOND_OBJECTIVES = ("train_seconds", "n_updates")
#: What a CUDA out-of-memory error does: halve the micro-batch (B kept), or end the trial.
OOM_POLICIES = ("accumulate", "prune")
#: Which way a monitored value improves (as Optuna's study directions).
DIRECTIONS = ("minimize", "maximize")

#: Every value a trial's ``stop_reason`` user attr can take.
STOP_REASONS = ("completed", "early_stopped", "pruned", "diverged", "oom")
#: The user attrs that record how a run went, however it ended (``TrialMonitor``).
RUN_ATTRS = (
    "best_epoch",
    "epochs_run",
    "stop_reason",
    "metric",
    "n_updates",
    "train_seconds",
    "samples_per_second",
)
#: The user attrs that record a trial's hyperparameters (``Hyperparameters.user_attrs``;
#: the Adam values and the weight decay only where they are set).
HPARAM_ATTRS = (
    "batch_size",
    "lr",
    "momentum",
    "noise_scale",
    "n_train",
    "beta2",
    "eps",
    "weight_decay",
    "tau_epochs",
)

#: What else a run records on its trial: the rule, the optimizer as built, the batch as
#: trained (micro-batch × accumulation × world size), resuming, and a schedule's path.
RECORD_ATTRS = (
    "parameterisation",
    "alpha",
    "optimizer",
    "micro_batch_size",
    "accumulation_steps",
    "world_size",
    "resumed_from_epoch",
    "resumed_from_trial",
    "seed",
    "memory_key",
    "epoch_batch_size",
    "epoch_lr",
    "epoch_momentum",
    "epoch_noise_scale",
)
#: Every trial user attr optuna-bs writes: the schema ``tests/test_vocabulary.py`` holds
#: every real trial to.
USER_ATTRS = RUN_ATTRS + HPARAM_ATTRS + RECORD_ATTRS

#: Defaults shared by the Python API and the study files: one value each.
DEFAULTS = {
    "batch_size": (16, 256),  # the searched B, powers of two
    "noise_scale": (1.0, 1000.0),
    "momentum": 0.9,
    "lr": None,  # the searched range by optimizer family: LR_RANGES
    "reference_batch_size": 128,
    "beta2": 0.999,
    "eps": 1e-8,
    "max_epochs": 15,
    "patience": 4,
    "metric": "error",
    "optimizer": "sgd",
    "precision": "fp32",
    "augment": "none",
    "on_oom": "accumulate",
}

#: The searched lr range where none is given, by optimizer family (``rules.optimizer_family``;
#: an ``"adam-sqrt"`` space with no optimizer named is Adam's). SGD's reaches 1.0; Adam's
#: steps are normalised, so its useful lr lies about two decades lower.
LR_RANGES = {"sgd": (1e-4, 1.0), "adam": (1e-5, 1e-2)}


def metric_name(metric: str) -> str:
    """What the trial, the report and the study's objective call a built-in metric.

    Example:
        >>> metric_name("error")
        'val_error'
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {', '.join(METRICS)}, but got {metric!r}.")
    return f"val_{metric}"
