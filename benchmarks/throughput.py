"""P5: training samples per second of ``optuna_bs.fit`` against two hand-written loops.

    python benchmarks/throughput.py            # full: 15 repeats (about 5 minutes)
    python benchmarks/throughput.py --quick    # 2 repeats

On MNIST-1D with 10,000 samples (6,400 training samples, so B = 1024 fits), for the MLP and
the 1-D CNN, at B = 16, 128 and 1024, SGD with momentum, one process and one thread:

* ``fit``: :func:`optuna_bs.fit`, its own ``samples_per_second`` (optimizer steps only);
* ``tensors``: a hand-written loop over the in-memory tensors, each batch by index slicing;
* ``dataloader``: a plain loop over ``DataLoader(TensorDataset(...), shuffle=True)``.

Every loop trains the same freshly seeded model for the same epochs; only the training epochs
are timed. The loops run interleaved, their order rotated every repeat, and the ratios are
taken within a repeat, then their median. Goals: fit >= 1.0x the tensor loop and >= 1.3x the
DataLoader loop. Prints a table, writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    dataloader_epoch,
    make_loader,
    mode,
    parser,
    print_table,
    tensor_epoch,
    write_json,
)

from optuna_bs import Hyperparameters, build_model, fit, load_data  # noqa: E402

LOOPS = ("fit", "tensors", "dataloader")
BATCH_SIZES = (16, 128, 1024)
LR, MOMENTUM = 0.01, 0.9


def samples_per_second(loop: str, model_name: str, data, batch_size: int, epochs: int, seed: int):
    """Train a fresh model with ``loop`` and return its training samples per second."""
    torch.manual_seed(seed)
    model = build_model(model_name, data.input_shape, data.n_outputs)
    if loop == "fit":
        hp = Hyperparameters(batch_size, LR, MOMENTUM, data.n_train)
        return fit(model, data, hp, max_epochs=epochs, device="cpu", seed=seed).samples_per_second
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    gen = torch.Generator()
    gen.manual_seed(seed)
    loader = make_loader(data, batch_size, seed)
    start = time.perf_counter()
    for _ in range(epochs):
        if loop == "tensors":
            tensor_epoch(model, opt, data, batch_size, gen)
        else:
            dataloader_epoch(model, opt, loader)
    seconds = time.perf_counter() - start
    return epochs * (data.n_train // batch_size) * batch_size / seconds


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    args = p.parse_args(argv)
    m = mode(args)
    torch.set_num_threads(1)
    repeats = args.seeds or {"full": 15, "quick": 2, "smoke": 1}[m]
    epochs = 1
    models = ("mlp", "cnn1d") if m != "smoke" else ("mlp",)
    data = load_data("mnist1d", num_samples=2000 if m == "smoke" else 10_000)
    for loop in LOOPS:  # warm-up: first calls allocate and load kernels
        samples_per_second(loop, models[0], data, 128, 1, 0)
    sps = {(mo, b, lo): [] for mo in models for b in BATCH_SIZES for lo in LOOPS}
    for r in range(repeats):
        for model_name in models:
            for b in BATCH_SIZES:
                order = LOOPS[r % 3 :] + LOOPS[: r % 3]
                for loop in order:
                    sps[model_name, b, loop].append(
                        samples_per_second(loop, model_name, data, b, epochs, seed=r)
                    )
        print(f"  repeat {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    rows, summary = [], {}
    for model_name in models:
        for b in BATCH_SIZES:
            runs = {lo: sps[model_name, b, lo] for lo in LOOPS}
            vs = {
                other: statistics.median(
                    f / o for f, o in zip(runs["fit"], runs[other], strict=True)
                )
                for other in ("tensors", "dataloader")
            }
            summary[f"{model_name}/B={b}"] = {
                "samples_per_second": {lo: statistics.median(v) for lo, v in runs.items()},
                "all": runs,
                "fit_vs_tensors": vs["tensors"],
                "fit_vs_dataloader": vs["dataloader"],
            }
            rows.append(
                [model_name, b]
                + [f"{statistics.median(runs[lo]):,.0f}" for lo in LOOPS]
                + [
                    f"{vs['tensors']:.2f} ({'met' if vs['tensors'] >= 1.0 else 'missed'})",
                    f"{vs['dataloader']:.2f} ({'met' if vs['dataloader'] >= 1.3 else 'missed'})",
                ]
            )
    print_table(
        f"P5 training samples/s, median of {repeats} interleaved repeats x {epochs} epochs "
        f"(N={data.n_train}, 1 thread)",
        ["model", "B", *LOOPS, "fit÷tensors (>=1.0)", "fit÷dataloader (>=1.3)"],
        rows,
    )
    write_json(
        args,
        "throughput",
        {"repeats": repeats, "epochs": epochs, "n_train": data.n_train, "summary": summary},
    )


if __name__ == "__main__":
    main()
