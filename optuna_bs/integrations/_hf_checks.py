"""What the Hugging Face callback checks before a trial trains: that the model's loss scales its
gradient right under gradient accumulation (transformers 5 divides by the item count only for
models whose loss takes it), and that evaluations come once an epoch."""

from __future__ import annotations

from typing import Any


def _passes_item_count(model: Any) -> bool:
    """Whether the Trainer passes ``num_items_in_batch`` to ``model`` and then leaves the loss
    undivided by the accumulation steps: its own rule, read once from the model that
    ``model_init()`` returns when the Trainer is built."""
    import inspect

    if hasattr(model, "accepts_loss_kwargs"):
        return bool(model.accepts_loss_kwargs)
    params = inspect.signature(model.forward).parameters.values()
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


def _loss_ignores_item_count(model: Any, batch: Any) -> bool | None:
    """Whether the model's loss on ``batch`` is the same with and without
    ``num_items_in_batch`` (``None``: no loss to compare). Run in eval mode, without
    gradients, with the random state and the config's ``problem_type`` restored."""
    import torch

    if not isinstance(batch, dict) or "labels" not in batch:
        return None
    config = getattr(model, "config", None)
    problem_type = getattr(config, "problem_type", None)
    state, training = torch.get_rng_state(), model.training
    try:
        device = next(model.parameters()).device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        model.eval()
        with torch.no_grad():
            plain = getattr(model(**batch), "loss", None)
            many = torch.tensor(10**6, device=device)
            counted = getattr(model(**batch, num_items_in_batch=many), "loss", None)
    finally:
        torch.set_rng_state(state)
        model.train(training)
        if config is not None and hasattr(config, "problem_type"):
            config.problem_type = problem_type  # the probe's labels must not decide it
    if plain is None or counted is None:
        return None
    return bool(torch.allclose(plain, counted))


def _dummy_batches(model: Any) -> list[dict[str, Any]]:
    """Batches to probe the loss of a transformers model before any data is seen: its
    ``dummy_inputs`` with one label per sequence (a classifier's), or one per token (a
    language model's)."""
    import torch

    try:
        inputs = dict(model.dummy_inputs)
    except Exception:  # not a transformers model, or one without dummy inputs
        return []
    ids = inputs.get("input_ids")
    if not torch.is_tensor(ids) or ids.dim() != 2:
        return []
    per_sequence = torch.zeros(len(ids), dtype=torch.long)
    return [{**inputs, "labels": per_sequence}, {**inputs, "labels": ids.clone()}]


def _scaled_gradient_error(model: Any) -> ValueError:
    return ValueError(
        f"{type(model).__name__}'s loss ignores num_items_in_batch, so the Trainer would "
        "scale its gradient by gradient_accumulation_steps (and the world size) and the update "
        "would not be the one at the trial's B: set model.accepts_loss_kwargs = False in "
        "model_init."
    )


def _check_accumulation_scaling(model: Any, loader: Any) -> None:
    """Refuse a model whose gradient the Trainer would scale by the accumulation steps.

    The Trainer does not divide the loss by the accumulation steps when the model's
    ``forward`` takes ``**kwargs`` (it then passes ``num_items_in_batch`` and expects a loss
    already normalised by it; under DDP it also multiplies the loss by the world size).
    Models whose loss ignores it (transformers 5's ``*ForSequenceClassification``, for one)
    then get a gradient that many times too large: the update is no longer the one at B, and
    gradient clipping cuts it differently. Tested on one training batch.
    """
    if model is None or loader is None or not _passes_item_count(model):
        return
    if _loss_ignores_item_count(model, next(iter(loader))):
        raise _scaled_gradient_error(model)


def _check_eval_strategy(args: Any) -> None:
    """Refuse evaluations that are not one per epoch: the callback reports each one as an
    epoch, so that a pruner compares trials after the same data, whatever their B."""
    strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
    if strategy != "epoch":
        why = " (every eval_steps updates: fewer samples at a small B than at a large one)"
        why = why if strategy == "steps" else ""
        raise ValueError(
            f"TrialCallback compares trials epoch by epoch, but got eval_strategy={strategy!r}"
            f"{why}: set eval_strategy='epoch' in TrainingArguments."
        )


def check_model(model: Any, accumulates: bool) -> bool | None:
    """As the Trainer is built: whether it passes ``num_items_in_batch`` to ``model``'s loss
    (``None``: no model), and, where the search ``accumulates`` (or runs on several
    processes), a loss that ignores it refused, probed on the model's dummy inputs (where it
    cannot be, the first trial probes a training batch instead)."""
    if model is None:
        return None
    passes = _passes_item_count(model)
    if not passes or not accumulates:
        return passes
    for batch in _dummy_batches(model):
        try:
            ignored = _loss_ignores_item_count(model, batch)
        except Exception:  # labels of another shape: try the next, or leave it to training
            continue
        if ignored:
            raise _scaled_gradient_error(model)
        if ignored is not None:
            break
    return passes
