"""The epoch loop of :func:`optuna_bs.fit`: train, validate, checkpoint, ask the monitor.

Private to the trainer. One :class:`EpochLoop` per fit. Per epoch: the schedule's setting,
``N // B`` updates (each accumulating B/b micro-batches), the validation value, the checkpoint,
then the monitor's verdict.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings

import torch

from optuna_bs.rules.batch import largest_divisor_at_most
from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.train.distributed import broadcast
from optuna_bs.train.metrics import free_memory
from optuna_bs.train.schedules import epoch_attrs
from optuna_bs.train.sources import batch_len, forward, split, to_device, unpack

_logger = logging.getLogger(__name__)


class EpochLoop:
    """The epoch loop of one fit: train, validate, checkpoint, ask the monitor.

    With ``shard=(rank, K)`` (``torch.distributed``), ``net`` is a ``DistributedDataParallel``
    and ``eval_net`` the model it wraps: each rank trains on its B/K share of every batch,
    rank 0 alone validates and checkpoints, and every rank feeds the monitor rank 0's values,
    so every rank takes the same decisions at the same epoch.
    """

    def __init__(
        self,
        state,
        net,
        source,
        hparams,
        schedule,
        loss_fn,
        batch_loss,
        clip,
        on_oom,
        validate,
        *,
        eval_net,
        shard: tuple[int, int],
    ):
        self.state, self.net, self.source, self.hparams = state, net, source, hparams
        self.schedule, self.loss_fn, self.batch_loss = schedule, loss_fn, batch_loss
        self.clip, self.on_oom, self.validate = clip, on_oom, validate
        self.eval_net, self.shard = eval_net, shard
        self.accel = state.accelerator
        self.params = [p for g in state.optimizer.param_groups for p in g["params"]]
        self.path: list[Hyperparameters] = []
        self.batch_size = hparams.batch_size  # the epoch's B
        self.micro_batch_size = state.micro_cap or self.local_batch
        self.on_gpu = self.accel.device.type != "cpu"

    @property
    def local_batch(self) -> int:
        """This rank's share of B: B / K."""
        return self.batch_size // self.shard[1]

    @property
    def accumulation(self) -> int:
        """Micro-batches per update on each rank: B / (K b) (b always divides B/K)."""
        return self.local_batch // self.micro_batch_size

    def run(self, max_epochs: int, checkpoint, *, resuming: bool) -> None:
        monitor, schedule = self.state.monitor, self.schedule
        if schedule is not None:
            schedule.on_fit_start(self.hparams, max_epochs)
            self.path = [schedule.at(e, self.hparams) for e in range(monitor.epoch_)]
        if resuming:
            with warnings.catch_warnings():  # the saved epoch may have been reported already
                warnings.simplefilter("ignore", UserWarning)
                if monitor.check():
                    return
        for epoch in range(monitor.epoch_, max_epochs):
            setting = self.hparams if schedule is None else schedule.at(epoch, self.hparams)
            if schedule is not None:
                self.path.append(setting)
                monitor.attrs.update(epoch_attrs(self.path))
            if self.epoch(epoch, setting, checkpoint):
                return

    def epoch(self, epoch: int, setting: Hyperparameters, checkpoint) -> bool:
        """Train and validate one epoch; ``True`` when the run should stop."""
        state, monitor = self.state, self.state.monitor
        batch_size = self.batch_size = setting.batch_size
        steps = self.source.n_train // batch_size  # full batches: B is what g assumes
        local = self.local_batch
        self.micro_batch_size = largest_divisor_at_most(local, state.micro_cap or local)
        if self.schedule is not None:
            self._set_hyperparameters(setting)
        tic = time.perf_counter()
        train_loss, updates = self.train_epoch(epoch, setting, steps)
        seconds = time.perf_counter() - tic
        monitor.attrs["micro_batch_size"] = self.micro_batch_size
        monitor.attrs["accumulation_steps"] = self.accumulation
        if train_loss is None:  # out of memory at the smallest micro-batch, or "prune"
            monitor.count(updates=updates, samples=updates * batch_size, step_seconds=seconds)
            return monitor.stop(
                "oom",
                f"out of memory at batch_size={batch_size}, micro-batch {self.micro_batch_size}",
            )
        rank, size = self.shard
        # Rank 0 validates (a non-finite loss ends the run unvalidated); the others take
        # its numbers in end_epoch.
        finite = math.isfinite(train_loss)
        val = self.validate(self.eval_net) if finite and rank == 0 else train_loss

        def keep() -> None:
            if monitor.improved_:
                state.best_state = copy.deepcopy(state.model.state_dict())
            if checkpoint is not None and rank == 0:
                state.save(checkpoint)

        return monitor.end_epoch(
            val,
            train_loss=train_loss,
            updates=steps,
            samples=steps * batch_size,
            step_seconds=seconds,
            share=broadcast if size > 1 else None,
            keep=keep,
        )

    def train_epoch(self, epoch: int, setting: Hyperparameters, steps: int):
        """Every update of one epoch: ``(mean training loss, updates)``; loss ``None`` when
        out of memory ended the run (after ``updates`` updates)."""
        self.net.train()
        pin = self.accel.device.type == "cuda"
        batches = self.source.train_batches(
            setting.batch_size, steps, self.state.generator, pin, shard=self.shard
        )
        per_step = self.schedule is not None and self.schedule.per_step
        loss_sum = torch.zeros((), device=self.accel.device)  # float32: add_ casts a bf16 loss
        for i, batch in enumerate(batches):
            if per_step:  # the update's midpoint in time: no update at a factor of exactly 0
                factor = self.schedule.lr_factor(epoch + (i + 0.5) / steps)
                self._set_lr(setting, factor)
            loss = self.update_with_retry(batch, self.local_batch)
            if loss is None:
                return None, i
            if self.state.monitor.reference_loss_ is None:  # once per fit: the loss at init
                self.state.monitor.reference_loss_ = loss.item()
            loss_sum.add_(loss)
        return loss_sum.item() / steps, steps

    def update_with_retry(self, batch, batch_size: int) -> torch.Tensor | None:
        """One update of this rank's ``batch_size`` samples; on out of memory, halve the
        micro-batch and redo it (B is kept)."""
        while True:
            try:
                return self.update(batch, batch_size)
            except torch.cuda.OutOfMemoryError:
                pass
            # Freed here, outside the except block whose traceback pins the batch.
            self.state.optimizer.zero_grad(set_to_none=True)
            free_memory(self.accel.device)
            b = self.micro_batch_size
            if self.on_oom == "prune" or b == 1:
                return None
            smaller = largest_divisor_at_most(batch_size, b // 2)
            self.micro_batch_size = self.state.micro_cap = smaller
            _logger.info(
                "Out of memory at micro-batch %d: B=%d is now %d x %d micro-batches.",
                b,
                batch_size,
                self.accumulation,
                smaller,
            )

    def update(self, batch, batch_size: int) -> torch.Tensor:
        """Accumulate B/b micro-batches, each weighted b/B, then step: the update at b = B."""
        b = self.micro_batch_size
        parts = [batch] if b >= batch_size else split(batch, b)
        opt = self.state.optimizer
        opt.zero_grad(set_to_none=True)
        total = None
        for i, part in enumerate(parts):
            if self.on_gpu:  # a CPU batch is where the CPU model needs it already
                part = to_device(part, self.accel.device)
            # DistributedDataParallel averages the gradients over the ranks at the last
            # micro-batch's backward only.
            with self._no_sync(last=i == len(parts) - 1):
                with self.accel.autocast():
                    loss = self.loss(part)
                if len(parts) == 1:
                    self.accel.backward(loss)
                    total = loss.detach()
                    break
                weight = batch_len(part) / batch_size
                self.accel.backward(loss * weight)
            total = loss.detach().float() * weight + (0.0 if total is None else total)
        self.accel.step(opt, self.params, self.clip)
        return total

    def _no_sync(self, last: bool):
        if last or not isinstance(self.net, torch.nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.net.no_sync()

    def loss(self, batch) -> torch.Tensor:
        if self.batch_loss is not None:
            return self.batch_loss(self.net, batch)
        inputs, targets = unpack(batch)
        inputs = self.accel.inputs(inputs, train=True, generator=self.state.aug_generator)
        return self.loss_fn(forward(self.net, inputs), targets)

    def _set_lr(self, setting: Hyperparameters, factor: float = 1.0) -> None:
        """Each group's own lr scaled to the setting's, times a per-step schedule's ``factor``:
        all a step changes."""
        for group, lr in zip(self.state.optimizer.param_groups, self.state.lr_base, strict=True):
            group["lr"] = lr * setting.lr / self.hparams.lr * factor

    def _set_hyperparameters(self, setting: Hyperparameters) -> None:
        """Give the optimizer the epoch's lr and momentum (Adam's β1)."""
        self._set_lr(setting)
        for group in self.state.optimizer.param_groups:
            if "momentum" in group:
                group["momentum"] = setting.momentum
            elif "betas" in group:
                group["betas"] = (setting.momentum, group["betas"][1])
