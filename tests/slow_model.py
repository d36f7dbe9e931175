"""A model factory for worker tests: an MLP whose training steps take a known time.

Used as ``[model] name = "tests.slow_model:factory"`` so that a trial lasts long enough to be
killed in the middle.
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
