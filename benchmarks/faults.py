"""Faults: what each one loses, on a PostgreSQL server of the benchmark's own.

    python benchmarks/faults.py           # every fault: ~7 minutes on 2 cores
    python benchmarks/faults.py --smoke   # SIGKILL, Ctrl-C, a 10 s outage (the test suite's)
    python benchmarks/faults.py --faults ladder-kill launch-kill   # only these

The benchmark starts a throw-away PostgreSQL cluster (``initdb`` into a temporary folder, a
free port, run as the ``postgres`` user when this is root), so that an outage can be made by
stopping it: the machine's own server is never touched. The store URL carries a password, and
every output and every worker's command line is searched for it.

Faults, each on a fresh study of a model whose steps take a known time (8 epochs a trial):

* ``sigkill``: a worker is SIGKILLed in its first trial, past epoch 3; a second worker then
  runs the study to its budget (``--max-trials 3``).
* ``outage-10``, ``outage-60``: 2 workers (``launch``) on a 6-trial budget; the server is
  stopped for 10 or 60 s while both are in a trial, then started again.
* ``workers-8x25``: ``launch --workers 8 --n-trials 200``.
* ``ctrl-c-run``, ``ctrl-c-launch``: SIGINT in the middle of a trial.
* ``ladder-kill``: ``sampler = "ladder"``, ``launch --workers 3 --n-trials 15``; the worker of
  the first rung is SIGKILLed after that rung's first epoch; a 4th worker then runs the study
  to its budget (``--max-trials 15``). Every rung keeps the error (the model's logits are 0),
  so a right ladder climbs to the top, B = 128, at one g*.
* ``launch-kill``: ``launch --workers 2 --n-trials 6``; worker 1 is SIGKILLed in a trial.
  ``launch`` fails the trial and queues it again, and exits 2 with one line; the dead worker's
  trials not yet started are lost from the budget (``off_budget``), nothing is left RUNNING.
* ``same-name`` (issue 22): a ``run`` is stopped by Ctrl-C past epoch 3 of its first trial,
  leaving its checkpoint; a new study of the same name, in a new database and the same
  working folder, has its trial 0 SIGKILLed in epoch 1, and a second ``run`` retries it. The
  retry must start afresh, not resume the other study's checkpoint: ``wrong`` says it did
  (``resumed_from_epoch`` or ``resumed_from_trial`` recorded, or epochs of the other study
  reported as its own, more than it trained), and ``warned`` whether its one warning line
  ("starts afresh") was printed.

Reported per fault: trials asked and finished (complete or pruned), failed, left RUNNING,
how far the study ended from its budget, epochs redone (of a dead trial, those its retry
trained again), whether a ladder concluded wrongly (``wrong``: its rungs at more than one g*,
or its climb stopped short of the top; a retry that took another study's checkpoint;
``None`` where neither can happen), the exit status,
the lines on stderr, and whether the password was seen. Results go to
benchmarks/results/faults.json.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _harness as h  # noqa: E402

from optuna_bs.search.ladder import BatchLadderSampler, ladder_outcome  # noqa: E402
from tests.helpers.slow_model import LADDER_STUDY, SLOW_STUDY  # noqa: E402  (the worker tests' studies)

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "Fault-s3cret"
FAULTS = (
    "sigkill",
    "ctrl-c-run",
    "ctrl-c-launch",
    "outage-10",
    "outage-60",
    "workers-8x25",
    "ladder-kill",
    "launch-kill",
    "same-name",
)


class Server:
    """A PostgreSQL cluster in a temporary folder, on a free port, that can be stopped."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
        if not found or not found[-1]:
            raise SystemExit("faults.py needs PostgreSQL's initdb and pg_ctl (docs/design.md §7)")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="optuna-bs-faults-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.user:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", self.root / "data", "-A", "trust", "-U", "postgres")
        self.start()
        self._psql(f"CREATE ROLE bench LOGIN PASSWORD '{PASSWORD}'")
        self._psql("CREATE DATABASE bench OWNER bench")
        self.url = f"postgresql+psycopg://bench:{PASSWORD}@127.0.0.1:{self.port}/bench"

    def _run(self, tool: str, *args) -> None:
        command = [*self.user, str(self.bin / tool), *map(str, args)]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def _psql(self, sql: str) -> None:
        args = ["-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "-c", sql]
        self._run("psql", *args)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            self.root / "data",
            "-o",
            options,
            "-l",
            self.root / "log",
            "-w",
            "start",
        )

    def database(self, name: str) -> str:
        """The URL of a new, empty database ``name`` on this server, owned by ``bench``."""
        self._psql(f"CREATE DATABASE {name} OWNER bench")
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("optuna-bs")
    return [str(script)] if script.exists() else [shutil.which("optuna-bs")]


def _env(url: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the test model factory
    if url is not None:  # the store as a careful user passes it: never on a command line
        env["OPTUNA_BS_STORAGE"] = url
    return env


def _trials(url: str, name: str) -> list:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except (KeyError, Exception):  # not created yet, or the server is down
        return []


def _wait(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError("timed out")


def _running(url, name, n, epoch=1):
    def check():
        running = [t for t in _trials(url, name) if t.state.name == "RUNNING"]
        return len(running) >= n and all(len(t.intermediate_values) >= epoch for t in running)

    return check


def _count(url: str, name: str, asked: int, procs: list, outputs: list[str]) -> dict:
    trials = _trials(url, name)
    by_number = {t.number: t for t in trials}
    redone = 0
    for t in trials:
        dead = t.user_attrs.get("resumed_from_trial")
        if dead is not None and dead in by_number:
            # A checkpoint may be one epoch ahead of the values reported: nothing redone.
            reported = len(by_number[dead].intermediate_values)
            redone += max(0, reported - t.user_attrs.get("resumed_from_epoch", 0))
    for t in trials:  # dead trials retried from scratch: all their epochs are redone
        retry_of = t.system_attrs.get("failed_trial")
        if retry_of is not None and "resumed_from_trial" not in t.user_attrs:
            redone += len(by_number[retry_of].intermediate_values) if retry_of in by_number else 0
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    command_lines = []
    for proc in procs:
        try:
            command_lines.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode())
        except OSError:
            pass
    seen = any(PASSWORD in text for text in [*outputs, *command_lines])
    return {
        "asked": asked,
        "finished": finished,
        "failed": sum(t.state.name == "FAIL" for t in trials),
        "running": sum(t.state.name == "RUNNING" for t in trials),
        "off_budget": finished - asked,  # > 0 an overrun, < 0 trials lost from the budget
        "epochs_redone": redone,
        "password_seen": seen,
    }


def _study(root: Path, name: str, text: str = SLOW_STUDY) -> Path:
    path = root / f"{name}.toml"
    checkpoints = f'heartbeat_interval = 1\ncheckpoint_dir = "{root / "checkpoints"}"'
    path.write_text(text.replace("heartbeat_interval = 1", checkpoints))
    return path


def _popen(args, cwd, url: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*_cli(), *map(str, args)],
        cwd=cwd,
        env=_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=False,
    )


def fault_sigkill(server: Server, root: Path) -> dict:
    name = "sigkill"
    common = [
        "run",
        _study(root, name),
        "--study-name",
        name,
        "-q",
        "--no-test",
    ]
    victim = _popen([*common, "--n-trials", 1], root, url=server.url)
    _wait(_running(server.url, name, 1, epoch=3))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(2.5)  # past the heartbeat's grace period
    rescuer = _popen([*common, "--n-trials", 10, "--max-trials", 3], root, url=server.url)
    out, err = rescuer.communicate(timeout=600)
    result = _count(server.url, name, 3, [], [out, err])
    return {**result, "status": rescuer.returncode, "stderr_lines": _lines(err)}


def fault_outage(server: Server, root: Path, seconds: float) -> dict:
    name = f"outage{int(seconds)}"
    args = ["launch", _study(root, name), "--study-name", name, "--workers", 2]
    launcher = _popen([*args, "--n-trials", 6, "--no-test"], root, url=server.url)
    _wait(_running(server.url, name, 2, epoch=2))
    server.stop()
    time.sleep(seconds)
    server.start()
    out, err = launcher.communicate(timeout=900)
    result = _count(server.url, name, 6, [], [out, err])
    return {**result, "status": launcher.returncode, "stderr_lines": _lines(err)}


def fault_workers(server: Server, root: Path) -> dict:
    name = "workers8x25"
    study = _study(root, name)
    study.write_text(
        study.read_text()
        .replace("seconds_per_step = 0.03", "seconds_per_step = 0")
        .replace("max_epochs = 8", "max_epochs = 2")
    )
    args = ["launch", study, "--study-name", name, "--workers", 8, "--n-trials", 200, "--no-test"]
    launcher = _popen(args, root, url=server.url)  # the URL in no process's command line
    seen = []
    while launcher.poll() is None:  # the workers' command lines, while they run
        for path in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                text = Path(path).read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "optuna-bs" in text:
                seen.append(text)
        time.sleep(0.5)
    out, err = launcher.communicate()
    result = _count(server.url, name, 200, [], [out, err, *seen])
    errors = [line for line in (out + err).splitlines() if "error" in line.lower()]
    return {
        **result,
        "status": launcher.returncode,
        "stderr_lines": _lines(err),
        "errors": errors[:5],
    }


def fault_ctrl_c(server: Server, root: Path, command: str) -> dict:
    name = f"ctrlc{command}"
    args = [
        command,
        _study(root, name),
        "--study-name",
        name,
        "--n-trials",
        400,
        "--no-test",
    ]
    if command == "launch":
        args += ["--workers", 2]
    proc = _popen(args, root, url=server.url)
    _wait(_running(server.url, name, 2 if command == "launch" else 1))
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    trials = _trials(server.url, name)
    result = _count(server.url, name, len(trials), [], [out, err])
    result["off_budget"] = None  # stopped on purpose: there is no budget to keep
    return {
        **result,
        "status": proc.returncode,
        "stderr_lines": _lines(err),
        "seconds_to_stop": round(time.monotonic() - started, 1),
    }


def fault_ladder_kill(server: Server, root: Path) -> dict:
    name = "ladderkill"
    study = _study(root, name, LADDER_STUDY)
    args = ["launch", study, "--study-name", name, "--workers", 3, "--n-trials", 15, "--no-test"]
    launcher = _popen(args, root, url=server.url)

    def first_rung_trained_an_epoch():
        for t in _trials(server.url, name):
            label = t.system_attrs.get("ladder", {})
            if label.get("phase") == "climb" and t.state.name == "RUNNING":
                return t if t.intermediate_values and "worker" in t.system_attrs else None
        return None

    _wait(first_rung_trained_an_epoch)
    rung = first_rung_trained_an_epoch()
    os.kill(rung.system_attrs["worker"]["pid"], signal.SIGKILL)
    out, err = launcher.communicate(timeout=600)
    rescue = ["run", study, "--study-name", name, "--n-trials", 15, "--max-trials", 15]
    rescuer = _popen([*rescue, "-q", "--no-test"], root, url=server.url)
    more_out, more_err = rescuer.communicate(timeout=600)
    result = _count(server.url, name, 15, [], [out, err, more_out, more_err])
    loaded = optuna.load_study(study_name=name, storage=server.url)
    climb = [t for t in loaded.get_trials() if t.system_attrs.get("ladder", {}).get("rung")]
    g_stars = {t.system_attrs["ladder"]["g_star"] for t in climb}
    plan = BatchLadderSampler().plan(loaded)
    return {
        **result,
        "wrong": len(g_stars) != 1 or plan.get("held") != 7,  # B = 128, the top
        "status": launcher.returncode,
        "stderr_lines": _lines(err),
        "rescuer_status": rescuer.returncode,
        "killed_rung": 2 ** rung.system_attrs["ladder"]["rung"],
        "ladder": ladder_outcome(loaded),
    }


def fault_launch_kill(server: Server, root: Path) -> dict:
    name = "launchkill"
    args = ["launch", _study(root, name), "--study-name", name, "--workers", 2]
    launcher = _popen([*args, "--n-trials", 6, "--no-test", "-q"], root, url=server.url)

    def worker_1_trained_an_epoch():
        for t in _trials(server.url, name):
            mark = t.system_attrs.get("worker", {})
            if str(mark.get("id", "")).endswith("/1") and mark.get("trial") == t.number:
                return t if t.state.name == "RUNNING" and t.intermediate_values else None
        return None

    _wait(worker_1_trained_an_epoch)
    victim = worker_1_trained_an_epoch()
    os.kill(victim.system_attrs["worker"]["pid"], signal.SIGKILL)
    out, err = launcher.communicate(timeout=600)
    result = _count(server.url, name, 6, [], [out, err])
    return {
        **result,
        "status": launcher.returncode,
        "stderr_lines": _lines(err),
        "names_worker_and_trial": "worker 1 " in err and f"trial {victim.number} " in err,
    }


def fault_same_name(server: Server, root: Path) -> dict:
    name = "samename"  # one name, in two databases, one working folder
    old = _study(root, name)
    ctrl_c = ["run", old, "--study-name", name, "--n-trials", 1, "--no-test", "-q"]
    stopped = _popen(ctrl_c, root, url=server.url)
    _wait(_running(server.url, name, 1, epoch=3))
    stopped.send_signal(signal.SIGINT)
    old_out, old_err = stopped.communicate(timeout=180)
    old_trial = _trials(server.url, name)[0]
    left = sorted(p.name for p in (root / "checkpoints").rglob("trial_*.pt"))
    # The new study's epochs take 2 s, so that its trial 0 is killed inside epoch 1, before
    # it has a checkpoint of its own: the other study's trial_0.pt is the only one there.
    new = root / f"{name}-new.toml"
    new.write_text(old.read_text().replace("seconds_per_step = 0.03", "seconds_per_step = 0.3"))
    url = server.database("samename_new")
    common = ["run", new, "--study-name", name, "-q", "--no-test"]
    victim = _popen([*common, "--n-trials", 1], root, url=url)
    _wait(_running(url, name, 1, epoch=0))
    time.sleep(0.5)  # into its first epoch
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_after = len(_trials(url, name)[0].intermediate_values)  # epochs it had reported
    time.sleep(2.5)  # past the heartbeat's grace period
    rescuer = _popen([*common, "--n-trials", 10, "--max-trials", 1], root, url=url)

    def retry():
        trials = _trials(url, name)
        return next((t for t in trials if t.system_attrs.get("failed_trial") is not None), None)

    # Epochs trained, as they come: one at a time, 2 s apart. A checkpoint's epochs are
    # reported at once, when it is loaded: a jump of several counts as one.
    trained = reported = 0
    while rescuer.poll() is None:
        t = retry()
        if t is not None and len(t.intermediate_values) > reported:
            trained, reported = trained + 1, len(t.intermediate_values)
        time.sleep(0.1)
    out, err = rescuer.communicate(timeout=600)
    t = retry()
    if t is not None and len(t.intermediate_values) > reported:
        trained, reported = trained + 1, len(t.intermediate_values)
    result = _count(url, name, 1, [], [old_out, old_err, out, err])
    attrs = {} if t is None else t.user_attrs
    resumed = bool(attrs.get("resumed_from_epoch")) or "resumed_from_trial" in attrs
    return {
        **result,
        "wrong": None if t is None else resumed or reported > trained,
        "status": rescuer.returncode,
        "stderr_lines": _lines(err),
        "warned": "starts afresh" in err,
        "resumed_from_epoch": attrs.get("resumed_from_epoch"),
        "resumed_from_trial": attrs.get("resumed_from_trial"),
        "epochs_reported": reported,
        "epochs_trained": trained,
        "other_study": {
            "status": stopped.returncode,
            "epochs": len(old_trial.intermediate_values),
            "checkpoints_left": left,
        },
        "killed_after_epochs": killed_after,
    }


def _lines(err: str) -> int:
    """Lines on stderr, progress-bar frames left out."""
    return sum(1 for line in re.split(r"[\r\n]", err) if line.strip() and "%|" not in line)


def main() -> None:
    parser = h.parser(__doc__)
    parser.add_argument("--faults", nargs="+", choices=FAULTS, help="run only these faults")
    args = parser.parse_args()
    smoke = h.mode(args) == "smoke"
    server = Server()
    root = Path(tempfile.mkdtemp(prefix="optuna-bs-fault-studies-"))
    faults = {
        "sigkill": lambda: fault_sigkill(server, root),
        "ctrl-c-run": lambda: fault_ctrl_c(server, root, "run"),
        "ctrl-c-launch": lambda: fault_ctrl_c(server, root, "launch"),
        "outage-10": lambda: fault_outage(server, root, 10),
    }
    if not smoke or args.faults:
        faults |= {
            "outage-60": lambda: fault_outage(server, root, 60),
            "workers-8x25": lambda: fault_workers(server, root),
            "ladder-kill": lambda: fault_ladder_kill(server, root),
            "launch-kill": lambda: fault_launch_kill(server, root),
            "same-name": lambda: fault_same_name(server, root),
        }
    if args.faults:
        faults = {fault: run for fault, run in faults.items() if fault in args.faults}
    results = {}
    try:
        for fault, run in faults.items():
            start = time.perf_counter()
            results[fault] = {**run(), "seconds": round(time.perf_counter() - start, 1)}
            print(f"  {fault}: {json.dumps(results[fault])}", file=sys.stderr, flush=True)
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)
    columns = (
        "asked",
        "finished",
        "failed",
        "running",
        "off_budget",
        "epochs_redone",
        "wrong",
        "password_seen",
        "status",
        "stderr_lines",
    )
    h.print_table(
        "Faults: what each one lost (a PostgreSQL server of the benchmark's own)",
        ("fault", *columns),
        [(fault, *(r.get(c) for c in columns)) for fault, r in results.items()],
    )
    name = "faults" + ("_" + "-".join(args.faults) if args.faults else "")
    h.write_json(args, name, {"faults": results})


if __name__ == "__main__":
    main()
