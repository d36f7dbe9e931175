"""P6: what the study store costs, and how workers scale on a shared PostgreSQL study.

    python benchmarks/storage.py            # full: ~3 minutes on 2 cores
    python benchmarks/storage.py --quick    # smoke test: ~1 minute

Three measurements, each printed as a table and written to benchmarks/results/storage.json:

1. Per-trial overhead of each store against the in-memory one, for an objective that does no
   training but records what a real trial records (the space's user attrs, 10 intermediate
   values, the trainer's user attrs). The stores run interleaved, round after round.
2. Throughput of 1, 2 and 4 workers (``optuna-bs launch``) on PostgreSQL, with a real but
   small training trial, measured from the trials' own start and end times in the store.
3. 8 workers x 25 trials on PostgreSQL and on MariaDB: trials lost or duplicated.

Server URLs come from OPTUNA_BS_TEST_POSTGRES_URL / OPTUNA_BS_TEST_MYSQL_URL (defaults: the
local servers of docs/design.md §7).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

from optuna_bs import BatchScalingSpace, make_storage

HERE = Path(__file__).resolve().parent
POSTGRES = os.environ.get(
    "OPTUNA_BS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL = os.environ.get("OPTUNA_BS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

STUDY = """
[study]
pruner = "none"
n_startup_trials = 5
[data]
name = "synthetic"
n_samples = 1200
n_features = 20
[model]
name = "mlp"
hidden = [64]
[space]
batch_size = [16, 64]
[train]
max_epochs = 3
patience = 0
"""


def _record_like_a_trial(space: BatchScalingSpace):
    def objective(trial: optuna.Trial) -> float:
        hp = space.suggest(trial)
        for epoch in range(1, 11):
            trial.report(1.0 / epoch, epoch)
            trial.should_prune()
        for key in (
            "best_epoch",
            "epochs_run",
            "n_updates",
            "train_seconds",
            "samples_per_second",
            "stop_reason",
            "metric",
            "seed",
        ):
            trial.set_user_attr(key, 1)
        return hp.lr

    return objective


def overhead(n_trials: int, rounds: int) -> dict:
    """Milliseconds per trial for each store, and the excess over in-memory."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = tempfile.mkdtemp()
    stores = {
        "in-memory": None,
        "sqlite": f"sqlite:///{tmp}/bench.db",
        "postgresql": POSTGRES,
        "pg-async": POSTGRES,  # synchronous_commit=off
        "mariadb": MYSQL,
    }
    space = BatchScalingSpace(n_train=3200)
    per_trial: dict[str, list[float]] = {name: [] for name in stores}
    for _ in range(rounds):
        for name, url in stores.items():  # interleaved: the same machine state for all
            storage = (
                optuna.storages.InMemoryStorage()
                if url is None
                else make_storage(url, synchronous_commit=name != "pg-async")
            )
            study_name = f"p6-{uuid.uuid4().hex[:8]}"
            study = optuna.create_study(storage=storage, study_name=study_name)
            start = time.perf_counter()
            study.optimize(_record_like_a_trial(space), n_trials=n_trials)
            per_trial[name].append(1000 * (time.perf_counter() - start) / n_trials)
            if url is not None:
                optuna.delete_study(study_name=study_name, storage=storage)
    base = statistics.median(per_trial["in-memory"])
    return {
        name: {
            "ms_per_trial_median": statistics.median(v),
            "ms_per_trial_min": min(v),
            "ms_per_trial_max": max(v),
            "overhead_ms": statistics.median(v) - base,
            "rounds": rounds,
            "trials_per_round": n_trials,
        }
        for name, v in per_trial.items()
    }


def _launch(url: str, study_file: Path, workers: int, n_trials: int) -> tuple[str, float]:
    name = f"p6-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "optuna_bs.cli",
            "launch",
            str(study_file),
            "--storage",
            url,
            "--study-name",
            name,
            "--workers",
            str(workers),
            "--n-trials",
            str(n_trials),
            "--no-test",
            "-q",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=study_file.parent,
    )
    return name, time.perf_counter() - start


def throughput(worker_counts: list[int], n_trials: int) -> dict:
    """Trials per second of K workers, from the first trial's start to the last one's end."""
    folder = Path(tempfile.mkdtemp())
    study_file = folder / "p6.toml"
    study_file.write_text(STUDY)
    out = {}
    for workers in worker_counts:
        name, wall = _launch(POSTGRES, study_file, workers, n_trials)
        storage = make_storage(POSTGRES)
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        span = (
            max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        ).total_seconds()
        out[workers] = {
            "trials": len(trials),
            "span_s": span,
            "trials_per_s": len(trials) / span,
            "wall_s_with_start_up": wall,
        }
        optuna.delete_study(study_name=name, storage=storage)
    base = out[worker_counts[0]]["trials_per_s"]
    for row in out.values():
        row["speed_up"] = row["trials_per_s"] / base
    return out


def no_trial_lost(workers: int, per_worker: int) -> dict:
    folder = Path(tempfile.mkdtemp())
    study_file = folder / "p6.toml"
    study_file.write_text(STUDY.replace("max_epochs = 3", "max_epochs = 1"))
    out = {}
    for label, url in (("postgresql", POSTGRES), ("mariadb", MYSQL)):
        name, wall = _launch(url, study_file, workers, workers * per_worker)
        storage = make_storage(url)
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        numbers = [t.number for t in trials]
        out[label] = {
            "requested": workers * per_worker,
            "finished": sum(t.state.is_finished() for t in trials),
            "lost": workers * per_worker - len(set(numbers)),
            "duplicated": len(numbers) - len(set(numbers)),
            "wall_s": wall,
        }
        optuna.delete_study(study_name=name, storage=storage)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: fewer rounds")
    args = parser.parse_args()
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}

    rounds, n = (2, 20) if args.quick else (5, 50)
    ovh = overhead(n, rounds)
    print(f"P6a per-trial cost of each store ({rounds} interleaved rounds x {n} trials)")
    print(f"{'store':<12}{'ms/trial':>10}{'min':>8}{'max':>8}{'overhead ms':>13}")
    for name, row in ovh.items():
        print(
            f"{name:<12}{row['ms_per_trial_median']:>10.2f}{row['ms_per_trial_min']:>8.2f}"
            f"{row['ms_per_trial_max']:>8.2f}{row['overhead_ms']:>13.2f}"
        )

    counts, n_trials = ([1, 2], 8) if args.quick else ([1, 2, 4], 24)
    thr = throughput(counts, n_trials)
    print(f"\nP6b workers on PostgreSQL ({n_trials} small training trials each run)")
    print(f"{'workers':>8}{'trials/s':>10}{'speed-up':>10}{'span s':>8}")
    for workers, row in thr.items():
        print(
            f"{workers:>8}{row['trials_per_s']:>10.2f}{row['speed_up']:>10.2f}"
            f"{row['span_s']:>8.1f}"
        )

    workers, per_worker = (4, 5) if args.quick else (8, 25)
    lost = no_trial_lost(workers, per_worker)
    print(f"\nP6c {workers} workers x {per_worker} trials")
    print(f"{'store':<12}{'requested':>10}{'finished':>10}{'lost':>6}{'duplicated':>12}")
    for label, row in lost.items():
        print(
            f"{label:<12}{row['requested']:>10}{row['finished']:>10}{row['lost']:>6}"
            f"{row['duplicated']:>12}"
        )

    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / ("storage_quick.json" if args.quick else "storage.json")
    path.write_text(
        json.dumps(
            {"machine": machine, "overhead": ovh, "throughput": thr, "lost": lost}, indent=2
        )
    )
    print(f"\nwritten to {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
