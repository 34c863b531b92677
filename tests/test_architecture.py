"""The dependency rules of ARCHITECTURE.md, read from the source (every import, also inside functions)."""

from __future__ import annotations

import ast

from .conftest import ROOT

PROJECT = {"edge", "calibrate", "export", "patchcore_edge", "tests", "benchmarks"}
ALLOWED = {  # package -> the project packages it may import (itself always)
    "edge": set(),
    "calibrate": {"edge"},
    "export": {"edge"},
    "patchcore_edge": {"edge", "calibrate", "export"},
}


def _imports(path):
    """(top-level project package, imported names) for each import in one file."""
    package = path.relative_to(ROOT).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], []
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the file's own package
                base = package[:len(package) - node.level + 1]
                top = (base or (node.module or "").split("."))[0]
            else:
                top = node.module.split(".")[0]
            yield top, [a.name for a in node.names]


def test_each_package_imports_only_what_it_may():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for top, _ in _imports(path):
                if top in PROJECT and top != package and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {top}")
    assert not wrong, "\n".join(wrong)


def test_the_rule_sees_relative_and_function_level_imports():
    # the checker itself: a lazy `import calibrate` inside a function and `from .. import x` are found
    f = ROOT / "edge" / "backends" / "__init__.py"
    tops = {top for top, _ in _imports(f)}
    assert "edge" in tops  # `from ..errors import ...` resolves to edge
    lazy = ROOT / "patchcore_edge" / "main.py"
    assert {"calibrate", "export"} <= {top for top, _ in _imports(lazy)}  # imported inside build_parser()


def test_benchmarks_import_no_tests_and_no_private_names():
    wrong = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for top, names in _imports(path):
            if top == "tests":
                wrong.append(f"{path.relative_to(ROOT)} imports from tests/")
            if top in PROJECT:
                wrong += [f"{path.relative_to(ROOT)} imports the private {top}...{n}" for n in names if n.startswith("_")]
    assert not wrong, "\n".join(wrong)
