"""What a person sees, in a real headless Chromium driven by Playwright.

* The HTML report opens without JavaScript errors or network requests, and every figure
  renders.
* optuna-dashboard, serving a SQLite study made by the real trainer and saved with
  ``save_to_dashboard``, shows the trials, the user attr ``noise_scale``, the saved figures
  and the note.

The browser is Debian's Chromium (``apt-get install -y chromium``, at /usr/bin/chromium;
``OPTUNA_BS_CHROMIUM`` names another binary); Playwright's own browser download cannot work
offline. Without it, these tests skip and say how to install it (with
``OPTUNA_BS_TEST_BROWSER=1``, set by .ci/run, they fail instead). Screenshots go to
each test's ``tmp_path`` and, when it is set, to the folder ``OPTUNA_BS_ARTIFACTS``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from optuna_bs.report.plots import FIGURES
from optuna_bs.report.summary import save_to_dashboard, write_report
from optuna_bs.study.config import config_from_dict
from optuna_bs.study.runner import prepare, run_study

from .test_analysis import landscape_study
from .test_plots import _with_curves

CHROMIUM = os.environ.get("OPTUNA_BS_CHROMIUM", "/usr/bin/chromium")
# Without the networking flags Chromium keeps calling Google's hosts, which this closed
# network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need the Python package playwright: pip install -e '.[test]' "
            "(do not run `playwright install`: it downloads a browser, which cannot work "
            "offline; the tests use Debian's chromium)",
            pytrace=False,
        )
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        reason = (
            f"no browser: Chromium is not installed at {CHROMIUM}. Install Debian's package "
            "with `apt-get install -y chromium` (.ci/run does), or set OPTUNA_BS_CHROMIUM "
            "to a Chromium binary."
        )
        # As the database tests: a laptop without it skips and says why; CI, which sets
        # OPTUNA_BS_TEST_BROWSER=1, fails.
        if os.environ.get("OPTUNA_BS_TEST_BROWSER") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason + " (OPTUNA_BS_TEST_BROWSER=1 makes this a failure)")
    with sync_playwright() as pw:
        # Playwright starts it with a fresh, temporary profile (user data dir).
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page that records uncaught exceptions, console errors and requests off this host."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.errors = []
    page.external = []
    page.on("pageerror", lambda err: page.errors.append(f"pageerror: {err}"))
    page.on(
        "console",
        lambda msg: page.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    page.on(
        "request",
        lambda req: (
            None
            if req.url.startswith(("file:", "data:", "blob:", "http://127.0.0.1"))
            else page.external.append(req.url)
        ),
    )
    yield page
    context.close()


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    folder = os.environ.get("OPTUNA_BS_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)
    assert path.stat().st_size > 10_000
    return path


RENDERED = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .filter(d => d.querySelector('.main-svg')).length"""


def test_report_opens_without_errors_and_renders_every_figure(page, tmp_path):
    study = _with_curves(landscape_study(1.0, per_b=10))
    path = write_report(study, tmp_path)
    page.goto(path.as_uri())
    page.wait_for_function(f"({RENDERED})() >= {len(FIGURES)}", timeout=30_000)
    assert page.evaluate(RENDERED) == len(FIGURES)
    assert page.errors == []
    assert page.external == []  # self-contained: no CDN, no fonts from the web
    titles = page.locator(".gtitle").all_text_contents()  # SVG text: no innerText
    assert any(t.startswith("val_error against noise scale g: g* =") for t in titles)
    assert any(t.startswith("Learning rate against batch size: noise-scale rule") for t in titles)
    # Every complete trial is a drawn point of the noise-scale figure.
    points = page.locator("#figure-noise-scale .scatterlayer .trace").first.locator(".point")
    assert points.count() == 10
    assert page.get_by_text("recommended batch sizes").is_visible()
    save_screenshot(page, tmp_path, "report.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard_study(tmp_path, monkeypatch):
    """A small SQLite study run by the real trainer, saved for the dashboard."""
    monkeypatch.chdir(tmp_path)  # anything the runner writes stays in tmp_path
    url = f"sqlite:///{tmp_path / 'dashboard.db'}"
    config = config_from_dict(
        {
            "study": {"name": "dash", "n_trials": 8, "sampler": "random", "pruner": "none"},
            "data": {"name": "synthetic", "n_samples": 300, "n_features": 8},
            "model": {"name": "mlp", "hidden": [16]},
            "space": {"batch_size": [8, 64], "noise_scale": [1.0, 100.0]},
            "train": {"max_epochs": 3, "device": "cpu"},
        }
    )
    study = run_study(prepare(config, storage=url))
    save_to_dashboard(study)
    return url, study


@pytest.fixture
def dashboard(dashboard_study):
    """optuna-dashboard serving the study on a free local port; stopped afterwards."""
    url, study = dashboard_study
    port = _free_port()
    code = "import sys, optuna_dashboard\noptuna_dashboard.run_server(sys.argv[1], "
    code += "host='127.0.0.1', port=int(sys.argv[2]))"
    server = subprocess.Popen(
        [sys.executable, "-c", code, url, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as answer:
                    summaries = json.load(answer)["study_summaries"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    pytest.fail(
                        "optuna-dashboard did not answer: " + server.stderr.read().decode()[-2000:]
                    )
                time.sleep(0.2)
        (study_id,) = [s["study_id"] for s in summaries if s["study_name"] == "dash"]
        yield base, study_id, study
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_dashboard_shows_trials_user_attrs_figures_and_note(page, dashboard, tmp_path):
    base, study_id, study = dashboard
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 8

    page.goto(f"{base}/dashboard")
    page.get_by_text(re.compile(r"^\d+\. dash$")).click()  # the study list: "1. dash"
    page.wait_for_url(re.compile(rf"/dashboard/studies/{study_id}$"))
    # The saved plotly graph objects, rendered by the dashboard itself.
    for title in ("against noise scale g", "Learning rate against batch size", "Pareto front"):
        page.locator(".gtitle", has_text=title).first.wait_for(timeout=30_000)
    assert page.locator(".gtitle", has_text="Learning curves").count() == 1
    save_screenshot(page, tmp_path, "dashboard-study.png")

    page.goto(f"{base}/dashboard/studies/{study_id}/trials")
    page.get_by_text("8 Trials").wait_for(timeout=30_000)
    for t in trials:
        assert page.get_by_text(f"Trial {t.number}", exact=True).count() >= 1
    first = trials[0]  # the dashboard opens on trial 0; a row reads "key value"
    for key in ("lr", "batch_size", "train_seconds", "n_updates"):  # user attrs only
        assert page.get_by_text(f"{key} {first.user_attrs[key]}", exact=True).is_visible()
    # noise_scale is both a parameter and a user attr here: two rows.
    noise = page.get_by_text(f"noise_scale {first.user_attrs['noise_scale']}", exact=True)
    assert noise.count() == 2
    noise.last.scroll_into_view_if_needed()
    assert noise.last.is_visible()
    assert page.get_by_text("User Attributes").is_visible()
    save_screenshot(page, tmp_path, "dashboard-trials.png")

    page.goto(f"{base}/dashboard/studies/{study_id}/note")
    page.get_by_text("optuna-bs report").wait_for(timeout=30_000)
    assert page.get_by_text("best noise scale g*", exact=False).count() >= 1
    assert page.errors == []
    assert page.external == []
