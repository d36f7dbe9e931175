"""optuna-bs: tune batch size, learning rate and momentum together, through the SGD scaling rules.

The public API; everything else is private. Names resolve on first use (PEP 562), so
``import optuna_bs``, ``optuna_bs.rules``, ``optuna_bs.config`` and ``optuna-bs --help`` do not
load torch: a name such as ``optuna_bs.fit`` imports its module when it is first read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name and the module it lives in.
_EXPORTS = {
    "BatchLadderSampler": "optuna_bs.samplers",
    "BatchRamp": "optuna_bs.schedules",
    "BatchScalingSpace": "optuna_bs.space",
    "build_model": "optuna_bs.models",
    "Compose": "optuna_bs.schedules",
    "ConfigError": "optuna_bs.errors",
    "Constant": "optuna_bs.schedules",
    "Cosine": "optuna_bs.schedules",
    "Data": "optuna_bs.data",
    "DATASETS": "optuna_bs.data",
    "Datasets": "optuna_bs.sources",
    "evaluate": "optuna_bs.trainer",
    "fit": "optuna_bs.trainer",
    "fit_noise_scale": "optuna_bs.transfer",
    "fit_scaling_rule": "optuna_bs.transfer",
    "FitResult": "optuna_bs.trainer",
    "Hyperparameters": "optuna_bs.rules",
    "load_config": "optuna_bs.config",
    "load_data": "optuna_bs.data",
    "lr_for_noise_scale": "optuna_bs.rules",
    "LrDecay": "optuna_bs.schedules",
    "make_storage": "optuna_bs.storage",
    "mask_url": "optuna_bs.storage",
    "Metric": "optuna_bs.metrics",
    "MODELS": "optuna_bs.models",
    "MomentumRamp": "optuna_bs.schedules",
    "noise_scale": "optuna_bs.rules",
    "NotEnoughTrialsError": "optuna_bs.errors",
    "OptunaBSError": "optuna_bs.errors",
    "pareto_front": "optuna_bs.analysis",
    "recommend": "optuna_bs.transfer",
    "register_rule": "optuna_bs.rules",
    "rescale": "optuna_bs.rules",
    "Rule": "optuna_bs.rules",
    "RULES": "optuna_bs.rules",
    "save_to_dashboard": "optuna_bs.report",
    "Schedule": "optuna_bs.schedules",
    "SCHEDULES": "optuna_bs.schedules",
    "STOP_REASONS": "optuna_bs.monitor",
    "StorageError": "optuna_bs.errors",
    "StudyConfig": "optuna_bs.config",
    "summarize": "optuna_bs.report",
    "TrainingState": "optuna_bs.trainer",
    "TrialMonitor": "optuna_bs.monitor",
    "transfer": "optuna_bs.transfer",
    "Warmup": "optuna_bs.schedules",
    "weight_decay_for_timescale": "optuna_bs.rules",
    "weight_decay_timescale": "optuna_bs.rules",
    "write_report": "optuna_bs.report",
}
#: Submodules that ``optuna_bs.<name>`` gives without an import of their own.
_SUBMODULES = frozenset(
    {
        "analysis",
        "cli",
        "config",
        "distributed",
        "errors",
        "integrations",
        "monitor",
        "noise",
        "plots",
        "report",
        "rules",
        "runner",
        "samplers",
        "schedules",
        "space",
        "storage",
        "trainer",
        "workers",
    }
)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from optuna_bs.analysis import pareto_front
    from optuna_bs.config import StudyConfig, load_config
    from optuna_bs.data import DATASETS, Data, load_data
    from optuna_bs.errors import ConfigError, NotEnoughTrialsError, OptunaBSError, StorageError
    from optuna_bs.metrics import Metric
    from optuna_bs.models import MODELS, build_model
    from optuna_bs.monitor import STOP_REASONS, TrialMonitor
    from optuna_bs.report import save_to_dashboard, summarize, write_report
    from optuna_bs.rules import (
        RULES,
        Hyperparameters,
        Rule,
        lr_for_noise_scale,
        noise_scale,
        register_rule,
        rescale,
        weight_decay_for_timescale,
        weight_decay_timescale,
    )
    from optuna_bs.samplers import BatchLadderSampler
    from optuna_bs.schedules import (
        SCHEDULES,
        BatchRamp,
        Compose,
        Constant,
        Cosine,
        LrDecay,
        MomentumRamp,
        Schedule,
        Warmup,
    )
    from optuna_bs.sources import Datasets
    from optuna_bs.space import BatchScalingSpace
    from optuna_bs.storage import make_storage, mask_url
    from optuna_bs.trainer import FitResult, TrainingState, evaluate, fit
    from optuna_bs.transfer import fit_noise_scale, fit_scaling_rule, recommend, transfer

__all__ = [
    "BatchLadderSampler",
    "BatchRamp",
    "BatchScalingSpace",
    "Compose",
    "Constant",
    "Cosine",
    "Datasets",
    "LrDecay",
    "Metric",
    "MomentumRamp",
    "SCHEDULES",
    "Schedule",
    "TrainingState",
    "Warmup",
    "ConfigError",
    "DATASETS",
    "Data",
    "FitResult",
    "Hyperparameters",
    "MODELS",
    "NotEnoughTrialsError",
    "OptunaBSError",
    "RULES",
    "Rule",
    "register_rule",
    "weight_decay_for_timescale",
    "weight_decay_timescale",
    "STOP_REASONS",
    "StorageError",
    "StudyConfig",
    "TrialMonitor",
    "build_model",
    "evaluate",
    "fit",
    "fit_noise_scale",
    "fit_scaling_rule",
    "load_config",
    "load_data",
    "lr_for_noise_scale",
    "make_storage",
    "mask_url",
    "noise_scale",
    "pareto_front",
    "recommend",
    "rescale",
    "save_to_dashboard",
    "summarize",
    "transfer",
    "write_report",
]
