"""The state of one training run (:class:`TrainingState`): what a checkpoint saves and restores."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from optuna_bs.errors import DiskFullError, disk_full
from optuna_bs.train._accelerate import Accelerator
from optuna_bs.train._checkpoints import OWNER_KEY
from optuna_bs.train.monitor import TrialMonitor


@dataclass
class TrainingState:
    """Everything a checkpoint saves and restores: one schema, in one place.

    ``fit`` builds one per call; :meth:`state_dict` is what goes to disk at the end of
    every epoch and :meth:`load_state_dict` what a resumed fit (or a dead worker's retried
    trial) starts from.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the shuffle, where the data live
    aug_generator: torch.Generator  # the augmentation, where the batch lives
    accelerator: Accelerator
    monitor: TrialMonitor
    # The largest micro-batch allowed: None while it is "auto" and nothing ran out of memory.
    micro_cap: int | None
    best_state: dict | None = None
    lr_base: list[float] = field(default_factory=list)  # each param group's lr at ϵ
    # Whose checkpoint it is (_checkpoints.owner_of): what a retry checks before it resumes.
    owner: dict | None = None

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "aug_generator": self.aug_generator.get_state(),
            "scaler": self.accelerator.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "monitor": self.monitor.state_dict(),
            "best_state": self.best_state,
            "micro_cap": self.micro_cap,
            OWNER_KEY: self.owner,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.aug_generator.set_state(state["aug_generator"])
        self.accelerator.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.monitor.load_state_dict(state["monitor"])
        self.best_state = state["best_state"]
        self.micro_cap = state["micro_cap"]

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` to ``path``, replacing it atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous epoch's one
        except BaseException as err:  # a Ctrl-C or a full disk leaves no half-written .tmp
            tmp.unlink(missing_ok=True)
            # torch's writer reports a short write as "unexpected pos", not as ENOSPC.
            if disk_full(err) or "unexpected pos" in str(err):
                raise DiskFullError(
                    f"no space left on the device for the checkpoint {str(path)!r}: free some "
                    "space, or put `checkpoint_dir` on another disk"
                ) from err
            raise

    def load(self, path: str | Path) -> None:
        """Restore from a file written by :meth:`save` (``weights_only``: data, never code).

        Raises:
            ValueError: If ``path`` is missing, or is not a checkpoint of this model's fit.
        """
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as err:
            raise ValueError(
                f"`resume_from` must be a checkpoint file, but {path} does not exist."
            ) from err
        except Exception as err:  # unpickling refuses it, or it is no torch file at all
            raise ValueError(
                f"`resume_from` must be a checkpoint written by optuna_bs.fit, but {path} is "
                f"not one ({type(err).__name__})."
            ) from err
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            cause = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            raise ValueError(
                f"`resume_from` {path} does not fit this fit's model and optimizer ({cause})."
            ) from err


def check_writable(path: str | Path, what: str = "checkpoint") -> Path:
    """Make sure a file can be written at ``path`` (its folder created), before training.

    Raises:
        ValueError: Naming the path and why, if it cannot.
    """
    path = Path(path)
    probe = path.with_name(path.name + ".probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(
            f"`{what}` {str(path)!r} cannot be written ({err.strerror or err}): choose a "
            "writable folder."
        ) from err
    return path


def check_creatable(folder: str | Path, what: str) -> Path:
    """Make sure ``folder`` exists as a writable folder, or could be created, without
    creating it: every part that exists is a folder, and the deepest one is writable.

    Raises:
        ValueError: Naming the path, what is in the way and the fix.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(
            f"`{what}` {str(folder)!r} cannot be created: {str(existing)!r} is a file, not a "
            "folder; choose another folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"`{what}` {str(folder)!r} cannot be written: {str(existing)!r} is not writable; "
            "choose a writable folder."
        )
    return folder
