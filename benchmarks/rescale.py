"""P8: the learning rate at a new batch size, trained against an lr grid searched there.

    python benchmarks/rescale.py          # 4 tasks, 3 tuning seeds, 4 moves: ~40 min, 2 cores
    python benchmarks/rescale.py --quick  # 1 tuning seed, 2 tasks
    python benchmarks/rescale.py --smoke  # tiny: digits, 2 epochs (the test suite's)

For each task and tuning seed:

1. tune 24 trials at B in {16, 32, 64} (the study file's space, sampler and pruner, with the
   batch range narrowed to 16..64);
2. move to B' = 2x, 4x and 8x the largest tuned B (128, 256, 512) and 4x below the smallest
   (4), by each arm;
3. train every arm's configuration at B' on 2 training seeds, and measure the test error of
   the best validation epoch.

The oracle at each B' is an lr grid (12 values, log-spaced from half the smallest to twice
the largest lr any arm proposed there, the other values as the new recommendation's),
trained on the same 2 seeds, chosen by mean validation error and scored by test error. The
regret of an arm is its mean test error minus the oracle's, in points, per tuning seed.

Arms:
* ``recommend``: ``optuna_bs.report.scaling``: the fitted lr*(B) from per-batch-size optima (or the
  study's rule where there is no fit), Adam with β1 kept and β2 by its half-life;
* ``recommend, unbent``: the same with the saturating curves left out of the candidates
  (the rule and the power law only): does the bend help?
* ``today's recommend``: the previous release's answer, the centre of the pooled near-best
  25% of trials moved by the study's rule (kept here to measure against);
* ``keep``, ``sqrt``, ``linear``: the optimum of the tuned batch size nearest B' (the same
  anchor as ``recommend``) moved by keeping the lr, by √κ and by κ (β, eps and λ kept);
* AdamW only: ``adam-sqrt (Malladi)``: Malladi's full rule, 1 − β ∝ κ for β1 and β2, τ kept.

None of the transfer's choices (the median-trial tolerance, the vertex of up to 5 trials,
the candidate curves, the 4x reach) was chosen on these tasks: they were set on synthetic
studies, so every task here is held out. Results go to benchmarks/results/rescale.json.
"""

from __future__ import annotations

import math
import statistics
import sys
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

from optuna_bs import Hyperparameters, evaluate, fit, rescale  # noqa: E402
from optuna_bs.errors import NotEnoughTrialsError  # noqa: E402
from optuna_bs.report.analysis import complete_points, rule_for  # noqa: E402
from optuna_bs.report.fits import fit_scaling_rule
from optuna_bs.report.optima import batch_optima, error_limit
from optuna_bs.report.scaling import transfer  # noqa: E402
from optuna_bs.rules import weight_decay_for_timescale  # noqa: E402
from optuna_bs.study.plan import fit_arguments  # noqa: E402

TASKS = ("mnist1d_mlp", "digits_mlp", "mnist1d_cnn", "mnist1d_cnn_adamw")
TUNED = (16, 64)
#: B' as a multiple of the largest tuned B (above) or of the smallest (below).
MOVES = {"4x below": 0.25, "2x": 2, "4x": 4, "8x": 8}
GRID = 12
BASELINES = ("keep", "sqrt", "linear")


def tune(task: h.Task, seed: int, n_trials: int, max_epochs: int) -> optuna.Study:
    """An in-memory study of the task's space with B in 16..64."""
    arm = h.Arm(pruner="study", space_options=(("batch_size", TUNED),))
    study = optuna.create_study(
        sampler=h.make_arm_sampler(task, arm, seed), pruner=h.make_arm_pruner(task, arm)
    )
    study.set_user_attr("parameterisation", task.config.space.parameterisation)
    study.set_user_attr("optimizer", task.config.train.optimizer)
    objective, callbacks = h._objective(task, arm, seed, max_epochs, None)
    study.optimize(objective, n_trials=n_trials, callbacks=callbacks)
    return study


def todays_recommend(study: optuna.Study, batch_size: int) -> Hyperparameters:
    """The previous release's recommend: the near-best 25% (at least 5) of all trials,
    pooled across batch sizes, each moved by the study's rule, and their centre."""
    points = complete_points(study)
    rule = rule_for(study)
    near = sorted(points, key=lambda p: (p.error, p.number))[: max(math.ceil(len(points) / 4), 5)]
    return rule.center([rescale(p.hparams(), batch_size, rule) for p in near])


def configs_at(study: optuna.Study, batch_size: int, family: str | None) -> dict:
    """Every arm's configuration at ``batch_size``, and what the transfer said."""
    try:
        fitted = fit_scaling_rule(study)
        unbent = fit_scaling_rule(study, models=("rule", "power"))
    except NotEnoughTrialsError:
        fitted = unbent = None
    moved = transfer(study, batch_size, extrapolate=True, fit=fitted)
    anchor = next(
        o
        for o in batch_optima(complete_points(study), error_limit(study))
        if o.batch_size == moved.anchor_batch_size
    ).hparams()
    configs = {
        "recommend": moved.hparams,
        "recommend, unbent": (
            moved.hparams
            if unbent is None
            else transfer(study, batch_size, extrapolate=True, fit=unbent).hparams
        ),
        "today's recommend": todays_recommend(study, batch_size),
        "keep": rescale(anchor, batch_size, "independent"),
        "sqrt": rescale(anchor, batch_size, "sqrt", keep_tau=False),
        "linear": rescale(anchor, batch_size, "linear", keep_tau=False),
    }
    if family == "adam":
        configs["adam-sqrt (Malladi)"] = rescale(anchor, batch_size, "adam-sqrt")
    return configs, {"source": moved.source, "model": moved.model, "describe": moved.describe()}


def tune_one(args: tuple) -> dict:
    """One task and tuning seed: the study, and every arm's configuration at every move."""
    name, seed, n_trials, max_epochs, moves = args
    h._init_worker()
    task = h.load_task(name)
    max_epochs = max_epochs or task.config.train.max_epochs
    study = tune(task, seed, n_trials, max_epochs)
    family = "adam" if task.config.train.optimizer != "sgd" else "sgd"
    points = complete_points(study)
    try:
        fitted = fit_scaling_rule(study)
        fit_info = {"ran": True, "model": fitted.model, "describe": fitted.describe()}
    except NotEnoughTrialsError as err:
        fit_info = {"ran": False, "reason": str(err)}
    sizes = sorted({p.batch_size for p in points})
    out = {"task": name, "seed": seed, "n_complete": len(points), "batch_sizes": sizes}
    out["fit"], out["moves"] = fit_info, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the moves are outside the tuned B on purpose
        for move, factor in moves.items():
            b_new = round(TUNED[1] * factor) if factor > 1 else round(TUNED[0] * factor)
            configs, said = configs_at(study, b_new, family)
            out["moves"][move] = {
                "batch_size": b_new,
                "configs": {k: asdict(v) for k, v in configs.items()},
                "transfer": said,
            }
    print(f"  tuned {name} seed {seed}: {len(points)} complete, fit {fit_info}", file=sys.stderr)
    return out


def train_one(args: tuple) -> dict:
    """Train one configuration on one training seed; the best epoch's val and test error."""
    name, hp_fields, seed, max_epochs = args
    h._init_worker()
    task = h.load_task(name)
    hp = Hyperparameters(**hp_fields)
    model = h._build(task, 10_000 + seed)
    kwargs = {**fit_arguments(task.config, None, "cpu")}
    if max_epochs:
        kwargs["max_epochs"] = max_epochs
    result = fit(model, task.data, hp, seed=10_000 + seed, **kwargs)
    error = evaluate(model, task.data.x_test, task.data.y_test)
    return {"test": error, "val": result.best_value, "stop": result.stop_reason}


def grid(configs: list[dict], n: int) -> list[dict]:
    """``n`` lrs log-spaced over [½ min, 2 max] of the arms' lrs, the rest as the first."""
    lrs = [c["lr"] for c in configs]
    base = Hyperparameters(**configs[0])
    out = []
    for lr in np.geomspace(min(lrs) / 2, max(lrs) * 2, n):
        hp = replace(base, lr=float(lr))
        if base.weight_decay:  # keep τ, as the recommendation does
            lam = weight_decay_for_timescale(base.tau_epochs, hp.lr, hp.batch_size, hp.n_train)
            hp = replace(hp, weight_decay=lam)
        out.append(asdict(hp))
    return out


def _key(name: str, fields: dict) -> tuple:
    return (
        name,
        tuple(sorted((k, round(v, 12) if isinstance(v, float) else v) for k, v in fields.items())),
    )


def main() -> None:
    args = h.parser(__doc__).parse_args()
    mode = h.mode(args)
    tasks = args.tasks or {"smoke": ("digits_mlp",), "quick": TASKS[:2], "full": TASKS}[mode]
    seeds = args.seeds or {"smoke": 1, "quick": 1, "full": 3}[mode]
    n_trials = {"smoke": 8, "quick": 24, "full": 24}[mode]
    n_train_seeds = {"smoke": 1, "quick": 2, "full": 2}[mode]
    n_grid = {"smoke": 3, "quick": GRID, "full": GRID}[mode]
    moves = {"2x": 2} if mode == "smoke" else MOVES
    max_epochs = 2 if mode == "smoke" else None
    pool = None
    if args.workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(args.workers)
    run = (
        (lambda f, jobs: pool.map(f, jobs, chunksize=1))
        if pool
        else (lambda f, jobs: [f(j) for j in jobs])
    )
    tuned = run(
        tune_one, [(t, s, n_trials, max_epochs, moves) for t in tasks for s in range(seeds)]
    )
    # Every configuration to train: the arms', and the oracle's grid, per task and move.
    wanted: dict[tuple, tuple] = {}
    grids: dict[tuple, list[dict]] = {}
    for r in tuned:
        for m in r["moves"].values():
            for fields in m["configs"].values():
                for s in range(n_train_seeds):
                    wanted[(_key(r["task"], fields), s)] = (r["task"], fields, s, max_epochs)
    for name in tasks:
        for move in moves:
            configs = [
                c for r in tuned if r["task"] == name for c in r["moves"][move]["configs"].values()
            ]
            rec = [r["moves"][move]["configs"]["recommend"] for r in tuned if r["task"] == name]
            grids[(name, move)] = grid([rec[0], *configs], n_grid)
            for fields in grids[(name, move)]:
                for s in range(n_train_seeds):
                    wanted[(_key(name, fields), s)] = (name, fields, s, max_epochs)
    keys = list(wanted)
    print(f"training {len(keys)} configurations x seeds", file=sys.stderr, flush=True)
    trained = dict(zip(keys, run(train_one, [wanted[k] for k in keys]), strict=True))
    if pool:
        pool.close()

    def runs(name, fields):
        return [trained[(_key(name, fields), s)] for s in range(n_train_seeds)]

    summary, rows = {}, []
    for name in tasks:
        summary[name] = {}
        mine = [r for r in tuned if r["task"] == name]
        for move in moves:
            cells = [(f, runs(name, f)) for f in grids[(name, move)]]
            best_f, best_runs = min(cells, key=lambda c: statistics.fmean(x["val"] for x in c[1]))
            oracle = statistics.fmean(x["test"] for x in best_runs)
            arms = list(mine[0]["moves"][move]["configs"])
            regrets = {a: [] for a in arms}
            diverged = {a: 0 for a in arms}
            for r in mine:
                for arm in arms:
                    got = runs(name, r["moves"][move]["configs"][arm])
                    regrets[arm].append(100 * (statistics.fmean(x["test"] for x in got) - oracle))
                    diverged[arm] += sum(x["stop"] == "diverged" for x in got)
            b_new = mine[0]["moves"][move]["batch_size"]
            summary[name][move] = {
                "batch_size": b_new,
                "oracle_test": oracle,
                "oracle_lr": best_f["lr"],
                # The whole grid, so that another arm's lr can be read off it later.
                "grid": [
                    {
                        "lr": f["lr"],
                        "val": statistics.fmean(x["val"] for x in got),
                        "test": statistics.fmean(x["test"] for x in got),
                    }
                    for f, got in cells
                ],
                "regret_points": regrets,
                "diverged": diverged,
                "transfer": [r["moves"][move]["transfer"] for r in mine],
            }
            best_baseline = min(statistics.median(regrets[a]) for a in BASELINES)
            for arm in arms:
                med = statistics.median(regrets[arm])
                rows.append(
                    (
                        name,
                        f"{move} (B={b_new})",
                        arm,
                        f"{med:+.2f}",
                        f"{max(regrets[arm]):+.2f}",
                        ", ".join(f"{x:+.1f}" for x in regrets[arm]),
                        str(diverged[arm]),
                        f"{med - best_baseline:+.2f}" if arm.startswith("recommend") else "",
                    )
                )
    h.print_table(
        f"P8: regret in test-error points against an lr grid at B' ({n_grid} lrs, "
        f"{n_train_seeds} training seeds), tuned at B in 16..64 ({n_trials} trials, "
        f"{seeds} tuning seeds)",
        ("task", "move", "arm", "median", "worst", "per tuning seed", "diverged", "vs best rule"),
        rows,
    )
    studies = [r for r in tuned if len(r["batch_sizes"]) >= 3 and r["n_complete"] >= 12]
    ran = sum(r["fit"]["ran"] for r in studies)
    print(
        f"P8 fit: ran on {ran} of {len(studies)} studies with >= 3 batch sizes and >= 12 "
        f"complete trials; on {sum(r['fit']['ran'] for r in tuned)} of {len(tuned)} in all"
    )
    for r in tuned:
        print(f"  {r['task']} seed {r['seed']}: {r['n_complete']} complete, {r['fit']}")
    h.write_json(args, "rescale", {"tuned": tuned, "summary": summary})


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
