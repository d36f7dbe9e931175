"""P3: epochs spent with the default pruner and early stopping against none, at equal error.

    python benchmarks/pruning.py            # full: 20 seeds (see BENCHMARKS.md)
    python benchmarks/pruning.py --quick    # under 3 minutes: digits, 3 seeds

Both arms search the study file's space with its sampler and trial budget (``n_trials``):

* ``pruned``: the study file's pruner (median, with its warm-up) and early stopping
  (``patience``), as users get it;
* ``none``: no pruner and no early stopping: every trial trains ``max_epochs`` epochs.

Per seed: the epochs spent by the whole study, and its best complete trial's validation error.
Goal: the pruned arm spends <= 0.33x the epochs, at a median best error within 0.5 points.
Prints a table, writes benchmarks/results/pruning.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    Arm,
    best_so_far,
    fmt_q,
    interleave,
    load_task,
    mode,
    parser,
    print_table,
    quartiles,
    ratio,
    run_jobs,
    write_json,
)

ARMS = {"pruned": Arm(pruner="study"), "none": Arm(pruner="none", early_stopping=False)}
#: Variants of the default pruner (``--arms``); BENCHMARKS.md keeps their numbers.
VARIANTS = {
    "pruned-warmup1": Arm(
        pruner="median",
        pruner_options=(("n_startup_trials", 5), ("n_warmup_steps", 1), ("n_min_trials", 5)),
    ),
    "hyperband": Arm(pruner="hyperband"),
    "pruned-warmup1-startup2": Arm(
        pruner="median",
        pruner_options=(("n_startup_trials", 2), ("n_warmup_steps", 1), ("n_min_trials", 2)),
    ),
    "percentile25-warmup1": Arm(
        pruner="percentile",
        pruner_options=(
            ("percentile", 25.0),
            ("n_startup_trials", 3),
            ("n_warmup_steps", 1),
            ("n_min_trials", 3),
        ),
    ),
}


def earlier_runs(results_dir: Path, arm: str, tasks: list[str], seeds: int) -> list[dict]:
    """The studies of ``arm`` for ``tasks`` and seeds ``0..seeds-1`` in earlier full runs."""
    found = {}
    for path in sorted(results_dir.glob("pruning*.json")):
        body = json.loads(path.read_text())
        for r in body["runs"] if body.get("mode") == "full" else []:
            if r["arm"] == arm and r["task"] in tasks and r["seed"] < seeds:
                found[r["task"], r["seed"]] = r
    return list(found.values())


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--arms", nargs="+", choices=[*ARMS, *VARIANTS], help="arms to run")
    p.add_argument("--name", help="name of the JSON (default: pruning[_TASKS])")
    args = p.parse_args(argv)
    arms = {a: {**ARMS, **VARIANTS}[a] for a in args.arms or ARMS}
    m = mode(args)
    tasks = (
        args.tasks
        or {
            "full": ["mnist1d_mlp", "digits_mlp"],
            "quick": ["digits_mlp"],
            "smoke": ["digits_mlp"],
        }[m]
    )
    seeds = args.seeds or {"full": 20, "quick": 3, "smoke": 2}[m]
    jobs = interleave(
        tasks,
        arms,
        range(seeds),
        n_trials=lambda task: 3 if m == "smoke" else load_task(task).config.study.n_trials,
        max_epochs=2 if m == "smoke" else None,
    )
    results = run_jobs(jobs, args.workers)
    if "none" not in arms and m == "full":
        # Without a pruner a study is deterministic: reuse the main run's "none" studies.
        results += earlier_runs(args.results_dir, "none", tasks, seeds)
        arms = {**arms, "none": ARMS["none"]}
    summary, rows, goals = {}, [], []
    for task in tasks:
        per_arm = {}
        for arm in arms:
            runs = [r for r in results if r["task"] == task and r["arm"] == arm]
            per_arm[arm] = {
                "epochs": quartiles(sum(t["epochs"] for t in r["trials"]) for r in runs),
                "best_error": quartiles(best_so_far(r["trials"])[-1] for r in runs),
                "pruned_trials": quartiles(
                    sum(t["state"] == "pruned" for t in r["trials"]) for r in runs
                ),
                "seeds": len(runs),
            }
        summary[task] = {"arms": per_arm}
        for a in per_arm:
            if a in ("pruned", *VARIANTS) and "none" in per_arm:
                r = ratio(per_arm[a]["epochs"]["median"], per_arm["none"]["epochs"]["median"])
                gap = per_arm[a]["best_error"]["median"] - per_arm["none"]["best_error"]["median"]
                met = r <= 0.33 and abs(gap) <= 0.005
                goals.append(
                    [task, a, f"{r:.2f}", f"{100 * gap:+.2f}", "met" if met else "missed"]
                )
                if a == "pruned":
                    summary[task].update(epoch_ratio=r, best_error_gap=gap)
        for arm, a in per_arm.items():
            rows.append(
                [
                    task,
                    arm,
                    a["seeds"],
                    fmt_q(a["epochs"], 1, 0),
                    fmt_q(a["best_error"], 100, 2),
                    fmt_q(a["pruned_trials"], 1, 0),
                ]
            )
    print_table(
        "P3 epochs spent by a whole study: median [IQR] over seeds",
        ["task", "arm", "seeds", "epochs", "best val error %", "pruned trials"],
        rows,
    )
    print_table(
        "P3 goal: epochs <= 0.33x at a best error within 0.5 points",
        ["task", "arm", "epoch ratio", "best error gap (pt)", "goal"],
        goals,
    )
    write_json(
        args,
        args.name or "pruning",
        {
            "arms": {a: arm.describe() for a, arm in arms.items()},
            "seeds": seeds,
            "summary": summary,
            "runs": results,
        },
    )


if __name__ == "__main__":
    main()
