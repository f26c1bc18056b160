"""The house rules on layering, checked on the source.

The import-linter contracts in pyproject.toml state the layers (nothing imports
upwards: nothing imports cli/, only cli/ imports fake/, kernel/ imports nothing
above it, policy/ does no I/O, probe/ is alone); `make lint` runs them and so
does the first test here. The other tests check what import-linter cannot say:
the policy core uses pure standard-library modules only, light modules stay
light."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "memguard"
PURE_ALLOWED = {
    "__future__",
    "dataclasses",
    "enum",
    "functools",
    "fractions",
    "math",
    "collections",
    "typing",
    "re",
    "decimal",
}


PURE_MEMGUARD = {"memguard.kernel.names", "memguard.units"}  # constants; parsing and formatting


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_import_linter_contracts_hold() -> None:
    lint_imports = pathlib.Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("path", sorted((PACKAGE / "policy").glob("*.py")), ids=lambda p: p.name)
def test_the_policy_core_imports_nothing_with_io(path: pathlib.Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        pure = name.startswith("memguard.policy") or name in PURE_MEMGUARD
        assert top in PURE_ALLOWED or pure, f"{path.name}: {name}"


@pytest.mark.parametrize(
    "module", ["cli/main.py", "cli/options.py", "units.py", "errors.py", "policy/paths.py"]
)
def test_light_modules_do_not_import_trio(module: str) -> None:
    imports = _imports(PACKAGE / module)
    assert not any(name.split(".")[0] == "trio" for name in imports), imports
