"""The ``(node-status ...)`` reply has one shape, and one function reads it back: mappings and
sequences are told apart by how they are written, never guessed from what they hold."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import LanguageError
from cellframe.healing.membership import HealingConfig, Membership
from cellframe.language.printer import write
from cellframe.language.reader import read
from cellframe.node.node import Node
from cellframe.node.status import decode_status, status_reply
from cellframe.roles.registry import RoleRegistry
from cellframe.roles.web import WebCell
from cellframe.transports.memory import MemoryTransport


def over_the_wire(status: dict[str, Any]) -> dict[str, Any]:
    """What a client decodes from a node's reply: written, read back, decoded."""
    return decode_status(read(write(status_reply(status))))


def as_data(value: Any) -> Any:
    """``value`` with tuples as lists, as the language holds them."""
    if isinstance(value, dict):
        return {k: as_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_data(v) for v in value]
    return value


def test_a_running_nodes_status_reads_back_as_it_was() -> None:
    membership = Membership.configured(HealingConfig(heartbeat_interval=0.05))
    with MemoryTransport() as transport, Node(
            "web-01", transport=transport, role="web", system_cells=(membership,),
            registry=RoleRegistry({"web": [WebCell]})) as node:
        status = node.status()
        cells = {c["name"]: c for c in status["cells"]}
        assert isinstance(cells["web-01-membership"]["members"], list)
        assert isinstance(cells["web-01-membership"]["healing"], dict)
        assert over_the_wire(status) == as_data(status)


def test_an_empty_mapping_and_an_empty_sequence_stay_what_they_were() -> None:
    status = {"node": "n", "counters": {}, "cells": [
        {"name": "c", "state": "s", "counters": {}, "stats": {}, "peers": [],
         "rows": [[], {}], "flags": [{"a": 1}]}]}
    assert over_the_wire(status) == status


def test_the_reply_is_one_s_expression_with_keys_as_they_are_and_lists_quoted() -> None:
    status = {"node": "n", "counters": {"dead_lettered": 0}, "cells": []}
    assert write(status_reply(status)) == "(node-status :node \"n\" :counters (:dead_lettered 0) :cells '())"


_keys = st.text(alphabet="abz_-09", min_size=1, max_size=6).filter(lambda k: not k[0].isdigit())
_atoms = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=10)
_values = st.recursive(_atoms, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_keys, inner, max_size=4), max_leaves=20)


@settings(deadline=None, max_examples=150)
@given(st.dictionaries(_keys, _values, max_size=5), st.lists(st.dictionaries(_keys, _values, max_size=4),
                                                             max_size=3))
def test_any_status_of_mappings_sequences_and_atoms_reads_back_equal(extra, cells) -> None:
    status = {**extra, "node": "n", "counters": {"sent": 1},
              "cells": [{**cell, "name": "c", "state": "s", "counters": {}} for cell in cells]}
    assert over_the_wire(status) == status


@pytest.mark.parametrize(("text", "problem"), [
    ("(pong)", "not a (node-status"),
    ("(node-status :node)", "pairs"),
    ('(node-status "node" "n")', "must be a keyword"),
    ("(node-status :counters () :cells '())", ":node must be a str"),
    ('(node-status :node "n" :counters () :cells ())', ":cells must be a list"),
    ('(node-status :node "n" :counters () :cells \'(5))', "cells[0]: a cell's snapshot"),
    ('(node-status :node "n" :counters () :cells \'((:name "c" :counters ())))',
     "cells[0]: :state must be a str"),
])
def test_a_reply_of_another_shape_is_refused_saying_where(text: str, problem: str) -> None:
    with pytest.raises(LanguageError, match=problem.replace("(", r"\(").replace("[", r"\[")):
        decode_status(read(text))
