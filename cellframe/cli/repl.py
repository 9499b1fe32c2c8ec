"""The operator's REPL: type a target and an s-expression; call-backs print as they arrive.

Syntax of a line::

    [TARGET] EXPRESSION        send EXPRESSION to TARGET (default: the last target, first "all")
    ,target TARGET             change the default target
    ,hy  /  ,lisp              read expressions as Hy / as cellframe's own syntax (the default)
    ,status                    ask every node for its status and print the table
    ,help  /  ,quit

TARGET is ``all``, ``node:NAME``, ``role:NAME``, ``each:NAME`` or ``cell:NAME``. An
expression may span lines: Enter inserts a newline until the parentheses balance. Nothing
waits for an answer: call-backs are printed above the prompt whenever they come.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.patch_stdout import patch_stdout

from ..client import Client, Reply
from ..errors import CellframeError, LanguageError
from ..language.evaluator import BUILTIN_NAMES, SPECIAL_FORM_NAMES
from ..language.hylang import read_hy
from ..language.reader import read
from ..language.symbols import Symbol
from ..wire.routing import parse_target

__all__ = ["Repl", "ReplState", "balanced", "parse_line"]

DEFAULT_HISTORY = Path.home() / ".cellframe_history"
_TARGET = re.compile(r"\s*(all|(?:node|role|each|cell):[A-Za-z0-9_-]+)\b\s*(.*)\Z", re.S)


def balanced(text: str) -> bool:
    """True when every ``(`` outside strings and comments is closed (or over-closed, which
    the reader then reports with its position)."""
    depth, in_string, escaped, in_comment = 0, False, False, False
    for char in text:
        if in_comment:
            in_comment = char != "\n"
        elif in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == ";":
            in_comment = True
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
    return depth <= 0 and not in_string


def parse_line(line: str, default_target: str) -> tuple[str, str]:
    """Split an input into (target, expression text); the target may be omitted."""
    match = _TARGET.match(line)
    if match:
        return match.group(1), match.group(2).strip()
    return default_target, line.strip()


@dataclass
class ReplState:
    """What the REPL knows: the default target, the syntax, and the cluster's names."""

    target: str = "all"
    syntax: str = "lisp"
    nodes: set[str] = field(default_factory=set)
    roles: set[str] = field(default_factory=set)
    cells: set[str] = field(default_factory=set)
    verbs: set[str] = field(default_factory=set)

    def learn(self, status: dict[str, Any]) -> None:
        """Remember names from a node's status call-back, for completion."""
        self.nodes.add(status["node"])
        if status.get("role"):
            self.roles.add(status["role"])
        for cell in status.get("cells", []):
            self.cells.add(cell["name"])
            self.verbs.update(cell.get("verbs") or [])


#: How many sent messages the REPL remembers, to number the call-backs that answer them.
_KEEP_SENT = 10_000

class _Completer(Completer):
    def __init__(self, state: ReplState):
        self.state = state

    def get_completions(self, document: Document, complete_event: Any) -> Iterable[Completion]:
        word = document.get_word_before_cursor(pattern=re.compile(r"[^\s()\"']+"))
        if ":" in word and not word.startswith(":"):
            kind, _, prefix = word.partition(":")
            names = {"node": self.state.nodes, "role": self.state.roles,
                     "each": self.state.roles, "cell": self.state.cells}.get(kind, set())
            candidates = [f"{kind}:{n}" for n in sorted(names)]
        else:
            candidates = sorted({*self.state.verbs, *SPECIAL_FORM_NAMES, *BUILTIN_NAMES, "all",
                                 "node:", "role:", "each:", "cell:"})
        for candidate in candidates:
            if candidate.startswith(word):
                yield Completion(candidate, start_position=-len(word))


class Repl:
    """An interactive session bound to a Client; ``run()`` until ``,quit`` or end of input."""

    def __init__(self, client: Client, *, history: History | None = None,
                 print_fn: Callable[[str], None] = print, state: ReplState | None = None):
        self.client = client
        self.state = state or ReplState()
        self.print = print_fn
        self.history = history if history is not None else InMemoryHistory()
        self._lock = threading.Lock()
        #: The number of each message sent, by id, so a call-back names the line it answers
        #: (its correlation id); the newest ``_KEEP_SENT`` are remembered.
        self._sent: dict[str, int] = {}
        self._count = 0

    @classmethod
    def with_file_history(cls, client: Client, path: Path = DEFAULT_HISTORY, **kwargs: Any) -> Repl:
        return cls(client, history=FileHistory(str(path)), **kwargs)

    def on_reply(self, reply: Reply) -> None:
        """Print a call-back as it arrives (patch_stdout keeps the prompt intact)."""
        who = f"{reply.sender}: " if reply.sender else ""
        text = reply.text
        if isinstance(reply.expr, list) and reply.expr and reply.expr[0] == Symbol("node-status"):
            from .status import decode_status

            try:
                status = decode_status(reply.expr)
            except LanguageError:
                pass  # not of the status shape: shown as it came
            else:
                self.state.learn(status)
                text = _status_line(status)  # the full picture is `cellframe status --json`
        with self._lock:
            number = self._sent.get(reply.correlation_id or "")
            answers = f"#{number} " if number is not None else ""
            self.print(f"<- {answers}{who}{text}")

    def handle(self, line: str) -> bool:
        """Act on one input; False means quit. Never raises for bad input."""
        text = line.strip()
        if not text:
            return True
        if text.startswith(","):
            return self._command(text[1:].split())
        target, source = parse_line(text, self.state.target)
        try:
            key = parse_target(target)
            expr = read_hy(source) if self.state.syntax == "hy" else read(source)
        except LanguageError as error:
            self.print(_show_error(source, error))
            return True
        except CellframeError as error:
            self.print(f"error: {error}")
            return True
        self.state.target = target
        with self._lock:
            self._count += 1
            number = self._count
            message_id = self.client.send(key, expr, on_return=self._returned)
            self._sent[message_id] = number
            if len(self._sent) > _KEEP_SENT:
                del self._sent[next(iter(self._sent))]
            self.print(f"-> #{number} {target}")
        return True

    def _returned(self, envelope: Any, reason: str) -> None:
        with self._lock:
            number = self._sent.get(envelope.message_id)
            which = f"#{number}" if number is not None else envelope.message_id
            self.print(f"error: message {which} was not delivered: {reason}")

    def _command(self, words: list[str]) -> bool:
        name, args = (words[0], words[1:]) if words else ("help", [])
        if name in ("quit", "exit", "q"):
            return False
        if name in ("hy", "lisp"):
            self.state.syntax = name
            self.print(f"reading expressions as {name}")
        elif name == "target" and args:
            try:
                parse_target(args[0])
            except CellframeError as error:
                self.print(f"error: {error}")
            else:
                self.state.target = args[0]
                self.print(f"default target is now {args[0]}")
        elif name == "status":
            self.client.send(parse_target("all"), [Symbol("status")])
        else:
            self.print(__doc__.split("\n\n")[1])
        return True

    def run(self, *, prompt: str = "cellframe> ") -> None:
        """Read lines until ``,quit`` or end of input (Ctrl-D); Ctrl-C clears the line."""
        session: PromptSession[str] = PromptSession(
            history=self.history, completer=_Completer(self.state), multiline=True,
            key_bindings=_submit_when_balanced(), complete_while_typing=False,
        )
        self.client.send(parse_target("all"), [Symbol("status")])  # learn names for completion
        with patch_stdout(raw=True):
            while True:
                try:
                    line = session.prompt(prompt)
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    return
                if not self.handle(line):
                    return


def _status_line(status: dict[str, Any]) -> str:
    cells = ", ".join(f"{c['name']} ({c['state']})" for c in status.get("cells", [])
                      if "members" not in c)
    return f"(node-status :node {status['node']!r} :role {status.get('role') or 'spare'} ...) {cells}"


def _submit_when_balanced() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("enter")
    def _(event: Any) -> None:
        buffer = event.current_buffer
        if balanced(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    return bindings


def _show_error(source: str, error: LanguageError) -> str:
    """The error, and for a reader error the offending line with a caret under the column."""
    lines = [f"error: {error.reason}"]
    if error.line is not None and error.column is not None:
        source_lines = source.splitlines() or [""]
        if 1 <= error.line <= len(source_lines):
            lines.append(f"  {source_lines[error.line - 1]}")
            lines.append("  " + " " * (error.column - 1) + "^")
        lines.append(f"  at line {error.line}, column {error.column}")
    return "\n".join(lines)
