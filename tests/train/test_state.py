from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import torch

from optuna_bs.errors import DiskFullError
from optuna_bs.train._accelerate import Accelerator
from optuna_bs.train.monitor import TrialMonitor
from optuna_bs.train.state import TrainingState


def _state(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen, aug = torch.Generator(), torch.Generator()
    gen.manual_seed(seed)
    aug.manual_seed(seed + 1)
    return TrainingState(
        model, opt, gen, aug, Accelerator(torch.device("cpu")), TrialMonitor(None), micro_cap=None
    )


def test_a_saved_state_restores_every_part(tmp_path):
    state = _state(0)
    state.model(torch.randn(4, 3)).sum().backward()
    state.optimizer.step()
    state.monitor.step(0.3, updates=7, samples=70)
    state.micro_cap = 16
    state.best_state = {k: v.clone() for k, v in state.model.state_dict().items()}
    torch.randperm(10, generator=state.generator)
    state.save(tmp_path / "s.pt")

    other = _state(1)
    other.load(tmp_path / "s.pt")
    for a, b in zip(state.model.parameters(), other.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert other.optimizer.state_dict()["state"].keys() == {0, 1}  # momentum buffers
    assert torch.equal(other.generator.get_state(), state.generator.get_state())
    assert (other.monitor.epoch_, other.monitor.n_updates_, other.micro_cap) == (1, 7, 16)
    assert other.best_state.keys() == state.best_state.keys()
    assert not (tmp_path / "s.pt.tmp").exists()  # replaced atomically


needs_dev_full = pytest.mark.skipif(
    not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full"
)


@needs_dev_full
def test_a_full_disk_is_named_and_leaves_neither_a_tmp_nor_a_broken_checkpoint(tmp_path):
    """The .tmp a save writes lies on a full device (/dev/full: every write fails ENOSPC, and
    torch's writer says "unexpected pos"): one error that says so, the previous epoch's
    checkpoint kept whole, and no .tmp left."""
    state = _state(0)
    path = tmp_path / "s.pt"
    state.save(path)
    before = path.read_bytes()
    (tmp_path / "s.pt.tmp").symlink_to("/dev/full")
    with pytest.raises(DiskFullError, match="no space left on the device for the checkpoint"):
        state.save(path)
    assert not os.path.lexists(tmp_path / "s.pt.tmp")
    assert path.read_bytes() == before
    _state(1).load(path)  # still a whole checkpoint


def test_a_failed_save_that_is_not_a_full_disk_is_not_called_one(tmp_path, monkeypatch):
    state = _state(0)

    def broken(obj, f):
        Path(f).write_bytes(b"half")
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="something else"):
        state.save(tmp_path / "s.pt")
    assert not (tmp_path / "s.pt.tmp").exists()


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="`resume_from` must be a checkpoint file"):
        _state().load(tmp_path / "none.pt")


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not one"):
        _state().load(junk)
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not fit this fit's model"):
        _state().load(tmp_path / "other.pt")


def test_an_unwritable_checkpoint_fails_before_training(tmp_path):
    from optuna_bs import Hyperparameters, fit, load_data

    blocker = tmp_path / "file"
    blocker.write_text("")
    data = load_data("synthetic", n_samples=200)
    model = torch.nn.Linear(20, 2)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="cannot be written"):
        fit(
            model,
            data,
            Hyperparameters(16, 0.1, 0.9, data.n_train),
            max_epochs=1,
            checkpoint=blocker / "c.pt",
        )
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _retry_of_trial_0(study: optuna.Study) -> optuna.trial.Trial:
    """What RetryHeartbeatStaleTrialCallback queues for a dead trial 0, started."""
    frozen = study.trials[0]
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            system_attrs={"failed_trial": 0, "retry_history": [0]},
        )
    )
    return study.ask()


def test_a_trials_checkpoint_records_its_owner_and_only_its_retry_resumes_it(tmp_path, caplog):
    from optuna_bs import Hyperparameters, fit, load_data
    from optuna_bs.train._checkpoints import read_owner, resumable, study_folder

    data = load_data("synthetic", n_samples=200)
    studies = [optuna.create_study(study_name="s") for _ in range(2)]  # two stores, one name
    for study in studies:
        study.enqueue_trial({"x": 0.5})
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
    folder = study_folder(tmp_path, "s")
    fit(
        torch.nn.Linear(20, 2),
        data,
        Hyperparameters(16, 0.1, 0.9, data.n_train),
        trial=trial,  # the second study's
        max_epochs=1,
        checkpoint=folder / "trial_0.pt",
    )
    started = studies[1].trials[0].datetime_start.isoformat()
    assert read_owner(folder / "trial_0.pt") == {
        "study": "s",
        "trial": 0,
        "started": started,
        "params": {"x": 0.5},
    }
    assert resumable(_retry_of_trial_0(studies[1]), folder) == (0, folder / "trial_0.pt")
    with caplog.at_level("WARNING", logger="optuna_bs"):
        assert resumable(_retry_of_trial_0(studies[0]), folder) is None
    (line,) = [r.getMessage() for r in caplog.records if r.name.startswith("optuna_bs")]
    assert line.startswith("Trial 1 starts afresh") and started in line
