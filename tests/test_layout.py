"""The layers the package's folders show: imports point down only (tools → sagemaker → core), training and
serving do not import each other, and nothing heavy is imported where the server must bind its port fast."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "multimodal"
# module prefix → prefixes it must never import
FORBIDDEN = {
    "multimodal.core": ("multimodal.sagemaker", "multimodal.tools"),
    "multimodal.sagemaker": ("multimodal.tools",),
    "multimodal.sagemaker.training": ("multimodal.sagemaker.serving",),
    "multimodal.sagemaker.serving": ("multimodal.sagemaker.training",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(p for p in (base, node.module or "") if p)
            found |= {name} | {f"{name}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_imports_point_down_only(path):
    module = module_name(path)
    for prefix, forbidden in FORBIDDEN.items():
        if module == prefix or module.startswith(prefix + "."):
            bad = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
            assert not bad, f"{module} imports {bad}: {prefix} may not import {', '.join(forbidden)}"


def test_the_server_launcher_imports_nothing_heavy():
    """SageMaker wants connections accepted within 250 ms of start: the launcher binds before numpy loads."""
    code = ("import sys, multimodal.sagemaker.serving.launcher; "
            "print(sorted(m for m in ('numpy', 'pandas', 'flask', 'torch', 'autogluon', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def package_imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at any depth (an import inside a function counts: it runs
    the module as surely, only later). ``from a import b`` is an import of module ``a.b`` when there is one,
    else of ``a``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(p for p in (base, node.module or "") if p)
            names = [f"{name}.{alias.name}" if f"{name}.{alias.name}" in MODULES else name for alias in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


def import_cycle() -> list[str]:
    """One cycle of imports inside the package (modules in order, the first repeated at the end), or []."""
    graph = {module: package_imports(path) for module, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                return path[path.index(imported):] + [imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def test_the_package_has_no_import_cycle():
    """A cycle (even through a lazy import) means two modules cannot be read, tested or changed apart."""
    assert import_cycle() == [], " -> ".join(import_cycle())


# A module longer than this holds more than one concept: split it by concept.
MAX_MODULE_LINES = 450
# Modules over the limit, each with the length it may not exceed until it is split (none now).
OVERSIZE: dict[str, int] = {}


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_no_module_holds_more_than_one_concept(module):
    lines = len(MODULES[module].read_text().splitlines())
    limit = OVERSIZE.get(module, MAX_MODULE_LINES)
    assert lines <= limit, f"{module} has {lines} lines (at most {limit}): split it by concept"


def test_the_oversize_list_names_only_modules_still_over_the_limit():
    """A module split below the limit leaves the list, so that the allowance cannot be spent again."""
    assert {m for m in OVERSIZE if len(MODULES[m].read_text().splitlines()) <= MAX_MODULE_LINES} == set()


PROBLEM_WORDS = re.compile(r"regression|problem_type|classification|target_mean_|classes_\b", re.IGNORECASE)
# The home of the problem type: everything that differs between classes and a number is a method there.
PROBLEM_TYPE_HOME = "multimodal.core.targets"
# Branches on the problem type allowed elsewhere, per module, and why.
PROBLEM_TYPE_BRANCHES = {
    # which estimator class accepts which problem_type values (a hyperparameter check, before any target
    # exists), and the class to name when a model of the other family is loaded
    "multimodal.core.estimator": 5,
    # the generated docs list the problem_type values each estimator class takes
    "multimodal.core.hyperparameters": 2,
    # the fusion network's own output layer and loss (softmax or linear); it is saved and loaded without the
    # model's target object
    "multimodal.core.fusion": 5,
    # the experts' AutoGluon predictors are classifiers or regressors (problem_type given to AutoGluon)
    "multimodal.core.experts": 1,
    # the server's one reading of a model's kind (a Classes or Numbers object it then asks)
    "multimodal.sagemaker.serving.kinds": 1,
    # the metric names and definitions of a problem type given as a word at registration, before any model exists
    "multimodal.sagemaker.training.metrics": 4,
    # the example command's --regression flag picks the example data and its summary (not a fitted model's type)
    "multimodal.tools.cli": 3,
    # the training job's one reading of a model's kind for its report files (a class- or number-reports object)
    "multimodal.sagemaker.training.reports": 1,
}


def problem_type_branches(path: Path) -> list[str]:
    """The conditions in ``path`` (of ``if``, conditional expressions, ``while`` and comprehension filters) that
    read the problem type."""
    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        tests = node.ifs if isinstance(node, ast.comprehension) else (
            [node.test] if isinstance(node, (ast.If, ast.IfExp, ast.While)) else [])
        found += [f"line {t.lineno}: {ast.get_source_segment(source, t)}" for t in tests
                  if PROBLEM_WORDS.search(ast.get_source_segment(source, t) or "")]
    return found


@pytest.mark.parametrize("module", sorted(set(MODULES) - {PROBLEM_TYPE_HOME}), ids=str)
def test_the_problem_type_is_decided_in_the_target_objects_only(module):
    """Adding a problem type (multilabel, quantiles) should mean a new target object, not a hunt for branches."""
    branches = problem_type_branches(MODULES[module])
    allowed = PROBLEM_TYPE_BRANCHES.get(module, 0)
    assert len(branches) <= allowed, (f"{module} branches on the problem type {len(branches)} times (allowed: "
                                      f"{allowed}): move the difference into {PROBLEM_TYPE_HOME}: {branches}")


# Where the environment is read: each variable with its default, type and error in one place.
SETTINGS_MODULES = {
    "multimodal.core.settings",  # the estimator's variables, and the ones it sets for its libraries
    "multimodal.sagemaker.environment",  # the training job's, the hosts', the Ray cluster's
    "multimodal.sagemaker.serving.launcher",  # the server's (ServerSettings), read before anything heavy loads
}


def environment_reads(path: Path) -> list[str]:
    """``os.environ`` and ``os.getenv`` in ``path``, as 'line N'."""
    source = path.read_text()
    return [f"line {node.lineno}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
            and isinstance(node.value, ast.Name) and node.value.id == "os"]


@pytest.mark.parametrize("module", sorted(set(MODULES) - SETTINGS_MODULES), ids=str)
def test_the_environment_is_read_in_the_settings_modules_only(module):
    found = environment_reads(MODULES[module])
    assert not found, (f"{module} reads the environment ({', '.join(found)}): declare the variable in one of "
                       f"{sorted(SETTINGS_MODULES)} and read it there")
