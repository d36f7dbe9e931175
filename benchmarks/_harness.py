"""The harness shared by the P1, P2, P3 and P5 benchmarks.

One place for what the arms of a comparison must share, so that they differ only in what is
compared:

* the tasks: the ready study files of ``studies/`` (data, model, space, training budget), each
  data set loaded once per process;
* one study of one arm for one seed (:func:`run_arm`): an in-memory Optuna study, trials run
  in-process with :func:`optuna_bs.fit` or with a plain PyTorch DataLoader loop, every
  trial's value, state, epochs and finishing time recorded;
* the jobs of every arm for every seed, interleaved (seed by seed, every arm) and run on at
  most two single-threaded, ``nice``d worker processes (:func:`run_jobs`);
* medians with interquartile ranges, plain-text tables and JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from optuna_bs import (
    BatchLadderSampler,
    BatchScalingSpace,
    Data,
    RangeWidening,
    StudyConfig,
    build_model,
    fit,
    load_config,
    load_data,
)
from optuna_bs.search.edges import RANGES_ATTR, WIDENINGS_ATTR
from optuna_bs.study.auto import auto_noise_scales
from optuna_bs.study.plan import fit_arguments, space_from_config
from optuna_bs.study.runner import make_pruner, make_sampler
from optuna_bs.vocabulary import DEFAULTS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

#: Task name -> its study file: the data, model, space and training budget users get.
TASKS = {
    "mnist1d_mlp": "studies/mnist1d_mlp.toml",
    "mnist1d_cnn": "studies/mnist1d_cnn.toml",
    "mnist1d_cnn_adamw": "studies/mnist1d_cnn_adamw.toml",
    "digits_mlp": "studies/digits_mlp.toml",
    # Held out from choosing the search's prior (BENCHMARKS.md, "ranges that widen"):
    "digits_cnn": "benchmarks/tasks/digits_cnn.toml",
    "regression_mlp": "benchmarks/tasks/regression_mlp.toml",
    "mnist1d_mlp_large": "benchmarks/tasks/mnist1d_mlp_large.toml",
}
#: The vanilla independent space of docs/design.md §8 (B's top is cut below N where N <= 1024).
VANILLA_BATCH, VANILLA_LR, VANILLA_MOMENTUM = (16, 1024), (1e-4, 1.0), (0.0, 0.99)


@dataclass(frozen=True)
class Task:
    """A study file's configuration and its data, in memory."""

    name: str
    config: StudyConfig
    data: Data


@functools.cache
def load_task(name: str) -> Task:
    """The task called ``name`` (a key of :data:`TASKS`); its data is loaded once per process."""
    config = load_config(REPO / TASKS[name])
    data = load_data(
        config.data.name,
        seed=config.data.seed,
        val_fraction=config.data.val_fraction,
        **config.data.options,
    )
    return Task(name, config, data)


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: how a study searches, prunes and trains.

    Attributes:
        space: ``"default"``, the study file's space; ``"vanilla"``, the independent space
            B in 2^[4, 10], lr in [1e-4, 1] (log), m in [0, 0.99]; or ``"fixed-m"``, the fair
            baseline: independent (B, ϵ) over the study file's B range and lr in [1e-4, 1]
            (log), m fixed at the study file's value (the same dimension, no rule).
        sampler: ``"study"``, the study file's sampler with its settings (what users get);
            ``"ladder"``, :class:`optuna_bs.BatchLadderSampler` over the study file's TPE; or
            ``"tpe"``, ``"gp"``, ``"cmaes"``, ``"random"`` with Optuna's defaults.
        pruner: ``"none"``, ``"study"`` (the study file's), ``"median"`` (Optuna's defaults,
            or ``pruner_options``), ``"percentile"`` (``pruner_options``, which must give the
            percentile) or ``"hyperband"`` (optuna-bs's, over max_epochs).
        loop: ``"fit"`` (:func:`optuna_bs.fit`) or ``"dataloader"`` (a plain PyTorch loop).
        early_stopping: The study file's ``patience``, or none.
        space_options: Overrides of the default space's arguments (a variant).
        sampler_options: Keyword arguments of the sampler (a variant).
        pruner_options: Keyword arguments of a ``"median"`` or ``"percentile"`` pruner.
        widen: An ``"auto"`` noise scale range widens where the best trials pile at an edge,
            as a study file's does (:class:`~optuna_bs.RangeWidening`); ``False`` keeps the
            range test's range fixed, as before it widened.
    """

    space: str = "default"
    sampler: str = "study"
    pruner: str = "none"
    loop: str = "fit"
    early_stopping: bool = True
    space_options: tuple[tuple[str, object], ...] = ()
    sampler_options: tuple[tuple[str, object], ...] = ()
    pruner_options: tuple[tuple[str, object], ...] = ()
    widen: bool = True

    def describe(self) -> dict:
        """The arm as plain values, for the JSON."""
        return {k: (dict(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


def make_space(task: Task, arm: Arm, seed: int = 0) -> BatchScalingSpace:
    """The arm's search space over the task's training set.

    ``noise_scale = "auto"`` in ``space_options`` runs the range test, as the runner does,
    on the model of ``seed``; its time counts in the study's.
    """
    n_train = task.data.n_train
    if arm.space == "vanilla":
        high = min(VANILLA_BATCH[1], 2 ** math.floor(math.log2(n_train - 1)))
        return BatchScalingSpace(
            "independent",
            n_train=n_train,
            batch_size=(VANILLA_BATCH[0], high),
            lr=VANILLA_LR,
            momentum=VANILLA_MOMENTUM,
        )
    if arm.space == "fixed-m":
        cfg = task.config.space
        return BatchScalingSpace(
            "independent",
            n_train=n_train,
            batch_size=cfg.batch_size,
            lr=VANILLA_LR,
            momentum=cfg.momentum,
            **dict(arm.space_options),
        )
    options = dict(arm.space_options)
    if options.get("noise_scale") == "auto":
        space = space_from_config(
            task.config, n_train, **{**options, "noise_scale": DEFAULTS["noise_scale"]}
        )
        model = _build(task, seed)  # the seed's model: the spread over seeds is measured
        options["noise_scale"] = auto_noise_scales(task.config, task.data, model, space)
    return space_from_config(task.config, n_train, **options)


def make_arm_sampler(task: Task, arm: Arm, seed: int) -> optuna.samplers.BaseSampler:
    """The arm's sampler, seeded."""
    options = dict(arm.sampler_options)
    if arm.sampler == "ladder":
        study = task.config.study
        base = optuna.samplers.TPESampler(seed=seed, n_startup_trials=study.n_startup_trials)
        if dict(arm.space_options).get("noise_scale") == "auto" and arm.widen:
            options.setdefault("probe_edges", True)  # as the runner sets it
        return BatchLadderSampler(base, seed=seed, **options)
    if arm.sampler == "study" and not options:
        study = task.config.study
        return make_sampler(study.sampler, seed=seed, n_startup_trials=study.n_startup_trials)
    if arm.sampler == "study":
        options = {"n_startup_trials": task.config.study.n_startup_trials, **options}
    classes = {
        "study": optuna.samplers.TPESampler,
        "tpe": optuna.samplers.TPESampler,
        "gp": optuna.samplers.GPSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "random": optuna.samplers.RandomSampler,
    }
    return classes[arm.sampler](seed=seed, **options)


def make_arm_pruner(task: Task, arm: Arm) -> optuna.pruners.BasePruner:
    """The arm's pruner."""
    if arm.pruner == "study":
        study = task.config.study
        return make_pruner(
            study.pruner,
            warmup_epochs=study.pruner_warmup_epochs,
            startup_trials=study.pruner_startup_trials,
            max_epochs=task.config.train.max_epochs,
        )
    if arm.pruner == "median":
        return optuna.pruners.MedianPruner(**dict(arm.pruner_options))
    if arm.pruner == "percentile":
        return optuna.pruners.PercentilePruner(**dict(arm.pruner_options))
    if arm.pruner == "hyperband":
        return make_pruner("hyperband", max_epochs=task.config.train.max_epochs)
    return optuna.pruners.NopPruner()


def _build(task: Task, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = task.config.model
    shape, outputs = task.data.input_shape, task.data.n_outputs
    return build_model(model.name, shape, outputs, folder=task.config.folder, **model.options)


@torch.no_grad()
def val_error(model: torch.nn.Module, data: Data) -> float:
    """Classification error on the validation split."""
    model.eval()
    error = (model(data.x_val).argmax(dim=1) != data.y_val).float().mean().item()
    model.train()
    return error


def dataloader_epoch(model, opt, loader: DataLoader) -> None:
    """One epoch of the plain PyTorch loop: the DataLoader's batches, SGD steps."""
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def tensor_epoch(model, opt, data: Data, batch_size: int, gen: torch.Generator) -> None:
    """One epoch of a hand-written loop over in-memory tensors, batches by index slicing."""
    perm = torch.randperm(data.n_train, generator=gen)
    for i in range(0, data.n_train // batch_size * batch_size, batch_size):
        idx = perm[i : i + batch_size]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()


def make_loader(data: Data, batch_size: int, seed: int) -> DataLoader:
    """The standard DataLoader of a plain PyTorch loop (full batches, shuffled)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    dataset = TensorDataset(data.x_train, data.y_train)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=gen)


def _objective(
    task: Task,
    arm: Arm,
    seed: int,
    max_epochs: int,
    cache: dict | None,
    two_objective: bool = False,
) -> tuple[Callable, list]:
    """The arm's objective, and the callbacks its study needs (an ``"auto"`` range's
    :class:`~optuna_bs.RangeWidening`). With a ``cache`` (arms without a pruner only), a
    trial whose configuration and seed an earlier arm of the same seed already trained is not
    trained again: samplers with the same seed share their random start-up trials. With
    ``two_objective``, it returns (validation error, seconds the trial took), uncached."""
    space = make_space(task, arm, seed)
    train = task.config.train
    patience = (train.patience or None) if arm.early_stopping else None
    widening = None
    if dict(arm.space_options).get("noise_scale") == "auto" and arm.widen:
        # As the runner does: the range test's range widens where the best trials pile.
        widening = RangeWidening({"noise_scale": space.noise_scale})

    def suggest(trial: optuna.Trial):
        return space.suggest(trial) if widening is None else widening.suggest(space, trial)

    def cached(trial: optuna.Trial) -> float:
        hp = suggest(trial)
        # What training depends on: the hyperparameters themselves, not the sampled params.
        key = (arm.loop, patience, max_epochs, trial.number, repr(hp))
        if key not in cache:
            try:
                cache[key] = (objective(trial, hp), dict(trial.user_attrs))
            except optuna.TrialPruned:  # a diverged run
                cache[key] = (None, dict(trial.user_attrs))
                raise
            return cache[key][0]
        value, attrs = cache[key]
        for k, v in {**attrs, "cached": True}.items():
            trial.set_user_attr(k, v)
        if value is None:
            raise optuna.TrialPruned()
        return value

    def with_fit(trial: optuna.Trial, hp=None) -> float:
        hp = hp or suggest(trial)
        trial_seed = 1000 * seed + trial.number
        model = _build(task, trial_seed)
        # The study file's [train] section, as the runner reads it; the arm's budget on top.
        kwargs = {**fit_arguments(task.config, trial, "cpu"), "max_epochs": max_epochs}
        result = fit(
            model,
            task.data,
            hp,
            trial=trial,
            seed=trial_seed,
            **{**kwargs, "patience": patience},
        )
        return result.best_value

    def with_dataloader(trial: optuna.Trial, hp=None) -> float:
        hp = hp or suggest(trial)
        trial_seed = 1000 * seed + trial.number
        model = _build(task, trial_seed)
        opt = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum)
        loader = make_loader(task.data, hp.batch_size, trial_seed)
        best = math.inf
        for epoch in range(1, max_epochs + 1):
            trial.set_user_attr("epochs_run", epoch)
            dataloader_epoch(model, opt, loader)
            error = val_error(model, task.data)
            best = min(best, error)
            if not two_objective:  # Optuna takes no reports of a two-objective trial
                trial.report(error, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return best

    objective = with_fit if arm.loop == "fit" else with_dataloader
    callbacks = [] if widening is None else [widening]
    if two_objective:

        def timed(trial: optuna.Trial) -> tuple[float, float]:
            tic = time.perf_counter()
            value = objective(trial)
            return value, time.perf_counter() - tic

        return timed, callbacks
    return (cached if cache is not None and arm.pruner == "none" else objective), callbacks


@dataclass(frozen=True)
class Job:
    """One study: a task, an arm, a seed and a trial budget.

    ``target``, when given, ends the study at the first complete trial that reaches it.
    ``max_epochs`` overrides the study file's (smoke tests only). ``two_objective`` makes the
    study minimise (validation error, the trial's seconds), as ``objectives = ["val_error",
    "train_seconds"]`` does (Optuna neither reports nor prunes such trials).
    """

    task: str
    arm_name: str
    arm: Arm
    seed: int
    n_trials: int
    target: float | None = None
    max_epochs: int | None = None
    two_objective: bool = False


def run_arm(job: Job, cache: dict | None = None) -> dict:
    """Run one study and return every trial's record, in trial order.

    A record holds the trial's ``value`` (its best-epoch validation error; for a pruned trial
    the best value it reported), ``state``, ``epochs`` run, ``seconds`` from the study's start
    to the trial's end, and its batch size, learning rate, momentum and noise scale.
    """
    task = load_task(job.task)
    max_epochs = job.max_epochs or task.config.train.max_epochs
    study = optuna.create_study(
        sampler=make_arm_sampler(task, job.arm, job.seed),
        pruner=make_arm_pruner(task, job.arm),
        directions=["minimize", "minimize"] if job.two_objective else None,
    )
    ended: dict[int, float] = {}
    start = time.perf_counter()

    def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ended[trial.number] = time.perf_counter() - start
        done = trial.state == optuna.trial.TrialState.COMPLETE
        if job.target is not None and done and trial.values[0] <= job.target:
            study.stop()

    objective, callbacks = _objective(
        task, job.arm, job.seed, max_epochs, cache, job.two_objective
    )
    study.optimize(
        objective,
        n_trials=job.n_trials,
        callbacks=[*callbacks, on_trial_end],
        catch=(),
    )
    trials = []
    for t in study.trials:
        attrs = t.user_attrs
        reported = list(t.intermediate_values.values())
        value = t.values[0] if t.values else min(reported, default=math.nan)
        trials.append(
            {
                "value": value,
                "state": t.state.name.lower(),
                "epochs": int(attrs.get("epochs_run", len(reported))),
                "seconds": ended.get(t.number, math.nan),
                "cached": bool(attrs.get("cached", False)),
                **({"cost": t.values[1] if t.values else math.nan} if job.two_objective else {}),
                **{k: attrs.get(k) for k in ("batch_size", "lr", "momentum", "noise_scale")},
            }
        )
    return {
        "task": job.task,
        "arm": job.arm_name,
        "seed": job.seed,
        "seconds": time.perf_counter() - start,
        "trials": trials,
        # What an "auto" range became (RangeWidening): its ranges, and each widening.
        "ranges": study.user_attrs.get(RANGES_ATTR),
        "widenings": study.user_attrs.get(WIDENINGS_ATTR, []),
    }


def _init_worker() -> None:
    torch.set_num_threads(1)
    if os.nice(0) < 10:
        os.nice(10 - os.nice(0))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _run_group(jobs: Sequence[Job]) -> list[dict]:
    cache: dict = {}
    return [run_arm(job, cache) for job in jobs]


def run_jobs(jobs: Sequence[Job], workers: int = 2) -> list[dict]:
    """Run the jobs on ``workers`` processes (1: in this process), in the order given.

    Order the jobs seed by seed, every arm within a seed (:func:`interleave`), so that a
    change of machine load falls on every arm alike. The arms of one task and seed run in
    one process, one after the other, sharing a trial cache (see :func:`_objective`).
    Progress goes to stderr.
    """
    groups: dict[tuple[str, int], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.task, job.seed), []).append(job)
    out: list[dict] = []
    start = time.perf_counter()

    def progress(results: list[dict]) -> None:
        out.extend(results)
        arms = ", ".join(f"{r['arm']} {r['seconds']:.0f} s" for r in results)
        print(
            f"  [{len(out)}/{len(jobs)} {time.perf_counter() - start:5.0f} s] "
            f"{results[0]['task']} seed {results[0]['seed']}: {arms}",
            file=sys.stderr,
            flush=True,
        )

    if workers <= 1:
        _init_worker()
        for group in groups.values():
            progress(_run_group(group))
        return out
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
        for results in pool.imap(_run_group, groups.values(), chunksize=1):
            progress(results)
    return out


def interleave(
    tasks: Iterable[str], arms: dict[str, Arm], seeds: Iterable[int], **job_kwargs
) -> list[Job]:
    """Jobs task by task, then seed by seed, every arm within a seed.

    ``job_kwargs`` are passed to every :class:`Job`; ``n_trials`` may be a callable of the
    task name.
    """
    jobs = []
    for task in tasks:
        kwargs = {k: (v(task) if callable(v) else v) for k, v in job_kwargs.items()}
        for seed in seeds:
            for name, arm in arms.items():
                jobs.append(Job(task, name, arm, seed, **kwargs))
    return jobs


def best_so_far(trials: Sequence[dict], worst: float = 1.0) -> list[float]:
    """The best complete trial's value after each trial (``worst`` before the first one)."""
    best, out = worst, []
    for t in trials:
        if t["state"] == "complete":
            best = min(best, t["value"])
        out.append(best)
    return out


def best_known(results: Iterable[dict]) -> dict[str, float]:
    """Per task, the best complete trial's value over every arm and seed."""
    best: dict[str, float] = {}
    for r in results:
        for t in r["trials"]:
            if t["state"] == "complete":
                best[r["task"]] = min(best.get(r["task"], math.inf), t["value"])
    return best


def quartiles(values: Iterable[float]) -> dict[str, float]:
    """Median, interquartile range and mean (inf allowed, for "never reached")."""
    v = np.asarray(list(values), dtype=float)
    if not len(v):
        return {"median": math.nan, "q1": math.nan, "q3": math.nan, "mean": math.nan, "n": 0}
    # inf - inf is nan: stand in a huge number for inf, and map what it touches back.
    q = np.percentile(np.where(np.isinf(v), 1e300, v), [25, 50, 75])
    q1, med, q3 = (math.inf if x > 1e290 else float(x) for x in q)
    return {"median": med, "q1": q1, "q3": q3, "mean": float(v.mean()), "n": int(len(v))}


def fmt_q(q: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
    """``median [q1, q3]``, scaled."""
    return (
        f"{q['median'] * scale:.{digits}f} [{q['q1'] * scale:.{digits}f}, "
        f"{q['q3'] * scale:.{digits}f}]"
    )


def ratio(a: float, b: float) -> float:
    """``a / b``; nan when both are 0, inf when only ``b`` is."""
    if b == 0:
        return math.nan if a == 0 else math.inf
    return a / b


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A plain-text table, columns as wide as their widest cell."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "torch_threads_per_worker": 1,
    }


def hypervolume_2d(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area that ``points`` (both coordinates minimised) dominate up to ``reference``.

    Example:
        >>> round(hypervolume_2d([(0.2, 3.0), (0.4, 1.0)], (1.0, 4.0)), 9)
        2.0
    """
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, lowest = 0.0, reference[1]
    for i, (x, y) in enumerate(inside):
        lowest = min(lowest, y)
        right = inside[i + 1][0] if i + 1 < len(inside) else reference[0]
        area += (right - x) * (reference[1] - lowest)
    return area


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Seed by seed, ``a`` against ``b`` (lower is better): wins, ties, losses and the
    two-sided Wilcoxon signed-rank p-value (NaN with fewer than 2 untied seeds).

    Infinite values (a target not reached) compare as the largest; their differences count as
    the largest too.
    """
    from scipy.stats import wilcoxon

    big = 1e12
    x = np.nan_to_num(np.asarray(a, float), posinf=big)
    y = np.nan_to_num(np.asarray(b, float), posinf=big)
    d = x - y
    wins, losses = int((d < 0).sum()), int((d > 0).sum())
    p = math.nan
    if wins + losses >= 2:
        p = float(wilcoxon(d[d != 0]).pvalue)
    return {"wins": wins, "ties": int((d == 0).sum()), "losses": losses, "p": p}


def fmt_paired(t: dict) -> str:
    """``"12-3-5 p=0.04"``: wins-ties-losses of the first arm, and the p-value."""
    p = "n/a" if math.isnan(t["p"]) else f"{t['p']:.2g}"
    return f"{t['wins']}-{t['ties']}-{t['losses']} p={p}"


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    p = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a short run (under 3 minutes)")
    p.add_argument("--smoke", action="store_true", help="a tiny run, for the test suite")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--seeds", type=int, help="number of seeds (default: the mode's)")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), help="tasks to run")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    return p


def mode(args: argparse.Namespace) -> str:
    """``"smoke"``, ``"quick"`` or ``"full"``."""
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def write_json(args: argparse.Namespace, name: str, payload: dict) -> Path:
    """Write ``payload`` (plus the machine and the command) as ``<name>[_tasks][_mode].json``."""
    if getattr(args, "tasks", None) and not getattr(args, "name", None):
        name += "_" + "-".join(args.tasks)
    suffix = "" if mode(args) == "full" else f"_{mode(args)}"
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{suffix}.json"
    command = "python " + " ".join([_rel(Path(sys.argv[0])), *sys.argv[1:]])
    body = {"command": command, "mode": mode(args), "machine": machine(), **payload}
    path.write_text(json.dumps(_jsonable(body), indent=1))
    print(f"\nwritten to {_rel(path)}")
    return path


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def _jsonable(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj):
        return _jsonable(dataclasses.asdict(obj))
    return obj
