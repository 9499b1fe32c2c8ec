"""Declarative state machines: states, an initial state, and transitions keyed by verb.

A Cell class declares its machine with class attributes and decorated methods::

    class Door(Cell):
        states = ("closed", "open")
        initial = "closed"

        @transition("open", source="closed", target="open")
        def on_open(self, by: str = "someone") -> None:
            self.opened_by = by

        transitions = [on("close", source="open", target="closed")]

``compile_machine`` checks the declaration when the class is defined: every state named by a
transition must be declared, and every declared state must be reachable from the initial one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ArityError, StateMachineError
from ..language.evaluator import BUILTIN_NAMES, SPECIAL_FORM_NAMES

__all__ = ["ANY", "Arity", "Machine", "Transition", "compile_machine", "on", "transition"]

#: Source wildcard: the transition applies from every state.
ANY = "*"

_TRANSITIONS_ATTR = "_cellframe_transitions"


@dataclass(frozen=True, slots=True)
class Arity:
    """What arguments an action accepts, precomputed so the hot path avoids ``inspect``."""

    required: int
    positional: int | None  # None: *args accepted
    keywords: frozenset[str] | None  # None: **kwargs accepted
    required_keywords: frozenset[str]
    #: The positional parameters' names in order (None for one that takes no keyword):
    #: a keyword may fill a positional slot that the call's positionals left open.
    names: tuple[str | None, ...] = ()

    def fits_positional(self, count: int) -> bool:
        """The hot-path test: ``count`` positional arguments and no keywords are fine."""
        return (
            self.required <= count
            and (self.positional is None or count <= self.positional)
            and not self.required_keywords
        )

    @classmethod
    def of(cls, function: Callable[..., Any] | None, *, skip_self: bool = True) -> Arity:
        if function is None:
            return cls(0, 0, frozenset(), frozenset())
        params = list(inspect.signature(function).parameters.values())
        if skip_self and params:
            params = params[1:]
        kinds = inspect.Parameter
        positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
        keywords = [p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)]
        empty = kinds.empty
        return cls(
            required=sum(1 for p in positional if p.default is empty),
            positional=None if any(p.kind is kinds.VAR_POSITIONAL for p in params) else len(positional),
            keywords=None if any(p.kind is kinds.VAR_KEYWORD for p in params) else frozenset(keywords),
            required_keywords=frozenset(
                p.name for p in params if p.kind is kinds.KEYWORD_ONLY and p.default is empty
            ),
            names=tuple(None if p.kind is kinds.POSITIONAL_ONLY else p.name for p in positional),
        )

    def check(self, verb: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ArityError, naming the verb, unless ``args``/``kwargs`` fit: the call would
        then bind, so what the action raises is the action's own failure, never the call's."""
        count = len(args)
        if self.positional is not None and count > self.positional:
            raise ArityError(f"{verb} takes at most {self.positional} arguments, got {count}")
        if not kwargs:
            if count < self.required or self.required_keywords:
                raise ArityError(f"{verb} needs {self.required} arguments, got {count}")
            return
        if self.keywords is not None:
            unknown = [k for k in kwargs if k not in self.keywords]
            if unknown:
                names = ", ".join(":" + k.replace("_", "-") for k in unknown)
                raise ArityError(f"{verb} has no keyword argument {names}")
        for name in self.names[:count]:
            if name in kwargs:
                raise ArityError(f"{verb} is given its argument {name.replace('_', '-')} "
                                 f"twice: by position and as :{name.replace('_', '-')}")
        filled = count
        for name in self.names[count:self.required]:  # a loop: a generator cost more here
            if name in kwargs:
                filled += 1
        if filled < self.required or not self.required_keywords <= kwargs.keys():
            raise ArityError(f"{verb} needs {self.required} arguments, got {filled}")


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge of a machine: ``verb`` moves the cell from ``sources`` to ``target``.

    ``target`` None means "stay in the current state". ``guard`` (a method or its name) may
    refuse the transition; ``action`` (a method) does the work and may call back or send.
    """

    verb: str
    sources: frozenset[str]  # {ANY} for every state
    target: str | None = None
    guard: Callable[..., bool] | str | None = None
    action: Callable[..., Any] | None = None
    arity: Arity = Arity(0, 0, frozenset(), frozenset())

    def applies_from(self, state: str) -> bool:
        return ANY in self.sources or state in self.sources


def _sources(source: str | Iterable[str]) -> frozenset[str]:
    return frozenset([source]) if isinstance(source, str) else frozenset(source)


def on(
    verb: str,
    *,
    source: str | Iterable[str] = ANY,
    target: str | None = None,
    guard: Callable[..., bool] | str | None = None,
) -> Transition:
    """A transition with no action, for a class's ``transitions`` list."""
    return Transition(verb, _sources(source), target, guard)


def transition(
    verb: str | None = None,
    *,
    source: str | Iterable[str] = ANY,
    target: str | None = None,
    guard: Callable[..., bool] | str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Cell method as the action of a transition (stackable).

    ``verb`` defaults to the method name with ``_`` written as ``-``.
    """

    def decorate(action: Callable[..., Any]) -> Callable[..., Any]:
        name = verb or action.__name__.replace("_", "-")
        declared = Transition(name, _sources(source), target, guard, action, Arity.of(action))
        existing = getattr(action, _TRANSITIONS_ATTR, ())
        setattr(action, _TRANSITIONS_ATTR, (*existing, declared))
        return action

    return decorate


@dataclass(frozen=True, slots=True)
class Machine:
    """A compiled, validated machine: transitions grouped by verb, in declaration order."""

    states: frozenset[str]
    initial: str
    by_verb: dict[str, tuple[Transition, ...]]

    @property
    def verbs(self) -> frozenset[str]:
        return frozenset(self.by_verb)


def compile_machine(cls: type) -> Machine:
    """Collect and validate the machine a class declares; raise StateMachineError if it is
    impossible (unknown initial state, undeclared source or target, unreachable state)."""
    states = frozenset(getattr(cls, "states", ()) or ())
    initial = getattr(cls, "initial", None)
    declared = list(getattr(cls, "transitions", ()) or ())
    declared.extend(_decorated_transitions(cls))
    name = cls.__qualname__
    if initial is None or initial not in states:
        raise StateMachineError(f"{name}: initial state {initial!r} is not one of {sorted(states)}")
    by_verb: dict[str, list[Transition]] = {}
    for t in declared:
        if not isinstance(t, Transition):
            raise StateMachineError(f"{name}: transitions must be made with on(), got {t!r}")
        _check_states(name, t, states)
        if t.verb in SPECIAL_FORM_NAMES or t.verb in BUILTIN_NAMES:
            raise StateMachineError(
                f"{name}: {t.verb!r} is a special form or built-in of the language, not a verb name"
            )
        by_verb.setdefault(t.verb, []).append(t)
    _check_reachable(name, states, initial, declared)
    return Machine(states, initial, {verb: tuple(ts) for verb, ts in by_verb.items()})


def _decorated_transitions(cls: type) -> list[Transition]:
    """Transitions from decorated methods anywhere in the MRO. A subclass that re-decorates a
    method replaces its transitions; one that overrides it undecorated keeps the inherited
    transitions, which then call the override."""
    by_method: dict[str, tuple[Transition, ...]] = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            marked = getattr(member, _TRANSITIONS_ATTR, None)
            if marked:
                by_method[name] = marked
    result: list[Transition] = []
    for name, marked in by_method.items():
        action = inspect.getattr_static(cls, name)
        result.extend(replace(t, action=action) for t in marked)
    return result


def _check_states(name: str, t: Transition, states: frozenset[str]) -> None:
    unknown = sorted((t.sources - {ANY}) - states)
    if unknown:
        raise StateMachineError(f"{name}: transition {t.verb!r} starts from undeclared {unknown}")
    if t.target is not None and t.target not in states:
        raise StateMachineError(
            f"{name}: transition {t.verb!r} leads to undeclared state {t.target!r}"
        )


def _check_reachable(name: str, states: frozenset[str], initial: str, declared: list[Transition]) -> None:
    reached = {initial}
    frontier = [initial]
    while frontier:
        state = frontier.pop()
        for t in declared:
            if t.target is not None and t.target not in reached and t.applies_from(state):
                reached.add(t.target)
                frontier.append(t.target)
    unreachable = sorted(states - reached)
    if unreachable:
        raise StateMachineError(f"{name}: states {unreachable} cannot be reached from {initial!r}")
