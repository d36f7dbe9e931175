"""How one batch is computed on the device: placement, mixed precision, augmentation, compile.

Private to the trainer: :func:`optuna_bs.fit` builds one :class:`Accelerator` per fit from its
``precision``, ``channels_last``, ``compile``, ``augment`` and ``cudnn_benchmark`` arguments.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from optuna_bs._validation import check_choice
from optuna_bs.vocabulary import AUGMENTATIONS

_logger = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Accelerator:
    """The per-fit device path: a :class:`~optuna_bs.train.DevicePath` (its ``device``
    resolved) and ``fit``'s ``augment`` (``"crop-flip"``: :func:`crop_flip`, on the device)."""

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    augment: str = "none"
    cudnn_benchmark: bool = False
    scaler: torch.amp.GradScaler | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        check_choice("augment", self.augment, AUGMENTATIONS)  # precision: DevicePath checks it
        if self.precision == "fp16":
            # fp16 gradients underflow without loss scaling; bf16 has fp32's range.
            self.scaler = torch.amp.GradScaler(self.device.type)
        if self.device.type == "cuda" and self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device (channels-last if asked) and compile it if asked."""
        if self.channels_last:
            model.to(self.device, memory_format=torch.channels_last)
        else:
            model.to(self.device)
        return torch.compile(model) if self.compile else model

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's precision context."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def inputs(self, x, *, train: bool, generator=None):
        """A batch ready for the model: on the device, augmented when training, NHWC if asked.

        A batch in pinned host memory is copied without blocking the host. Inputs that are
        not one tensor (a dict of a model's keyword arguments) pass through as they are.
        """
        if not torch.is_tensor(x):
            return x
        if x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        if train and self.augment == "crop-flip" and x.dim() == 4:
            x = crop_flip(x, generator=generator)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one (micro-)batch's loss, adding to the gradients; loss-scaled in fp16."""
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def step(self, opt: torch.optim.Optimizer, params, max_grad_norm: float | None) -> None:
        """The optimizer step on the accumulated gradients, clipped to ``max_grad_norm``."""
        if max_grad_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(opt)  # clip the true gradient, not the scaled one
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if self.scaler is None:
            opt.step()
        else:
            self.scaler.step(opt)
            self.scaler.update()

    def state_dict(self) -> dict:
        """The loss scaler's state, for a checkpoint (empty without fp16)."""
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def crop_flip(
    x: torch.Tensor, *, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop of a zero-padded image batch, then a random horizontal flip, per sample.

    The standard CIFAR augmentation (He et al. 2016), vectorised on the batch's device.

    Example:
        >>> x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
        >>> crop_flip(x, padding=1).shape
        torch.Size([2, 1, 4, 4])
    """
    n, _, h, w = x.shape
    device = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), device=device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), device=device, generator=generator)
    rows = (top[:, None] + torch.arange(h, device=device))[:, :, None]  # n x h x 1
    cols = (left[:, None] + torch.arange(w, device=device))[:, None, :]  # n x 1 x w
    batch = torch.arange(n, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # n x c x h x w
    flip = torch.rand(n, device=device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)
