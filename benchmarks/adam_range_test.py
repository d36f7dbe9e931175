"""AdamW's lr range test: where it puts lr_steep, and where full runs find the best lr.

    python benchmarks/adam_range_test.py            # 5 tasks, 3 seeds, a 10-point lr grid
    python benchmarks/adam_range_test.py --smoke    # for the test suite

For each task, at its search batch size B (the middle power of two of its range: where an
Adam study's reference lr would be measured), :func:`optuna_bs.measure.lr_range_test` with
``optimizer="adamw"`` (β1 = 0.9, β2 = 0.999) runs on the models of several seeds and gives
lr_steep. Then full runs of ``fit`` with AdamW (no weight decay, the study file's epochs and
patience) cover an lr grid at that B, three points a decade over [1e-4, 1e-1], for the same
seeds: lr* is the grid's best lr by the median over seeds of the best validation value, and
the good lrs those within 1 point of error (10% of the loss for a loss task) of it.

The table gives lr*/lr_steep (and against lr_min, where the sweep's loss is lowest), and
whether ``lr = "auto"``'s range (:func:`~optuna_bs.measure.recommend_lrs`, [lr_steep/3,
10·lr_steep]) holds lr*. That rule was chosen on the two MNIST-1D tasks (where the g rule was
chosen) and is checked on the others. Full mode draws docs/adam_range_test.png.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    REPO,
    _build,
    _init_worker,
    load_task,
    mode,
    parser,
    print_table,
    write_json,
)

from optuna_bs import DevicePath, Hyperparameters, fit  # noqa: E402
from optuna_bs.measure import lr_range_test, recommend_lrs  # noqa: E402
from optuna_bs.study.plan import search_batch_size, space_from_config  # noqa: E402
from optuna_bs.vocabulary import DEFAULTS  # noqa: E402

#: The tasks that choose the lr rule, and those that check it.
CHOOSE = ("mnist1d_mlp", "mnist1d_cnn")
CHECK = ("digits_mlp", "digits_cnn", "regression_mlp")
GRID = tuple(float(v) for v in np.logspace(-4, -1, 10))


def _search_batch(task) -> int:
    space = space_from_config(task.config, task.data.n_train, noise_scale=DEFAULTS["noise_scale"])
    return search_batch_size(space.batch_sizes)


def sweep(args: tuple) -> dict:
    """One seed's AdamW range test on ``name`` at its search B."""
    name, seed = args
    _init_worker()
    task = load_task(name)
    b = _search_batch(task)
    tic = time.perf_counter()
    test = lr_range_test(
        _build(task, seed), task.data, batch_size=b, optimizer="adamw", device="cpu", seed=seed
    )
    return {
        "task": name,
        "seed": seed,
        "batch_size": b,
        "lr_steep": test.lr_steep,
        "diverged": test.diverged,
        "seconds": time.perf_counter() - tic,
        "lrs": test.lrs,
        "losses": test.losses,
    }


def train(args: tuple) -> dict:
    """One full AdamW run of ``name`` at lr, on seed's model."""
    name, lr, seed, max_epochs = args
    _init_worker()
    task = load_task(name)
    b = _search_batch(task)
    train_cfg = task.config.train
    hp = Hyperparameters(b, lr, 0.9, task.data.n_train, beta2=0.999, eps=1e-8)
    result = fit(
        _build(task, seed),
        task.data,
        hp,
        max_epochs=max_epochs or train_cfg.max_epochs,
        patience=train_cfg.patience or None,
        metric=train_cfg.metric,
        optimizer="adamw",
        weight_decay=0.0,
        seed=seed,
        device=DevicePath("cpu"),
    )
    return {"task": name, "lr": lr, "seed": seed, "value": result.best_value}


def summarise(name: str, sweeps: list[dict], runs: list[dict], metric: str) -> dict:
    steep = float(np.exp(np.median(np.log([s["lr_steep"] for s in sweeps]))))
    # Where each seed's smoothed sweep is lowest (the centre the g rule did not take).
    lowest = [s["lrs"][int(np.argmin(s["losses"]))] for s in sweeps]
    by_lr = {}
    for r in runs:
        by_lr.setdefault(r["lr"], []).append(r["value"])
    medians = {lr: float(np.median(v)) for lr, v in sorted(by_lr.items())}
    best_lr = min(medians, key=medians.get)
    best = medians[best_lr]
    slack = 0.1 * abs(best) if metric == "loss" else 0.01
    good = [lr for lr, v in medians.items() if v <= best + slack]
    return {
        "task": name,
        "role": "choose" if name in CHOOSE else "check",
        "batch_size": sweeps[0]["batch_size"],
        "lr_steep": steep,
        "lr_steep_seeds": [s["lr_steep"] for s in sweeps],
        "diverged": sum(s["diverged"] for s in sweeps),
        "seconds": float(np.median([s["seconds"] for s in sweeps])),
        "medians": [[lr, v] for lr, v in medians.items()],  # (lr, median best value)
        "lr_star": best_lr,
        "best": best,
        "good": [min(good), max(good)],
        "ratio": best_lr / steep,
        "lr_min": float(np.exp(np.median(np.log(lowest)))),
        "range": list(recommend_lrs(steep)),
    }


def _holds(row: dict) -> str:
    low, high = row["range"]
    if low <= row["lr_star"] <= high:
        return f"[{low:.2g}, {high:.2g}] holds lr*"
    overlap = row["good"][1] >= low and row["good"][0] <= high
    return f"[{low:.2g}, {high:.2g}] misses lr*" + (", holds good lrs" if overlap else "")


def main(argv: list[str] | None = None) -> Path:
    p = parser(__doc__)
    p.add_argument("--figure", default="docs/adam_range_test.png", help="full mode's figure")
    args = p.parse_args(argv)
    m = mode(args)
    tasks = args.tasks or (["digits_mlp"] if m == "smoke" else [*CHOOSE, *CHECK])
    seeds = args.seeds or {"full": 3, "quick": 2, "smoke": 1}[m]
    grid = GRID if m == "full" else GRID[::3]
    max_epochs = 2 if m == "smoke" else None
    jobs = [(t, s) for t in tasks for s in range(seeds)]
    runs_jobs = [(t, lr, s, max_epochs) for t in tasks for lr in grid for s in range(seeds)]
    with ProcessPoolExecutor(max_workers=1 if m == "smoke" else 2) as pool:
        sweeps = list(pool.map(sweep, jobs))
        runs = []
        for i, r in enumerate(pool.map(train, runs_jobs)):
            runs.append(r)
            if (i + 1) % 10 == 0:
                print(f"  {i + 1}/{len(runs_jobs)} runs", flush=True)
    rows = [
        summarise(
            t,
            [s for s in sweeps if s["task"] == t],
            [r for r in runs if r["task"] == t],
            load_task(t).config.train.metric,
        )
        for t in tasks
    ]
    print_table(
        "AdamW lr range test (β1 0.9, β2 0.999) against an lr grid of full runs at the search B",
        [
            "task",
            "role",
            "B",
            "lr_steep (seeds)",
            "lr* (grid)",
            "lr*/lr_steep",
            "lr*/lr_min",
            "good lrs",
            "auto range",
        ],
        [
            [
                r["task"],
                r["role"],
                r["batch_size"],
                f"{r['lr_steep']:.3g} ({', '.join(f'{v:.2g}' for v in r['lr_steep_seeds'])})",
                f"{r['lr_star']:.3g} ({r['best']:.4g})",
                f"{r['ratio']:.2f}",
                f"{r['lr_star'] / r['lr_min']:.2f}",
                f"[{r['good'][0]:.2g}, {r['good'][1]:.2g}] = "
                f"[{r['good'][0] / r['lr_steep']:.2g}, {r['good'][1] / r['lr_steep']:.2g}]·steep",
                _holds(r),
            ]
            for r in rows
        ],
    )
    path = write_json(args, "adam_range_test", {"seeds": seeds, "grid": grid, "rows": rows})
    if m == "full":
        plot(rows, sweeps, REPO / args.figure)
    return path


def plot(rows: list[dict], sweeps: list[dict], path: Path) -> None:
    """Each task: the range test's smoothed loss against lr, and the grid's median best
    validation value, with lr_steep and lr*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.4), dpi=120)
    for ax, row in zip(np.atleast_1d(axes), rows, strict=True):
        for s in (s for s in sweeps if s["task"] == row["task"]):
            ax.plot(s["lrs"], s["losses"], color="#31688e", alpha=0.35, lw=1)
        top = max(max(s["losses"][:5]) for s in sweeps if s["task"] == row["task"])
        ax.set_ylim(0, 1.3 * top)
        ax.set_xscale("log")
        ax.axvline(row["lr_steep"], color="#35b779", label=f"lr_steep {row['lr_steep']:.2g}")
        ax.axvspan(*row["good"], color="#c0392b", alpha=0.12, label="good lrs (full runs)")
        ax.axvline(row["lr_star"], color="#c0392b", ls="--", label=f"lr* {row['lr_star']:.2g}")
        twin = ax.twinx()
        lrs, values = zip(*row["medians"], strict=True)
        twin.plot(lrs, values, "o-", color="#c0392b", ms=3, lw=1)
        twin.set_ylabel("best validation value (median)", fontsize=7)
        ax.set_title(f"{row['task']} ({row['role']}), B = {row['batch_size']}", fontsize=9)
        ax.set_xlabel("AdamW lr (one step each)")
        ax.set_ylabel("training loss (smoothed)", fontsize=7)
        ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    print(f"figure: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
