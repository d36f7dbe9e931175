"""The README's examples are run, so they cannot drift from the code."""

from __future__ import annotations

import doctest
import re

from .conftest import REPO


def test_readme_doctests():
    result = doctest.testfile(
        str(REPO / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS
    )
    assert result.attempted >= 5
    assert result.failed == 0


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    install = re.search(r'pip install -e "\.\[[a-z,]+\]"', readme).group(0)
    assert install in ci
    assert "pip install torch==2.13.0" in readme and "pip install torch==2.13.0" in ci
    assert "python -m pytest -q" in readme and ci.rstrip().endswith("python -m pytest -q")
