"""Symbol and Keyword: the two atoms of the control language that plain Python lacks.

Both are small immutable value types, interned so that equality is usually an identity test.
A Symbol never equals a str with the same text: ``read('"a"') != read('a')``.
"""

from __future__ import annotations

import sys

__all__ = ["Keyword", "Symbol"]

_INTERN_LIMIT = 65_536


class _Atom:
    """Shared machinery of Symbol and Keyword: an interned, immutable, hashable name."""

    __slots__ = ("name", "_hash")
    _interned: dict[str, _Atom]
    name: str
    _hash: int

    def __new__(cls, name: str) -> _Atom:
        atom = cls._interned.get(name)
        if atom is None:
            if not isinstance(name, str):
                raise TypeError(f"{cls.__name__} name must be str, not {type(name).__name__}")
            atom = object.__new__(cls)
            object.__setattr__(atom, "name", name)
            object.__setattr__(atom, "_hash", hash((cls.__name__, name)))
            atom._made()
            # Names arrive from the wire: intern only a bounded number so that a stream of
            # distinct names cannot grow memory without limit; equality still compares names.
            if len(cls._interned) < _INTERN_LIMIT:
                cls._interned[name] = atom
        return atom

    def _made(self) -> None:
        """Set what a kind of atom derives from its name, once, when it is made."""

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return self is other or (type(other) is type(self) and other.name == self.name)  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.name,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Symbol(_Atom):
    """A name in the language: a verb, a special form, or a variable bound by ``let``."""

    __slots__ = ()
    _interned: dict[str, _Atom] = {}

    def __str__(self) -> str:
        return self.name


class Keyword(_Atom):
    """A self-evaluating name written ``:name``; in a verb call it names the next argument."""

    __slots__ = ("argument",)
    _interned: dict[str, _Atom] = {}
    #: The Python keyword argument it names in a verb call: ``:role-since`` is ``role_since``.
    argument: str

    def _made(self) -> None:
        # Interned: Python matches a keyword argument to a parameter by identity first (the
        # parameter names are interned), and by comparing the strings only after that fails.
        object.__setattr__(self, "argument", sys.intern(self.name.replace("-", "_")))

    def __str__(self) -> str:
        return ":" + self.name
