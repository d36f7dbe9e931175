"""Thin adapters to the trainers people already use; each module imports its framework only.

* :mod:`optuna_bs.integrations.lightning`: a ``lightning.pytorch`` callback;
* :mod:`optuna_bs.integrations.transformers`: ``hp_space`` and a ``TrainerCallback`` for
  ``Trainer.hyperparameter_search(backend="optuna")``.

Both report, prune and early-stop through :class:`optuna_bs.TrialMonitor`, record the same
user attrs as :func:`optuna_bs.fit`, and check that the effective batch (per-device batch ×
accumulation × world size, :mod:`optuna_bs.train.distributed`) is the trial's B.
"""
