"""Start-up cost: ``optuna-bs --help`` and ``import optuna_bs`` against ``import optuna``.

    python benchmarks/import_time.py            # 15 repeats (about 20 s)
    python benchmarks/import_time.py --quick    # 5 repeats

Each command runs in a fresh interpreter, the commands interleaved and their order rotated
every repeat; the ratios to ``import optuna`` are taken within a repeat, then their median
and interquartile range. Goal: ``optuna-bs --help`` within 1.5x of ``import optuna``. The
last row, the first use of ``optuna_bs.fit``, is what loads torch. Writes
benchmarks/results/import_time.json.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import mode, parser, print_table, quartiles, write_json  # noqa: E402

COMMANDS = {
    "import optuna": [sys.executable, "-c", "import optuna"],
    "optuna-bs --help": [sys.executable, "-m", "optuna_bs.cli", "--help"],
    "import optuna_bs": [sys.executable, "-c", "import optuna_bs"],
    "import optuna_bs.rules.registry, .config": [
        sys.executable,
        "-c",
        "import optuna_bs.rules.registry, optuna_bs.study.config",
    ],
    "optuna_bs.fit (loads torch)": [sys.executable, "-c", "import optuna_bs; optuna_bs.fit"],
}
BASE = "import optuna"
GOAL = 1.5


def _seconds(command: list[str]) -> float:
    tic = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - tic


def main() -> None:
    args = parser(__doc__).parse_args()
    repeats = {"smoke": 2, "quick": 5, "full": 15}[mode(args)]
    names = list(COMMANDS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds[name].append(_seconds(COMMANDS[name]))
    ratios = {
        name: quartiles(a / b for a, b in zip(seconds[name], seconds[BASE], strict=True))
        for name in names
    }
    rows = []
    for name in names:
        q, rq = quartiles(seconds[name]), ratios[name]
        rows.append(
            [
                name,
                f"{q['median']:.3f} [{q['q1']:.3f}, {q['q3']:.3f}]",
                f"{rq['median']:.2f}x [{rq['q1']:.2f}, {rq['q3']:.2f}]",
            ]
        )
    print_table(
        f"start-up time, {repeats} repeats (median [IQR])",
        ["command", "seconds", f"vs {BASE}"],
        rows,
    )
    help_ratio = ratios["optuna-bs --help"]["median"]
    verdict = "met" if help_ratio <= GOAL else "missed"
    print(f"\noptuna-bs --help / import optuna = {help_ratio:.2f}x (goal <= {GOAL}x): {verdict}")
    write_json(
        args,
        "import_time",
        {
            "seconds": {name: quartiles(v) for name, v in seconds.items()},
            "ratio_to_import_optuna": ratios,
            "goal": GOAL,
        },
    )


if __name__ == "__main__":
    main()
