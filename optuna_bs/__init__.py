"""optuna-bs: tune batch size, learning rate and momentum together, through the SGD scaling rules.

The public API; everything else is private.
"""

from __future__ import annotations

from optuna_bs.analysis import fit_noise_scale, fit_scaling_rule, pareto_front, recommend
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

__version__ = "0.1.0"

__all__ = [
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
    "write_report",
]
