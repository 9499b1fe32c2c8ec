"""The public API is what cellframe/__init__.py re-exports: small, sorted, importable, and lazy."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cellframe
from cellframe import errors

PACKAGE = Path(cellframe.__file__).parent
#: What `import cellframe` must not load until a name that needs it is used.
HEAVY = ("pika", "hy", "dns", "lark", "psycopg", "cellframe.store", "cellframe.cli", "cellframe.replication")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60)


def loaded_after(statement: str) -> list[str]:
    probe = run_python(f"""
        import sys
        {statement}
        print(" ".join(m for m in {HEAVY!r} if m in sys.modules))
    """)
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.split()


def test_all_is_sorted_and_every_name_in_it_exists() -> None:
    assert cellframe.__all__ == sorted(cellframe.__all__)
    for name in cellframe.__all__:
        assert getattr(cellframe, name) is not None, name


def test_the_top_level_holds_the_names_a_user_needs_and_no_internals() -> None:
    assert 20 <= len(cellframe.__all__) <= 30, cellframe.__all__
    for name in ("Cell", "transition", "on", "Node", "LocalCluster", "Client", "ShardCell", "wait_for",
                 "run_node", "read", "write", "Symbol", "Keyword", "CellframeError"):
        assert name in cellframe.__all__
    for internal in ("plan_transfer", "Reconciler", "Membership", "Evaluator"):
        assert internal not in cellframe.__all__


def test_every_error_is_in_cellframe_errors_and_derives_from_cellframe_error() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), cellframe.CellframeError)


@pytest.mark.parametrize("stub", sorted(PACKAGE.glob("**/__init__.pyi")), ids=lambda p: p.parent.name)
def test_every_name_a_package_stub_exports_resolves_to_the_object_it_names(stub: Path) -> None:
    package = ".".join(stub.parent.relative_to(PACKAGE.parent).parts)
    module = __import__(package, fromlist=["__all__"])
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    imported = {alias.asname or alias.name: node.module for node in tree.body
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert sorted(imported) == sorted(module.__all__) == module.__all__
    for name, origin in imported.items():
        source = __import__(f"{package}.{origin}", fromlist=[name])
        assert getattr(module, name) is getattr(source, name), f"{package}.{name}"


def test_import_cellframe_alone_loads_no_dependency_and_no_subpackage() -> None:
    assert loaded_after("import cellframe") == []


def test_a_cell_and_a_node_load_neither_pika_nor_hy_nor_dns_nor_the_store_nor_the_cli() -> None:
    loaded = loaded_after("from cellframe import Cell, Node, on, transition, read, write, Symbol, MemoryBroker")
    assert loaded == ["lark"]  # the language is the cell's own


def test_pika_and_dnspython_load_when_their_parts_are_used() -> None:
    loaded = loaded_after("from cellframe import AmqpTransport, ZoneFileResolver")
    assert "pika" in loaded and "dns" in loaded


def test_pgmulti_without_psycopg_names_the_extra_to_install() -> None:
    probe = run_python("""
        import sys
        sys.modules["psycopg"] = None  # as if it were not installed
        from cellframe.errors import MissingExtraError
        try:
            import cellframe.pgmulti
        except MissingExtraError as error:
            assert isinstance(error, ImportError)
            print(error)
    """)
    assert probe.returncode == 0, probe.stderr
    assert "pip install 'cellframe[postgres]'" in probe.stdout


def test_read_accepts_wire_bytes_and_write_is_its_inverse() -> None:
    value = cellframe.read(b'(set-weight "web-01" 5 :reason "load")')
    assert value == [cellframe.Symbol("set-weight"), "web-01", 5, cellframe.Keyword("reason"), "load"]
    assert cellframe.read(cellframe.write(value)) == value
