"""A model factory for worker tests: an MLP whose training steps take a known time.

Used as ``[model] name = "tests.slow_model:factory"`` so that a trial lasts long enough to be
killed in the middle. ``SLOW_STUDY`` is the study file of such trials (8 epochs of 6 steps
of 30 ms, a 1 s heartbeat), shared by the worker tests and ``benchmarks/faults.py``.
"""

from __future__ import annotations

import time

import torch


class _Slow(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, seconds: float) -> None:
        super().__init__()
        self.inner = inner
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(self.seconds)
        return self.inner(x)


def factory(input_shape, n_outputs, seconds_per_step: float = 0.02) -> torch.nn.Module:
    inner = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(input_shape[0], 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, n_outputs),
    )
    return _Slow(inner, seconds_per_step)


#: A study of 8-epoch trials whose steps take 30 ms each, with a 1 s heartbeat.
SLOW_STUDY = """
[study]
n_trials = 5
pruner = "none"
heartbeat_interval = 1
[data]
name = "synthetic"
n_samples = 300
n_features = 6
[model]
name = "tests.slow_model:factory"
seconds_per_step = 0.03
[space]
batch_size = 32
noise_scale = [5.0, 50.0]
[train]
max_epochs = 8
patience = 0
"""
