"""The house rules on layering, checked on the source (like import-linter)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "memguard"
PURE_ALLOWED = {
    "__future__",
    "dataclasses",
    "enum",
    "fractions",
    "math",
    "collections",
    "typing",
    "re",
}


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "policy").glob("*.py")), ids=lambda p: p.name)
def test_the_policy_core_imports_nothing_with_io(path: pathlib.Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        pure = name.startswith("memguard.policy") or name == "memguard.kernel.names"
        assert top in PURE_ALLOWED or pure, f"{path.name}: {name}"


@pytest.mark.parametrize(
    "module", ["cli/main.py", "cli/options.py", "units.py", "errors.py", "policy/paths.py"]
)
def test_light_modules_do_not_import_trio(module: str) -> None:
    imports = _imports(PACKAGE / module)
    assert not any(name.split(".")[0] == "trio" for name in imports), imports
