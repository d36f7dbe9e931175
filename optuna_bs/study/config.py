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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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

_logger = logging.getLogger(__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hint(word: str, valid, *, full: bool = True) -> str:
    close = difflib.get_close_matches(str(word), list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    if full:
        hint += f" Allowed: {', '.join(valid)}."
    return hint


# --- Checks of one value, for the keys whose rule is more than a type, a minimum or a choice:
# each takes the value and where it stands, and returns it converted or raises ConfigError.


def _positive(value: float, where: str) -> float:
    if not value > 0:
        raise ConfigError(f"{where} must be > 0 seconds, but got {value!r}.")
    return value


def _fraction(value: float, where: str) -> float:
    if not 0 < value < 1:
        raise ConfigError(f"{where} must be in (0, 1), but got {value!r}.")
    return value


def _loss(value: str, where: str) -> str:
    if value and not is_spec(value):
        raise ConfigError(
            f"{where} must be 'package.module:function' (or '' for the default), "
            f"but got {value!r}."
        )
    return value


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


@dataclass(frozen=True)
class Constraint:
    """What a study file's key accepts, declared beside its default (as scikit-learn's
    ``_parameter_constraints`` do); :func:`_checked` applies it.

    Attributes:
        types: The TOML types it takes (``list``: a ``[low, high]`` pair of numbers, unless
            ``check`` reads the list).
        minimum: The least number it takes.
        choices: The words it takes (a vocabulary list).
        code: It may name the user's code as ``"package.module:name"`` instead.
        nullable: It may be ``None`` (what :func:`config_to_dict` writes for "not set").
        auto: The one string it takes is ``"auto"``.
        check: ``check(value, where)`` converts the value or raises ``ConfigError``.
    """

    types: tuple[type, ...]
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    code: bool = False
    nullable: bool = False
    auto: bool = False
    check: Callable[[Any, str], Any] | None = None


def _key(default: Any, *types: type, **constraint: Any) -> Any:
    """A study file's key: its default, and what it accepts (:class:`Constraint`)."""
    return field(default=default, metadata={"constraint": Constraint(types, **constraint)})


def _options() -> Any:
    """The options of an open section: its other keys, passed on to the data set or model."""
    return field(default_factory=dict, metadata={"options": True})


@dataclass(frozen=True)
class StudySection:
    name: str = _key("mnist1d_mlp", str)
    n_trials: int = _key(30, int, minimum=1)
    timeout: float | None = _key(None, int, float, nullable=True, check=_positive)
    sampler: str = _key("tpe", str, choices=SAMPLERS)
    pruner: str = _key("median", str, choices=PRUNERS)
    seed: int = _key(0, int)
    storage: str | None = _key(None, str, nullable=True)
    n_startup_trials: int = _key(10, int, minimum=0)
    # The median pruner: compare from the 4th epoch, once 5 trials have reported it (P3).
    pruner_warmup_epochs: int = _key(3, int, minimum=0)
    pruner_startup_trials: int = _key(5, int, minimum=1)
    checkpoint_dir: str = _key("checkpoints", str)  # "" turns checkpoints (and resuming) off
    keep_best_checkpoint: bool = _key(False, bool)
    # Seconds; 0 turns the heartbeat and retries off.
    heartbeat_interval: int = _key(10, int, minimum=0)
    max_retry: int = _key(3, int, minimum=0)
    # PostgreSQL: false trades server-crash durability for speed.
    synchronous_commit: bool = _key(True, bool)
    # () tunes the validation metric alone; ("val_error", "train_seconds") makes the study
    # two-objective, and its report shows the Pareto front.
    objectives: tuple[str, ...] = _key((), list, check=_objectives)


@dataclass(frozen=True)
class DataSection:
    name: str = _key("mnist1d", str, code=True)
    seed: int = _key(0, int)
    val_fraction: float = _key(0.2, int, float, check=_fraction)
    options: dict[str, Any] = _options()


@dataclass(frozen=True)
class ModelSection:
    name: str = _key("mlp", str, code=True)
    options: dict[str, Any] = _options()


@dataclass(frozen=True)
class SpaceSection:
    parameterisation: str = _key("noise-scale", str)
    # "auto": up to the critical batch size, measured.
    batch_size: tuple[int, int] | int | str = _key(
        DEFAULTS["batch_size"], list, int, str, auto=True
    )
    # "auto": centred by a range test; it widens where the best trials pile at an edge.
    noise_scale: tuple[float, float] | str = _key(DEFAULTS["noise_scale"], list, str, auto=True)
    momentum: tuple[float, float] | float = _key(DEFAULTS["momentum"], list, int, float)
    # None: the optimizer family's LR_RANGES. "auto" (Adam): centred by Adam's range test.
    lr: tuple[float, float] | str | None = _key(
        DEFAULTS["lr"], list, str, nullable=True, auto=True
    )
    reference_batch_size: int = _key(DEFAULTS["reference_batch_size"], int)
    alpha: float | None = _key(None, int, float, nullable=True)
    beta2: float = _key(DEFAULTS["beta2"], int, float)  # Adam's, at reference_batch_size
    eps: float = _key(DEFAULTS["eps"], int, float)
    weight_decay: tuple[float, float] | float = _key(0.0, list, int, float)  # λ, or a range
    # AdamW's B/(ϵλN), instead of λ.
    tau_epochs: tuple[float, float] | float | None = _key(None, list, int, float, nullable=True)
    allow_sgd_rule_for_adam: bool = _key(False, bool)


@dataclass(frozen=True)
class TrainSection:
    #: Keys that moved, with their new place: the old one is refused with a pointer.
    moved: ClassVar[dict[str, str]] = {"weight_decay": "[space] weight_decay (or tau_epochs)"}

    max_epochs: int = _key(DEFAULTS["max_epochs"], int, minimum=1)
    # 0 turns early stopping off.
    patience: int | None = _key(DEFAULTS["patience"], int, minimum=0, nullable=True)
    min_delta: float = _key(0.0, int, float, minimum=0)
    device: str = _key("auto", str)
    metric: str = _key(DEFAULTS["metric"], str, choices=METRICS)
    optimizer: str = _key(DEFAULTS["optimizer"], str, choices=OPTIMIZERS, code=True)
    # "bf16" | "fp16": autocast (fp16: GradScaler).
    precision: str = _key(DEFAULTS["precision"], str, choices=PRECISIONS)
    channels_last: bool = _key(False, bool)
    compile: bool = _key(False, bool)
    # "crop-flip": a random padded crop and flip, on the device.
    augment: str = _key(DEFAULTS["augment"], str, choices=AUGMENTATIONS)
    cudnn_benchmark: bool = _key(False, bool)
    # One of vocabulary.SCHEDULES, or a list of them to search.
    schedule: str | tuple[str, ...] = _key("constant", str, list, check=_schedules)
    milestones: tuple[float, ...] = _key((0.5, 0.75), list, check=_milestones)  # of max_epochs
    factor: float = _key(5.0, int, float, minimum=1)  # lr divided, or B multiplied, at each
    warmup_epochs: int = _key(0, int, minimum=0)  # linear lr warm-up (Goyal et al. 2017)
    warmup_per_step: bool = _key(False, bool)  # ramp the warm-up update by update
    max_batch_size: int = _key(0, int, minimum=0)  # the batch ramp's memory cap; 0: N/10 only
    # "package.module:fn" with fn(outputs, targets) -> scalar; "" for cross-entropy / MSE.
    loss: str = _key("", str, check=_loss)
    max_grad_norm: float = _key(0.0, int, float, minimum=0)  # 0 for no clipping
    # b dividing B: B/b accumulated micro-batches.
    micro_batch_size: int | str = _key("auto", int, str, minimum=1, auto=True)
    # "accumulate": halve b, keep B; "prune": end the trial.
    on_oom: str = _key(DEFAULTS["on_oom"], str, choices=OOM_POLICIES)


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


#: Each section's name and class, in the file's order.
_SECTIONS = {
    f.name: f.default_factory for f in dataclasses.fields(StudyConfig) if f.name != "folder"
}


def constraints(section: type) -> dict[str, Constraint]:
    """Each key of a section class, and what it accepts."""
    return {
        f.name: f.metadata["constraint"]
        for f in dataclasses.fields(section)
        if "constraint" in f.metadata
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
    g = rule is not None and rule.searches_noise_scale
    if config.study.sampler == "ladder" and (
        (rule is not None and not rule.couples_batch) or isinstance(config.space.batch_size, int)
    ):
        scale = "noise scale" if g else "reference lr"
        raise ConfigError(
            f"{source}: `study.sampler` 'ladder' climbs B at a fixed {scale}: it needs "
            "a batch-size range and a coupled `space.parameterisation` (not 'independent'), "
            f"but got parameterisation={config.space.parameterisation!r} and "
            f"batch_size={config.space.batch_size!r}."
        )
    if config.space.noise_scale == "auto" and not g:
        raise ConfigError(
            f"{source}: `space.noise_scale` 'auto' runs a range test of SGD's noise scale: it "
            "needs `space.parameterisation` 'noise-scale', but got "
            f"{config.space.parameterisation!r}."
        )
    optimizer = config.train.optimizer
    if config.space.lr == "auto" and (g or optimizer == "sgd"):
        raise ConfigError(
            f"{source}: `space.lr` 'auto' runs a range test of Adam's learning rate: it needs "
            "`train.optimizer` 'adam' or 'adamw' and a rule that samples the lr ('adam-sqrt'), "
            f"but got {optimizer!r} and {config.space.parameterisation!r}."
        )
    if len(objectives) > 1 and config.study.sampler == "cmaes":
        raise ConfigError(
            f"{source}: `study.sampler` 'cmaes' cannot optimise two objectives; "
            "use 'tpe', 'gp' or 'random'."
        )
    return config


def _section(section: str, values: dict[str, Any], source: str) -> Any:
    cls = _SECTIONS[section]
    keys = constraints(cls)
    open_section = any(f.metadata.get("options") for f in dataclasses.fields(cls))
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in values.items():
        if key in getattr(cls, "moved", {}):
            raise ConfigError(f"{source}: `{section}.{key}` has moved to {cls.moved[key]}.")
        if key not in keys:
            if open_section and key != "options":
                options[key] = value
                continue
            raise ConfigError(f"{source}: unknown key `{section}.{key}`{_hint(key, keys)}")
        kwargs[key] = _checked(value, keys[key], f"{source}: `{section}.{key}`")
    if options:
        kwargs["options"] = options
    return cls(**kwargs)


def _checked(value: Any, rule: Constraint, where: str) -> Any:
    """``value`` as its key's :class:`Constraint` allows it, converted; else one ConfigError
    naming the key, the value and what is allowed."""
    if value is None and rule.nullable:
        return None
    allowed = rule.types
    if isinstance(value, bool) is not (bool in allowed) or not isinstance(value, allowed):
        names = " or ".join(_TYPE_NAMES[t] for t in allowed)
        raise ConfigError(f"{where} must be {names}, but got {value!r}.")
    if rule.check is not None:
        return rule.check(value, where)
    if rule.auto and isinstance(value, str):
        if value != "auto":
            least = "" if rule.minimum is None else f" >= {rule.minimum}"
            others = ", ".join(
                _TYPE_NAMES[t] + least * (t is int) for t in allowed if t is not str
            )
            raise ConfigError(f"{where} must be {others} or 'auto', but got {value!r}.")
        return value
    if isinstance(value, list):
        if len(value) != 2 or not all(_is_number(v) for v in value):
            raise ConfigError(f"{where} must be a [low, high] pair of numbers, but got {value}.")
        value = tuple(value)
    if rule.choices and value not in rule.choices and not (rule.code and is_spec(value)):
        raise ConfigError(
            f"{where} must be one of {', '.join(map(repr, rule.choices))}, but got {value!r}"
            f"{_hint(value, rule.choices, full=False)}"
        )
    if rule.minimum is not None and not isinstance(value, str) and not value >= rule.minimum:
        raise ConfigError(f"{where} must be >= {rule.minimum}, but got {value!r}.")
    return value


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a [low, high] pair",
    bool: "true or false",
}


def config_to_dict(config: StudyConfig) -> dict[str, Any]:
    """The plain nested dict of ``config``, options folded back into their sections."""
    out = {}
    for section in _SECTIONS:
        values = dataclasses.asdict(getattr(config, section))
        values.update(values.pop("options", {}))
        out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return out
