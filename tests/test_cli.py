from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from optuna_bs.cli import main
from optuna_bs.cli.commands import format_table
from optuna_bs.study.storage import make_storage

from .conftest import _server_url, cli_command
from .helpers.slow_model import SLOW_STUDY
from .study.test_workers import _delete, _env, _name, _trials, _trials_so_far, _wait_for

# A study that runs in a couple of seconds on one CPU core.
TINY = """
[study]
name = "tiny"
n_trials = 2
n_startup_trials = 1

[data]
name = "synthetic"
n_samples = 300

[model]
name = "mlp"
hidden = [16]

[space]
batch_size = [16, 32]

[train]
max_epochs = 2
"""
HEADER = ("trial", "val_error", "B", "lr", "m", "g", "best_ep", "epochs", "seconds")


@pytest.fixture(autouse=True)
def _restore_log_levels():
    """``main`` sets the package's and Optuna's log levels; put them back for other tests."""
    logger = logging.getLogger("optuna_bs")
    level = logger.level
    verbosity = optuna.logging.get_verbosity()
    yield
    logger.setLevel(level)
    optuna.logging.set_verbosity(verbosity)


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _study_file(tmp_path: Path, text: str) -> str:
    (tmp_path / "study.toml").write_text(text)
    return "study.toml"


def _tiny_with(section: str, line: str) -> str:
    """TINY with ``line`` added at the end of ``[section]``, replacing a key of the same name."""
    key = line.split("=")[0].strip()
    out, current = [], None
    for text in TINY.strip().splitlines():
        if text.startswith("["):
            if current == section:
                out.append(line)
            current = text.strip("[]")
        elif current == section and text.split("=")[0].strip() == key:
            continue
        out.append(text)
    if current == section:
        out.append(line)
    return "\n".join(out) + "\n"


def test_tiny_with_replaces_and_adds():
    assert "batch_size = [16, 4096]" in _tiny_with("space", "batch_size = [16, 4096]")
    assert "[16, 32]" not in _tiny_with("space", "batch_size = [16, 4096]")
    assert _tiny_with("train", "patience = 1").endswith("max_epochs = 2\npatience = 1\n")


# (study file text or None, extra arguments, a word the error line must hold)
BAD_INPUTS = {
    "typo'd key": (_tiny_with("train", "max_epoch = 3"), [], "did you mean 'max_epochs'"),
    "wrong type": (
        _tiny_with("study", 'n_trials = "2"'),
        [],
        "`study.n_trials` must be an integer",
    ),
    "unknown section": ("[trian]\nmax_epochs = 2\n", [], "unknown section [trian]"),
    "invalid TOML": ("[study\n", [], "not valid TOML"),
    "unknown data set": (_tiny_with("data", 'name = "mnist"'), [], "Did you mean 'mnist1d'"),
    "bad data option": (_tiny_with("data", "n_sample = 300"), [], "Did you mean 'n_samples'"),
    "unknown model": (_tiny_with("model", 'name = "resnet"'), [], "name='resnet'"),
    "bad model option": (_tiny_with("model", "hiden = [16]"), [], "Did you mean 'hidden'"),
    "bad model value": (_tiny_with("model", "dropout = 1.5"), [], "`dropout` must be in [0, 1)"),
    "batch size >= N": (_tiny_with("space", "batch_size = [16, 4096]"), [], "n_train - 1"),
    "momentum 1": (_tiny_with("space", "momentum = 1.0"), [], "`momentum` must be in [0, 1)"),
    "low > high": (_tiny_with("space", "noise_scale = [10.0, 1.0]"), [], "low <= high"),
    "no power of two": (_tiny_with("space", "batch_size = [33, 63]"), [], "power of two"),
    "unknown parameterisation": (
        _tiny_with("space", 'parameterisation = "cubic"'),
        [],
        "`parameterisation` must be one of",
    ),
    "adamw with the noise-scale space": (
        _tiny_with("train", 'optimizer = "adamw"'),
        [],
        "use 'adam-sqrt'",
    ),
    "adamw with the linear space": (
        _tiny_with("train", 'optimizer = "adamw"').replace(
            "[space]", '[space]\nparameterisation = "linear"'
        ),
        [],
        "use 'adam-sqrt'",
    ),
    "weight decay in [train]": (
        _tiny_with("train", "weight_decay = 0.1"),
        [],
        "has moved to [space] weight_decay",
    ),
    "ladder on the independent space": (
        _tiny_with("study", 'sampler = "ladder"').replace(
            "[space]", '[space]\nparameterisation = "independent"'
        ),
        [],
        "'ladder' climbs B",
    ),
    "ladder at one batch size": (
        _tiny_with("study", 'sampler = "ladder"').replace(
            "batch_size = [16, 32]", "batch_size = 32"
        ),
        [],
        "needs a batch-size range",
    ),
    "study name too long": (TINY, ["--study-name", "x" * 600], "at most 512 characters"),
    "empty study name": (TINY, ["--study-name", ""], "must be a non-empty name, but got ''"),
    "blank study name": (_tiny_with("study", 'name = "  "'), [], "non-empty name"),
    "error metric on regression": (
        _tiny_with("data", 'task = "regression"'),
        [],
        "`metric` is 'error'",
    ),
    "missing study file": (None, ["missing.toml"], "'missing.toml' does not exist"),
    "--n-trials 0": (None, ["--n-trials", "0"], "--n-trials"),
    "--n-trials abc": (None, ["--n-trials", "abc"], "--n-trials"),
    "--timeout -1": (None, ["--timeout", "-1"], "--timeout"),
    "--top 0": (None, ["--top", "0"], "--top"),
    "--seed x": (None, ["--seed", "x"], "--seed"),
    "unknown option": (None, ["--trials", "3"], "--trials"),
    "malformed storage": (TINY, ["--storage", "notaurl"], "`storage` must be an SQLAlchemy URL"),
    "storage in missing folder": (
        TINY,
        ["--storage", "sqlite:///no/such/dir/x.db"],
        "cannot open storage",
    ),
    "journal in missing folder": (
        TINY,
        ["--storage", "no/such/dir/study.log"],
        "cannot open journal file",
    ),
    "PostgreSQL URL without a database": (
        TINY,
        ["--storage", "postgresql+psycopg://"],
        "names no database",
    ),
    "storage URL in the file": (
        _tiny_with("study", 'storage = "notaurl"'),
        [],
        "`storage` must be an SQLAlchemy URL",
    ),
}


def _assert_bad_input(capsys, tmp_path, argv, word):
    before = _files(tmp_path)
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("optuna-bs: error: ")
    assert word in lines[0]
    assert "Traceback" not in err
    assert out == ""  # no table, no "study ..." line
    assert _files(tmp_path) == before  # nothing written: no optuna_bs.db, no other file
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text, extra, word = BAD_INPUTS[case]
    argv = ["run"] + ([_study_file(tmp_path, text)] if text is not None else []) + extra
    _assert_bad_input(capsys, tmp_path, argv, word)


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: command"),
    ],
)
def test_bad_subcommand(argv, word, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _assert_bad_input(capsys, tmp_path, argv, word)


def test_unreachable_storage_never_shows_the_password(tmp_path, monkeypatch, capsys):
    # Port 1 refuses at once. Without psycopg the store reports the missing driver instead;
    # either way it is one line, exit status 2, and the password is masked.
    monkeypatch.chdir(tmp_path)
    url = "postgresql+psycopg://u:secret@127.0.0.1:1/x"
    line = _assert_bad_input(
        capsys, tmp_path, ["run", _study_file(tmp_path, TINY), "--storage", url], "storage"
    )
    assert "u:***@127.0.0.1:1/x" in line
    assert "secret" not in line


def test_unreachable_storage_password_not_shown_with_verbose(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = "postgresql+psycopg://u:secret@127.0.0.1:1/x"
    status = main(["run", _study_file(tmp_path, TINY), "--storage", url, "--verbose"])
    out, err = capsys.readouterr()
    assert status == 2
    assert "u:***@127.0.0.1:1/x" in err
    assert "secret" not in out + err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: --device cuda is valid")
def test_cuda_device_without_cuda(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["run", _study_file(tmp_path, TINY), "--device", "cuda"]
    _assert_bad_input(capsys, tmp_path, argv, "CUDA is not available")


def test_bad_device_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["run", _study_file(tmp_path, TINY), "--device", "gpu"]
    _assert_bad_input(capsys, tmp_path, argv, "`device` must be 'auto', 'cpu'")


def test_verbose_adds_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["run", _study_file(tmp_path, _tiny_with("train", "max_epoch = 3")), "--verbose"]
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2
    assert "Traceback (most recent call last)" in err
    assert "ConfigError" in err
    assert err.splitlines()[-1].startswith("optuna-bs: error: ")
    assert "did you mean 'max_epochs'" in err.splitlines()[-1]
    assert not (tmp_path / "optuna_bs.db").exists()


def test_a_checkpoint_dir_that_is_a_file_is_one_line_before_any_trial(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    study = _study_file(tmp_path, TINY)
    line = _assert_bad_input(
        capsys, tmp_path, ["run", study, "--checkpoint-dir", "afile"], "afile"
    )
    assert "is a file, not a folder" in line


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, always full")
def test_a_full_disk_under_the_checkpoints_is_one_line_and_leaves_no_tmp(
    tmp_path, monkeypatch, capsys
):
    """Every checkpoint's .tmp lies on a full device (/dev/full): "no space left", exit 2,
    in one line, and no .tmp file left behind."""
    import optuna_bs.train.state

    real_save = torch.save

    def onto_a_full_device(obj, f):
        Path(f).symlink_to("/dev/full")
        real_save(obj, f)

    monkeypatch.setattr(optuna_bs.train.state.torch, "save", onto_a_full_device)
    monkeypatch.chdir(tmp_path)
    status = main(["run", _study_file(tmp_path, TINY), "--n-trials", "1", "--no-test", "-q"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "no space left on the device for the checkpoint" in err, err
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_sqlite_store_is_named_not_taken_for_an_outage(
    tmp_path, monkeypatch, capsys, caplog
):
    """SQLite's own SQLITE_FULL ("database or disk is full"), from a store that may not grow
    past what it holds: exit 2 at once, in one line that says so, never "Lost the study
    store; reconnecting"."""
    import sqlalchemy

    monkeypatch.chdir(tmp_path)
    study = _study_file(tmp_path, TINY)
    assert main(["run", study, "--n-trials", "1", "--no-test", "-q"]) == 0
    pages = {}

    def no_room_to_grow(dbapi_connection, record):
        cursor = dbapi_connection.cursor()
        count = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count = {pages.setdefault('max', count)}")
        cursor.close()

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", no_room_to_grow)
    try:
        status = main(["run", study, "--n-trials", "40", "--no-test", "-q"])
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", no_room_to_grow)
    out = capsys.readouterr()
    assert status == 2
    assert "database or disk is full" in out.err and "no space left" in out.err, out.err
    assert out.err.count("\n") == 1, out.err
    assert "reconnecting" not in out.err + out.out + caplog.text


def test_an_sgd_rule_for_adam_runs_when_allowed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = _tiny_with("train", 'optimizer = "adamw"').replace(
        "[space]", "[space]\nallow_sgd_rule_for_adam = true"
    )
    study = _study_file(tmp_path, text)
    assert main(["run", study, "--n-trials", "1", "--no-test", "--storage", "sqlite:///a.db"]) == 0
    stored = optuna.load_study(study_name="tiny", storage="sqlite:///a.db")
    assert stored.user_attrs["optimizer"] == "adamw"
    assert stored.trials[0].user_attrs["optimizer"] == "adamw"  # what fit really built


def test_script_exit_status_and_stderr_are_real(tmp_path):
    """The installed script, in a process of its own: status 2 and one line on stderr."""
    (tmp_path / "study.toml").write_text(_tiny_with("train", "max_epoch = 3"))
    proc = subprocess.run(
        [*cli_command(), "run", "study.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("optuna-bs: error: study.toml: unknown key `train.max_epoch`")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: optuna-bs")
    assert "run" in out


def test_run_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--storage", "--n-trials", "--timeout", "--device", "--verbose", "--quiet"):
        assert option in out


def test_run_a_tiny_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status = main(["run", _study_file(tmp_path, TINY)])
    out, _ = capsys.readouterr()
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("study 'tiny' in sqlite:///optuna_bs.db on cpu: BatchScalingSpace(")
    # One of the two draws (g = 926 on binary data) collapses to chance and ends diverged.
    assert "2 trials: 1 complete, 1 pruned (1 diverged)" in lines
    header = next(line for line in lines if line.lstrip().startswith("trial"))
    assert tuple(header.split()) == HEADER
    assert any(line.startswith("best trial #") and "test_error=" in line for line in lines)

    assert (tmp_path / "optuna_bs.db").exists()
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna_bs.db")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert study.trials[1].user_attrs["stop_reason"] == "diverged"
    assert "test_error" in study.user_attrs


def test_a_ladder_study_searches_g_then_climbs_the_batch(tmp_path, monkeypatch, capsys):
    """``sampler = "ladder"`` in a study file: the search's trials at one B, then the rungs."""
    monkeypatch.chdir(tmp_path)
    text = _tiny_with("study", 'sampler = "ladder"').replace(
        "batch_size = [16, 32]", "batch_size = [16, 64]\nnoise_scale = [5.0, 50.0]"
    )
    status = main(["run", _study_file(tmp_path, text), "--n-trials", "9", "-q", "--no-test"])
    assert status == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna_bs.db")
    ladder = [
        (t.system_attrs["ladder"]["phase"], t.user_attrs["batch_size"]) for t in study.trials
    ]
    assert ladder[:6] == [("search", 32)] * 6  # the middle of 16..64
    assert ladder[6] == ("climb", 64)
    assert {phase for phase, _ in ladder[7:]} == {"refine"}


@pytest.mark.slow
def test_a_ladder_on_auto_ranges_searches_within_the_range_test_and_stops_at_b_simple(
    tmp_path, monkeypatch, capsys
):
    """``batch_size = noise_scale = "auto"``: the ladder's top rung is the critical batch size's
    power of two, and g is searched in the range test's range."""
    from optuna_bs.measure.noise import estimate_noise_scale, recommend_batch_sizes
    from optuna_bs.study.auto import default_probe_batch_sizes
    from optuna_bs.study.config import load_config
    from optuna_bs.study.plan import make_plan

    monkeypatch.chdir(tmp_path)
    text = _tiny_with("study", 'sampler = "ladder"').replace(
        "batch_size = [16, 32]", 'batch_size = "auto"\nnoise_scale = "auto"'
    )
    path = _study_file(tmp_path, text)
    status = main(["run", path, "--n-trials", "8", "-q", "--no-test"])
    assert status == 0, capsys.readouterr().err
    config = load_config(path)
    plan = make_plan(config)
    data, probe = plan.data, plan.probe_model()
    small_big = default_probe_batch_sizes(data.n_train)
    estimate = estimate_noise_scale(probe, data, batch_sizes=small_big, seed=0)
    low, high = recommend_batch_sizes(estimate)
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna_bs.db")
    g = study.trials[0].distributions["noise_scale"]
    assert (g.low, g.high) != (1.0, 1000.0) and g.high / g.low == pytest.approx(15, rel=0.01)
    batch = study.trials[0].distributions["log2_batch_size"]
    assert (2**batch.low, 2**batch.high) == (low, high)
    phases = [t.system_attrs["ladder"] for t in study.trials]
    rungs = [p["rung"] for p in phases if p["phase"] == "climb"]
    assert rungs and max(rungs) <= batch.high  # no rung above B_simple's power of two


def test_run_sets_torchs_threads(tmp_path, monkeypatch):
    """--threads N; by default the usable cores shared by a trial's processes (here 6 cores,
    2 processes); an OMP_NUM_THREADS already set (by launch, say) is kept."""
    seen = []
    monkeypatch.setattr(
        "optuna_bs.study.runner.run_study", lambda *a, **k: seen.append(torch.get_num_threads())
    )
    monkeypatch.chdir(tmp_path)
    study_file = _study_file(tmp_path, TINY)
    before = torch.get_num_threads()
    try:
        assert main(["run", study_file, "--threads", "1", "-q"]) == 0
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        torch.set_num_threads(8)
        assert main(["run", study_file, "-q"]) == 0
        monkeypatch.setenv("OMP_NUM_THREADS", "5")
        torch.set_num_threads(5)  # what torch read from it
        assert main(["run", study_file, "-q"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 3, 5]


def test_format_table():
    trial = optuna.trial.create_trial(
        value=0.125,
        user_attrs={
            "batch_size": 32,
            "lr": 0.5,
            "momentum": 0.9,
            "noise_scale": 40.0,
            "best_epoch": 3,
            "epochs_run": 5,
            "train_seconds": 1.26,
        },
    )
    study = optuna.create_study()
    study.add_trial(trial)
    lines = format_table(study.trials, metric="loss").splitlines()
    assert tuple(lines[0].split()) == HEADER[:1] + ("val_loss",) + HEADER[2:]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["#0", "0.1250", "32", "0.5", "0.9", "40", "3", "5", "1.3"]
    # An Adam trial's betas keep the digits that tell them apart from 1.
    adam = optuna.create_study()
    attrs = {**trial.user_attrs, "momentum": 0.95, "beta2": 0.9995, "eps": 1e-8}
    adam.add_trial(optuna.trial.create_trial(value=0.125, user_attrs=attrs))
    row = format_table(adam.trials, columns=("lr", "momentum", "beta2", "eps"), family="adam")
    assert row.splitlines()[2].split()[3:7] == ["0.5", "0.95", "0.9995", "1e-08"]


def test_report_quiet_prints_nothing_and_writes_the_report(tmp_path, capsys):
    from optuna_bs import BatchScalingSpace

    storage = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=storage)
    space = BatchScalingSpace(n_train=1000, batch_size=(16, 64))
    for i in range(6):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.5 - 0.01 * i)
    argv = ["report", "--storage", storage, "--study-name", "q", "--out", str(tmp_path / "r")]
    assert main([*argv, "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "r" / "report-q.html").exists()
    assert main(argv) == 0
    assert "report written to" in capsys.readouterr().out


def test_report_on_a_missing_database_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = _assert_bad_input(
        capsys, tmp_path, ["report", "--study-name", "nosuch"], "does not exist"
    )
    assert "optuna_bs.db" in line


def test_report_into_an_unwritable_folder_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", _study_file(tmp_path, TINY), "--no-test"]) == 0
    (tmp_path / "blocker").write_text("")
    capsys.readouterr()
    status = main(["report", "--study-name", "tiny", "--out", str(tmp_path / "blocker" / "r")])
    out, err = capsys.readouterr()
    assert status == 2 and len(err.splitlines()) == 1 and "cannot be written" in err, err
    assert out == ""  # nothing computed or printed before the check


def test_storage_proxy_port_is_range_checked_before_the_store_opens(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["storage-proxy", "--storage", "sqlite:///p.db", "--port", "99999"]
    _assert_bad_input(capsys, tmp_path, argv, "`--port` must be in 1..65535")


# --- launch forwards every run option ------------------------------------------------------


def _example_value(action) -> list[str]:
    """A value ``action`` accepts, as command-line words."""
    if action.nargs == 0:
        return []
    if action.type is not None and action.type is not str:
        return ["3"]
    return ["somewhere"]


def test_launch_forwards_every_run_option_to_its_workers():
    """A new ``run`` option needs no edit in ``launch``: it is derived from the run parser.
    This fails if ``launch`` does not accept one, or does not hand it on."""
    from optuna_bs.cli import _SET_BY_LAUNCH, _build_parser, _forwarded_run_options

    parser = _build_parser()
    options = [
        a
        for a in parser.commands["run"].options
        if a.option_strings and a.dest not in _SET_BY_LAUNCH
    ]
    assert {"timeout", "device", "max_trials", "checkpoint_dir", "verbose"} <= {
        a.dest for a in options
    }
    for action in options:
        flag = max(action.option_strings, key=len)
        words = [flag, *_example_value(action)]
        args = parser.parse_args(["launch", "study.toml", *words])
        forwarded = _forwarded_run_options(args)
        assert forwarded[:1] == [flag], f"launch does not forward {flag}"
        if len(words) > 1:  # the worker parses the value it is handed back to the same one
            again = parser.parse_args(["run", "study.toml", *forwarded])
            assert getattr(again, action.dest) == getattr(args, action.dest), flag
    # Left at their defaults, nothing is forwarded.
    assert _forwarded_run_options(parser.parse_args(["launch", "study.toml"])) == []


def test_run_options_override_the_study_file_through_one_function(tmp_path):
    from optuna_bs.cli import _build_parser
    from optuna_bs.cli.commands import _OVERRIDES, study_config

    study = tmp_path / "study.toml"
    study.write_text('[study]\nname = "from-file"\nseed = 1\n[train]\ndevice = "auto"\n')
    parser = _build_parser()
    config = study_config(parser.parse_args(["run", str(study)]))
    assert (config.study.name, config.study.seed, config.train.device) == ("from-file", 1, "auto")
    args = parser.parse_args(
        ["run", str(study), "--storage", "sqlite:///x.db", "--study-name", "flag"]
        + ["--seed", "7", "--device", "cpu", "--checkpoint-dir", "ck"]
    )
    config = study_config(args)
    assert config.study.storage == "sqlite:///x.db" and config.study.name == "flag"
    assert (config.study.seed, config.train.device, config.study.checkpoint_dir) == (
        7,
        "cpu",
        "ck",
    )
    run_options = {a.dest for a in parser.commands["run"].options}
    assert set(_OVERRIDES) <= run_options  # every override is a real option


def test_what_a_ctrl_c_leaves_in_any_logger_is_left_out():
    """A Ctrl-C that cuts a query makes SQLAlchemy log "Error closing cursor" with a traceback
    (seen once in CI); the run's one line "optuna-bs: interrupted" says it all."""
    import sqlite3

    from optuna_bs.cli import _configure_logging, _drop_interrupts, _DropInterrupts

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.") from None
    except sqlite3.ProgrammingError:
        cut = sys.exc_info()

    def record(exc_info):
        name = "sqlalchemy.pool.impl.QueuePool"
        return logging.LogRecord(
            name, logging.ERROR, __file__, 1, "Error closing cursor", None, exc_info
        )

    drop = _DropInterrupts()
    assert drop.filter(record(None))  # an error of its own is shown
    assert not drop.filter(record(cut))  # one raised while a Ctrl-C was handled is not
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        _configure_logging(verbose=False, quiet=False)
        assert _drop_interrupts in handler.filters  # every record that reaches the root
    finally:
        root.removeHandler(handler)


def _workers_of(pid: int) -> list[int]:
    """The worker processes of ``launch`` process ``pid``, in its order (worker i's command
    line has ``--seed`` the study's seed + 1000 i)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()

    def seed(child: str) -> int:
        argv = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
        return int(argv[argv.index("--seed") + 1])

    return [int(child) for child in sorted(children, key=seed)]


@pytest.mark.slow
def test_launch_names_a_killed_worker_and_its_trial_and_leaves_nothing_running(tmp_path):
    """A worker of ``launch`` is SIGKILLed in a trial: ``launch`` fails that trial at once and
    queues it again (the other worker runs it), and ends with exit status 2 and one line that
    names the worker and the trial; nothing is left RUNNING."""
    url = _server_url("OPTUNA_BS_TEST_POSTGRES_URL")
    name = _name()
    launch = subprocess.Popen(
        [*cli_command(), "launch", _study_file(tmp_path, SLOW_STUDY), "--storage", url]
        + ["--study-name", name, "--workers", "2", "--n-trials", "6", "--no-test", "-q"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    storage = make_storage(url)

    def both_workers_trained_an_epoch():
        running = _trials_so_far(storage, name, states=(optuna.trial.TrialState.RUNNING,))
        return len(running) == 2 and all(t.intermediate_values for t in running)

    _wait_for(both_workers_trained_an_epoch, timeout=120, what="both workers in a trial")
    victim = _workers_of(launch.pid)[1]
    os.kill(victim, signal.SIGKILL)
    out, err = launch.communicate(timeout=300)
    assert launch.returncode == 2, err + out[-2000:]
    trials = _trials(url, name)
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    (dead,) = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert err.splitlines() == [
        f"optuna-bs: error: worker 1 (pid {victim}) was killed by SIGKILL while running "
        f"trial {dead.number} (failed and queued again)"
    ]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.params == dead.params  # run by the other worker, or left for the next run
    assert retry.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING)
    _delete(url, name)
