"""P1: search efficiency. Regret of the default space against vanilla Optuna and other samplers.

    python benchmarks/search.py            # full: 20 seeds (see BENCHMARKS.md for the time)
    python benchmarks/search.py --quick    # under 3 minutes: 2 tasks, 3 seeds, 10 trials
    python benchmarks/search.py --tasks mnist1d_mlp --arms default default-startup5 \
        --name search_variants_mnist1d_mlp                      # variants of the default
    python benchmarks/search.py --rescore   # every full run against the best known of all

Regret after k trials = the best complete trial's validation error after k trials minus the
task's best known error (the best over every arm and seed of every full run). No pruning; every
trial trains with the study file's max_epochs and patience. Arms (docs/design.md §8):

* ``default``: the study file's space (noise-scale: B and log g, m fixed) and sampler (TPE);
* ``independent-fixed-m``: the fair baseline: the same sampler over independent (B, ϵ), with
  the study file's B range and m (0.9), lr in [1e-4, 1] (log): the default's dimension and
  its fixed m, without the rule;
* ``ladder``: :class:`optuna_bs.BatchLadderSampler` on the default space (g searched at one B,
  then B climbed at g*, then TPE);
* ``vanilla-tpe``: Optuna's TPESampler with its defaults over the independent space
  B in 2^[4, 10], lr in [1e-4, 1] (log), m in [0, 0.99];
* ``gp``, ``cmaes``, ``random``: the same independent space under GPSampler, CmaEsSampler and
  RandomSampler, with their defaults.

Variants of the default (``--arms``) are kept in :data:`VARIANTS`. ``--two-objective`` makes
every study minimise (validation error, the trial's seconds), as a study file's ``objectives``
does, and adds the hypervolume of that front after each checkpoint (P2's two-objective part).
Prints a table per task, writes benchmarks/results/search.json and, in the full mode,
docs/p1_<name>.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    REPO,
    Arm,
    best_known,
    best_so_far,
    fmt_paired,
    fmt_q,
    hypervolume_2d,
    interleave,
    mode,
    paired_test,
    parser,
    print_table,
    quartiles,
    ratio,
    run_jobs,
    write_json,
)

ARMS = {
    "default": Arm(),
    "independent-fixed-m": Arm(space="fixed-m"),
    "ladder": Arm(sampler="ladder"),
    "vanilla-tpe": Arm(space="vanilla", sampler="tpe"),
    "gp": Arm(space="vanilla", sampler="gp"),
    "cmaes": Arm(space="vanilla", sampler="cmaes"),
    "random": Arm(space="vanilla", sampler="random"),
}
#: Variants of the default tried to make it win (BENCHMARKS.md keeps their numbers).
VARIANTS = {
    "default-random": Arm(sampler="random"),
    "default-startup5": Arm(sampler_options=(("n_startup_trials", 5),)),
    "default-multivariate": Arm(sampler_options=(("multivariate", True),)),
    "default-gp": Arm(sampler="gp"),
    "default-g10-300": Arm(space_options=(("noise_scale", (10.0, 300.0)),)),
    "default-b16-64": Arm(space_options=(("batch_size", (16, 64)),)),
    "default-m0.5": Arm(space_options=(("momentum", 0.5),)),
    "default-m0": Arm(space_options=(("momentum", 0.0),)),
    "default-msearch": Arm(space_options=(("momentum", (0.0, 0.9)),)),
    "default-m0.5-gp": Arm(sampler="gp", space_options=(("momentum", 0.5),)),
    # The ladder with m searched: held at 0.9 while it searches g and climbs, opened after.
    "ladder-msearch": Arm(sampler="ladder", space_options=(("momentum", (0.0, 0.99)),)),
    # The noise scale's range centred by a range test on the task (noise_scale = "auto").
    "default-auto": Arm(space_options=(("noise_scale", "auto"),)),
    "ladder-auto": Arm(sampler="ladder", space_options=(("noise_scale", "auto"),)),
}
CHECKPOINTS = (5, 10, 20, 40)
#: The fair baseline: the default's dimension and fixed m, without the rule.
FAIR = "independent-fixed-m"
#: Full mode: trials per task. The CNN is the costly task (see BENCHMARKS.md).
FULL_TRIALS = {"digits_mlp": 20, "mnist1d_mlp": 20, "mnist1d_cnn": 10}


def checkpoints(n_trials: int) -> list[int]:
    """The trial counts to report regret at: those of :data:`CHECKPOINTS` within the budget."""
    return [k for k in CHECKPOINTS if k <= n_trials] or [n_trials]


def _full_runs(results_dir: Path) -> dict[Path, dict]:
    files = {p: json.loads(p.read_text()) for p in sorted(results_dir.glob("search*.json"))}
    return {p: body for p, body in files.items() if body.get("mode") == "full"}


def earlier_best_known(results_dir: Path) -> dict[str, float]:
    """Per task, the best known error over the full P1 runs in ``results_dir``."""
    return best_known(r for body in _full_runs(results_dir).values() for r in body["runs"])


def rescore(results_dir: Path) -> None:
    """Recompute every full run's regrets against the best known over all of them."""
    known = earlier_best_known(results_dir)
    for path, body in _full_runs(results_dir).items():
        body["summary"] = summarise(body["runs"], list(body["arms"]), known)
        print(f"\n== {path.name}: {body['command']}")
        report(body["summary"])
        plot(body["summary"], REPO / "docs" / f"p1_{path.stem}.png")
        path.write_text(json.dumps(body, indent=1))


def summarise(results: list[dict], arms: list[str], earlier: dict[str, float]) -> dict:
    """Per task and arm: regret quartiles after each checkpoint, and the best-so-far curves.

    Regret is against the best known error over this run and ``earlier`` ones, so that runs
    of variants compare with the main run.
    """
    known = best_known(results)
    known = {t: min(v, earlier.get(t, v)) for t, v in known.items()}
    out = {}
    for task in dict.fromkeys(r["task"] for r in results):
        runs = {arm: [r for r in results if r["task"] == task and r["arm"] == arm] for arm in arms}
        runs = {arm: rs for arm, rs in runs.items() if rs}
        n_trials = min(len(r["trials"]) for rs in runs.values() for r in rs)
        curves = {
            arm: np.array([best_so_far(r["trials"])[:n_trials] for r in rs]) - known[task]
            for arm, rs in runs.items()
        }
        out[task] = {
            "best_known": known[task],
            "n_trials": n_trials,
            "seeds": {arm: len(rs) for arm, rs in runs.items()},
            "regret": {
                arm: {k: quartiles(c[:, k - 1]) for k in checkpoints(n_trials)}
                for arm, c in curves.items()
            },
            **({"hypervolume": _hypervolumes(runs, n_trials)} if _two_objective(runs) else {}),
            # Against the fair baseline, seed by seed (the seeds are paired: same seed, same
            # task; the arms' first trials differ, their training seeds do not).
            "paired_vs_fixed_m": {
                arm: {
                    k: paired_test(c[:, k - 1], curves[FAIR][:, k - 1])
                    for k in checkpoints(n_trials)
                }
                for arm, c in curves.items()
                if FAIR in curves and arm != FAIR
            },
            "curves": {
                arm: {
                    "median": np.median(c, axis=0).tolist(),
                    "q1": np.percentile(c, 25, axis=0).tolist(),
                    "q3": np.percentile(c, 75, axis=0).tolist(),
                }
                for arm, c in curves.items()
            },
        }
    return out


def _two_objective(runs: dict[str, list[dict]]) -> bool:
    return all("cost" in t for rs in runs.values() for r in rs for t in r["trials"])


def _hypervolumes(runs: dict[str, list[dict]], n_trials: int) -> dict:
    """Per arm, the hypervolume of (validation error, seconds of the trial) over the complete
    trials among the first k, at each checkpoint k: its quartiles over seeds, its ratio to the
    fair baseline's (higher is better) and a paired test.

    The reference point is common to every arm of the task: the 90th percentiles of the error
    and of the seconds over all their complete trials, so the area measured is where good and
    fast trials lie, not the tail of diverged ones.
    """
    done = [t for rs in runs.values() for r in rs for t in r["trials"] if t["state"] == "complete"]
    ref = (
        float(np.percentile([t["value"] for t in done], 90)),
        float(np.percentile([t["cost"] for t in done], 90)),
    )
    per_seed = {
        arm: {
            k: [
                hypervolume_2d(
                    ((t["value"], t["cost"]) for t in r["trials"][:k] if t["state"] == "complete"),
                    ref,
                )
                for r in rs
            ]
            for k in checkpoints(n_trials)
        }
        for arm, rs in runs.items()
    }
    out = {"reference": ref, "arms": {}}
    for arm, by_k in per_seed.items():
        out["arms"][arm] = {}
        for k, values in by_k.items():
            cell = {"quartiles": quartiles(values), "per_seed": values}
            if FAIR in per_seed and arm != FAIR:
                base = per_seed[FAIR][k]
                cell["ratio_to_fixed_m"] = ratio(float(np.median(values)), float(np.median(base)))
                cell["paired"] = paired_test([-v for v in values], [-v for v in base])
            out["arms"][arm][k] = cell
    return out


def report(summary: dict) -> None:
    """Print one regret table per task, the paired tests against the fair baseline, and the
    goal tables."""
    goals = []
    for task, s in summary.items():
        ks = checkpoints(s["n_trials"])
        rows = []
        for arm, regret in s["regret"].items():
            ratios = []
            for base in (FAIR, "vanilla-tpe"):
                other = s["regret"].get(base, {})
                ratios += [
                    f"{ratio(regret[k]['median'], other[k]['median']):.2f}" if k in other else "-"
                    for k in ks
                    if k >= 10
                ]
            rows.append([arm, s["seeds"][arm]] + [fmt_q(regret[k], 100, 1) for k in ks] + ratios)
        header = (
            ["arm", "seeds"]
            + [f"regret@{k} (pt)" for k in ks]
            + [f"÷fixed-m@{k}" for k in ks if k >= 10]
            + [f"÷vanilla@{k}" for k in ks if k >= 10]
        )
        print_table(
            f"P1 {task}: best known {100 * s['best_known']:.2f}% val error; "
            "median regret [IQR] in points",
            header,
            rows,
        )
        hv = s.get("hypervolume")
        if hv:
            print_table(
                f"P2 {task}: hypervolume of (val error, trial seconds), reference "
                f"({hv['reference'][0]:.3f}, {hv['reference'][1]:.2f} s); median [IQR], "
                f"÷{FAIR} (higher is better), paired wins-ties-losses",
                ["arm"] + [f"@{k}" for k in ks],
                [
                    [arm]
                    + [
                        fmt_q(c["quartiles"], 1, 3)
                        + (
                            f"  {c['ratio_to_fixed_m']:.2f}x {fmt_paired(c['paired'])}"
                            if "paired" in c
                            else ""
                        )
                        for c in by_k.values()
                    ]
                    for arm, by_k in hv["arms"].items()
                ],
            )
        paired = s.get("paired_vs_fixed_m", {})
        if paired:
            print_table(
                f"P1 {task}: against {FAIR}, seed by seed: wins-ties-losses, Wilcoxon p",
                ["arm"] + [f"@{k}" for k in ks],
                [[arm] + [fmt_paired(t[k]) for k in ks] for arm, t in paired.items()],
            )
        for base, bound in ((FAIR, 0.7), ("vanilla-tpe", 0.33)):
            for arm in ("default", "ladder"):
                if arm not in s["regret"] or base not in s["regret"]:
                    continue
                for k in ks:
                    if k < 10:
                        continue
                    d, v = s["regret"][arm][k], s["regret"][base][k]
                    r = ratio(d["median"], v["median"])
                    need = bound if k == 10 else 1.0
                    goal = "met" if r <= need else "missed"
                    goals.append([task, arm, base, k, f"{r:.2f}", f"<= {need}", goal])
    if goals:
        print_table(
            "P1 goals: median regret ratio (<= 0.7x the fair baseline and <= 0.33x vanilla at "
            "10 trials; never worse, <= 1.0x, at 20 and 40)",
            ["task", "arm", "against", "trials", "ratio of medians", "goal", "verdict"],
            goals,
        )


def plot(summary: dict, path: Path) -> None:
    """Median regret against trials, with the IQR as a band, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 4), squeeze=False)
    for ax, (task, s) in zip(axes[0], summary.items(), strict=True):
        for arm, c in s["curves"].items():
            x = np.arange(1, len(c["median"]) + 1)
            (line,) = ax.plot(x, 100 * np.array(c["median"]), label=arm)
            ax.fill_between(
                x,
                100 * np.array(c["q1"]),
                100 * np.array(c["q3"]),
                color=line.get_color(),
                alpha=0.15,
            )
        ax.set_title(f"{task} (best known {100 * s['best_known']:.1f}%)")
        ax.set_xlabel("trials")
        ax.set_ylabel("regret, points of val error")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--arms", nargs="+", choices=[*ARMS, *VARIANTS], help="arms to run")
    p.add_argument("--trials", type=int, help="trials per study (default: the mode's)")
    p.add_argument("--name", help="name of the JSON (default: search[_TASKS])")
    p.add_argument(
        "--two-objective",
        action="store_true",
        help='studies minimise (val error, trial seconds), as objectives = ["val_error", '
        '"train_seconds"] does; adds the hypervolume after each checkpoint',
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="train nothing: recompute the regrets of every full run in the results folder "
        "against the best known error over all of them, and print the tables again",
    )
    args = p.parse_args(argv)
    if args.rescore:
        rescore(args.results_dir)
        return
    m = mode(args)
    tasks = (
        args.tasks
        or {
            "full": list(FULL_TRIALS),
            "quick": ["digits_mlp", "mnist1d_mlp"],
            "smoke": ["digits_mlp"],
        }[m]
    )
    seeds = args.seeds or {"full": 20, "quick": 3, "smoke": 2}[m]
    arms = args.arms or list(ARMS)
    trials = args.trials or {"full": FULL_TRIALS.get, "quick": 10, "smoke": 3}[m]
    jobs = interleave(
        tasks,
        {a: {**ARMS, **VARIANTS}[a] for a in arms},
        range(seeds),
        n_trials=trials,
        max_epochs=2 if m == "smoke" else None,
        two_objective=args.two_objective,
    )
    results = run_jobs(jobs, args.workers)
    earlier = earlier_best_known(args.results_dir) if m == "full" else {}
    summary = summarise(results, arms, earlier)
    report(summary)
    path = write_json(
        args,
        args.name or "search",
        {
            "arms": {a: {**ARMS, **VARIANTS}[a].describe() for a in arms},
            "seeds": seeds,
            "summary": summary,
            "runs": results,
        },
    )
    png = REPO / "docs" / f"p1_{path.stem}.png" if m == "full" else path.with_suffix(".png")
    plot(summary, png)


if __name__ == "__main__":
    main()
