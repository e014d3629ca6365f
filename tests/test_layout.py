"""The layers the package's folders show: imports point down only (tools → sagemaker → core), training and
serving do not import each other, and nothing heavy is imported where the server must bind its port fast."""
import ast
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
