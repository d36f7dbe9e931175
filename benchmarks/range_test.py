"""The range test of g: where it puts g_steep, what it costs, where full runs find the best g.

    python benchmarks/range_test.py            # 3 tasks x 5 batch sizes x 8 seeds: ~2 min
    python benchmarks/range_test.py --smoke    # for the test suite

For each SGD task (a study file with the noise-scale space), at each power of two B of its
range, :func:`optuna_bs.measure.lr_range_test` runs on the models of several seeds at the
study's momentum, as ``noise_scale = "auto"`` does at the middle B. It reports g_steep, the
learning rate it stands for, and the seconds a test takes.

The best g of full runs comes from the time-to-target runs in the results folder
(benchmarks/results/time_to_target*.json): the log-median g of the best 10% of their complete
trials with m = 0.9, every arm and batch size pooled (the rule makes g comparable across B).
The table says where it lies against g_steep at the search B, and whether the recommended
range [g_steep/5, 3·g_steep] holds it. Full mode draws docs/range_test.png: the smoothed
loss against g at the search B, g_steep and the range marked, the best g of full runs too.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import REPO, _build, load_task, mode, parser, print_table, write_json  # noqa: E402

from optuna_bs.measure.range_test import recommend_noise_scales  # noqa: E402
from optuna_bs.rules import lr_for_noise_scale  # noqa: E402
from optuna_bs.study.auto import range_test  # noqa: E402
from optuna_bs.study.plan import search_batch_size, space_from_config  # noqa: E402
from optuna_bs.vocabulary import DEFAULTS  # noqa: E402

SGD_TASKS = ("mnist1d_mlp", "digits_mlp", "mnist1d_cnn")


def best_g(results_dir: Path) -> dict[str, dict]:
    """Per task, the log-median and IQR of g over the best 10% of complete m = 0.9 trials of
    the saved time-to-target runs (full mode only)."""
    pooled: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(results_dir.glob("time_to_target*.json")):
        body = json.loads(path.read_text())
        if body.get("mode") != "full":
            continue
        for run in body["runs"]:
            for t in run["trials"]:
                m, g = t.get("momentum"), t.get("noise_scale")
                if t["state"] == "complete" and m is not None and abs(m - 0.9) < 1e-9 and g:
                    pooled.setdefault(run["task"], []).append((t["value"], g))
    out = {}
    for task, trials in pooled.items():
        trials.sort()
        top = np.log([g for _, g in trials[: max(1, len(trials) // 10)]])
        q1, med, q3 = np.exp(np.percentile(top, [25, 50, 75]))
        out[task] = {"median": float(med), "iqr": [float(q1), float(q3)], "trials": len(top)}
    return out


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--figure", default="docs/range_test.png", help="where full mode draws the figure"
    )
    args = p.parse_args(argv)
    m = mode(args)
    tasks = args.tasks or (["digits_mlp"] if m == "smoke" else list(SGD_TASKS))
    seeds = args.seeds or {"full": 8, "quick": 3, "smoke": 2}[m]
    rows, curves = [], {}
    for name in tasks:
        task = load_task(name)
        space = space_from_config(
            task.config, task.data.n_train, noise_scale=DEFAULTS["noise_scale"]
        )
        search = search_batch_size(space.batch_sizes)
        for b in [search] if m == "smoke" else space.batch_sizes:
            found, seconds = [], []
            at_b = space_from_config(
                task.config, task.data.n_train, b, noise_scale=DEFAULTS["noise_scale"]
            )
            for seed in range(seeds):
                tic = time.perf_counter()
                # As noise_scale = "auto" runs it, at B (the runner's is the search B).
                test = range_test(task.config, task.data, _build(task, seed), at_b)
                seconds.append(time.perf_counter() - tic)
                found.append(test.g_steep)
                if b == search:
                    curves.setdefault(name, []).append(
                        {"noise_scales": test.noise_scales, "losses": test.losses}
                    )
            q1, med, q3 = np.percentile(found, [25, 50, 75])
            rows.append(
                {
                    "task": name,
                    "batch_size": b,
                    "search": b == search,
                    "momentum": test.momentum,
                    "n_train": task.data.n_train,
                    "g_steep": found,
                    "median": float(med),
                    "iqr": [float(q1), float(q3)],
                    "lr_median": lr_for_noise_scale(med, b, task.data.n_train, test.momentum),
                    "seconds": float(np.median(seconds)),
                }
            )
            print(f"  {name} B={b}: g_steep {med:.3g} [{q1:.3g}, {q3:.3g}]", flush=True)
    full = best_g(args.results_dir) if m == "full" else {}
    print_table(
        "Range test: g_steep median [IQR] over seeds; lr = its learning rate at B",
        ["task", "B", "g_steep", "lr", "seconds", "range (at the search B)", "best g of runs"],
        [
            [
                r["task"] + (" (search B)" if r["search"] else ""),
                r["batch_size"],
                f"{r['median']:.3g} [{r['iqr'][0]:.3g}, {r['iqr'][1]:.3g}]",
                f"{r['lr_median']:.3g}",
                f"{r['seconds']:.2f}",
                _range(r, full) if r["search"] else "",
                _best(full.get(r["task"])) if r["search"] else "",
            ]
            for r in rows
        ],
    )
    path = write_json(args, "range_test", {"seeds": seeds, "rows": rows, "best_g": full})
    if m == "full":
        plot(rows, curves, full, REPO / args.figure)
    return path


def _range(row: dict, full: dict) -> str:
    low, high = recommend_noise_scales(row["median"])
    best = full.get(row["task"])
    held = "" if best is None else (" holds it" if low <= best["median"] <= high else " misses")
    return f"[{low:g}, {high:g}]{held}"


def _best(best: dict | None) -> str:
    if best is None:
        return "no saved runs"
    q1, q3 = best["iqr"]
    return f"{best['median']:.3g} [{q1:.3g}, {q3:.3g}] ({best['trials']} trials)"


def plot(rows: list[dict], curves: dict, full: dict, path: Path) -> None:
    """The smoothed loss against g at each task's search B, with g_steep, the recommended
    range and the best g of full runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), dpi=120)
    for ax, (name, runs) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        row = next(r for r in rows if r["task"] == name and r["search"])
        for run in runs:
            ax.plot(run["noise_scales"], run["losses"], color="#31688e", alpha=0.35, lw=1)
        low, high = recommend_noise_scales(row["median"])
        ax.axvspan(low, high, color="#35b779", alpha=0.15, label=f"range [{low:g}, {high:g}]")
        ax.axvline(row["median"], color="#35b779", label=f"g_steep {row['median']:.3g}")
        best = full.get(name)
        if best is not None:
            ax.axvline(
                best["median"], color="#c0392b", ls="--", label=f"best g {best['median']:.3g}"
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        top = max(max(r["losses"][:5]) for r in runs)
        ax.set_ylim(0, 1.3 * top)
        ax.set_title(f"{name}, B = {row['batch_size']}, m = {row['momentum']:g}", fontsize=9)
        ax.set_xlabel("noise scale g (one step each)")
        ax.set_ylabel("training loss (smoothed)")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    print(f"figure: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
