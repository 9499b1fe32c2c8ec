"""The package's layout is its architecture: folders stand on floors, and nothing imports upward.

The floors are the table in docs/architecture.md's module map, so the page and the code cannot
drift apart: a folder may import only folders on lower floors (and its own modules), whether the
import is at the top of a module or inside a function, and no module takes part in a circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cellframe

PACKAGE = Path(cellframe.__file__).parent
DOCS = PACKAGE.parent / "docs" / "architecture.md"


def floors() -> dict[str, int]:
    """``{"language": 1, "client": 6, ...}`` from the module map's rows: `| N | `unit/` | ...`."""
    table = DOCS.read_text(encoding="utf-8").split("## Module map", 1)[1]
    found = {}
    for floor, unit in re.findall(r"^\| (\d+) \| `([\w./]+?)/?` \|", table, re.M):
        found[unit.removesuffix(".py")] = int(floor)
    return found


def unit_of(module: str) -> str:
    """The floor unit of ``cellframe.a.b``: its folder ``a``, or ``a`` itself for a top module."""
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    """Every cellframe module ``path`` imports, at the top or inside a function."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.update(f"{name}.{alias.name}" if not node.module else name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("cellframe.") and name.count(".") >= 1}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def test_every_folder_and_top_module_has_a_floor() -> None:
    units = {unit_of(name) for name in modules() if name.count(".") >= 1}
    missing = sorted(units - set(floors()) - {"__main__"})
    assert missing == [], "docs/architecture.md's module map gives these no floor"


def test_no_folder_imports_a_folder_on_its_own_floor_or_above() -> None:
    floor = floors()
    upward = []
    for name, path in sorted(modules().items()):
        if name.count(".") < 1 or unit_of(name) == "__main__":
            continue
        here = unit_of(name)
        for target in sorted(imports_of(path)):
            there = unit_of(target)
            if there != here and floor[there] >= floor[here]:
                upward.append(f"{name} ({floor[here]}) -> {target} ({floor[there]})")
    assert upward == []


def test_no_library_module_imports_the_cli() -> None:
    offenders = [name for name, path in modules().items()
                 if "." in name and unit_of(name) not in ("cli", "__main__")
                 and any(unit_of(target) == "cli" for target in imports_of(path))]
    assert offenders == []


def test_no_module_takes_part_in_an_import_circle() -> None:
    graph = {name: {target for target in imports_of(path) if target in modules()}
             for name, path in modules().items()}
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for target in graph[node] - {node}:
                if target == start:
                    circles.append(" -> ".join([*trail, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*trail, target]))
    assert circles == []
