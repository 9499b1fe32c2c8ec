"""The example zone file shipped with cellframe: the embedded default a demo or a REPL reads
when no zone and no DNS server is given."""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundled_zone"]

#: Where the zone lies in a source tree (the wheel carries a copy inside the package).
_SOURCE_TREE_ZONE = Path(__file__).resolve().parents[2] / "examples" / "cluster.zone"


def bundled_zone() -> Path:
    """The zone file shipped with cellframe (inside the wheel, or in the source tree)."""
    from importlib.resources import files

    packaged = files("cellframe") / "examples" / "cluster.zone"
    if packaged.is_file():
        return Path(str(packaged))
    return _SOURCE_TREE_ZONE
