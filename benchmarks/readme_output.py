"""Regenerate the README's example output: the embedded MNIST-1D study, as its command prints it.

    python benchmarks/readme_output.py     # runs the study (about a minute), rewrites README.md

The study runs in a fresh folder on one torch thread (``--threads 1``): on another number of
threads torch sums in another order, and the last digits differ. ``tests/test_readme.py``
holds the block to the CLI's own layout, so a change of the table shows there.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The README's block: the fenced block right after this sentence.
ANCHOR = "ends with a table like this one:"


def study_output() -> str:
    """What ``optuna-bs run studies/mnist1d_mlp.toml`` prints after its banner line."""
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [sys.executable, "-m", "optuna_bs.cli", "run", str(REPO / "studies/mnist1d_mlp.toml")]
            + ["--threads", "1"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        )
    lines = done.stdout.strip().splitlines()
    return "\n".join(lines[1:])  # the banner names the store and the space


def readme_block(text: str) -> re.Match:
    match = re.search(re.escape(ANCHOR) + r"\n\n```\n(.*?)\n```", text, flags=re.S)
    if match is None:
        raise SystemExit(f"README.md has no block after {ANCHOR!r}")
    return match


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    readme = REPO / "README.md"
    text = readme.read_text()
    match = readme_block(text)
    out = study_output()
    readme.write_text(text[: match.start(1)] + out + text[match.end(1) :])
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
