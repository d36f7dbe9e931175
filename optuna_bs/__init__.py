"""optuna-bs: tune batch size, learning rate and momentum together, through the SGD scaling rules.

The public API. The package is laid out in rooms, one per concern, and data flows one way
through them (docs/design.md §2):

* :mod:`optuna_bs.rules`: the formulas, the rules and the effective batch (no torch);
* :mod:`optuna_bs.search`: the coupled space and the samplers;
* :mod:`optuna_bs.data`: the built-in datasets and models;
* :mod:`optuna_bs.train`: ``fit``, its loop, state, metrics, monitor and schedules;
* :mod:`optuna_bs.measure`: the critical batch size and the range test;
* :mod:`optuna_bs.study`: study files, the runner, the workers and the store;
* :mod:`optuna_bs.report`: the trials read back, ``transfer``, the figures and the report;
* :mod:`optuna_bs.integrations`: Lightning and the Hugging Face Trainer; and the CLI.

Names resolve on first use (PEP 562), so ``import optuna_bs``, ``optuna_bs.rules``,
``optuna_bs.study.config`` and ``optuna-bs --help`` do not load torch: a name such as
``optuna_bs.fit`` imports its module when it is first read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optuna_bs._lazy import attach, keep_old_paths

__version__ = "0.1.0"

#: Each room (or module) and the public names it gives.
_EXPORTS = {
    "data": "build_model Data DATASETS load_data MODELS",
    "errors": "ConfigError NotEnoughTrialsError OptunaBSError StorageError",
    "report": (
        "fit_noise_scale fit_scaling_rule pareto_front recommend save_to_dashboard summarize "
        "transfer write_report"
    ),
    "rules": (
        "Hyperparameters lr_for_noise_scale noise_scale register_rule rescale Rule RULES "
        "weight_decay_for_timescale weight_decay_timescale"
    ),
    "search": "BatchLadderSampler BatchScalingSpace RangeWidening",
    "study": "load_config make_storage mask_url StudyConfig",
    "train": (
        "BatchRamp CheckpointPolicy Compose Constant Cosine Datasets DevicePath evaluate fit "
        "FitResult LrDecay MemoryPolicy Metric MomentumRamp Schedule SCHEDULES STOP_REASONS "
        "TrainingState TrialMonitor Warmup"
    ),
}

#: The rooms and modules beyond those, that ``optuna_bs.<name>`` gives without an import.
_SUBMODULES = ("cli", "integrations", "measure", "vocabulary")

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, _SUBMODULES)

# The module paths of the flat layout, for one release (with a DeprecationWarning).
keep_old_paths(
    {
        f"optuna_bs.{old}": f"optuna_bs.{new}"
        for old, new in {
            "analysis": "report.analysis",
            "config": "study.config",
            "distributed": "train.distributed",
            "metrics": "train.metrics",
            "models": "data.models",
            "monitor": "train.monitor",
            "noise": "measure",  # the room: the range test left the module
            "plots": "report.plots",
            "runner": "study.runner",
            "samplers": "search.ladder",
            "schedules": "train.schedules",
            "sources": "train.sources",
            "space": "search.space",
            "state": "train.state",
            "storage": "study.storage",
            "trainer": "train.trainer",
            "workers": "study.workers",
        }.items()
    }
)

if TYPE_CHECKING:  # what type checkers and IDEs see
    from optuna_bs.data import DATASETS, MODELS, Data, build_model, load_data
    from optuna_bs.errors import ConfigError, NotEnoughTrialsError, OptunaBSError, StorageError
    from optuna_bs.report import (
        fit_noise_scale,
        fit_scaling_rule,
        pareto_front,
        recommend,
        save_to_dashboard,
        summarize,
        transfer,
        write_report,
    )
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
    from optuna_bs.search import BatchLadderSampler, BatchScalingSpace, RangeWidening
    from optuna_bs.study import StudyConfig, load_config, make_storage, mask_url
    from optuna_bs.train import (
        SCHEDULES,
        STOP_REASONS,
        BatchRamp,
        CheckpointPolicy,
        Compose,
        Constant,
        Cosine,
        Datasets,
        DevicePath,
        FitResult,
        LrDecay,
        MemoryPolicy,
        Metric,
        MomentumRamp,
        Schedule,
        TrainingState,
        TrialMonitor,
        Warmup,
        evaluate,
        fit,
    )
