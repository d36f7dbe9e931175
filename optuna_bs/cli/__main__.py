"""``python -m optuna_bs.cli``: the ``optuna-bs`` command."""

import sys

from optuna_bs.cli import main

sys.exit(main())
