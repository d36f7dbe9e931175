"""Ranges that widen at their edges (``noise_scale = "auto"``): the goal table, from saved runs.

    python benchmarks/widening.py RUN [RUN ...]     # each RUN a time_to_target JSON (full)

Each RUN is a ``benchmarks/time_to_target.py --tasks TASK --seeds 10 --max-trials 30`` run.
A later RUN's arms replace an earlier one's of the same task (a rerun of the auto arms after
a change of the rule). Per task it prints, over seeds: each arm's best error of the whole
30-trial study, median [IQR]; the seeds that reach the task's best known + 2 points (the best
over every arm and run; for a loss task a point is 10% of the best loss, as in
time_to_target.py); the seconds to that target; how many studies widened their range; and the
issue's three goals:

* ``"auto"`` never ends worse than the default range by more than 0.3 points of median final
  error (``default-auto`` against ``default``, ``ladder-auto`` against ``ladder``);
* ``ladder-auto`` reaches best + 2 points in at least as many seeds as ``independent-fixed-m``;
* its time to that target is at most 0.5x the fair baseline's (ratio of medians, both from
  the same run), on at least three tasks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import best_so_far, fmt_paired, fmt_q, paired_test, print_table, quartiles  # noqa: E402
from time_to_target import target, time_to_target  # noqa: E402

MARGIN = 0.02
PAIRS = (("default-auto", "default"), ("ladder-auto", "ladder"))


def load(paths: list[str]) -> dict[str, dict[str, dict]]:
    """task -> arm -> {"runs": [...] by seed, "source": "run K"}, K the file's place in
    ``paths``; a later file's arms replace an earlier one's."""
    tasks: dict[str, dict[str, dict]] = {}
    for number, path in enumerate(paths, 1):
        body = json.loads(Path(path).read_text())
        arms: dict[tuple[str, str], list] = {}
        for run in body["runs"]:
            arms.setdefault((run["task"], run["arm"]), []).append(run)
        for (task, arm), runs in arms.items():
            tasks.setdefault(task, {})[arm] = {
                "runs": sorted(runs, key=lambda r: r["seed"]),
                "source": f"run {number}",
            }
    return tasks


def summarise(task: str, arms: dict[str, dict]) -> tuple[list, dict]:
    best = min(best_so_far(r["trials"])[-1] for a in arms.values() for r in a["runs"])
    goal = target(task, best, MARGIN)
    rows, out = [], {"best_known": best, "target": goal, "arms": {}}
    for arm, a in arms.items():
        finals = [best_so_far(r["trials"])[-1] for r in a["runs"]]
        reach = [time_to_target(r, goal) for r in a["runs"]]
        widened = sum(bool(r.get("widenings")) for r in a["runs"])
        out["arms"][arm] = {
            "final": finals,
            "seconds": [s for s, _, _ in reach],
            "source": a["source"],
        }
        rows.append(
            [
                task,
                arm,
                fmt_q(quartiles(finals), 100, 2),
                f"{sum(math.isfinite(s) for s, _, _ in reach)}/{len(reach)}",
                fmt_q(quartiles(s for s, _, _ in reach), 1, 1),
                f"{widened}/{len(a['runs'])}" if "auto" in arm else "",
                a["source"],
            ]
        )
    return rows, out


def goals(task: str, s: dict) -> list[list]:
    arms = s["arms"]
    rows = []
    for arm, base in PAIRS:
        if arm in arms and base in arms:
            a, b = arms[arm]["final"], arms[base]["final"]
            diff = 100 * (quartiles(a)["median"] - quartiles(b)["median"])
            rows.append(
                [
                    task,
                    f"{arm} - {base} (final, points)",
                    f"{diff:+.2f}",
                    fmt_paired(paired_test(a, b)),
                    "met" if diff <= 0.3 else "missed (<= +0.3)",
                ]
            )
    lad, fair = arms.get("ladder-auto"), arms.get("independent-fixed-m")
    if lad and fair:
        n_lad = sum(math.isfinite(x) for x in lad["seconds"])
        n_fair = sum(math.isfinite(x) for x in fair["seconds"])
        rows.append(
            [
                task,
                "ladder-auto reaches +2 pt (seeds)",
                f"{n_lad} vs {n_fair}",
                "",
                "met" if n_lad >= n_fair else "missed",
            ]
        )
        if lad["source"] == fair["source"]:
            ml, mf = quartiles(lad["seconds"])["median"], quartiles(fair["seconds"])["median"]
            if math.isfinite(mf):
                value, met = f"{ml / mf:.2f}", ml / mf <= 0.5
            else:  # the fair baseline's median seed never reached it
                value, met = ("both medians inf", False) if math.isinf(ml) else ("< 1", False)
            rows.append(
                [
                    task,
                    "ladder-auto / fair, time to +2 pt",
                    value,
                    fmt_paired(paired_test(lad["seconds"], fair["seconds"])),
                    "met" if met else "missed (<= 0.5)",
                ]
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="time_to_target JSON files, earlier first")
    args = p.parse_args()
    table, goal_rows = [], []
    for task, arms in load(args.runs).items():
        rows, s = summarise(task, arms)
        table += rows
        goal_rows += goals(task, s)
    print_table(
        "Whole 30-trial studies, median [IQR] over seeds: best error (%), seeds reaching the "
        "best known + 2 points, seconds to it, studies that widened their range",
        ["task", "arm", "final error %", "reached +2 pt", "seconds to +2 pt", "widened", "run"],
        table,
    )
    print_table(
        "Goals (issue 25)",
        ["task", "what", "value", "paired (wins-ties-losses)", "goal"],
        goal_rows,
    )


if __name__ == "__main__":
    main()
