"""P5: training samples per second of ``optuna_bs.fit`` against hand-written loops.

    python benchmarks/throughput.py            # full: 15 repeats (2.5 minutes idle, more loaded)
    python benchmarks/throughput.py --quick    # 2 repeats

On MNIST-1D with 10,000 samples (6,400 training samples, so B = 1024 fits), for the MLP and
the 1-D CNN, at B = 16, 128 and 1024, SGD with momentum, one process and one thread, five
arms:

* ``fit``: :func:`optuna_bs.fit` on the in-memory tensors (a ``Data``), its own
  ``samples_per_second`` (the training pass of each epoch, validation excluded);
* ``tensors``: a hand-written loop over the in-memory tensors, each batch by index slicing;
* ``dataloader``: a hand-written loop over ``DataLoader(TensorDataset(x_train, y_train),
  batch_size=B, shuffle=True, drop_last=True)`` (``num_workers=0``, default collate);
* ``fit-dataset``: ``fit`` on the pair ``(TensorDataset(x_train, y_train),
  TensorDataset(x_val, y_val))`` (the very Dataset the ``dataloader`` loop reads), so ``fit``
  builds its own DataLoader with the same settings; its ``samples_per_second`` as above;
* ``fit-micro``: ``fit`` on the tensors with ``micro_batch_size = B / 4``, each update the
  accumulation of 4 micro-batches.

Every loop trains the same freshly seeded model for the same epochs; only the training passes
are timed (the hand-written loops by the clock around their epochs, data loading included).
The arms run interleaved, their order rotated every repeat, and the ratios are taken within a
repeat, then their median (with the interquartile range over repeats). Goals: fit >= 1.0x the
tensor loop, fit >= 1.3x the DataLoader loop, and fit-dataset >= 1.0x the DataLoader loop.
fit-micro / fit is the cost of accumulation (no goal). Prints three tables, writes
benchmarks/results/throughput.json.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    dataloader_epoch,
    mode,
    parser,
    print_table,
    quartiles,
    tensor_epoch,
    write_json,
)

from optuna_bs import Hyperparameters, MemoryPolicy, build_model, fit, load_data  # noqa: E402

LOOPS = ("fit", "tensors", "dataloader", "fit-dataset", "fit-micro")
BATCH_SIZES = (16, 128, 1024)
LR, MOMENTUM = 0.01, 0.9
ACCUMULATION = 4  # fit-micro: micro_batch_size = B / ACCUMULATION
#: ratio name -> (numerator arm, denominator arm, goal or None)
RATIOS = {
    "fit_vs_tensors": ("fit", "tensors", 1.0),
    "fit_vs_dataloader": ("fit", "dataloader", 1.3),
    "fit_dataset_vs_dataloader": ("fit-dataset", "dataloader", 1.0),
    "micro_vs_fit": ("fit-micro", "fit", None),
}


def datasets(data) -> tuple[TensorDataset, TensorDataset]:
    """The train and validation splits as map-style Datasets (views of the same tensors)."""
    return TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_val, data.y_val)


def samples_per_second(
    loop: str, model_name: str, data, pair, batch_size: int, epochs: int, seed: int
) -> float:
    """Train a fresh model with ``loop`` and return its training samples per second."""
    torch.manual_seed(seed)
    model = build_model(model_name, data.input_shape, data.n_outputs)
    if loop.startswith("fit"):
        hp = Hyperparameters(batch_size, LR, MOMENTUM, data.n_train)
        kwargs = {"max_epochs": epochs, "device": "cpu", "seed": seed}
        if loop == "fit-micro":
            kwargs["memory"] = MemoryPolicy(micro_batch_size=batch_size // ACCUMULATION)
        source = pair if loop == "fit-dataset" else data
        return fit(model, source, hp, **kwargs).samples_per_second
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    gen = torch.Generator()
    gen.manual_seed(seed)
    loader = DataLoader(
        pair[0], batch_size=batch_size, shuffle=True, drop_last=True, generator=gen
    )
    start = time.perf_counter()
    for _ in range(epochs):
        if loop == "tensors":
            tensor_epoch(model, opt, data, batch_size, gen)
        else:
            dataloader_epoch(model, opt, loader)
    seconds = time.perf_counter() - start
    return epochs * (data.n_train // batch_size) * batch_size / seconds


def _ratio_cell(q: dict, goal: float | None) -> str:
    cell = f"{q['median']:.3f} [{q['q1']:.3f}, {q['q3']:.3f}]"
    if goal is not None:
        cell += f" ({'met' if q['median'] >= goal else 'missed'})"
    return cell


def _sps_cell(q: dict) -> str:
    return f"{q['median']:,.0f} [{q['q1']:,.0f}, {q['q3']:,.0f}]"


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    args = p.parse_args(argv)
    m = mode(args)
    torch.set_num_threads(1)
    repeats = args.seeds or {"full": 15, "quick": 2, "smoke": 1}[m]
    epochs = 1
    models = ("mlp", "cnn1d") if m != "smoke" else ("mlp",)
    data = load_data("mnist1d", num_samples=2000 if m == "smoke" else 10_000)
    pair = datasets(data)
    for loop in LOOPS:  # warm-up: first calls allocate and load kernels
        samples_per_second(loop, models[0], data, pair, 128, 1, 0)
    sps = {(mo, b, lo): [] for mo in models for b in BATCH_SIZES for lo in LOOPS}
    start = time.perf_counter()
    for r in range(repeats):
        for model_name in models:
            for b in BATCH_SIZES:
                k = r % len(LOOPS)
                for loop in LOOPS[k:] + LOOPS[:k]:
                    sps[model_name, b, loop].append(
                        samples_per_second(loop, model_name, data, pair, b, epochs, seed=r)
                    )
        print(
            f"  repeat {r + 1}/{repeats} done ({time.perf_counter() - start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    summary = {}
    for model_name in models:
        for b in BATCH_SIZES:
            runs = {lo: sps[model_name, b, lo] for lo in LOOPS}
            per_repeat = {
                name: [f / o for f, o in zip(runs[num], runs[den], strict=True)]
                for name, (num, den, _) in RATIOS.items()
            }
            summary[f"{model_name}/B={b}"] = {
                "samples_per_second": {lo: statistics.median(v) for lo, v in runs.items()},
                "samples_per_second_quartiles": {lo: quartiles(v) for lo, v in runs.items()},
                "all": runs,
                **{name: statistics.median(v) for name, v in per_repeat.items()},
                "ratio_quartiles": {name: quartiles(v) for name, v in per_repeat.items()},
                "ratios_all": per_repeat,
                "micro_batch_size": b // ACCUMULATION,
            }
    spread = f"median [IQR] of {repeats} interleaved repeats x {epochs} epoch"
    setting = f"N={data.n_train}, 1 thread"
    rq = {key: s["ratio_quartiles"] for key, s in summary.items()}
    sq = {key: s["samples_per_second_quartiles"] for key, s in summary.items()}
    keys = [(mo, b, f"{mo}/B={b}") for mo in models for b in BATCH_SIZES]
    print_table(
        f"P5 training samples/s (samples/s: median; ratios: {spread}; {setting})",
        [
            "model",
            "B",
            "fit",
            "tensors",
            "dataloader",
            "fit÷tensors (>=1.0)",
            "fit÷dataloader (>=1.3)",
        ],
        [
            [mo, b]
            + [f"{summary[key]['samples_per_second'][lo]:,.0f}" for lo in LOOPS[:3]]
            + [
                _ratio_cell(rq[key]["fit_vs_tensors"], 1.0),
                _ratio_cell(rq[key]["fit_vs_dataloader"], 1.3),
            ]
            for mo, b, key in keys
        ],
    )
    print_table(
        f"P5 (Dataset) fit on a (train, val) pair of TensorDatasets vs the DataLoader loop "
        f"({spread}; {setting})",
        ["model", "B", "fit-dataset", "dataloader", "fit-dataset÷dataloader (>=1.0)"],
        [
            [mo, b, _sps_cell(sq[key]["fit-dataset"]), _sps_cell(sq[key]["dataloader"])]
            + [_ratio_cell(rq[key]["fit_dataset_vs_dataloader"], 1.0)]
            for mo, b, key in keys
        ],
    )
    print_table(
        f"P5 accumulation: fit at micro-batch b = B/{ACCUMULATION} vs b = B, on tensors "
        f"({spread}; {setting})",
        ["model", "B", "b", "fit (b=B)", "fit-micro", "fit-micro÷fit (no goal)"],
        [
            [mo, b, b // ACCUMULATION, _sps_cell(sq[key]["fit"]), _sps_cell(sq[key]["fit-micro"])]
            + [_ratio_cell(rq[key]["micro_vs_fit"], None)]
            for mo, b, key in keys
        ],
    )
    write_json(
        args,
        "throughput",
        {
            "repeats": repeats,
            "epochs": epochs,
            "n_train": data.n_train,
            "loops": list(LOOPS),
            "accumulation": ACCUMULATION,
            "goals": {name: goal for name, (_, _, goal) in RATIOS.items()},
            "seconds": time.perf_counter() - start,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
