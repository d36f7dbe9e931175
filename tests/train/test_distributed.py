"""The effective batch, and one trial trained by 2 processes under torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import optuna
import pytest
import torch

import optuna_bs
from optuna_bs.rules.batch import BatchPlan, check_effective_batch, plan_batch
from optuna_bs.train.distributed import broadcast, optimize, world
from tests.conftest import REPO, _server_url

SCRIPT = REPO / "tests" / "helpers" / "ddp_fit.py"


def test_plan_batch_splits_b_into_the_largest_micro_batch_that_fits():
    assert plan_batch(256) == BatchPlan(256, 1, 1)
    assert plan_batch(256, max_micro_batch=48, world_size=2) == BatchPlan(32, 4, 2)
    assert plan_batch(96, max_micro_batch=40) == BatchPlan(32, 3, 1)
    assert plan_batch(256, max_micro_batch=48, world_size=2).batch_size == 256
    with pytest.raises(ValueError, match="multiple of the world size 3.*batch_size=256"):
        plan_batch(256, world_size=3)
    with pytest.raises(ValueError, match="max_micro_batch"):
        plan_batch(256, max_micro_batch=0)


def test_a_mismatched_effective_batch_names_all_three_and_the_fix():
    assert check_effective_batch(128, 32, 2, 2) == BatchPlan(32, 2, 2)
    with pytest.raises(ValueError) as err:
        check_effective_batch(128, 32, 2, 1)
    message = str(err.value)
    for part in ("per-device batch 32", "accumulation 2", "world size 1", "= 64", "128"):
        assert part in message
    assert "per-device batch 32 with accumulation 4" in message


def test_outside_torch_distributed_there_is_one_process(monkeypatch):
    assert world() == (0, 1)
    assert broadcast({"a": 1}) == {"a": 1}
    study = optuna.create_study()
    optimize(study, lambda t: t.suggest_float("x", 0, 1), n_trials=2)  # plain study.optimize
    assert len(study.trials) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun, but never joined the group
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2.*init_from_env"):
        optimize(study, lambda t: 0.0, n_trials=1)
    data = optuna_bs.load_data("synthetic", n_samples=200, n_features=8)
    hp = optuna_bs.Hyperparameters(32, 0.05, 0.9, n_train=data.n_train)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with pytest.warns(UserWarning, match="trains alone"):
        optuna_bs.fit(model, data, hp, max_epochs=1, device="cpu")


def test_a_lost_rank_is_told_from_other_errors():
    from optuna_bs.train.distributed import _lost_a_rank

    gloo = "[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"
    assert _lost_a_rank(RuntimeError(gloo))
    assert _lost_a_rank(torch.distributed.DistBackendError("NCCL watchdog"))
    assert not _lost_a_rank(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not _lost_a_rank(ValueError("gloo peer"))


def _torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    done = subprocess.run(
        [*cmd, "2", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(params=["sqlite", "postgres"])
def rdb_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return _server_url("OPTUNA_BS_TEST_POSTGRES_URL")


@pytest.mark.slow
def test_two_ranks_train_each_trial_at_the_global_batch_and_stop_together(tmp_path, rdb_url):
    name = f"ddp-{uuid.uuid4().hex[:8]}"
    _torchrun("study", str(tmp_path), rdb_url, name)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Both ranks trained the same 2 trials and were stopped by the same verdict, same epoch.
    assert ranks[0] == ranks[1]
    assert [seen["trial"] for seen in ranks[0]] == [0, 1]
    assert all(s["pruned"].startswith("pruned:") and "at epoch 2" in s["pruned"] for s in ranks[0])
    n_train = optuna_bs.load_data("synthetic", n_samples=600, n_features=8, n_classes=3).n_train
    study = optuna.load_study(study_name=name, storage=rdb_url)
    trials = study.get_trials()
    assert len(trials) == 2  # the budget, once each: rank 1 created none
    assert sorted(t.number for t in trials) == [0, 1]
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["world_size"] == 2
        assert trial.user_attrs["epochs_run"] == 2
        batch = trial.user_attrs["batch_size"]
        assert batch == 2 ** trial.params["log2_batch_size"]  # the global B, not B/2
        # Each rank trained B/2 per update; the noise scale is that of the global B.
        attrs = trial.user_attrs
        assert attrs["micro_batch_size"] * attrs["accumulation_steps"] * 2 == batch
        hp = optuna_bs.Hyperparameters(
            batch, trial.user_attrs["lr"], trial.user_attrs["momentum"], n_train=n_train
        )
        assert trial.user_attrs["noise_scale"] == pytest.approx(hp.noise_scale)


@pytest.mark.slow
def test_two_ranks_make_the_update_of_one_process_at_b(tmp_path):
    _torchrun("weights", str(tmp_path))
    sys.path.insert(0, str(REPO / "tests" / "helpers"))
    try:
        from ddp_fit import model
    finally:
        sys.path.pop(0)
    data = optuna_bs.load_data("synthetic", n_samples=600, n_features=8, n_classes=3)
    hp = optuna_bs.Hyperparameters(64, 0.05, 0.9, n_train=data.n_train)
    net = model(batch_norm=False)
    alone = optuna_bs.fit(net, data, hp, max_epochs=1, seed=3, device="cpu")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Each rank took 32 of every 64; together they made the same 6 updates as one process.
    assert ranks[0] == ranks[1] == [{"n_updates": alone.n_updates, "micro": 32}]
    shared = torch.load(tmp_path / "weights.pt")
    for key, value in net.state_dict().items():
        torch.testing.assert_close(shared[key], value, rtol=0, atol=1e-5)
