"""GPU throughput: fit() against plain PyTorch loops, for a ResNet-18 on 32x32 images.

    python benchmarks/gpu.py            # on a CUDA machine: bf16, channels-last, B = 512
    python benchmarks/gpu.py --quick    # a smoke test that also runs on a CPU (~1 minute)

Three arms train the same model on the same synthetic CIFAR-sized data, interleaved, in one
process, and report training samples per second (median of the repeats):

* ``fit``: :func:`optuna_bs.fit` (data on the device, batches sliced there, autocast);
* ``dataloader``: the usual loop, a ``DataLoader`` over CPU tensors (pinned, 4 workers on a
  GPU), each batch copied to the device;
* ``on-device``: the same hand-written loop with the data already on the device.

It also reports the fraction of the device's bf16 peak that ``fit`` reaches, from the model's
FLOPs per training sample (3x the forward multiply-adds x 2), and records the device name.
Results go to benchmarks/results/gpu.json (gpu_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from optuna_bs import Data, DevicePath, Hyperparameters, build_model, fit

HERE = Path(__file__).resolve().parent
# Dense bf16 tensor-core peaks, in FLOP/s, by a word of the device name.
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def synthetic_images(n: int, device: str) -> Data:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    small = slice(0, 256)
    return Data(
        x,
        y,
        x[small],
        y[small],
        x[small],
        y[small],
        n_outputs=10,
        task="classification",
        name="synthetic-images",
    ).to(device)


def forward_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of one sample's forward pass through the convolutions and linears."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            total += output[0].numel() * k // module.groups
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return total


def plain_loop(model, loader_or_tensors, batch_size, steps, device, precision, channels_last):
    """The loop people write: SGD, autocast, one batch after another."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model.train()
    if isinstance(loader_or_tensors, DataLoader):
        batches = iter(loader_or_tensors)
    else:
        x, y = loader_or_tensors
        perm = torch.randperm(len(x), device=x.device)
        batches = (
            (x[perm[i : i + batch_size]], y[perm[i : i + batch_size]])
            for i in range(0, steps * batch_size, batch_size)
        )
    done = 0
    start = time.perf_counter()
    for xb, yb in batches:
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        if done == steps:
            break
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and data; any device")
    parser.add_argument(
        "--results-dir", type=Path, default=HERE / "results", help="where the JSON goes"
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if args.quick:
        width, batch_size, steps, repeats, n = 8, 32, 4, 1, 256
    else:
        width, batch_size, steps, repeats, n = 64, 512, 40, 5, 512 * 40
    precision = "bf16" if cuda else "fp32"
    channels_last = cuda
    data = synthetic_images(n, device.type)
    host = data.to("cpu")
    loader = DataLoader(
        TensorDataset(host.x_train, host.y_train),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        pin_memory=cuda,
        num_workers=4 if cuda else 0,
        persistent_workers=cuda,
    )

    def model():
        torch.manual_seed(0)
        m = build_model("resnet18", (3, 32, 32), 10, width=width).to(device)
        return m.to(memory_format=torch.channels_last) if channels_last else m

    macs = forward_macs(model(), (3, 32, 32))
    flops_per_sample = 3 * 2 * macs
    epochs = max(1, steps * batch_size // n)
    rates: dict[str, list[float]] = {"fit": [], "dataloader": [], "on-device": []}
    hp = Hyperparameters(batch_size, 0.01, 0.9, n)
    for _ in range(repeats + 1):  # the first round warms up kernels and is dropped
        result = fit(
            model(),
            data,
            hp,
            max_epochs=epochs,
            device=DevicePath(device, precision, channels_last, cudnn_benchmark=cuda),
            seed=0,
        )
        rates["fit"].append(result.samples_per_second)
        rates["dataloader"].append(
            plain_loop(model(), loader, batch_size, steps, device, precision, channels_last)
        )
        rates["on-device"].append(
            plain_loop(
                model(),
                (data.x_train, data.y_train),
                batch_size,
                steps,
                device,
                precision,
                channels_last,
            )
        )
    med = {k: statistics.median(v[1:]) for k, v in rates.items()}
    name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = next((p for key, p in PEAKS.items() if key in name), None)
    fraction = med["fit"] * flops_per_sample / peak if peak else None
    out = {
        "device": name,
        "quick": args.quick,
        "precision": precision,
        "width": width,
        "batch_size": batch_size,
        "repeats": repeats,
        "torch": torch.__version__,
        "samples_per_second": med,
        "all": rates,
        "fit_vs_dataloader": med["fit"] / med["dataloader"],
        "fit_vs_on_device": med["fit"] / med["on-device"],
        "flops_per_sample": flops_per_sample,
        "bf16_peak_fraction": fraction,
    }
    print(
        f"ResNet-18 (width {width}) on {name}, {precision}, B={batch_size}, "
        f"{repeats} repeats (median)"
    )
    print(f"{'arm':<12}{'samples/s':>12}")
    for k, v in med.items():
        print(f"{k:<12}{v:>12.1f}")
    print(f"fit / dataloader = {out['fit_vs_dataloader']:.2f}x (goal >= 1.5x)")
    print(f"fit / on-device  = {out['fit_vs_on_device']:.2f}x (goal >= 1.0x)")
    print(f"bf16 peak reached: {'n/a on ' + name if fraction is None else f'{fraction:.1%}'}")
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    path = results / ("gpu_quick.json" if args.quick else "gpu.json")
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path.name} in {results.name}/")


if __name__ == "__main__":
    sys.exit(main())
