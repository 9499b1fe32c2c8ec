"""Running docs/dns.md: its fenced blocks, and its ``pycon`` examples as doctests.

A block marked ``<!-- needs: bind_server -->`` runs against the real BIND 9 of the plugin's
``bind_server`` fixture (tests/test_registration.py); the others run offline
(tests/test_resolvers.py). tests/test_docs.py checks that every block of the page is one
found here.
"""

from __future__ import annotations

import doctest
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["DOCS", "ROOT", "ZONE_FILE", "DocBlock", "doc_blocks", "run_doc_block"]

ROOT = Path(__file__).resolve().parent.parent
ZONE_FILE = ROOT / "examples" / "cluster.zone"
DOCS = ROOT / "docs" / "dns.md"


@dataclass(frozen=True)
class DocBlock:
    """One fenced code block of a Markdown page: its language, text, first line, and needs."""

    language: str
    text: str
    line: int
    needs: str | None


_FENCE = re.compile(
    r"(?:<!-- needs: (?P<needs>[\w-]+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.S | re.M,
)


def doc_blocks(path: Path = DOCS) -> list[DocBlock]:
    """Every fenced block of ``path``; ``<!-- needs: X -->`` just above one marks what it needs."""
    text = path.read_text()
    return [
        DocBlock(m["lang"], m["body"], text.count("\n", 0, m.start("body")) + 1, m["needs"])
        for m in _FENCE.finditer(text)
    ]


def run_doc_block(block: DocBlock, globs: dict[str, object], path: Path = DOCS) -> None:
    """Run one ``pycon`` block as a doctest (ELLIPSIS on) and fail the test on any mismatch.

    ``globs`` is shared: names a block defines are seen by the blocks after it.
    """
    test = doctest.DocTestParser().get_doctest(
        block.text, globs, f"{path.name}:{block.line}", str(path), block.line - 1
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    globs.update(test.globs)  # DocTest works on a copy: carry names on to the next block
    if runner.failures:
        pytest.fail("".join(report), pytrace=False)
