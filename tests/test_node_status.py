"""The ``(node-status ...)`` reply has one shape, and one function reads it back: mappings and
sequences are told apart by how they are written, never guessed from what they hold."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.cell.cell import Cell
from cellframe.cell.statemachine import transition
from cellframe.errors import LanguageError
from cellframe.healing.membership import HealingConfig, Membership
from cellframe.language.printer import write
from cellframe.language.reader import read
from cellframe.node.node import Node
from cellframe.node.status import decode_status, status_reply
from cellframe.roles.registry import RoleRegistry
from cellframe.roles.web import WebCell
from cellframe.testing import wait_for
from cellframe.transports.memory import MemoryTransport
from tests.node_support import Wire, replies_matching


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


def test_a_status_holding_what_the_language_cannot_write_says_what_it_was() -> None:
    status = {"node": "n", "counters": {}, "cells": [
        {"name": "c", "state": "s", "counters": {}, "total": 10**4300, "rate": float("inf"),
         "seen": {1, 2}, "data dir": 1, "": 2, 7: 3, "fine": [1.5, "x", -2**70]}]}
    cell = over_the_wire(status)["cells"][0]
    assert cell["total"] == "unwritable: integer of 14285 bits is too long to write"
    assert cell["rate"].startswith("unwritable: float inf cannot be written")
    assert cell["seen"].startswith("unwritable: cannot write a set")
    assert (cell["data_dir"], cell["_"], cell["7"], cell["fine"]) == (1, 2, 3, [1.5, "x", -2**70])


class Hoard(Cell):
    """Adds what it is sent, and shows the sum in its snapshot."""

    states = ("counting",)
    initial = "counting"
    role = "hoard"
    total: Any = 0

    @transition("add")
    def add(self, n: Any) -> None:
        self.total += n

    def cell_snapshot(self) -> dict[str, Any]:
        return {**super().cell_snapshot(), "total": self.total}


class BrokenSnapshot(Cell):
    """A cell whose snapshot is a bug."""

    states = ("idle",)
    initial = "idle"
    role = "hoard"

    def cell_snapshot(self) -> dict[str, Any]:
        raise KeyError("the bug")


def test_a_node_answers_status_whatever_its_cells_hold_or_their_snapshots_raise() -> None:
    """Two messages within every limit, (add 99...9) with 4,300 nines, made a sum the printer
    cannot write; the node's status was unsendable from then on, and it looked silent."""
    wire = Wire.in_process()
    try:
        node = wire.node("n-01", role="hoard", registry=RoleRegistry({"hoard": [Hoard, BrokenSnapshot]}))
        client = wire.client()
        for _ in range(2):
            client.send("node.n-01", "(add " + "9" * 4300 + ")")
        hoard = node.cells()["n-01-hoard"]
        wait_for(lambda: hoard.total > 10**4300, 20, what="both adds applied",  # another cell
                 show=lambda: hoard.total.bit_length())  # answers (status): no order between them
        client.send("node.n-01", "(status)")
        cells = {c["class"]: c for c in decode_status(replies_matching(client, "node-status", 1)[0])["cells"]}
        assert cells["Hoard"]["total"] == "unwritable: integer of 14286 bits is too long to write"
        broken = cells["BrokenSnapshot"]
        assert (broken["state"], broken["snapshot_error"]) == ("idle", "KeyError: 'the bug'")
    finally:
        wire.close()
