"""Many workers on one study in a real PostgreSQL / MariaDB (docs/design.md §6: R1, R2, R3, R8).

These tests run the ``optuna-bs`` command as separate processes, as users do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import torch

from optuna_bs.study.storage import make_storage
from optuna_bs.train._checkpoints import study_folder

from ..conftest import REPO, _server_url, cli_command
from ..helpers.slow_model import SLOW_STUDY

COMPLETE, PRUNED, FAIL = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)

FAST_STUDY = """
[study]
n_trials = 4
pruner = "none"
n_startup_trials = 2
[data]
name = "synthetic"
n_samples = 200
n_features = 6
[model]
name = "mlp"
hidden = [8]
[space]
batch_size = [16, 32]
[train]
max_epochs = 2
"""


@pytest.fixture(params=["postgres", "mysql"])
def server_url(request):
    variable = {"postgres": "OPTUNA_BS_TEST_POSTGRES_URL", "mysql": "OPTUNA_BS_TEST_MYSQL_URL"}
    return _server_url(variable[request.param])


@pytest.fixture
def postgres_url():
    return _server_url("OPTUNA_BS_TEST_POSTGRES_URL")


def _study_file(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def _env():
    # Workers import the test model factory from this repository's tests package.
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _cli(*args, **kwargs):
    return subprocess.run(
        [*cli_command(), *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
        **kwargs,
    )


def _name():
    return f"w-{uuid.uuid4().hex[:10]}"


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=make_storage(url)).get_trials()


def _delete(url, name):
    optuna.delete_study(study_name=name, storage=make_storage(url))


def test_eight_workers_lose_no_trial(server_url, tmp_path):
    """R3: 8 workers x 25 trials give exactly 200 trials, unique numbers, none lost."""
    name = _name()
    study_file = _study_file(tmp_path, FAST_STUDY.replace("max_epochs = 2", "max_epochs = 1"))
    run = _cli(
        "launch",
        study_file,
        "--storage",
        server_url,
        "--study-name",
        name,
        "--workers",
        8,
        "--n-trials",
        200,
        "--no-test",
        "-q",
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert "deadlock" not in run.stdout.lower()
    trials = _trials(server_url, name)
    assert len(trials) == 200
    assert sorted(t.number for t in trials) == list(range(200))
    assert all(t.state in (COMPLETE, PRUNED) for t in trials)
    _delete(server_url, name)


def test_launch_shares_the_budget_and_prefixes_output(postgres_url, tmp_path):
    name = _name()
    run = _cli(
        "launch",
        _study_file(tmp_path, FAST_STUDY),
        "--storage",
        postgres_url,
        "--study-name",
        name,
        "--workers",
        2,
        "--n-trials",
        5,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert "launching 2 workers" in run.stdout
    # Each worker's own summary line reaches the terminal under its prefix.
    assert "[worker 0] " in run.stdout and "[worker 1] " in run.stdout
    trials = _trials(postgres_url, name)
    assert len(trials) == 5
    # Each worker seeds its own sampler: their random start-up trials differ.
    assert len({tuple(sorted(t.params.items())) for t in trials}) > 1
    assert "best trial #" in run.stdout
    _delete(postgres_url, name)


@pytest.mark.slow
def test_two_ladder_workers_share_one_ladder_on_postgres(postgres_url, tmp_path):
    """``sampler = "ladder"`` under ``launch --workers 2``: two processes plan one search and
    one climb between them (no rung trained twice), within the static distributions."""
    name = _name()
    text = FAST_STUDY.replace('pruner = "none"', 'pruner = "none"\nsampler = "ladder"')
    text = text.replace("batch_size = [16, 32]", "batch_size = [8, 64]")
    args = ("--storage", postgres_url, "--study-name", name, "--workers", 2, "--n-trials", 14)
    run = _cli("launch", _study_file(tmp_path, text), *args, "--no-test", "-q")
    assert run.returncode == 0, run.stdout[-2000:]
    trials = _trials(postgres_url, name)
    assert len(trials) == 14
    first = trials[0].distributions
    assert all(t.distributions == first for t in trials)
    phases = [t.system_attrs["ladder"] for t in trials]
    assert sum(p["phase"] == "search" for p in phases) == 6  # the ladder's n_search, not 7
    assert {
        t.user_attrs["batch_size"]
        for t, p in zip(trials, phases, strict=True)
        if p["phase"] == "search"
    } == {16}
    rungs = [p["rung"] for p in phases if p["phase"] == "climb"]
    assert rungs and len(rungs) == len(set(rungs))
    _delete(postgres_url, name)


def test_sqlite_refuses_several_workers(tmp_path):
    run = _cli("launch", _study_file(tmp_path, FAST_STUDY), "--workers", 2, cwd=tmp_path)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1
    assert "PostgreSQL" in run.stderr and "SQLite" in run.stderr
    assert not (tmp_path / "optuna_bs.db").exists()


def test_max_trials_caps_the_study_across_runs(postgres_url, tmp_path):
    name = _name()
    study_file = _study_file(tmp_path, FAST_STUDY)
    for _ in range(2):
        run = _cli(
            "run",
            study_file,
            "--storage",
            postgres_url,
            "--study-name",
            name,
            "--n-trials",
            10,
            "--max-trials",
            3,
            "-q",
            "--no-test",
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr
    assert len(_trials(postgres_url, name)) == 3
    _delete(postgres_url, name)


def _trials_so_far(storage, name, states=None):
    """The study's trials, or none while a worker has yet to create the study."""
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(states=states)
    except KeyError:
        return []


def _wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_trial_is_retried_and_resumed(postgres_url, tmp_path):
    """R1: SIGKILL mid-trial; the heartbeat fails it, a retry resumes at the next epoch."""
    name = _name()
    study_file = _study_file(tmp_path, SLOW_STUDY)
    common = [
        "run",
        study_file,
        "--storage",
        postgres_url,
        "--study-name",
        name,
        "-q",
        "--no-test",
    ]
    victim = subprocess.Popen(
        [*cli_command(), *map(str, common), "--n-trials", "1"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    storage = make_storage(postgres_url)

    def reached_epoch_three():
        trials = _trials_so_far(storage, name)
        return trials and len(trials[0].intermediate_values) >= 3

    _wait_for(reached_epoch_three, what="the first trial to reach epoch 3")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    checkpoint = study_folder(tmp_path / "checkpoints", name, postgres_url) / "trial_0.pt"
    saved_epoch = torch.load(checkpoint, weights_only=True)["monitor"]["epoch"]
    killed = _trials(postgres_url, name)[0]
    assert killed.state == optuna.trial.TrialState.RUNNING  # nobody has told the study yet
    assert saved_epoch >= 3

    time.sleep(2.5)  # past the grace period (2 x heartbeat_interval)
    rescuer = _cli(*common, "--n-trials", 10, "--max-trials", 3, cwd=tmp_path)
    assert rescuer.returncode == 0, rescuer.stderr

    trials = _trials(postgres_url, name)
    assert trials[0].state == FAIL
    retried = trials[1]
    assert retried.state == COMPLETE
    assert retried.params == killed.params
    assert retried.user_attrs["resumed_from_trial"] == 0
    # The resumed trial's first trained epoch is the killed trial's last epoch + 1 ...
    assert retried.user_attrs["resumed_from_epoch"] == saved_epoch
    # ... and the curve is one: the killed trial's epochs, then the rest.
    assert sorted(retried.intermediate_values) == list(range(1, 9))
    for epoch, value in killed.intermediate_values.items():
        assert retried.intermediate_values[epoch] == value
    assert retried.user_attrs["n_updates"] == 8 * (192 // 32)
    finished = [t for t in trials if t.state in (COMPLETE, PRUNED)]
    assert len(finished) == 3
    assert not checkpoint.exists()  # cleaned up once the retry finished
    _delete(postgres_url, name)


def test_no_password_in_any_output(postgres_url, tmp_path):
    """R8: a password in the storage URL never reaches stdout, stderr or a log line."""
    if "@" not in postgres_url:
        pytest.fail(f"cannot add a password to {postgres_url!r}")
    secret = "pw-" + uuid.uuid4().hex[:12]
    scheme, rest = postgres_url.split("://", 1)
    user, host = rest.split("@", 1)
    url = f"{scheme}://{user.split(':')[0]}:{secret}@{host}"  # trust auth ignores it
    name = _name()
    study_file = _study_file(tmp_path, FAST_STUDY)
    runs = [
        _cli(
            "run",
            study_file,
            "--storage",
            url,
            "--study-name",
            name,
            "--n-trials",
            2,
            "-v",
            cwd=tmp_path,
        ),
        _cli(
            "launch",
            study_file,
            "--storage",
            url,
            "--study-name",
            name,
            "--workers",
            2,
            "--n-trials",
            2,
            "-v",
            cwd=tmp_path,
        ),
        _cli(
            "run",
            study_file,
            "--storage",
            url.replace(host.split("/")[0], "127.0.0.1:1"),
            "-v",
            cwd=tmp_path,
        ),
    ]
    assert [r.returncode for r in runs] == [0, 0, 2]
    for r in runs:
        assert secret not in r.stdout and secret not in r.stderr
        assert "***" in r.stdout + r.stderr
    _delete(postgres_url, name)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_grpc_proxy_serves_two_workers(postgres_url, tmp_path):
    pytest.importorskip("grpc", reason="grpcio is not installed: pip install 'optuna-bs[grpc]'")
    port = _free_port()
    proxy = subprocess.Popen(
        [*cli_command(), "storage-proxy", "--storage", postgres_url, "--port", str(port)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(lambda: _port_open(port), what="the gRPC proxy")
        name = _name()
        run = _cli(
            "launch",
            _study_file(tmp_path, FAST_STUDY),
            "--storage",
            f"grpc://127.0.0.1:{port}",
            "--study-name",
            name,
            "--workers",
            2,
            "--n-trials",
            4,
            "--no-test",
            "-q",
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stdout[-2000:]
        assert len(_trials(postgres_url, name)) == 4  # written through to PostgreSQL
        _delete(postgres_url, name)
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy.wait(timeout=30)


def _port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pg_ctl(action):
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not clusters or shutil.which("pg_ctlcluster") is None:
        pytest.fail("R2 needs to restart the local PostgreSQL with pg_ctlcluster")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_workers_survive_a_postgres_restart(postgres_url, tmp_path):
    """R2: PostgreSQL restarts while 2 workers run; both reconnect and finish the budget."""
    if "127.0.0.1" not in postgres_url and "localhost" not in postgres_url:
        pytest.fail("R2 restarts the server, so it must be the local one")
    name = _name()
    study_file = _study_file(
        tmp_path,
        SLOW_STUDY.replace("max_epochs = 8", "max_epochs = 3").replace(
            "heartbeat_interval = 1", "heartbeat_interval = 2"
        ),
    )
    workers = [
        subprocess.Popen(
            [
                *cli_command(),
                "run",
                str(study_file),
                "--storage",
                postgres_url,
                "--study-name",
                name,
                "--max-trials",
                "8",
                "--n-trials",
                "8",
                "--seed",
                str(i),
                "-q",
                "--no-test",
            ],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    storage = make_storage(postgres_url)

    def some_trials_done():
        return len(_trials_so_far(storage, name, (COMPLETE,))) >= 2

    _wait_for(some_trials_done, what="two complete trials")
    _pg_ctl("restart")
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = _trials(postgres_url, name)
    assert len([t for t in trials if t.state in (COMPLETE, PRUNED)]) >= 8
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    _delete(postgres_url, name)


def test_ctrl_c_reaches_every_worker(postgres_url, tmp_path):
    """Ctrl-C on launch is passed on: the workers stop, launch exits 130, nothing hangs."""
    name = _name()
    launcher = subprocess.Popen(
        [
            *cli_command(),
            "launch",
            str(_study_file(tmp_path, SLOW_STUDY)),
            "--storage",
            postgres_url,
            "--study-name",
            name,
            "--workers",
            "2",
            "--n-trials",
            "400",  # far more than 2 workers finish before the signal, on a slow machine too
            "--no-test",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    storage = make_storage(postgres_url)

    def running():
        return len(_trials_so_far(storage, name, (optuna.trial.TrialState.RUNNING,))) == 2

    _wait_for(running, what="both workers to run a trial")
    launcher.send_signal(signal.SIGINT)
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, out[-2000:]
    assert "interrupted" in out
    trials = _trials(postgres_url, name)
    assert len(trials) < 400
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    _delete(postgres_url, name)


def test_gpus_give_one_worker_each(postgres_url, tmp_path):
    name = _name()
    run = _cli(
        "launch",
        _study_file(tmp_path, FAST_STUDY),
        "--storage",
        postgres_url,
        "--study-name",
        name,
        "--gpus",
        "0,1",
        "--n-trials",
        3,
        "--no-test",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert "launching 2 workers" in run.stdout
    assert len(_trials(postgres_url, name)) == 3
    _delete(postgres_url, name)
    bad = _cli(
        "launch",
        _study_file(tmp_path, FAST_STUDY),
        "--storage",
        postgres_url,
        "--gpus",
        "0,1",
        "--workers",
        3,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "--workers" in bad.stderr


def test_keep_best_checkpoint(tmp_path):
    from optuna_bs.study.config import config_from_dict
    from optuna_bs.study.runner import best_trial, prepare, run_study

    config = config_from_dict(
        {
            "study": {"keep_best_checkpoint": True, "n_trials": 4, "pruner": "none"},
            "data": {"name": "synthetic", "n_samples": 200, "n_features": 4},
            "model": {"hidden": [8]},
            "space": {"batch_size": [16, 32]},
            "train": {"max_epochs": 2},
        }
    )
    prepared = prepare(config, storage=f"sqlite:///{tmp_path / 's.db'}")
    study = run_study(prepared)
    kept = sorted(prepared.checkpoints.folder.glob("*.pt"))
    assert kept == [prepared.checkpoints.folder / f"trial_{best_trial(study).number}.pt"]


def _command_lines() -> list[str]:
    """The command lines of every process of this machine, as `ps` shows them."""
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    lines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return lines


def test_launch_keeps_the_password_off_every_worker_command_line(postgres_url, tmp_path):
    """The workers get the store through the environment; `ps` never shows the password."""
    secret = "Pw" + uuid.uuid4().hex[:8]
    user, _, host = postgres_url.partition("://")[2].partition("@")
    scheme = postgres_url.partition("://")[0]
    url = f"{scheme}://{user.split(':')[0]}:{secret}@{host}"  # trust auth ignores it
    name = _name()
    proc = subprocess.Popen(
        [
            *cli_command(),
            "launch",
            _study_file(tmp_path, FAST_STUDY),
            "--storage",
            url,
            "--study-name",
            name,
            "--workers",
            "2",
            "--n-trials",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    workers_seen = set()
    leaked = []
    while proc.poll() is None:
        for line in _command_lines():
            if "optuna_bs.cli run" in line:
                workers_seen.add(line)
                if secret in line:
                    leaked.append(line)
        time.sleep(0.05)
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-2000:]
    assert workers_seen, "no worker process was seen"
    assert not leaked
    assert secret not in out
    assert len(_trials(postgres_url, name)) == 4
    _delete(postgres_url, name)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_lost_in_a_finalizer_still_stops_the_worker(capsys):
    """Python drops a KeyboardInterrupt raised inside ``__del__``; the worker stops anyway,
    and prints no "Exception ignored in" traceback (seen once in CI, from SQLAlchemy's
    InstanceState._cleanup)."""
    from optuna_bs.study.workers import optimize_reconnecting

    class SignalsOnCollection:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler's KeyboardInterrupt is dropped here

    def objective(trial):
        SignalsOnCollection()  # collected at once: the interrupt lands in its finalizer
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study()
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        optimize_reconnecting(study, objective, 20, None, [], False)
    assert len(study.trials) == 1  # it stopped when that trial ended, not after 20
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back
    assert "Exception ignored" not in capsys.readouterr().err


def test_a_ctrl_c_between_creating_a_trial_and_training_it_leaves_no_trial_running():
    """The signal lands while Optuna samples a trial it has already stored as RUNNING: it is
    held back until training starts, so Optuna fails the trial instead of abandoning it."""
    from optuna_bs.study.workers import optimize_reconnecting

    class SignalsWhileSampling(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):  # the trial is stored, its objective not begun
            super().before_trial(study, trial)
            if trial.number == 1:
                os.kill(os.getpid(), signal.SIGINT)

    trained = []

    def objective(trial):
        trained.append(trial.number)
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(sampler=SignalsWhileSampling(seed=0))
    with pytest.raises(KeyboardInterrupt):
        optimize_reconnecting(study, objective, 20, None, [], False)
    assert trained == [0]  # trial 1 never trained: the held-back signal stopped it first
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_ctrl_c_on_run_is_one_line_and_exit_130(tmp_path):
    """No Optuna traceback of the KeyboardInterrupt: one line, status 130, the trial FAIL."""
    url = f"sqlite:///{tmp_path / 'run.db'}"
    proc = subprocess.Popen(
        [
            *cli_command(),
            "run",
            str(_study_file(tmp_path, SLOW_STUDY)),
            "--storage",
            url,
            "--n-trials",
            "50",
            "--no-test",
            "-q",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    storage = make_storage(url)

    def running():
        try:
            return _trials_so_far(storage, "mnist1d_mlp", (optuna.trial.TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            return []

    _wait_for(running, what="a trial to run")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["optuna-bs: interrupted"], err[-2000:]
    states = {t.state for t in optuna.load_study(study_name="mnist1d_mlp", storage=url).trials}
    assert optuna.trial.TrialState.RUNNING not in states


def test_two_runs_creating_one_sqlite_file_both_succeed(tmp_path):
    """They race on the new file's schema; the loser waits for it instead of a traceback."""
    study = _study_file(
        tmp_path, SLOW_STUDY.replace("seconds_per_step = 0.03", "seconds_per_step = 0")
    )
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    command = [
        *cli_command(),
        "run",
        str(study),
        "--storage",
        url,
        "--n-trials",
        "1",
        "--no-test",
        "-q",
    ]
    procs = [
        subprocess.Popen(command, cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert len(optuna.load_study(study_name="mnist1d_mlp", storage=url).trials) == 2


# --- one trial on several processes (torchrun, gloo) -------------------------------------------


def test_launch_trains_each_trial_on_two_processes(postgres_url, tmp_path):
    name = _name()
    run = _cli(
        "launch",
        _study_file(tmp_path, FAST_STUDY),
        "--storage",
        postgres_url,
        "--study-name",
        name,
        "--workers",
        2,
        "--procs-per-trial",
        2,
        "--n-trials",
        3,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "launching 2 workers" in run.stdout and "each trial on 2 processes" in run.stdout
    trials = _trials(postgres_url, name)
    assert len(trials) == 3  # the budget, once each: the ranks other than 0 created none
    assert sorted(t.number for t in trials) == [0, 1, 2]
    for t in trials:
        assert t.state in (COMPLETE, PRUNED)  # a large noise scale may diverge
        assert t.user_attrs["world_size"] == 2
        assert t.user_attrs["micro_batch_size"] * 2 == t.user_attrs["batch_size"]  # global B
    assert "test_error=" in run.stdout  # the test split, evaluated once by launch itself
    _delete(postgres_url, name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus-per-trial", "2"], "`--gpus-per-trial` needs --gpus"),
        (["--gpus", "0,1,2", "--gpus-per-trial", "2"], "must divide the 3 GPUs"),
        (["--gpus", "0,1", "--procs-per-trial", "2"], "`--procs-per-trial` is for CPUs"),
    ],
)
def test_launch_refuses_processes_per_trial_that_do_not_fit(tmp_path, args, message):
    run = _cli("launch", _study_file(tmp_path, FAST_STUDY), *args, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and message in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]  # nothing written


def _ranks_of(command_part: str, rank: str) -> list[int]:
    """The pids of processes whose command line holds ``command_part`` and whose RANK is
    ``rank`` (torchrun's workers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if command_part in cmdline and f"RANK={rank}".encode() in environ:
            found.append(int(pid))
    return found


def test_a_dead_rank_fails_the_trial_and_its_retry_resumes_on_two_processes(
    postgres_url, tmp_path
):
    """Rank 1 is killed mid-trial: torchrun ends rank 0, the heartbeat fails the trial, and
    the next run's retry resumes from the checkpoint rank 0 wrote, again on 2 processes."""
    name = _name()
    study_file = _study_file(tmp_path, SLOW_STUDY)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "optuna_bs.cli",
        "run",
        str(study_file),
        "--study-name",
        name,
        "--n-trials",
        "1",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--no-test",
        "-q",
    ]
    env = {**_env(), "OPTUNA_BS_STORAGE": postgres_url, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    checkpoint = study_folder(tmp_path / "ckpt", name, postgres_url) / "trial_0.pt"
    _wait_for(checkpoint.exists, timeout=120, what="rank 0's first checkpoint")
    (victim,) = _wait_for(lambda: _ranks_of(name, "1"), what="rank 1")
    os.kill(victim, signal.SIGKILL)
    out = first.communicate(timeout=120)[0].decode(errors="replace")
    assert first.returncode != 0
    # Rank 0 either saw the lost rank (and left the trial as it was) or was ended by torchrun
    # first: either way the trial is still RUNNING, for the heartbeat to fail and retry.
    (dead,) = _trials(postgres_url, name)
    assert dead.state == optuna.trial.TrialState.RUNNING, out[-3000:]
    time.sleep(2.5)  # the heartbeat's grace period: 2 x 1 s
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    trials = _trials(postgres_url, name)
    assert [t.state for t in trials] == [FAIL, COMPLETE]
    retry = trials[1].user_attrs
    assert retry["resumed_from_trial"] == 0
    assert retry["resumed_from_epoch"] >= 1
    assert retry["world_size"] == 2
    assert retry["epochs_run"] == 8
    _delete(postgres_url, name)


@pytest.mark.parametrize("failed_by", ["nobody", "another worker"])
def test_a_worker_back_from_an_outage_runs_the_retry_of_its_cut_trial(
    tmp_path, monkeypatch, failed_by
):
    """The outage cut trial 0 and its worker could not fail it. Either nobody has failed it
    yet (the heartbeat's grace period is long), or another worker's heartbeat check has, and
    queues its retry a moment later. Either way the worker's next trial is that retry, not a
    fresh trial that would leave the retry WAITING once the budget is spent."""
    import copy
    import threading

    import sqlalchemy.exc

    from optuna_bs.study import workers
    from optuna_bs.study.storage import make_storage

    monkeypatch.setattr(workers, "_RECONNECT_PAUSE", 0.01)
    storage = make_storage(f"sqlite:///{tmp_path / 'outage.db'}", heartbeat_interval=60)
    study = optuna.create_study(storage=storage, study_name="outage")
    lost = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))
    real = storage.set_trial_state_values
    others = []

    def set_state(trial_id, state, values=None):
        if state == optuna.trial.TrialState.FAIL and not others:
            if failed_by == "another worker":
                real(trial_id, state)
                retry = storage.get_heartbeat_stale_trial_callback()
                frozen = copy.deepcopy(storage.get_trial(trial_id))
                timer = threading.Timer(0.5, retry, (study, frozen))
                timer.start()
                others.append(timer)
            else:
                others.append(None)
            raise lost  # the worker cannot tell the store its trial failed
        return real(trial_id, state, values)

    monkeypatch.setattr(storage, "set_trial_state_values", set_state)

    def objective(trial):
        if trial.number == 0:
            raise lost
        return trial.suggest_float("x", 0.0, 1.0)

    workers.optimize_reconnecting(study, objective, 2, None, [], False)
    if others[0] is not None:
        others[0].join()
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0  # the retry ran, and nothing waits


def test_a_ctrl_c_lost_in_a_finalizer_still_stops_launch(monkeypatch, capsys):
    """``launch`` waits for its workers under the same held Ctrl-C as the workers: a signal
    whose KeyboardInterrupt Python drops in a finalizer still reaches every worker, and launch
    returns 130 at once (CI saw launch run on for 120 s after Ctrl-C)."""
    import time as time_module

    from optuna_bs.study import workers

    class SignalsOnCollection:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler's KeyboardInterrupt is dropped here

    real_sleep, fired = time_module.sleep, []

    def sleep(seconds):
        if not fired:
            fired.append(True)
            SignalsOnCollection()  # collected at once, in launch's polling loop
        real_sleep(seconds)

    monkeypatch.setattr(workers.time, "sleep", sleep)
    previous = signal.getsignal(signal.SIGINT)
    # A worker that stops on SIGINT whatever it inherited (as optuna-bs run does).
    code = "import signal, sys, time; signal.signal(2, lambda *a: sys.exit(130)); time.sleep(60)"
    worker = [sys.executable, "-c", code]
    start = time_module.monotonic()
    assert workers.launch_workers([worker, worker], out=lambda line: None) == 130
    assert time_module.monotonic() - start < 30  # the workers got the signal; none slept on
    assert signal.getsignal(signal.SIGINT) is previous
    assert "Exception ignored" not in capsys.readouterr().err


PROXY_LOSES_A_CTRL_C = """
import os, signal, sys, threading, time
from optuna_bs.study.storage import serve_proxy

class SignalsOnCollection:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # its KeyboardInterrupt would be dropped here

real_join = threading.Thread.join

def join(self, timeout=None):  # the proxy's main thread, waiting: a finalizer runs there
    if self.name == "grpc-proxy-server" and not getattr(join, "fired", False):
        join.fired = True
        time.sleep(1.0)
        SignalsOnCollection()
    return real_join(self, timeout)

threading.Thread.join = join
serve_proxy(sys.argv[1], port=int(sys.argv[2]))
"""


def test_a_ctrl_c_lost_in_a_finalizer_still_stops_the_storage_proxy(tmp_path):
    """The proxy holds Ctrl-C the same way: one that lands in a finalizer stops it (CI saw a
    proxy run on for 30 s after its SIGINT)."""
    pytest.importorskip("grpc", reason="grpcio is not installed: pip install 'optuna-bs[grpc]'")
    script = tmp_path / "proxy.py"
    script.write_text(PROXY_LOSES_A_CTRL_C)
    run = subprocess.run(
        [sys.executable, str(script), f"sqlite:///{tmp_path / 'p.db'}", str(_free_port())],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "KeyboardInterrupt" in run.stderr  # stopped by the signal
    assert "Exception ignored" not in run.stderr


def test_a_storage_proxy_started_with_sigint_ignored_still_stops_on_it(tmp_path):
    """A process started in the background by a shell without job control inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt for it: the proxy (and launch) set
    their own handler, so a SIGINT still stops them (two CI runs started that way saw the proxy
    and launch run on after SIGINT; ``run`` always set its own and stopped)."""
    pytest.importorskip("grpc", reason="grpcio is not installed: pip install 'optuna-bs[grpc]'")
    port = _free_port()
    proxy = subprocess.Popen(
        [*cli_command(), "storage-proxy", "--storage", f"sqlite:///{tmp_path / 'p.db'}"]
        + ["--port", str(port)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        _wait_for(lambda: _port_open(port), what="the gRPC proxy")
        proxy.send_signal(signal.SIGINT)
        out, _ = proxy.communicate(timeout=30)
    finally:
        proxy.kill()
    assert proxy.returncode == 130 and "interrupted" in out
