"""A Cell class's state machine is checked when the class is defined."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe import Cell
from cellframe.cell.statemachine import Arity, on, transition
from cellframe.errors import StateMachineError


def test_unreachable_state_is_an_error_at_class_definition() -> None:
    with pytest.raises(StateMachineError, match="cannot be reached"):

        class Island(Cell):
            states = ("a", "b", "island")
            initial = "a"
            transitions = [on("go", source="a", target="b")]


def test_transition_to_undeclared_state_is_an_error_at_class_definition() -> None:
    with pytest.raises(StateMachineError, match="undeclared state 'nowhere'"):

        class Lost(Cell):
            states = ("a",)
            initial = "a"

            @transition("go", source="a", target="nowhere")
            def go(self) -> None:
                pass


def test_transition_from_undeclared_state_is_an_error() -> None:
    with pytest.raises(StateMachineError, match="starts from undeclared"):

        class Ghost(Cell):
            states = ("a",)
            initial = "a"
            transitions = [on("go", source="phantom", target="a")]


def test_initial_state_must_be_declared() -> None:
    with pytest.raises(StateMachineError, match="initial state"):

        class NoStart(Cell):
            states = ("a",)
            initial = "b"


def test_wildcard_source_makes_every_target_reachable_from_any_state() -> None:
    class Anywhere(Cell):
        states = ("a", "b", "c")
        initial = "a"
        transitions = [on("to-b", target="b"), on("to-c", source="b", target="c")]

    assert Anywhere.cell_verbs() == {"to-b", "to-c"}


def test_decorated_method_verb_defaults_to_dashed_method_name() -> None:
    class Named(Cell):
        @transition()
        def set_weight(self, weight: int) -> None:
            pass

    assert "set-weight" in Named.cell_verbs()


def test_undecorated_override_keeps_the_inherited_transition_and_runs_the_override() -> None:
    class Base(Cell):
        @transition("hello")
        def hello(self) -> str:
            return "base"

    class Child(Base):
        def hello(self) -> str:
            return "child"

    (inherited,) = Child.cell_machine.by_verb["hello"]
    assert inherited.action is Child.hello
    assert Base.cell_machine.by_verb["hello"][0].action is Base.hello


def test_redecorated_override_replaces_the_inherited_transition() -> None:
    class Base(Cell):
        states = ("a", "b")
        initial = "a"

        @transition("go", target="b")
        def go(self) -> None:
            pass

    class Child(Base):
        @transition("leave", target="b")
        def go(self) -> None:
            pass

    assert Child.cell_verbs() == {"leave"}


def test_arity_of_an_action_is_checked_without_calling_it() -> None:
    def action(self, a, b=1, *, reason=None):  # noqa: ANN001, ANN202
        pass

    arity = Arity.of(action)
    arity.check("v", (1,), {})
    arity.check("v", (1, 2), {"reason": "x"})
    with pytest.raises(TypeError, match="at most 2"):
        arity.check("v", (1, 2, 3), {})
    with pytest.raises(TypeError, match="needs 1"):
        arity.check("v", (), {})
    with pytest.raises(TypeError, match=":colour"):
        arity.check("v", (1,), {"colour": "red"})


def _signatures() -> list[Any]:
    def a(self, n): ...  # noqa: ANN001, ANN202
    def b(self, n, m=2, *, weight=1): ...  # noqa: ANN001, ANN202
    def c(self, n, /, m, *, k): ...  # noqa: ANN001, ANN202
    def d(self, n=0, *args, by=None, **extra): ...  # noqa: ANN001, ANN002, ANN003, ANN202
    def e(self, node, role=None, incarnation=0, **extra): ...  # noqa: ANN001, ANN003, ANN202
    return [a, b, c, d, e]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_signatures()), st.integers(0, 4),
       st.lists(st.sampled_from(["n", "m", "k", "weight", "by", "node", "role", "other"]),
                max_size=4, unique=True))
def test_an_arity_accepts_exactly_the_calls_python_would_bind(
        function: Any, count: int, names: list[str]) -> None:
    """What the check passes, the action's call binds: so a call that Python would refuse is
    the sender's bad input (refused), never an action's failure (logged as a bug)."""
    args, kwargs = tuple(range(count)), dict.fromkeys(names, 0)
    try:
        inspect.signature(function).bind(None, *args, **kwargs)
        binds = True
    except TypeError:
        binds = False
    try:
        Arity.of(function).check("v", args, kwargs)
        passes = True
    except TypeError:
        passes = False
    assert passes == binds


@pytest.mark.parametrize("name", ["if", "count"])
def test_a_verb_may_not_take_the_name_of_a_special_form_or_built_in(name: str) -> None:
    with pytest.raises(StateMachineError, match="special form or built-in"):

        class Sneaky(Cell):
            transitions = [on(name)]
