"""P7: does the gradient noise scale predict the critical batch size?

    python benchmarks/critical_batch.py            # ~15 minutes on 2 cores
    python benchmarks/critical_batch.py --quick    # smoke test, ~1 minute

For each batch size B on a grid of powers of two, train the MNIST-1D MLP at several noise
scales g (so each B gets its best learning rate) and count the optimizer steps until the
validation error first reaches a target. McCandlish et al. (2018) predict
S(B) = S_min (1 + B_crit / B): fitting it to log S (each B weighs the same) gives the
measured knee B_crit, where steps stop halving when B doubles. It is compared with B_simple
from :func:`optuna_bs.measure.estimate_noise_scale`, at initialisation and after 2, 5 and 10
epochs of training, since the noise scale grows during training.
Goal: within 2x. Results go to benchmarks/results/critical_batch.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import least_squares

from optuna_bs import build_model, evaluate, load_data, lr_for_noise_scale
from optuna_bs.measure.noise import estimate_noise_scale

HERE = Path(__file__).resolve().parent


def steps_to_target(data, batch_size, lr, momentum, target, max_steps, seed) -> int | None:
    """Optimizer steps until the validation error first reaches ``target`` (None: never)."""
    torch.manual_seed(seed)
    model = build_model("mlp", data.input_shape, data.n_outputs)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    n = data.n_train
    per_epoch = n // batch_size
    check_every = max(1, per_epoch // 4)  # a few checks per epoch, even at large B
    step = 0
    while step < max_steps:
        perm = torch.randperm(n, generator=gen)
        xs, ys = data.x_train[perm], data.y_train[perm]
        for i in range(per_epoch):
            batch = slice(i * batch_size, (i + 1) * batch_size)
            loss = F.cross_entropy(model(xs[batch]), ys[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if not torch.isfinite(loss):
                return None
            if step % check_every == 0 and evaluate(model, data.x_val, data.y_val) <= target:
                return step
            if step >= max_steps:
                return None
    return None


def plot(results: dict, path: Path) -> None:
    """Steps to target against B, the fitted S_min (1 + B_crit/B), and B_simple marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = [(r["batch_size"], r["best_steps"]) for r in results["runs"] if "best_steps" in r]
    bs = np.array([b for b, s in best if s is not None], dtype=float)
    steps = np.array([s for _, s in best if s is not None], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.loglog(bs, steps, "o", color="#31688e", label="measured (best g per B)")
    grid = np.geomspace(bs.min(), bs.max(), 100)
    s_min, b_crit = results["s_min"], results["b_crit"]
    ax.loglog(
        grid,
        s_min * (1 + b_crit / grid),
        "-",
        color="#35b779",
        label=f"fit S_min(1 + B_crit/B), B_crit = {b_crit:.0f}",
    )
    ax.loglog(grid, steps[0] * bs[0] / grid, ":", color="grey", label="perfect scaling (S ∝ 1/B)")
    styles = ("--", "-.", ":", (0, (5, 1)))
    for (warmup, est), style in zip(results["estimates"].items(), styles, strict=False):
        ax.axvline(
            est["b_simple"],
            color="#c0392b",
            linestyle=style,
            label=f"B_simple after {warmup} warm-up epochs = {est['b_simple']:.0f}",
        )
    ax.set_xlabel("batch size B")
    ax.set_ylabel(f"steps to val_error <= {results['target']}")
    ax.set_title(f"MNIST-1D MLP, N = {results['n_train']}: where larger batches stop paying")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plot", metavar="PNG", help="also draw the result into this file")
    parser.add_argument("--plot-from", metavar="JSON", help="only draw a saved result")
    parser.add_argument("--target", type=float, default=0.45, help="validation error to reach")
    args = parser.parse_args()
    if args.plot_from:
        plot(json.loads(Path(args.plot_from).read_text()), Path(args.plot))
        return
    torch.set_num_threads(1)
    momentum = 0.9
    if args.quick:
        data = load_data("mnist1d")
        grid, noise_scales, max_steps, target = [32, 128], [50.0], 300, 0.7
    else:
        data = load_data("mnist1d", num_samples=20000)  # N = 12800: room for large B
        grid = [16, 32, 64, 128, 256, 512, 1024, 2048]
        noise_scales, max_steps, target = [12.5, 25.0, 50.0, 100.0, 200.0], 20000, args.target
    n = data.n_train
    rows = []
    for b in grid:
        best = None
        for g in noise_scales:
            lr = lr_for_noise_scale(g, b, n, momentum)
            steps = steps_to_target(data, b, lr, momentum, target, max_steps, seed=0)
            rows.append({"batch_size": b, "noise_scale": g, "lr": lr, "steps": steps})
            if steps is not None and (best is None or steps < best):
                best = steps
        rows.append({"batch_size": b, "best_steps": best})
        print(f"B={b:>5}: steps to val_error <= {target}: {best}", flush=True)

    best = {r["batch_size"]: r["best_steps"] for r in rows if "best_steps" in r}
    reached = [(b, s) for b, s in best.items() if s is not None]
    bs = np.array([b for b, _ in reached], dtype=float)
    steps = np.array([s for _, s in reached], dtype=float)
    # S = S_min (1 + B_crit / B) (McCandlish et al. 2018, eq. 2.11), fitted to log S: step
    # counts vary by a factor, so each B weighs the same (a fit of S itself lets the few
    # thousand steps of B = 16 outweigh everything else; it is kept for comparison).
    fit = least_squares(
        lambda p: p[0] + np.log1p(np.exp(p[1]) / bs) - np.log(steps),
        [np.log(steps.min()), np.log(np.median(bs))],
    )
    s_min, b_crit = float(np.exp(fit.x[0])), float(np.exp(fit.x[1]))
    design = np.stack([np.ones_like(bs), 1.0 / bs], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, steps, rcond=None)
    b_crit_linear = float(b / a) if a > 0 else float("inf")

    probe = (32, 512) if not args.quick else (16, 128)
    estimates = {}
    for warmup in (0, 2) if args.quick else (0, 2, 5, 10):
        torch.manual_seed(0)
        model = build_model("mlp", data.input_shape, data.n_outputs)
        est = estimate_noise_scale(
            model,
            data,
            batch_sizes=probe,
            warmup_epochs=warmup,
            n_batches=20 if args.quick else 100,
            device="cpu",
            lr=lr_for_noise_scale(50.0, probe[0], n, 0.0),
        )
        estimates[warmup] = {"b_simple": est.b_simple, "standard_error": est.standard_error}

    print(f"\nP7 critical batch size, MNIST-1D MLP, N = {n}, target val_error {target}")
    print(f"{'B':>6}{'best steps':>12}")
    for b, s in best.items():
        print(f"{b:>6}{str(s):>12}")
    print(
        f"measured knee B_crit (fit of log S to log S_min (1 + B_crit/B)): {b_crit:.0f}, "
        f"S_min = {s_min:.0f}; a fit of S itself gives {b_crit_linear:.0f}"
    )
    for warmup, est in estimates.items():
        ratio = est["b_simple"] / b_crit
        print(
            f"B_simple after {warmup} warm-up epochs: {est['b_simple']:.0f} "
            f"± {est['standard_error']:.0f}  ({ratio:.2f}x the knee; goal within 2x)"
        )
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / ("critical_batch_quick.json" if args.quick else "critical_batch.json")
    results_json = {
        "n_train": n,
        "target": target,
        "runs": rows,
        "b_crit": b_crit,
        "s_min": s_min,
        "b_crit_linear_fit": b_crit_linear,
        "estimates": estimates,
    }
    path.write_text(json.dumps(results_json, indent=2))
    print(f"written to {path.relative_to(HERE.parent)}")
    if args.plot:
        plot(results_json, Path(args.plot))


if __name__ == "__main__":
    main()
