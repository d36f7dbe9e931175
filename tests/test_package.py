"""The public surface: what ``import optuna_bs`` gives, and what it must not need."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import optuna_bs

from .conftest import REPO

EXTRAS = (
    "plotly",
    "optuna_dashboard",
    "psycopg",
    "pymysql",
    "torchvision",
    "lightning",
    "transformers",
    "accelerate",
    "optuna_integration",
)


def test_public_names_exist_and_are_listed():
    for name in optuna_bs.__all__:
        assert hasattr(optuna_bs, name), name
    assert {"BatchScalingSpace", "fit", "TrialMonitor", "rescale", "noise_scale"} <= set(
        optuna_bs.__all__
    )


def test_what_type_checkers_see_is_what_resolves():
    """The names ``__init__`` imports under ``TYPE_CHECKING`` (for IDEs) are ``__all__``, each
    from the module it resolves from: the two lists cannot drift apart."""
    tree = ast.parse(Path(optuna_bs.__file__).read_text(encoding="utf-8"))
    (block,) = [
        n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
    ]
    typed = {a.name: node.module for node in block.body for a in node.names}
    assert sorted(typed) == optuna_bs.__all__
    for name, module in typed.items():
        assert getattr(importlib.import_module(module), name) is getattr(optuna_bs, name), name


def test_import_works_without_any_extra():
    # A finder that refuses every optional extra, as on a machine without them installed.
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {EXTRAS!r}:
            raise ImportError('blocked extra: ' + name)
sys.meta_path.insert(0, Block())
import optuna_bs
from optuna_bs import cli
from optuna_bs.study import runner
space = optuna_bs.BatchScalingSpace(n_train=1000)
assert not any(m.split('.')[0] in {EXTRAS!r} for m in sys.modules), sorted(sys.modules)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_each_integration_without_its_framework_names_the_extra_that_fixes_it():
    for module, blocked, extra in (
        ("optuna_bs.integrations.lightning", "lightning", "optuna-bs[lightning]"),
        ("optuna_bs.integrations.transformers", "transformers", "optuna-bs[transformers]"),
    ):
        code = f"""
import sys
from pathlib import Path
sys.modules[{blocked!r}] = None  # as if it were not installed
sys.modules[{blocked!r} + '.pytorch'] = None
try:
    import {module}
except ImportError as err:
    print(err)
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f'pip install "{extra}"' in out.stdout


def test_rules_config_and_the_cli_help_do_not_import_torch():
    code = (
        "import optuna_bs.rules, optuna_bs.rules.registry, optuna_bs.study.config; import sys; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = (
        "import sys, contextlib, io\n"
        "from optuna_bs.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert 'torch' not in sys.modules, 'optuna-bs --help imported torch'\n"
        "assert 'sqlalchemy' not in sys.modules, 'optuna-bs --help imported sqlalchemy'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_resolve_lazily_and_once():
    code = (
        "import sys, optuna_bs\n"
        "assert 'torch' not in sys.modules\n"
        "fit = optuna_bs.fit\n"
        "assert 'torch' in sys.modules and optuna_bs.fit is fit\n"
        "assert optuna_bs.rules.plan_batch(8).batch_size == 8\n"
        "assert set(optuna_bs.__all__) <= set(dir(optuna_bs))\n"
        "try:\n"
        "    optuna_bs.no_such_name\n"
        "except AttributeError as err:\n"
        "    assert 'no_such_name' in str(err)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_design_section_the_code_cites_exists():
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    design = (repo / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\.", design, flags=re.M))
    cited = set()
    for folder in ("optuna_bs", "tests", "benchmarks"):
        for path in (repo / folder).rglob("*.py"):
            text = path.read_text()
            assert "DESIGN" + " §" not in text, (
                f"{path.name} cites a design file that does not ship"
            )
            cited |= set(re.findall(r"docs/design\.md §(\d+)", text))
    assert cited and cited <= sections, sorted(cited - sections)


#: The rooms, in the order data flow through them: a room imports only from those above it.
ROOMS = ("rules", "search", "data", "train", "measure", "study", "report", "integrations", "cli")


def test_each_room_imports_only_from_the_rooms_above_it():
    package = REPO / "optuna_bs"
    wrong = []
    for room in ROOMS:
        for path in sorted((package / room).glob("*.py")):
            for imported in re.findall(r"(?:from|import) optuna_bs\.(\w+)", path.read_text()):
                if imported in ROOMS and ROOMS.index(imported) > ROOMS.index(room):
                    wrong.append(f"{path.relative_to(REPO)} imports optuna_bs.{imported}")
    assert not wrong, wrong
    assert {p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        ROOMS
    )


def test_each_room_lists_public_names_that_resolve():
    for room in (r for r in ROOMS if r != "integrations"):  # its modules import a framework
        module = importlib.import_module(f"optuna_bs.{room}")
        assert module.__all__, room
        for name in module.__all__:
            assert getattr(module, name) is not None, f"optuna_bs.{room}.{name}"


def test_the_flat_module_paths_still_import_with_a_warning():
    code = (
        "import warnings, sys\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n"
        "    import optuna_bs.runner\n"
        "except DeprecationWarning as w:\n"
        "    print(w)\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from optuna_bs.runner import prepare\n"
        "import optuna_bs.study.runner as new\n"
        "assert prepare is new.prepare and sys.modules['optuna_bs.runner'] is new\n"
        "assert new.__spec__.name == 'optuna_bs.study.runner'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "optuna_bs.runner moved to optuna_bs.study.runner" in out.stdout


def test_a_public_function_is_never_shadowed_by_a_module_of_its_name():
    """``optuna_bs.transfer`` is the function even once the module that defines it is loaded
    (a module named ``transfer`` would take its place on the package)."""
    code = (
        "import optuna_bs.report.scaling, optuna_bs.report, optuna_bs\n"
        "assert callable(optuna_bs.transfer) and callable(optuna_bs.report.transfer)\n"
        "assert callable(optuna_bs.fit) and callable(optuna_bs.train.fit)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_rule_name_is_compared_outside_the_rules_room():
    """Rules are known by their traits (``searches_noise_scale``, ``takes_alpha``,
    ``uses_reference_batch``, ``couples_batch``, ``optimizers``), never by their names: a
    comparison with a rule's name outside ``optuna_bs/rules`` is a rule the registry cannot
    extend."""
    import ast

    names = set(optuna_bs.RULES)
    wrong = []
    for path in sorted((REPO / "optuna_bs").rglob("*.py")):
        if "rules" in path.relative_to(REPO / "optuna_bs").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                for item in items:
                    if isinstance(item, ast.Constant) and item.value in names:
                        wrong.append(f"{path.relative_to(REPO)}:{node.lineno} {item.value!r}")
    assert not wrong, wrong


def test_n_over_10_has_one_home():
    """N/10, where the scaling rules stop being validated, is ``largest_valid_batch``: no
    module divides a training-set size by 10 itself."""
    import re

    wrong = []
    pattern = re.compile(r"\b(n_train|n)\s*//?\s*10\b")
    home = REPO / "optuna_bs" / "rules" / "formulas.py"
    for path in sorted((REPO / "optuna_bs").rglob("*.py")):
        if path == home:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if pattern.search(code) and '"' not in code and "'" not in code:
                wrong.append(f"{path.relative_to(REPO)}:{number}")
    assert not wrong, wrong


def test_no_module_is_over_500_lines_and_each_integration_is_a_thin_adapter():
    """Rooms stay calm: no module over 500 lines, and each framework's callback under 200, the
    end-of-epoch decision and the checkpoints being ``fit``'s own (``TrialMonitor.end_epoch``,
    ``EpochTally``, ``StudyCheckpoints``)."""
    sizes = {
        path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
        for path in (REPO / "optuna_bs").rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > 500} == {}
    for name in ("lightning", "transformers"):
        path = f"optuna_bs/integrations/{name}.py"
        assert sizes[path] < 200, (path, sizes[path])
        text = (REPO / path).read_text()
        assert "EpochTally" in text and "end_epoch(" in text, path
