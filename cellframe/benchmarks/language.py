"""Benchmark of the control language: lark's bare parse against cellframe's read + evaluate.

The figure that matters is ``ratio``: how much of lark's raw parsing speed survives once the
text has become data and run. Each text is distinct (names, numbers and reasons vary) so no
cache can help. The reader runs lark with the lark-cython plugin when it is installed, so the
bare parse does too (``ratio``: same engine); ``ratio_vs_pure_lark`` sets the same read +
evaluate against lark's pure-Python parser.

The reader reads these messages on its quick path (``cellframe/_quick_read.py``), which is
why ``ratio`` is above 1. ``ratio_lark_only`` is read + evaluate with that path turned off,
every message through lark's parser: what the reader costs around lark itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from lark import Lark

from ..language.evaluator import Evaluator
from ..language.grammar import grammar_text
from ..language.reader import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, _parse, lark_cython, read

__all__ = ["bench_language", "distinct_texts"]

_REASONS = ("load", "drain", "canary", "maintenance", "rebalance", "hot spot")


def distinct_texts(n: int, seed: int = 2) -> list[str]:
    """``n`` distinct ``(set-weight "web-01" 5 :reason "load")`` messages."""
    rng = random.Random(seed)
    return [
        f'(set-weight "web-{i:05d}" {rng.randrange(1_000_000)} '
        f':reason "{rng.choice(_REASONS)} {i}")'
        for i in range(n)
    ]


def _seconds(run: Callable[[str], Any], texts: Sequence[str]) -> float:
    """CPU seconds to run ``run`` over every text (CPU time: the machine is shared)."""
    started = time.process_time()
    for text in texts:
        run(text)
    return time.process_time() - started


def bench_language(n: int = 20000, rounds: int = 5) -> dict[str, Any]:
    """Parses per second of bare lark and of read + evaluate, best of ``rounds`` interleaved."""
    texts = distinct_texts(n)
    pure = Lark(grammar_text(), parser="lalr")
    bare = Lark(grammar_text(), parser="lalr", _plugins=lark_cython.plugins) if lark_cython else pure
    evaluator = Evaluator()
    applied: list[int] = []

    def set_weight(name: str, weight: int, *, reason: str | None = None) -> int:
        applied.append(weight)
        return weight

    verbs = {"set-weight": set_weight}

    def read_eval(text: str) -> Any:
        return evaluator.evaluate(read(text), verbs)

    def read_eval_lark_only(text: str) -> Any:
        expr = _parse(text, "start", DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, quick=False)
        return evaluator.evaluate(expr, verbs)

    bare_best = pure_best = ours_best = lark_only_best = float("inf")
    for _ in range(rounds):  # interleaved, best of: other work on the machine only adds time
        bare_best = min(bare_best, _seconds(bare.parse, texts))
        pure_best = min(pure_best, _seconds(pure.parse, texts)) if bare is not pure else bare_best
        ours_best = min(ours_best, _seconds(read_eval, texts))
        lark_only_best = min(lark_only_best, _seconds(read_eval_lark_only, texts))
    if len(applied) != 2 * n * rounds:
        raise RuntimeError("a message did not reach the verb: the benchmark measured nothing")
    lark_rate, pure_rate, ours_rate = n / bare_best, n / pure_best, n / ours_best
    lark_only_rate = n / lark_only_best
    return {
        "n": n,
        "engine": "lark-cython" if bare is not pure else "lark",
        "lark_parse_per_s": round(lark_rate, 1),
        "pure_lark_parse_per_s": round(pure_rate, 1),
        "read_eval_per_s": round(ours_rate, 1),
        "ratio": round(ours_rate / lark_rate, 3),
        "ratio_vs_pure_lark": round(ours_rate / pure_rate, 3),
        "read_eval_lark_only_per_s": round(lark_only_rate, 1),
        "ratio_lark_only": round(lark_only_rate / lark_rate, 3),
    }


if __name__ == "__main__":  # pragma: no cover
    print(bench_language())
