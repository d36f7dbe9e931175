"""What the integrations and one-trial-on-K-processes cost, and what K processes give.

    python benchmarks/integrations.py            # 7 repeats (about 4 minutes on 2 cores)
    python benchmarks/integrations.py --quick    # 3 repeats

Three measurements, each arm interleaved with its baseline in every repeat (order rotated),
ratios taken within a repeat, then their median and interquartile range:

* **ddp**: ``fit`` of an MLP (64-256-256-10, no BatchNorm) on 8,192 synthetic samples at the
  global B = 256 for 3 epochs, SGD with momentum: 2 gloo processes of 1 thread each
  (``torchrun``) against 1 process of 2 threads and 1 process of 1 thread; samples/s as ``fit``
  records it (training passes only). And the largest weight difference after 2 epochs between
  2 processes and 1 at the same B and seed: the update is that of B.
* **lightning**: ``Trainer.fit`` of a small module for 4 epochs with ``TrialCallback`` (on a
  real trial of an in-memory study) against the same Trainer without it: the wall-clock ratio.
* **transformers**: ``Trainer.train`` of a 2-layer BERT (built from a config) for 2 epochs
  with ``TrialCallback`` against without: the wall-clock ratio.

Prints a table, writes benchmarks/results/integrations.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _harness import mode, parser, print_table, quartiles, write_json  # noqa: E402

import optuna_bs  # noqa: E402

BATCH, EPOCHS, N = 256, 3, 8192


def _data() -> optuna_bs.Data:
    return optuna_bs.load_data("synthetic", n_samples=N + 2048, n_features=64, n_classes=10)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def _fit(epochs: int) -> tuple[float, dict]:
    data = _data()
    hp = optuna_bs.Hyperparameters(BATCH, 0.05, 0.9, n_train=data.n_train)
    model = _mlp()
    result = optuna_bs.fit(model, data, hp, max_epochs=epochs, seed=1, device="cpu")
    return result.samples_per_second, model.state_dict()


def ddp_worker(out: Path, epochs: int) -> None:
    """Run under torchrun: one fit on every rank; rank 0 writes its samples/s and weights."""
    from optuna_bs.train.distributed import init_from_env

    rank, _ = init_from_env()
    torch.set_num_threads(1)
    speed, weights = _fit(epochs)
    if rank == 0:
        torch.save({"speed": speed, "weights": weights}, out)
    torch.distributed.destroy_process_group()


def _torchrun(epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rank0.pt"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                "2",
                __file__,
                "--ddp-worker",
                str(out),
                "--epochs",
                str(epochs),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        return torch.load(out)


def _alone(threads: int, epochs: int) -> tuple[float, dict]:
    torch.set_num_threads(threads)
    try:
        return _fit(epochs)
    finally:
        torch.set_num_threads(2)


def bench_ddp(repeats: int) -> dict:
    arms = {"2 procs x 1 thread": [], "1 proc x 2 threads": [], "1 proc x 1 thread": []}
    for r in range(repeats):
        order = list(arms)[r % 3 :] + list(arms)[: r % 3]
        for arm in order:
            if arm.startswith("2"):
                arms[arm].append(_torchrun(EPOCHS)["speed"])
            else:
                arms[arm].append(_alone(int(arm.split(" x ")[1][0]), EPOCHS)[0])
    k2 = _torchrun(2)["weights"]
    k1 = _alone(2, 2)[1]
    diff = max(float((k2[key] - k1[key]).abs().max()) for key in k1)
    two = arms["2 procs x 1 thread"]
    return {
        "samples_per_second": {arm: quartiles(v) for arm, v in arms.items()},
        "ratio_vs_1x2": quartiles(
            a / b for a, b in zip(two, arms["1 proc x 2 threads"], strict=True)
        ),
        "ratio_vs_1x1": quartiles(
            a / b for a, b in zip(two, arms["1 proc x 1 thread"], strict=True)
        ),
        "max_weight_difference": diff,
    }


def bench_lightning(repeats: int) -> dict:
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna_bs.integrations.lightning import TrialCallback
    from tests.helpers.lightning_model import Classifier, Data, trainer

    space = optuna_bs.BatchScalingSpace(n_train=384, batch_size=16, noise_scale=(20.0, 20.0))
    times = {"callback": [], "plain": []}
    for r in range(repeats):
        for arm in ("callback", "plain") if r % 2 == 0 else ("plain", "callback"):
            trial = optuna.create_study().ask()
            hp = space.suggest(trial)
            callbacks = [TrialCallback(trial, hp, patience=10)] if arm == "callback" else []
            torch.manual_seed(0)
            run = trainer(4, 1, callbacks)
            tic = time.perf_counter()
            run.fit(Classifier(hp.lr, hp.momentum), datamodule=Data(16))
            times[arm].append(time.perf_counter() - tic)
    return _overhead(times, batches=4 * (384 // 16))


def _overhead(times: dict[str, list[float]], batches: int) -> dict:
    """The with / without ratio, and the extra microseconds per training batch."""
    pairs = list(zip(times["callback"], times["plain"], strict=True))
    return {
        "seconds": {k: quartiles(v) for k, v in times.items()},
        "ratio": quartiles(a / b for a, b in pairs),
        "microseconds_per_batch": quartiles((a - b) / batches * 1e6 for a, b in pairs),
        "batches": batches,
    }


def bench_transformers(repeats: int) -> dict:
    from transformers import Trainer, TrainingArguments

    from optuna_bs.integrations.transformers import TrialCallback, hp_space
    from tests.helpers.hf_model import Tokens, model_init

    train, val = Tokens(512, 0), Tokens(128, 1)
    space = optuna_bs.BatchScalingSpace(
        "adam-sqrt", n_train=len(train), batch_size=32, lr=(1e-3, 1e-3), optimizer="adamw"
    )
    times = {"callback": [], "plain": []}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(repeats):
            for arm in ("callback", "plain") if r % 2 == 0 else ("plain", "callback"):
                search = hp_space(space)
                trial = optuna.create_study().ask()
                params = search(trial)
                args = TrainingArguments(
                    output_dir=folder,
                    eval_strategy="epoch",
                    logging_strategy="epoch",
                    num_train_epochs=2,
                    save_strategy="no",
                    report_to="none",
                    use_cpu=True,
                    disable_tqdm=True,
                    log_level="error",
                    **params,
                )
                callbacks = [TrialCallback(search)] if arm == "callback" else []
                run = Trainer(
                    model=model_init(),
                    args=args,
                    train_dataset=train,
                    eval_dataset=val,
                    callbacks=callbacks,
                )
                tic = time.perf_counter()
                run.train()
                times[arm].append(time.perf_counter() - tic)
    return _overhead(times, batches=2 * (len(train) // 32))


def _q(q: dict, digits: int = 3) -> str:
    return f"{q['median']:.{digits}g} [{q['q1']:.{digits}g}, {q['q3']:.{digits}g}]"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)  # torchrun's ranks
    p.add_argument("--epochs", type=int, default=EPOCHS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.epochs)
        return
    repeats = {"smoke": 1, "quick": 3, "full": 7}[mode(args)]
    torch.set_num_threads(2)
    results = {
        "ddp": bench_ddp(repeats),
        "lightning": bench_lightning(repeats),
        "transformers": bench_transformers(repeats),
    }
    ddp = results["ddp"]
    rows = [
        [f"fit samples/s, {arm}", _q(q, 4), ""] for arm, q in ddp["samples_per_second"].items()
    ]
    rows += [
        ["fit, 2 procs / 1 proc x 2 threads", _q(ddp["ratio_vs_1x2"]), "ratio"],
        ["fit, 2 procs / 1 proc x 1 thread", _q(ddp["ratio_vs_1x1"]), "ratio"],
        ["max |w(2 procs) - w(1 proc)|, 2 epochs", f"{ddp['max_weight_difference']:.2g}", ""],
    ]
    for name, key in (("Lightning", "lightning"), ("HF Trainer", "transformers")):
        cost = results[key]
        rows.append([f"{name} with TrialCallback / without", _q(cost["ratio"]), "ratio"])
        rows.append([f"{name}: extra time per batch", _q(cost["microseconds_per_batch"]), "us"])
    print_table(f"integrations ({repeats} repeats; median [IQR])", ["what", "value", ""], rows)
    write_json(args, "integrations", results)


if __name__ == "__main__":
    main()
