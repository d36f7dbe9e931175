"""The commands of ``optuna-bs``: run, launch, report, noise-scale and storage-proxy, each from its
parsed arguments to what the user sees."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import optuna

from optuna_bs.cli import STORAGE_ENV, _forwarded_run_options, _UsageError
from optuna_bs.errors import (
    ConfigError,
    WorkerDiedError,
)
from optuna_bs.rules.registry import RULES
from optuna_bs.study.config import StudyConfig, load_config
from optuna_bs.study.storage import DEFAULT_STORAGE, is_sqlite, mask_url
from optuna_bs.vocabulary import DEFAULTS, metric_name


def _run(args: argparse.Namespace) -> int:
    from optuna_bs.study.runner import evaluate_best_on_test, prepare, run_study
    from optuna_bs.train.distributed import init_from_env

    rank, world_size = init_from_env()  # under torchrun: one trial on every rank
    if rank != 0:
        args.quiet = True
    _set_threads(args.threads)
    config = study_config(args)
    prepared = prepare(config)
    url = config.study.storage or DEFAULT_STORAGE
    ranks = f" x {world_size} processes per trial" if world_size > 1 else ""
    _say(
        args,
        f"study {prepared.study_name!r} in {mask_url(url)} on {prepared.device}{ranks}: "
        f"{prepared.space!r}",
    )
    study = run_study(
        prepared,
        n_trials=args.n_trials,
        timeout=args.timeout,
        max_trials=args.max_trials,
        show_progress_bar=not args.quiet,
    )
    if study is None:  # another rank's share of the trials: rank 0 reports
        return 0
    if world_size > 1 and not args.no_test:
        _say(args, "the test split is evaluated in one process: optuna-bs launch does it")
        args.no_test = True
    test_value = None if args.no_test else evaluate_best_on_test(prepared, study)
    _report(args, study, config.train.metric, test_value)
    return 0


def _set_threads(threads: int | None) -> None:
    """Give torch ``threads`` CPU threads. By default, unless ``OMP_NUM_THREADS`` already
    says (``launch`` sets it for each worker), the cores this process may use (its CPU
    affinity, which torch's own default ignores), shared by the processes of one trial on this
    machine, as ``launch`` shares them among its workers; never more than torch's default."""
    import torch

    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        share = max(1, (cores or os.cpu_count() or 1) // local)
        threads = min(torch.get_num_threads(), share)
    torch.set_num_threads(threads)


def _launch(args: argparse.Namespace) -> int:
    from optuna_bs.study.runner import evaluate_best_on_test, open_study, prepare
    from optuna_bs.study.workers import launch_workers, split_trials

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    if gpus is not None and not gpus:
        raise _UsageError("`--gpus` must list GPU ids such as 0,1,2,3, but got an empty list.")
    per_trial = _processes_per_trial(args, gpus)
    groups = None
    if gpus:  # each worker trains its trials on per_trial GPUs of its own
        groups = [",".join(gpus[i : i + per_trial]) for i in range(0, len(gpus), per_trial)]
    if groups and args.workers and args.workers != len(groups):
        raise _UsageError(
            f"`--workers` must match the {len(groups)} GPU groups of --gpus, but got "
            f"{args.workers}."
        )
    workers = len(groups) if groups else (args.workers or 1)
    config = study_config(args)
    url = config.study.storage or DEFAULT_STORAGE
    if workers > 1 and is_sqlite(url):
        raise _UsageError(
            f"SQLite cannot be shared by {workers} workers: use PostgreSQL "
            "(--storage postgresql+psycopg://user@host/db), MySQL "
            "(--storage mysql+pymysql://user@host/db) or a journal file (--storage study.log)."
        )
    prepared = prepare(config)
    study = open_study(prepared)  # created once here, so the workers only join it
    n_trials = args.n_trials or config.study.n_trials
    commands, envs = [], []
    forwarded = _forwarded_run_options(args)
    for i, n in enumerate(split_trials(n_trials, workers)):
        if n == 0:
            continue
        command = [sys.executable, "-m"]
        if per_trial > 1:  # torchrun starts the worker's ranks; rank 0 owns its trials
            command += ["torch.distributed.run", "--standalone"]
            command += ["--nproc-per-node", str(per_trial), "-m"]
        command += ["optuna_bs.cli", "run"]
        command += [args.study_file] if args.study_file else []
        command += ["--study-name", prepared.study_name, "--n-trials", str(n)]
        command += ["--seed", str(prepared.seed + 1000 * i), "--no-test", "-q"]
        command += forwarded
        commands.append(command)
        # The store goes through the environment: a password on a command line shows in `ps`.
        env = {STORAGE_ENV: args.storage} if args.storage else {}
        if groups:
            env["CUDA_VISIBLE_DEVICES"] = groups[i]
        else:  # CPU workers share the cores instead of each spawning a thread per core
            threads = max(1, (os.cpu_count() or 1) // (workers * per_trial))
            env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        envs.append(env)
    ranks = f", each trial on {per_trial} processes" if per_trial > 1 else ""
    _say(
        args,
        f"launching {len(commands)} workers on study {prepared.study_name!r} in "
        f"{mask_url(url)}: {n_trials} trials in all{ranks}",
    )
    try:
        status = launch_workers(commands, envs=envs, study=study)
    except WorkerDiedError:  # one line on stderr (main), after what the other workers did
        _report(args, study, config.train.metric, None)
        raise
    test_value = None if status or args.no_test else evaluate_best_on_test(prepared, study)
    _report(args, study, config.train.metric, test_value)
    return status


def _processes_per_trial(args: argparse.Namespace, gpus: list[str] | None) -> int:
    """K of --gpus-per-trial (GPUs) or --procs-per-trial (CPU processes, gloo): checked."""
    if args.gpus_per_trial is not None and args.procs_per_trial is not None:
        raise _UsageError(
            "Give --gpus-per-trial (with --gpus) or --procs-per-trial (CPU), not both."
        )
    if args.gpus_per_trial is not None:
        if not gpus:
            raise _UsageError("`--gpus-per-trial` needs --gpus (on a CPU, use --procs-per-trial).")
        if len(gpus) % args.gpus_per_trial:
            raise _UsageError(
                f"`--gpus-per-trial` must divide the {len(gpus)} GPUs of --gpus, but got "
                f"{args.gpus_per_trial}."
            )
        return args.gpus_per_trial
    if args.procs_per_trial is not None:
        if gpus:
            raise _UsageError(
                "`--procs-per-trial` is for CPUs: with --gpus, use --gpus-per-trial."
            )
        return args.procs_per_trial
    return 1


def _report_command(args: argparse.Namespace) -> int:
    from optuna_bs.report.summary import save_to_dashboard, summarize, write_report
    from optuna_bs.study.storage import make_storage
    from optuna_bs.train.state import check_writable

    url = args.storage or DEFAULT_STORAGE
    database = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if database and not Path(database).exists():  # opening it would create an empty one
        raise _UsageError(
            f"`--storage` {mask_url(url)}: the database file {database!r} does not exist; "
            "run a study first, or name the store it is in."
        )
    storage = make_storage(args.storage, heartbeat_interval=None)
    try:
        study = optuna.load_study(study_name=args.study_name, storage=storage)
    except KeyError as err:
        names = optuna.get_all_study_names(storage)
        raise _UsageError(
            f"`--study-name` {args.study_name!r} is not in {mask_url(url)}; its studies: "
            f"{', '.join(names) if names else 'none'}."
        ) from err
    try:  # before any work: an unwritable folder is one line, not a traceback at the end
        check_writable(Path(args.out) / "report.probe", "--out")
    except ValueError as err:
        raise _UsageError(str(err)) from err
    summary = summarize(
        study,
        args.batch_size,
        rule=args.rule,
        extrapolate=args.extrapolate,
        noise_batch_size=args.noise_batch_size,
    )
    if not args.quiet:  # -q: the report file only (and errors, on stderr)
        print(summary.to_text())
    path = write_report(study, args.out, summary=summary)
    _say(args, f"report written to {path}")
    if args.dashboard:
        save_to_dashboard(study, summary=summary)
        _say(
            args,
            f"figures and note saved into the study: optuna-dashboard {mask_url(url)}",
        )
    return 0


def _noise_scale(args: argparse.Namespace) -> int:
    from optuna_bs.data.datasets import Data
    from optuna_bs.measure.noise import estimate_noise_scale, recommend_batch_sizes
    from optuna_bs.study.auto import default_probe_batch_sizes
    from optuna_bs.study.plan import make_plan

    config = load_config(args.study_file) if args.study_file else StudyConfig()
    plan = make_plan(config, args.device)
    data = plan.data
    if not isinstance(data, Data):
        raise ConfigError(
            f"noise-scale measures gradients on in-memory tensors, but [data] name = "
            f"{config.data.name!r} gives Datasets: return an optuna_bs.Data from the factory."
        )
    batch_sizes = args.batch_sizes or default_probe_batch_sizes(data.n_train)
    estimate = estimate_noise_scale(
        plan.probe_model(),  # seeded: the model "auto" measures, the same every run
        data,
        batch_sizes=batch_sizes,
        n_batches=args.n_batches,
        warmup_epochs=args.warmup_epochs,
        device=plan.device,
        seed=config.study.seed,
    )
    low, high = recommend_batch_sizes(estimate)
    rows = _range_test_rows(plan, (low, high))
    rows = [
        ("data", f"{data.name}: N = {data.n_train} training samples"),
        (
            "batch sizes measured",
            f"{estimate.batch_sizes[0]} and {estimate.batch_sizes[1]}, "
            f"{estimate.n_batches} big batches",
        ),
        ("warm-up epochs", str(estimate.warmup_epochs)),
        ("|G|^2", f"{estimate.grad_sq_norm:.4g}"),
        ("tr(Sigma)", f"{estimate.trace_sigma:.4g}"),
        ("B_simple = tr(Sigma)/|G|^2", f"{estimate.b_simple:.4g} ± {estimate.standard_error:.2g}"),
        ("recommended batch_size", f"[{low}, {high}]"),
        *rows,
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    _say(
        args,
        "Above about B_simple a larger batch no longer saves steps; the estimate grows "
        "during training (try --warmup-epochs).",
    )
    return 0


def _range_test_rows(plan, recommended: tuple[int, int]) -> list:
    """The range test's rows of ``noise-scale``: SGD's of g for a space that searches it, run
    as ``noise_scale = "auto"`` runs it, at the middle of the batch range (the one printed
    when the file says ``batch_size = "auto"``); Adam's of the lr, as ``lr = "auto"`` runs
    it, at the reference batch size."""
    from optuna_bs.measure.range_test import recommend_lrs, recommend_noise_scales
    from optuna_bs.study.auto import adam_range_test

    config, name = plan.config, plan.optimizer_name
    g = RULES[config.space.parameterisation].searches_noise_scale
    batch = recommended if config.space.batch_size == "auto" else None
    if g and name == "sgd":
        test = plan.range_test(plan.space(batch, noise_scale=DEFAULTS["noise_scale"]))
        low, high = recommend_noise_scales(test)
        found = [("steepest descent g_steep", f"{test.g_steep:.3g}")]
        found.append(("recommended noise_scale", f"[{low:g}, {high:g}]"))
    elif not g and name in ("adam", "adamw"):
        test = adam_range_test(plan, plan.space(batch, lr=DEFAULTS["lr"]))
        low, high = recommend_lrs(test)
        found = [(f"steepest descent lr_steep ({name})", f"{test.lr_steep:.3g}")]
        found.append((f"recommended lr (at B = {test.batch_size})", f"[{low:g}, {high:g}]"))
    else:
        return []
    return [
        (
            "range test",
            f"{len(test.losses)} steps at B = {test.batch_size}, "
            + (f"m = {test.momentum:g}" if g else f"beta1 = {test.momentum:g}")
            + (", stopped where the loss blew up" if test.diverged else ""),
        ),
        *found,
    ]


def _storage_proxy(args: argparse.Namespace) -> int:
    from optuna_bs.study.storage import serve_proxy

    if not 1 <= args.port <= 65535:  # before the store is opened (or created)
        raise _UsageError(f"`--port` must be in 1..65535, but got {args.port}.")

    print(f"serving {mask_url(args.storage)} at grpc://{args.host}:{args.port} (Ctrl-C stops)")
    serve_proxy(args.storage, host=args.host, port=args.port)
    return 0


#: Study-file keys a run option overrides: option -> (section, key).
_OVERRIDES = {
    "storage": ("study", "storage"),
    "study_name": ("study", "name"),
    "seed": ("study", "seed"),
    "checkpoint_dir": ("study", "checkpoint_dir"),
    "device": ("train", "device"),
}


def study_config(args: argparse.Namespace) -> StudyConfig:
    """The study file (or the embedded study) with the command-line options that override it
    folded in: the one place where flags become a :class:`StudyConfig`."""
    config = load_config(args.study_file) if args.study_file else StudyConfig()
    changes: dict[str, dict] = {}
    for option, (section, key) in _OVERRIDES.items():
        value = getattr(args, option, None)
        if value is not None:
            changes.setdefault(section, {})[key] = value
    return dataclasses.replace(
        config,
        **{
            section: dataclasses.replace(getattr(config, section), **values)
            for section, values in changes.items()
        },
    )


def _report(args, study: optuna.Study, metric: str, test_value: float | None) -> None:
    from optuna_bs.study.runner import best_trial

    trials = study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    complete = [t for t in trials if t.state == states.COMPLETE]
    pruned = [t for t in trials if t.state == states.PRUNED]
    reasons = Counter(t.user_attrs.get("stop_reason", "pruned") for t in pruned)
    detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    if set(reasons) == {"pruned"}:
        detail = ""
    failed = sum(t.state == states.FAIL for t in trials)
    print(
        f"{len(trials)} trials: {len(complete)} complete, {len(pruned)} pruned"
        + (f" ({detail})" if detail else "")
        + (f", {failed} failed" if failed else "")
    )
    if not complete:
        print("no complete trial yet.")
        return
    if not args.quiet:
        from optuna_bs.report.analysis import rule_for, study_rule

        family = study_rule(study)[1]
        top = sorted(complete, key=lambda t: t.values[0])[: args.top]
        print(format_table(top, metric, columns=rule_for(study).columns(family), family=family))
    best = best_trial(study)
    line = f"best trial #{best.number}: val_{metric}={best.values[0]:.4f}"
    if test_value is not None:
        line += f", test_{metric}={test_value:.4f} (test split, best trial only)"
    print(line)


def format_table(
    trials: Sequence[optuna.trial.FrozenTrial],
    metric: str = "error",
    *,
    columns: Sequence[str] = ("lr", "momentum", "noise_scale"),
    family: str | None = None,
) -> str:
    """A plain-text table of trials: value, B, the rule's ``columns`` (lr, m and g for SGD;
    lr, β1, β2, eps, weight decay and τ for Adam), best epoch, epochs run, seconds."""
    from optuna_bs.rules.registry import column_label, format_value

    head = ("trial", metric_name(metric), "B", *(column_label(c, family) for c in columns))
    head += ("best_ep", "epochs", "seconds")
    rows = [head]
    for t in trials:
        a = t.user_attrs
        values = ["" if a.get(c) is None else format_value(c, a[c]) for c in columns]
        rows.append(
            (
                f"#{t.number}",
                f"{t.values[0]:.4f}",
                str(a.get("batch_size", "")),
                *values,
                str(a.get("best_epoch", "")),
                str(a.get("epochs_run", "")),
                f"{a.get('train_seconds', float('nan')):.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _say(args, message: str) -> None:
    if not args.quiet:
        print(message)


COMMANDS = {
    "run": _run,
    "launch": _launch,
    "report": _report_command,
    "noise-scale": _noise_scale,
    "storage-proxy": _storage_proxy,
}
