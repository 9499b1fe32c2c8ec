"""The operator's REPL: type a target and an s-expression; call-backs print as they arrive.

The prompt names the default target (``cellframe all>``); ``HELP`` is what ``,help`` prints.
An expression may span lines: Enter inserts a newline until the parentheses balance, and the
continuation prompt shows how many are open; Ctrl-C or Ctrl-D abandons it. Nothing waits for
an answer: call-backs are printed above the prompt whenever they come.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
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

__all__ = ["HELP", "Repl", "ReplState", "balanced", "open_forms", "parse_line"]

DEFAULT_HISTORY = Path.home() / ".cellframe_history"

HELP = """\
  [TARGET] EXPRESSION   send EXPRESSION to TARGET (default: the one in the prompt, first all)
  ,target TARGET        change the default target
  ,hy  /  ,lisp         read expressions as Hy / as cellframe's own syntax (the default)
  ,status               ask every node for its status and print the status table
  ,help  /  ,quit       this text / leave (Ctrl-D on an empty line leaves too)
TARGET is all, node:NAME, role:NAME, each:NAME or cell:NAME; Tab completes targets and verbs.
An expression may span lines until its parentheses balance; Ctrl-C or Ctrl-D abandons it."""
#: The longest stretch of an input line an error shows (around the column it points at).
ERROR_CONTEXT = 60
_TARGET = re.compile(r"\s*(all|(?:node|role|each|cell):[A-Za-z0-9_-]+)\b\s*(.*)\Z", re.S)


def balanced(text: str) -> bool:
    """True when every ``(`` outside strings and comments is closed (or over-closed, which
    the reader then reports with its position)."""
    depth, in_string = open_forms(text)
    return depth <= 0 and not in_string


def open_forms(text: str) -> tuple[int, bool]:
    """How many ``(`` and ``[`` outside strings and comments are still open, and whether a
    string is."""
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
    return depth, in_string


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
        self._collecting = False

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
                if self._collecting:
                    return  # ,status prints them all as one table
                text = _status_line(status)
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
            self._show_status()
        else:
            self.print(HELP)
        return True

    def _show_status(self, window: float = 1.0) -> None:
        """Gather every node's status for ``window`` seconds and print the status table."""
        from .status import collect_status, render_text, status_view

        self._collecting = True
        try:
            statuses = collect_status(self.client, window=window)
        finally:
            self._collecting = False
        for status in statuses:
            self.state.learn(status)
        if not statuses:
            self.print(f"no node answered within {window:g} s")
            return
        self.print(render_text(status_view(statuses)))

    def prompt(self) -> str:
        """The prompt: the default target a bare expression goes to."""
        return f"cellframe {self.state.target}> "

    def run(self) -> None:
        """Read lines until ``,quit`` or Ctrl-D on an empty line; Ctrl-C or Ctrl-D abandons
        an unfinished expression."""
        abandoned = threading.Event()
        session: PromptSession[str] = PromptSession(
            history=self.history, completer=_Completer(self.state), multiline=True,
            key_bindings=_submit_when_balanced(abandoned), complete_while_typing=False,
            prompt_continuation=_continuation,
        )
        self.client.send(parse_target("all"), [Symbol("status")])  # learn names for completion
        with patch_stdout(raw=True):
            while True:
                try:
                    line = session.prompt(self.prompt)
                except KeyboardInterrupt:
                    if session.default_buffer.text.strip() or abandoned.is_set():
                        self.print("(abandoned)")
                    abandoned.clear()
                    continue
                except EOFError:
                    return
                if not self.handle(line):
                    return


def _status_line(status: dict[str, Any]) -> str:
    """One line of a node's status (,status prints the whole table)."""
    cells = ", ".join(f"{c['name']} ({c['state']})" for c in status.get("cells", [])
                      if "healing" not in c)
    return f"status of {status['node']}: {status.get('role') or 'spare'}; {cells or 'no cells'}"


def _continuation(width: int, line_number: int, is_soft_wrap: int) -> str:
    """The prompt of an expression's next line: how many forms are still open."""
    depth, in_string = open_forms(get_app().current_buffer.document.text_before_cursor)
    text = "...string " if in_string else f"...{max(depth, 0)} open "
    return text.rjust(width)


def _submit_when_balanced(abandoned: threading.Event) -> KeyBindings:
    """Enter sends a balanced input and opens a new line in an unbalanced one; Ctrl-D on an
    unfinished input abandons it as Ctrl-C does (and sets ``abandoned``)."""
    bindings = KeyBindings()

    @bindings.add("enter")
    def _(event: Any) -> None:
        buffer = event.current_buffer
        if balanced(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    @bindings.add("c-d", filter=Condition(lambda: bool(get_app().current_buffer.text)))
    def _(event: Any) -> None:
        abandoned.set()
        event.app.exit(exception=KeyboardInterrupt())

    return bindings


def _show_error(source: str, error: LanguageError) -> str:
    """The error, and for a reader error the offending line with a caret under the column."""
    reason = error.reason if len(error.reason) <= 200 else error.reason[:197] + "..."
    lines = [f"error: {reason.splitlines()[0] if reason else reason}"]
    if error.line is not None and error.column is not None:
        source_lines = source.splitlines() or [""]
        if 1 <= error.line <= len(source_lines):
            shown, caret = _around(source_lines[error.line - 1], error.column - 1)
            lines.append(f"  {shown}")
            lines.append("  " + " " * caret + "^")
        lines.append(f"  at line {error.line}, column {error.column}")
    return "\n".join(lines)


def _around(line: str, column: int, width: int = ERROR_CONTEXT) -> tuple[str, int]:
    """At most ``width`` characters of ``line`` around ``column``, and where the column is in
    them: a 10,000-character line is not echoed back whole."""
    if len(line) <= width:
        return line, column
    start = max(0, min(column - width // 2, len(line) - width))
    shown = line[start:start + width]
    prefix = "..." if start else ""
    suffix = "..." if start + width < len(line) else ""
    return prefix + shown + suffix, column - start + len(prefix)
