from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli_command() -> list[str]:
    """The installed ``optuna-bs`` script of this interpreter's environment."""
    script = Path(sys.executable).with_name("optuna-bs")
    if script.exists():
        return [str(script)]
    found = shutil.which("optuna-bs")
    assert found, "the optuna-bs console script is not installed: pip install -e ."
    return [found]


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own folder: default stores and checkpoints land there."""
    monkeypatch.chdir(tmp_path)


def _server_url(variable: str) -> str:
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set: no server to test against (.ci/run sets it)")
    return url


@pytest.fixture(params=["inmemory", "sqlite", "postgres", "mysql"])
def storage_url(request, tmp_path):
    """Every store that is available: in-memory, SQLite, and the servers named by env vars.

    A server whose variable is set but that cannot be reached fails the test (docs/design.md §7).
    """
    if request.param == "inmemory":
        return None
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    variable = {"postgres": "OPTUNA_BS_TEST_POSTGRES_URL", "mysql": "OPTUNA_BS_TEST_MYSQL_URL"}[
        request.param
    ]
    return _server_url(variable)


#: Set to 1 (as .ci/run does, and CI=true does) to run the slow tests too.
SLOW_VARIABLE = "OPTUNA_BS_TEST_SLOW"


def run_slow_tests() -> bool:
    """Whether the slow tests run: under CI, or when asked. A laptop's ``pytest -q`` leaves
    them out, with the reason, and finishes in minutes."""
    return os.environ.get(SLOW_VARIABLE) == "1" or os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(config, items):
    if run_slow_tests() or "slow" in (config.getoption("markexpr") or ""):
        return  # asked for, or chosen with -m: they run
    skip = pytest.mark.skip(
        reason=f"slow (whole studies, several processes): {SLOW_VARIABLE}=1 or CI=true runs it"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
