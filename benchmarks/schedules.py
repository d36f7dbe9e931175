"""P4: increase the batch size instead of decaying the learning rate (Smith et al. 2018).

    python benchmarks/schedules.py            # 5 seeds, 2 tasks: ~15 minutes on 2 cores
    python benchmarks/schedules.py --quick    # smoke test: 1 seed, 1 task, 4 epochs

``lr-decay`` divides ϵ by ``factor`` at each milestone; ``batch-ramp`` multiplies B by it
instead (up to N/10, then decays ϵ for the rest), so both follow the same noise-scale path.
Same model, data, seeds, base hyperparameters and epoch budget; the arms run interleaved.
Reported: test error of the best validation epoch (mean ± sd over seeds) and parameter
updates. Goal: equal error within 0.5 point with at most 0.4x the updates.
Results go to benchmarks/results/schedules.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from optuna_bs import Hyperparameters, build_model, evaluate, fit, load_data, lr_for_noise_scale
from optuna_bs.train.schedules import make_schedule

HERE = Path(__file__).resolve().parent
TASKS = {
    # name: (data options, model, model options, B0, noise scale g)
    "mnist1d_cnn": ({"num_samples": 10000}, "cnn1d", {}, 32, 50.0),
    "mnist1d_mlp": ({"num_samples": 10000}, "mlp", {}, 32, 50.0),
}
ARMS = ("lr-decay", "batch-ramp")


def run(task: str, arm: str, seed: int, epochs: int, milestones, factor: float) -> dict:
    data_options, model_name, model_options, b0, g = TASKS[task]
    data = load_data("mnist1d", **data_options)
    hp = Hyperparameters(b0, lr_for_noise_scale(g, b0, data.n_train, 0.9), 0.9, data.n_train)
    schedule = make_schedule(arm, max_epochs=epochs, milestones=milestones, factor=factor)
    torch.manual_seed(seed)
    model = build_model(model_name, data.input_shape, data.n_outputs, **model_options)
    result = fit(model, data, hp, max_epochs=epochs, schedule=schedule, seed=seed, device="cpu")
    return {
        "task": task,
        "arm": arm,
        "seed": seed,
        "val_error": result.best_value,
        "best_epoch": result.best_epoch,
        "test_error": evaluate(model, data.x_test, data.y_test),
        "n_updates": result.n_updates,
        "train_seconds": result.train_seconds,
        "batch_sizes": [h.batch_size for h in result.schedule_path],
        "noise_scales": [h.noise_scale for h in result.schedule_path],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = ["mnist1d_mlp"] if args.quick else list(TASKS)
    seeds = range(1 if args.quick else args.seeds)
    epochs = 4 if args.quick else args.epochs
    milestones, factor = (0.3, 0.6, 0.8), 5.0
    rows = [
        run(t, arm, s, epochs, milestones, factor) for t in tasks for s in seeds for arm in ARMS
    ]  # interleaved arms

    print(
        f"P4 batch ramp vs lr decay: {epochs} epochs, milestones {milestones} of the run, "
        f"factor {factor}, {len(seeds)} seeds; test error at the best validation epoch"
    )
    print(f"{'task':<13}{'arm':<12}{'test error':>18}{'updates':>9}{'ratio':>7}")
    summary = {}
    for task in tasks:
        base = None
        for arm in ARMS:
            mine = [r for r in rows if r["task"] == task and r["arm"] == arm]
            errs = [r["test_error"] for r in mine]
            updates = statistics.median(r["n_updates"] for r in mine)
            base = base or updates
            sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
            summary[f"{task}/{arm}"] = {
                "test_error_mean": statistics.mean(errs),
                "test_error_sd": sd,
                "n_updates": updates,
            }
            print(
                f"{task:<13}{arm:<12}{statistics.mean(errs):>11.4f} ± {sd:.4f}"
                f"{updates:>9.0f}{updates / base:>7.2f}"
            )
        gap = (
            summary[f"{task}/batch-ramp"]["test_error_mean"]
            - summary[f"{task}/lr-decay"]["test_error_mean"]
        )
        print(f"{'':<13}batch-ramp - lr-decay = {100 * gap:+.2f} points of test error")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / ("schedules_quick.json" if args.quick else "schedules.json")
    path.write_text(json.dumps({"summary": summary, "runs": rows}, indent=2))
    print(f"written to {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
