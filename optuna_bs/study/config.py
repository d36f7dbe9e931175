"""Study files: TOML in, a validated :class:`StudyConfig` out.

A study file has five sections, each optional; a key left out takes the default shown here.
The defaults *are* the embedded MNIST-1D study (``studies/mnist1d_mlp.toml`` spells them out)::

    [study]   name, n_trials, timeout, sampler, pruner, seed, storage, n_startup_trials,
              pruner_warmup_epochs, pruner_startup_trials, checkpoint_dir, keep_best_checkpoint,
              heartbeat_interval, max_retry, synchronous_commit, objectives
    [data]    name (a built-in data set, or "package.module:factory" returning a Data, a
              Datasets or a (train, val) pair), seed, val_fraction, and options of the data
              set or the factory's keyword arguments
    [model]   name ("mlp", "cnn1d" or "package.module:factory"), and its keyword arguments
    [space]   parameterisation, batch_size, noise_scale, momentum, lr, reference_batch_size,
              alpha, beta2, eps, weight_decay, tau_epochs, allow_sgd_rule_for_adam
    [train]   max_epochs, patience, min_delta, device, metric, optimizer, precision,
              channels_last, compile, augment, cudnn_benchmark, schedule, milestones, factor,
              warmup_epochs, warmup_per_step, max_batch_size, loss, max_grad_norm,
              micro_batch_size, on_oom

``optimizer`` and ``loss`` may name the user's code as ``"package.module:name"`` too: the
optimizer factory is called as ``factory(params, hparams)`` and the loss as
``loss(outputs, targets)``. The study file's own folder is searched first for such modules.

Every error names the file, the key, the value and what is allowed, and a misspelt key gets
the closest valid one suggested. Values that need the data (a batch size against N, say) are
checked when the study starts, before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna_bs.errors import ConfigError
from optuna_bs.factories import is_spec
from optuna_bs.rules.registry import RULES
from optuna_bs.vocabulary import (
    AUGMENTATIONS,
    DEFAULTS,
    METRICS,
    OOM_POLICIES,
    OPTIMIZERS,
    PRECISIONS,
    PRUNERS,
    SAMPLERS,
    SCHEDULES,
    SECOND_OBJECTIVES,
    metric_name,
)

__all__ = [
    "StudyConfig",
    "StudySection",
    "DataSection",
    "ModelSection",
    "SpaceSection",
    "TrainSection",
    "load_config",
    "SAMPLERS",
    "PRUNERS",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySection:
    name: str = "mnist1d_mlp"
    n_trials: int = 30
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    storage: str | None = None
    n_startup_trials: int = 10
    # The median pruner: compare from the 4th epoch, once 5 trials have reported it (P3).
    pruner_warmup_epochs: int = 3
    pruner_startup_trials: int = 5
    checkpoint_dir: str = "checkpoints"  # "" turns checkpoints (and resuming) off
    keep_best_checkpoint: bool = False
    heartbeat_interval: int = 10  # seconds; 0 turns the heartbeat and retries off
    max_retry: int = 3
    synchronous_commit: bool = True  # PostgreSQL: false trades server-crash durability for speed
    # () tunes the validation metric alone; ("val_error", "train_seconds") makes the study
    # two-objective, and its report shows the Pareto front.
    objectives: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataSection:
    name: str = "mnist1d"
    seed: int = 0
    val_fraction: float = 0.2
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSection:
    name: str = "mlp"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpaceSection:
    parameterisation: str = "noise-scale"
    batch_size: tuple[int, int] | int | str = DEFAULTS["batch_size"]  # "auto": noise scale
    noise_scale: tuple[float, float] | str = DEFAULTS["noise_scale"]  # "auto": range test
    momentum: tuple[float, float] | float = DEFAULTS["momentum"]
    lr: tuple[float, float] | None = DEFAULTS["lr"]  # None: the optimizer family's LR_RANGES
    reference_batch_size: int = DEFAULTS["reference_batch_size"]
    alpha: float | None = None
    beta2: float = DEFAULTS["beta2"]  # Adam's, at reference_batch_size
    eps: float = DEFAULTS["eps"]
    weight_decay: tuple[float, float] | float = 0.0  # λ, or [low, high] to search it
    tau_epochs: tuple[float, float] | float | None = None  # AdamW's B/(ϵλN), instead of λ
    allow_sgd_rule_for_adam: bool = False


@dataclass(frozen=True)
class TrainSection:
    max_epochs: int = DEFAULTS["max_epochs"]
    patience: int | None = DEFAULTS["patience"]
    min_delta: float = 0.0
    device: str = "auto"
    metric: str = DEFAULTS["metric"]
    optimizer: str = DEFAULTS["optimizer"]
    precision: str = DEFAULTS["precision"]  # "bf16" | "fp16": autocast (fp16: GradScaler)
    channels_last: bool = False
    compile: bool = False
    augment: str = DEFAULTS["augment"]  # "crop-flip": random padded crop and flip, on device
    cudnn_benchmark: bool = False
    # One of vocabulary.SCHEDULES ("constant", "lr-decay", "batch-ramp", "momentum-ramp",
    # "cosine"), or a list of them to search.
    schedule: str | tuple[str, ...] = "constant"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of max_epochs
    factor: float = 5.0  # lr divided, or batch multiplied, at each milestone
    warmup_epochs: int = 0  # linear lr warm-up (Goyal et al. 2017)
    warmup_per_step: bool = False  # ramp the warm-up update by update, not epoch by epoch
    max_batch_size: int = 0  # the batch ramp's memory cap; 0 for N/10 only
    # "package.module:fn" with fn(outputs, targets) -> scalar; "" for cross-entropy / MSE.
    loss: str = ""
    max_grad_norm: float = 0.0  # 0 for no clipping
    micro_batch_size: int | str = "auto"  # b dividing B: B/b accumulated micro-batches
    on_oom: str = DEFAULTS["on_oom"]  # "accumulate": halve b, keep B; "prune": end the trial


@dataclass(frozen=True)
class StudyConfig:
    """A whole study file; ``StudyConfig()`` is the embedded MNIST-1D default."""

    study: StudySection = field(default_factory=StudySection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    space: SpaceSection = field(default_factory=SpaceSection)
    train: TrainSection = field(default_factory=TrainSection)
    #: The study file's folder, searched first for the user's "package.module:name" code.
    folder: str | None = field(default=None, compare=False)


_SECTIONS = {
    "study": StudySection,
    "data": DataSection,
    "model": ModelSection,
    "space": SpaceSection,
    "train": TrainSection,
}
# Sections whose unknown keys are options passed on (to the data set or the model factory).
_OPEN_SECTIONS = ("data", "model")

_INT, _NUM, _STR = (int,), (int, float), (str,)
_PAIR = (list,)
_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "study": {
        "name": _STR,
        "n_trials": _INT,
        "timeout": _NUM,
        "sampler": _STR,
        "pruner": _STR,
        "seed": _INT,
        "storage": _STR,
        "n_startup_trials": _INT,
        "pruner_warmup_epochs": _INT,
        "pruner_startup_trials": _INT,
        "checkpoint_dir": _STR,
        "keep_best_checkpoint": (bool,),
        "heartbeat_interval": _INT,
        "max_retry": _INT,
        "synchronous_commit": (bool,),
        "objectives": _PAIR,
    },
    "data": {"name": _STR, "seed": _INT, "val_fraction": _NUM},
    "model": {"name": _STR},
    "space": {
        "parameterisation": _STR,
        "batch_size": _PAIR + _INT + _STR,
        "noise_scale": _PAIR + _STR,
        "momentum": _PAIR + _NUM,
        "lr": _PAIR,
        "reference_batch_size": _INT,
        "alpha": _NUM,
        "beta2": _NUM,
        "eps": _NUM,
        "weight_decay": _PAIR + _NUM,
        "tau_epochs": _PAIR + _NUM,
        "allow_sgd_rule_for_adam": (bool,),
    },
    "train": {
        "max_epochs": _INT,
        "patience": _INT,
        "min_delta": _NUM,
        "device": _STR,
        "metric": _STR,
        "optimizer": _STR,
        "precision": _STR,
        "channels_last": (bool,),
        "compile": (bool,),
        "augment": _STR,
        "cudnn_benchmark": (bool,),
        "schedule": _STR + _PAIR,
        "milestones": _PAIR,
        "factor": _NUM,
        "warmup_epochs": _INT,
        "warmup_per_step": (bool,),
        "max_batch_size": _INT,
        "loss": _STR,
        "max_grad_norm": _NUM,
        "micro_batch_size": _INT + _STR,
        "on_oom": _STR,
    },
}
_CHOICES = {
    ("study", "sampler"): SAMPLERS,
    ("study", "pruner"): PRUNERS,
    ("train", "metric"): METRICS,
    ("train", "optimizer"): OPTIMIZERS,
    ("train", "precision"): PRECISIONS,
    ("train", "augment"): AUGMENTATIONS,
    ("train", "on_oom"): OOM_POLICIES,
}
# Keys that also take the user's own code as "package.module:name".
_SPEC_KEYS = {("train", "optimizer"), ("data", "name"), ("model", "name"), ("train", "loss")}
# Keys whose value may be None: TOML cannot write it, but config_to_dict does.
_NULLABLE = {
    ("study", "timeout"),
    ("study", "storage"),
    ("space", "alpha"),
    ("space", "lr"),
    ("space", "tau_epochs"),
    ("train", "patience"),
}
# Keys that moved, with their new place: the old one is refused with a pointer.
_MOVED = {("train", "weight_decay"): "[space] weight_decay (or tau_epochs)"}
_MINIMUM = {
    ("study", "n_trials"): 1,
    ("study", "n_startup_trials"): 0,
    ("study", "pruner_warmup_epochs"): 0,
    ("study", "pruner_startup_trials"): 1,
    ("study", "heartbeat_interval"): 0,
    ("study", "max_retry"): 0,
    ("train", "max_epochs"): 1,
    ("train", "patience"): 0,  # 0 turns early stopping off
    ("train", "min_delta"): 0,
    ("train", "factor"): 1,
    ("train", "warmup_epochs"): 0,
    ("train", "max_batch_size"): 0,
    ("train", "max_grad_norm"): 0,
    ("train", "micro_batch_size"): 1,
}


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a TOML study file.

    Args:
        path: The study file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: If the file is missing, is not TOML, or has an unknown section or key,
            a value of the wrong type, or a value outside what is allowed.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "s.toml"
        >>> _ = f.write_text('[train]\\nmax_epochs = 5\\n')
        >>> load_config(f).train.max_epochs
        5
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"study file {str(path)!r} does not exist.") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"study file {str(path)!r} cannot be read: {err}.") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"study file {str(path)!r} is not valid TOML: {err}.") from err
    config = config_from_dict(raw, source=path.name)
    return dataclasses.replace(config, folder=str(path.resolve().parent))


def config_from_dict(raw: dict[str, Any], *, source: str = "study config") -> StudyConfig:
    """Validate a nested dict laid out like a study file (see :func:`load_config`)."""
    sections = {}
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}]{_hint(section, _SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: `{section}` must be a [{section}] table.")
        sections[section] = _section(section, values, source)
    config = StudyConfig(**sections)
    objectives = config.study.objectives
    metric = metric_name(config.train.metric)
    if objectives and objectives[0] != metric:
        raise ConfigError(
            f"{source}: `study.objectives` must start with the tuned metric {metric!r}, "
            f"but got {list(objectives)}."
        )
    rule = RULES.get(config.space.parameterisation)
    if config.study.sampler == "ladder" and (
        (rule is not None and not rule.couples_batch) or isinstance(config.space.batch_size, int)
    ):
        raise ConfigError(
            f"{source}: `study.sampler` 'ladder' climbs B at a fixed {_scale(config)}: it needs "
            "a batch-size range and a coupled `space.parameterisation` (not 'independent'), "
            f"but got parameterisation={config.space.parameterisation!r} and "
            f"batch_size={config.space.batch_size!r}."
        )
    if config.space.noise_scale == "auto" and not _searches_noise_scale(config):
        raise ConfigError(
            f"{source}: `space.noise_scale` 'auto' runs a range test of SGD's noise scale: it "
            "needs `space.parameterisation` 'noise-scale', but got "
            f"{config.space.parameterisation!r}."
        )
    if len(objectives) > 1 and config.study.sampler == "cmaes":
        raise ConfigError(
            f"{source}: `study.sampler` 'cmaes' cannot optimise two objectives; "
            "use 'tpe', 'gp' or 'random'."
        )
    return config


def _scale(config: StudyConfig) -> str:
    return "noise scale" if _searches_noise_scale(config) else "reference lr"


def _searches_noise_scale(config: StudyConfig) -> bool:
    """Whether the file's rule samples SGD's noise scale g (a trait of the rule)."""
    rule = RULES.get(config.space.parameterisation)
    return rule is not None and rule.searches_noise_scale


def _schedules(value: str | list, where: str) -> str | tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    bad = [n for n in names if n not in SCHEDULES]
    if not names or bad:
        raise ConfigError(
            f"{where} must be one of {', '.join(map(repr, SCHEDULES))}, or a list of them to "
            f"search, but got {value!r}{_hint(str(bad[0]) if bad else '', SCHEDULES, full=False)}"
        )
    return value if isinstance(value, str) else tuple(value)


def _milestones(value: list, where: str) -> tuple[float, ...]:
    if (
        not value
        or not all(_is_number(v) and 0 < v < 1 for v in value)
        or sorted(value) != list(value)
    ):
        raise ConfigError(
            f"{where} must be increasing fractions of max_epochs in (0, 1), such as "
            f"[0.5, 0.75], but got {value!r}."
        )
    return tuple(float(v) for v in value)


def _objectives(value: list, where: str) -> tuple[str, ...]:
    allowed = tuple(metric_name(m) for m in METRICS)
    if not value:
        return ()
    if (
        not 1 <= len(value) <= 2
        or value[0] not in allowed
        or (len(value) == 2 and value[1] not in SECOND_OBJECTIVES)
    ):
        raise ConfigError(
            f"{where} must be [metric] or [metric, cost] with metric one of "
            f"{', '.join(map(repr, allowed))} and cost one of "
            f"{', '.join(map(repr, SECOND_OBJECTIVES))}, but got {value!r}."
        )
    return tuple(value)


def _section(section: str, values: dict[str, Any], source: str) -> Any:
    types = _TYPES[section]
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{source}: `{section}.{key}`"
        if (section, key) in _MOVED:
            raise ConfigError(f"{source}: `{section}.{key}` has moved to {_MOVED[section, key]}.")
        if key not in types:
            if section in _OPEN_SECTIONS and key != "options":
                options[key] = value
                continue
            raise ConfigError(f"{source}: unknown key `{section}.{key}`{_hint(key, types)}")
        if value is None and (section, key) in _NULLABLE:
            kwargs[key] = None
            continue
        allowed = types[key]
        if isinstance(value, bool) is not (bool in allowed) or not isinstance(value, allowed):
            names = " or ".join(_TYPE_NAMES[t] for t in allowed)
            raise ConfigError(f"{where} must be {names}, but got {value!r}.")
        if (section, key) == ("study", "objectives"):
            value = _objectives(value, where)
        elif (section, key) == ("train", "schedule"):
            value = _schedules(value, where)
        elif (section, key) == ("train", "milestones"):
            value = _milestones(value, where)
        elif (section, key) == ("train", "micro_batch_size") and isinstance(value, str):
            if value != "auto":
                raise ConfigError(f"{where} must be an integer >= 1 or 'auto', but got {value!r}.")
        elif (section, key) == ("train", "loss") and value and not is_spec(value):
            raise ConfigError(
                f"{where} must be 'package.module:function' (or '' for the default), "
                f"but got {value!r}."
            )
        elif (section, key) == ("space", "batch_size") and isinstance(value, str):
            if value != "auto":
                raise ConfigError(
                    f"{where} must be [low, high], an integer or 'auto', but got {value!r}."
                )
        elif (section, key) == ("space", "noise_scale") and isinstance(value, str):
            if value != "auto":
                raise ConfigError(f"{where} must be [low, high] or 'auto', but got {value!r}.")
        elif isinstance(value, list):
            if len(value) != 2 or not all(_is_number(v) for v in value):
                raise ConfigError(
                    f"{where} must be a [low, high] pair of numbers, but got {value}."
                )
            value = tuple(value)
        choices = _CHOICES.get((section, key))
        if (section, key) in _SPEC_KEYS and is_spec(value):
            choices = None
        if choices and value not in choices:
            raise ConfigError(
                f"{where} must be one of {', '.join(map(repr, choices))}, but got {value!r}"
                f"{_hint(value, choices, full=False)}"
            )
        minimum = _MINIMUM.get((section, key))
        if minimum is not None and not isinstance(value, str) and not value >= minimum:
            raise ConfigError(f"{where} must be >= {minimum}, but got {value!r}.")
        if key == "timeout" and not value > 0:
            raise ConfigError(f"{where} must be > 0 seconds, but got {value!r}.")
        kwargs[key] = value
    if section == "data" and not 0 < kwargs.get("val_fraction", 0.2) < 1:
        raise ConfigError(
            f"{source}: `data.val_fraction` must be in (0, 1), but got {kwargs['val_fraction']!r}."
        )
    if options:
        kwargs["options"] = options
    return _SECTIONS[section](**kwargs)


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a [low, high] pair",
    bool: "true or false",
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hint(word: str, valid, *, full: bool = True) -> str:
    close = difflib.get_close_matches(str(word), list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    if full:
        hint += f" Allowed: {', '.join(valid)}."
    return hint


def config_to_dict(config: StudyConfig) -> dict[str, Any]:
    """The plain nested dict of ``config``, options folded back into their sections."""
    out = {}
    for section in _SECTIONS:
        values = dataclasses.asdict(getattr(config, section))
        values.update(values.pop("options", {}))
        out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return out
