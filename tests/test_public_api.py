"""The public API is what cellframe/__init__.py re-exports: sorted, complete, importable."""

from __future__ import annotations

import cellframe
from cellframe import errors


def test_all_is_sorted_and_every_name_in_it_exists() -> None:
    assert cellframe.__all__ == sorted(cellframe.__all__)
    for name in cellframe.__all__:
        assert hasattr(cellframe, name), name


def test_the_stable_names_tools_script_against_are_public() -> None:
    for name in ("Cell", "read", "write", "Symbol", "Keyword", "CellframeError"):
        assert name in cellframe.__all__


def test_every_error_is_public_and_derives_from_cellframe_error() -> None:
    for name in errors.__all__:
        assert name in cellframe.__all__
        assert issubclass(getattr(errors, name), cellframe.CellframeError)


def test_read_accepts_wire_bytes_and_write_is_its_inverse() -> None:
    value = cellframe.read(b'(set-weight "web-01" 5 :reason "load")')
    assert value == [cellframe.Symbol("set-weight"), "web-01", 5, cellframe.Keyword("reason"), "load"]
    assert cellframe.read(cellframe.write(value)) == value
