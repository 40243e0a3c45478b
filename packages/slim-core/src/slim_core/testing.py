"""Helpers for slim's own test suites (and for packages built on slim).

Example:
    >>> undeclared_sibling_imports("packages/slim-prune")  # doctest: +SKIP
    []
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib

__all__ = ["undeclared_sibling_imports", "declared_siblings"]

_SIBLING = re.compile(r"^slim_(core|analysis|prune|quant|distill|nas|deploy|auto)$")


def declared_siblings(package_dir: str | Path) -> set[str]:
    """Import names of the slim siblings a package declares in its pyproject.toml."""
    data = tomllib.loads((Path(package_dir) / "pyproject.toml").read_text())
    deps = data["project"].get("dependencies", [])
    names = {re.split(r"[\[=<>!~ ;]", d, maxsplit=1)[0] for d in deps}
    return {n.replace("-", "_") for n in names if n.startswith("slim-")}


def undeclared_sibling_imports(package_dir: str | Path) -> list[str]:
    """``file:line module`` for every import of a slim sibling the package does not declare."""
    root = Path(package_dir)
    own = root.name.replace("-", "_")
    allowed = declared_siblings(root) | {own}
    bad = []
    for path in sorted((root / "src").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            for mod in mods:
                top = mod.split(".")[0]
                if _SIBLING.match(top) and top not in allowed:
                    bad.append(f"{path.relative_to(root)}:{node.lineno} {mod}")
    return bad
