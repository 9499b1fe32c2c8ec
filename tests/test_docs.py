"""Every code block of every page in docs/ is exercised by a test.

The pages this file owns (tutorial, testing, operations, architecture, index) are run here,
block by block, in the order they appear:

- ``python``: executed in one namespace per page, in a working folder that is on ``sys.path``
  as it would be for a Python started there (empty for the tutorial and the testing page, as a
  new project's folder is; for the other pages it holds a link to the repository's
  ``examples/``);
- ``lisp``: read with ``cellframe.read_all``; ``dns``: parsed by dnspython;
- ``bash``: run by ``bash -euo pipefail``; ``console``: each ``$ `` line is run the same way
  and its standard output must equal the lines that follow it;
- ``text`` and blocks with no language are prose (diagrams, formats).

An HTML comment on the line before a fence annotates the block: ``<!-- file: NAME -->`` writes
it to ``NAME`` in the working folder (and it must equal ``examples/tutorial/NAME``);
``<!-- needs: amqp -->`` runs it against the real RabbitMQ, in a virtual host of its own (its
URL in ``$AMQP``, ``os.environ["AMQP"]`` in Python), in a separate test; ``<!-- not-run: WHY
-->`` skips a shell block, and WHY must name a test that exists and does the same thing.
The testing page is a user's project: its Python blocks are files (test modules, which its
shell blocks run with ``python -m pytest``, cellframe's plugin loaded from the installed
package as in any project), so each of them must carry a ``file:`` note.

The pages other engineers own are run by their own tests; here each of their blocks is checked
to be one those tests' mechanism picks up, and a page this file does not know may hold only
prose blocks, so a new page (or a new kind of block) with nobody testing it fails.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dns.zone
import pytest

from cellframe.language import read_all
from cellframe.language.grammar import grammar_text
from cellframe.testing import missing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples" / "tutorial"

#: Pages run by this file, and the languages their blocks may use.
OWN_PAGES = {"tutorial.md", "testing.md", "operations.md", "architecture.md", "index.md", "security.md"}
#: Pages that start in an empty folder, as a reader's new project does.
EMPTY_FOLDER_PAGES = {"tutorial.md", "testing.md"}
#: Pages whose Python blocks must all be files: they are a project, run by pytest.
PROJECT_PAGES = {"testing.md"}
OWN_LANGUAGES = {"python", "lisp", "dns", "bash", "console", "text", ""}
PROSE = {"text", ""}

#: Pages run by other tests: the languages they hold, and the tests that run them.
OTHER_PAGES: dict[str, tuple[set[str], list[str]]] = {
    "language.md": ({"lisp", "lark", "python"}, [
        "tests/test_evaluator.py::test_every_lisp_example_in_the_language_docs_gives_its_stated_result",
        "tests/test_evaluator.py::test_every_python_example_in_the_language_docs_runs",
        "tests/test_evaluator.py::test_the_grammar_in_the_language_docs_is_the_real_one",
    ]),
    "dns.md": ({"dns", "pycon"}, [
        "tests/test_resolvers.py::test_every_block_in_the_dns_docs_is_one_the_tests_run",
        "tests/test_resolvers.py::test_the_zone_in_the_docs_is_the_bundled_zone",
        "tests/test_resolvers.py::test_the_python_examples_in_the_dns_docs_run",
        "tests/test_registration.py::test_the_bind_examples_in_the_dns_docs_run",
    ]),
    "healing.md": (PROSE, []),
    "supervision.md": (PROSE, []),
    "postgres-multimaster.md": ({"python", "sql", "dns", "ini"}, [
        "tests/test_pgmulti_ddl.py::test_every_code_block_of_the_doc_is_checked_or_run",
        "tests/test_pgmulti_ddl.py::test_the_docs_ddl_blocks_are_exactly_what_cellframe_generates",
        "tests/test_pgmulti_postgres.py::test_the_docs_walkthrough_runs_as_written",
        "tests/test_pgmulti_bouncer.py::test_the_docs_zone_gives_exactly_the_docs_configuration",
        "tests/test_pgmulti_bouncer_postgres.py::test_the_docs_driver_and_helper_examples_run_as_written",
    ]),
    "tracing.md": ({"python", "bash"}, [
        "tests/test_tracing.py::test_the_tracing_page_runs_as_written",
    ]),
    "data.md": ({"python", ""}, [
        "tests/test_store.py::test_the_data_design_doc_examples_run",
    ]),
    "web.md": ({"dns", "python", "text"}, [
        "tests/test_web_haproxy.py::test_the_web_page_runs_as_written",
    ]),
}

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<info>.*)$")
_NOTE = re.compile(r"^<!--\s*(?P<key>[a-z-]+):\s*(?P<value>.*?)\s*-->$")
_TEST_REF = re.compile(r"tests/[\w/]+\.py(?:::\w+)?")


# -- reading the pages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with the notes written just above it."""

    page: str
    line: int  # of the opening fence, 1-based
    language: str
    info: str  # the whole info string after the fence
    text: str
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def page_blocks(page: str | Path) -> list[Block]:
    """Every fenced block of ``page`` (a name in docs/ or a path), in order."""
    path = page if isinstance(page, Path) else DOCS / page
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    notes: dict[str, str] = {}
    i = 0
    while i < len(lines):
        note, fence = _NOTE.match(lines[i].strip()), _FENCE.match(lines[i])
        if note:
            notes[note["key"]] = note["value"]
        elif fence:
            indent, marker, info = fence["indent"], fence["fence"], fence["info"].strip()
            opening = i + 1
            body, i = _fenced_body(lines, i + 1, indent, marker, path)
            language = info.split()[0] if info else ""
            blocks.append(Block(path.name, opening, language, info, body, notes))
            notes = {}
        else:
            notes = {}  # a note belongs to the block on the very next line
        i += 1
    return blocks


def _fenced_body(lines: list[str], start: int, indent: str, marker: str,
                 path: Path) -> tuple[str, int]:
    """The text between the opening fence and its closing one; the closing line's index."""
    for end in range(start, len(lines)):
        if lines[end].strip() == marker and lines[end].startswith(indent):
            body = [line[len(indent):] if line.startswith(indent) else line
                    for line in lines[start:end]]
            return "\n".join(body) + "\n" if body else "", end
    raise AssertionError(f"{path.name}:{start}: a code fence is never closed")


def all_pages() -> list[str]:
    return sorted(p.name for p in DOCS.glob("*.md"))


def test_the_block_reader_finds_fences_notes_and_languages(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent("""\
        Prose.
        <!-- file: a.py -->
        ```python title="x"
        x = 1
        ```

        <!-- needs: amqp -->

        ```bash
        echo unannotated: a blank line parts a note from its block
        ```
        ```
        plain
        ```
        """))
    first, second, third = page_blocks(page)
    assert (first.line, first.language, first.text, first.notes) == (3, "python", "x = 1\n",
                                                                      {"file": "a.py"})
    assert first.info == 'python title="x"'
    assert (second.language, second.notes) == ("bash", {})
    assert (third.language, third.text) == ("", "plain\n")


# -- the pages of other engineers -----------------------------------------------------------------


def test_every_page_is_run_by_some_test() -> None:
    unknown = {}
    for page in all_pages():
        if page in OWN_PAGES or page in OTHER_PAGES:
            continue
        code = [b.where for b in page_blocks(page) if b.language not in PROSE]
        if code:
            unknown[page] = code
    assert unknown == {}, "code blocks on pages no test runs (add the page to test_docs.py)"


@pytest.mark.parametrize("page", sorted(OTHER_PAGES))
def test_other_pages_hold_only_blocks_their_tests_run(page: str) -> None:
    if not (DOCS / page).exists():
        pytest.skip(f"docs/{page} is not written yet")
    languages, tests = OTHER_PAGES[page]
    blocks = page_blocks(page)
    strays = [f"{b.where} ({b.language or 'no language'})" for b in blocks
              if b.language not in languages]
    assert strays == [], f"blocks of a kind the tests of {page} do not run"
    for ref in tests:
        assert named_test_exists(ref), f"{ref}, which runs docs/{page}, is gone"
    check_mechanism = _MECHANISMS.get(page)
    if check_mechanism is not None:
        check_mechanism(blocks)


def named_test_exists(ref: str) -> bool:
    """Does ``tests/x.py`` (or ``tests/x.py::name``) exist, with a function of that name?"""
    file, _, name = ref.partition("::")
    path = ROOT / file
    if not path.is_file():
        return False
    if not name:
        return True
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
               for node in ast.walk(tree))


def _language_mechanism(blocks: list[Block]) -> None:
    # tests/test_evaluator.py finds blocks with r"```(\w+)\n": a one-word info string only.
    assert [b.where for b in blocks if not re.fullmatch(r"\w+", b.info)] == []
    grammars = [b.text for b in blocks if b.language == "lark"]
    assert len(grammars) == 1
    assert grammars[0].strip() == grammar_text().strip()  # the grammar the reader uses, verbatim
    for block in blocks:
        if block.language == "lisp":
            read_all(block.text)  # what the evaluator's test then evaluates


def _dns_mechanism(blocks: list[Block]) -> None:
    from tests.dns_docs import doc_blocks

    theirs = doc_blocks()
    assert len(theirs) == len(blocks), "tests/dns_docs.py misses a block of docs/dns.md"
    for block in blocks:
        if block.language == "dns":
            dns.zone.from_text(block.text, check_origin=False)


def _postgres_mechanism(blocks: list[Block]) -> None:
    from tests.pg_support import doc_blocks

    theirs = doc_blocks()
    assert len(theirs) == len(blocks), "tests/pg_support.py misses a block of the page"
    assert all({"ddl", "run", "role"} & b.options.keys() for b in theirs)


def _data_mechanism(blocks: list[Block]) -> None:
    # tests/test_store.py runs the blocks found by r"```python\n(.*?)```".
    assert [b.where for b in blocks if b.language == "python" and b.info != "python"] == []


_MECHANISMS = {
    "language.md": _language_mechanism,
    "dns.md": _dns_mechanism,
    "postgres-multimaster.md": _postgres_mechanism,
    "data.md": _data_mechanism,
}


# -- running this file's pages --------------------------------------------------------------------


def note_problems(block: Block) -> list[str]:
    """What is wrong with a block of this file's pages: its language or its notes."""
    problems = []
    if block.language not in OWN_LANGUAGES:
        problems.append(f"no test runs {block.language!r} blocks")
    unknown = sorted(set(block.notes) - {"file", "needs", "not-run"})
    if unknown:
        problems.append(f"unknown notes {unknown}")
    if block.notes.get("needs", "amqp") != "amqp":
        problems.append(f"needs {block.notes['needs']!r}: only amqp is provided")
    if block.page in PROJECT_PAGES and block.language == "python" and "file" not in block.notes:
        problems.append("a Python block of a project page must be a file (<!-- file: NAME -->)")
    if "not-run" in block.notes:
        refs = _TEST_REF.findall(block.notes["not-run"])
        if block.language not in ("bash", "console"):
            problems.append("only a shell block may be left unrun")
        if not refs:
            problems.append("a block left unrun must name the test that does the same")
        problems += [f"{ref} does not exist" for ref in refs if not named_test_exists(ref)]
    return problems


@pytest.mark.parametrize("page", sorted(OWN_PAGES))
def test_own_pages_use_only_blocks_this_file_runs(page: str) -> None:
    problems = {b.where: note_problems(b) for b in page_blocks(page)}
    assert {where: p for where, p in problems.items() if p} == {}


def test_a_block_left_unrun_must_name_an_existing_test_that_covers_it() -> None:
    def block(language: str, **notes: str) -> Block:
        return Block("x.md", 1, language, language, "", notes)

    covered = "starts a daemon; tests/test_docs.py::test_own_pages_run_on_rabbitmq does it"
    assert note_problems(block("bash", **{"not-run": covered})) == []
    assert note_problems(block("bash", **{"not-run": "slow"})) == [
        "a block left unrun must name the test that does the same"]
    assert note_problems(block("bash", **{"not-run": "see tests/test_docs.py::nothing_here"})) \
        == ["tests/test_docs.py::nothing_here does not exist"]
    assert note_problems(block("python", **{"not-run": covered})) == [
        "only a shell block may be left unrun"]
    assert note_problems(block("yaml", needs="kafka")) == [
        "no test runs 'yaml' blocks", "needs 'kafka': only amqp is provided"]


def test_a_python_block_of_the_testing_page_must_be_a_file_its_pytest_runs() -> None:
    def block(page: str, language: str, **notes: str) -> Block:
        return Block(page, 1, language, language, "", notes)

    assert note_problems(block("testing.md", "python", file="test_x.py")) == []
    assert note_problems(block("testing.md", "python")) == [
        "a Python block of a project page must be a file (<!-- file: NAME -->)"]
    assert note_problems(block("tutorial.md", "python")) == []


def test_the_tutorial_files_are_the_finished_example() -> None:
    written = {b.notes["file"]: b.text for b in page_blocks("tutorial.md") if "file" in b.notes}
    assert written, "the tutorial writes no files"
    for name, text in written.items():
        assert (EXAMPLES / name).read_text(encoding="utf-8") == text, f"examples/tutorial/{name}"


class PageRun:
    """Runs one page's blocks in order: one Python namespace, shell blocks in ``workdir``."""

    def __init__(self, page: str, workdir: Path, env: dict[str, str]) -> None:
        self.page, self.workdir, self.env = page, workdir, env
        self.namespace: dict[str, Any] = {"__name__": f"docs_{Path(page).stem}"}
        self.groups: list[int] = []  # process groups the shell blocks started
        self.modules: list[str] = []

    def run(self, *, amqp: bool) -> int:
        """Run the blocks that need RabbitMQ (``amqp``) or those that do not; return how many."""
        count = 0
        for block in page_blocks(self.page):
            if "file" in block.notes:
                self.write_file(block)
            if block.notes.get("needs") == "amqp" and not amqp:
                continue
            if amqp and block.notes.get("needs") != "amqp":
                continue
            if "not-run" in block.notes:
                continue
            try:
                self.run_block(block)
            except Exception as error:
                raise AssertionError(f"{block.where} failed: {error}") from error
            count += 1
        return count

    def write_file(self, block: Block) -> None:
        path = self.workdir / block.notes["file"]
        path.write_text(block.text, encoding="utf-8")
        if block.language == "python" and "not-run" not in block.notes:
            self.modules.append(path.stem)

    def run_block(self, block: Block) -> None:
        if block.language == "python":
            if "file" in block.notes:
                importlib.import_module(Path(block.notes["file"]).stem)  # running it = importing
            else:
                # Padded so that a traceback's line numbers are the page's own.
                source = "\n" * block.line + block.text
                exec(compile(source, f"docs/{block.page}", "exec"), self.namespace)
        elif block.language == "lisp":
            assert read_all(block.text), "an empty lisp block"
        elif block.language == "dns":
            zone = dns.zone.from_text(block.text, check_origin=False)
            assert len(zone.nodes) > 1
        elif block.language == "bash":
            self.shell(block.text)
        elif block.language == "console":
            for command, expected in console_commands(block.text):
                out = self.shell(command)
                assert out.rstrip("\n") == expected, f"$ {command}\n{out}"

    def shell(self, script: str, timeout: float = 120) -> str:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=self.workdir,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        self.groups.append(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        assert proc.returncode == 0, f"exit {proc.returncode}\n{script}\n{out}\n{err}"
        return out

    def close(self) -> None:
        """Stop what the blocks left running (a block that failed half-way cannot clean up
        after itself): nodes, clusters and clients, the shell blocks' process groups; and
        forget the modules the page wrote."""
        from cellframe import Client, Node
        from cellframe.node.cluster import LocalCluster

        for value in list(self.namespace.values()):
            if isinstance(value, LocalCluster | Node):
                value.stop()  # idempotent
            elif isinstance(value, Client):
                value.close()
        for group in self.groups:
            _end_group(group)
        for name in self.modules:
            sys.modules.pop(name, None)


def _end_group(group: int) -> None:
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, signum)
        except ProcessLookupError:
            return
        if _wait_group_gone(group, 10):
            return


def _wait_group_gone(group: int, timeout: float) -> bool:
    from cellframe.errors import ClusterError
    from cellframe.node.cluster import wait_for

    def gone() -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_for(gone, timeout, interval=0.05)
    except ClusterError:
        return False
    return True


def console_commands(text: str) -> list[tuple[str, str]]:
    """``$ command`` lines, each with the output lines that follow it."""
    commands: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            assert commands, f"console output before any command: {line!r}"
            commands[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in commands]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment shell blocks run in: ``cellframe`` on PATH, as the installed console
    script would be (its own folder first on sys.path, not the working folder)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "cellframe"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom cellframe.cli import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLFRAME_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}" \
                  f"{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def page_workdir(page: str, tmp_path: Path) -> Path:
    """The tutorial and the testing page start in an empty folder; the other pages see the
    repository's examples."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    if page not in EMPTY_FOLDER_PAGES:
        (workdir / "examples").symlink_to(ROOT / "examples")
    return workdir


@pytest.fixture
def page_run(request: pytest.FixtureRequest, tmp_path: Path, cli_env: dict[str, str],
             monkeypatch: pytest.MonkeyPatch) -> Iterator[PageRun]:
    workdir = page_workdir(request.param, tmp_path)
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    run = PageRun(request.param, workdir, cli_env)
    try:
        yield run
    finally:
        run.close()


@pytest.mark.parametrize("page_run", sorted(OWN_PAGES), indirect=True)
def test_own_pages_run_without_a_broker(page_run: PageRun) -> None:
    page_run.run(amqp=False)


# -- the blocks that need RabbitMQ ----------------------------------------------------------------


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "--quiet", *args], check=True, capture_output=True,
                   timeout=120)


@pytest.fixture
def amqp_vhost(amqp_url: str) -> Iterator[str]:
    """A virtual host of its own on the real RabbitMQ, deleted afterwards: the shell blocks
    start ``cellframe node`` processes, whose exchange and queue names are fixed."""
    url = amqp_url
    name = f"cf-docs-{uuid.uuid4().hex[:12]}"
    try:
        rabbitmqctl("add_vhost", name)
    except FileNotFoundError:
        missing("rabbitmqctl")
    try:
        user = urlsplit(url).username or "guest"
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        parts = urlsplit(url)
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    finally:
        rabbitmqctl("delete_vhost", name)


def pages_needing_amqp() -> list[str]:
    return [p for p in sorted(OWN_PAGES)
            if any(b.notes.get("needs") == "amqp" for b in page_blocks(p))]


@pytest.mark.amqp
@pytest.mark.slow
@pytest.mark.parametrize("page_run", pages_needing_amqp(), indirect=True)
def test_own_pages_run_on_rabbitmq(page_run: PageRun, amqp_vhost: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    page_run.env["AMQP"] = amqp_vhost
    monkeypatch.setenv("AMQP", amqp_vhost)
    try:
        assert page_run.run(amqp=True) > 0
    finally:
        page_run.close()  # the nodes go before their virtual host does


# -- what the pages say about the code ------------------------------------------------------------


def section(page: str, heading: str) -> str:
    """The text of ``page`` under ``heading`` (up to the next heading of any level)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(heading + "\n")
    following = re.search(r"^#", text[start + len(heading):], re.M)
    return text[start:start + len(heading) + (following.start() if following else len(text))]


def test_the_module_map_names_every_module() -> None:
    table = section("architecture.md", "## Module map")
    named = set(re.findall(r"`([^`]+)`", table))
    package = ROOT / "cellframe"
    unnamed = []
    for path in sorted(package.iterdir()):
        if path.name.startswith(("_", ".")) and path.name not in ("__init__.py", "__main__.py"):
            continue
        if path.suffix == ".py":
            if not any(name == path.name or name.endswith("/" + path.name) for name in named):
                unnamed.append(path.name)
        elif path.is_dir() and (path / "__init__.py").exists():
            modules = [m.name for m in path.glob("*.py") if m.name != "__init__.py"]
            whole = f"{path.name}/" in named
            each = all(f"{path.name}/{m}" in named or m in named for m in modules)
            if not (whole or each):
                unnamed.append(f"{path.name}/")
    assert unnamed == [], "modules docs/architecture.md does not place on its module map"


@pytest.mark.parametrize("page", sorted(OWN_PAGES))
def test_the_tests_a_page_names_exist(page: str) -> None:
    refs = _TEST_REF.findall((DOCS / page).read_text(encoding="utf-8"))
    assert [ref for ref in refs if not named_test_exists(ref)] == []


def anchors(page: str) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    headings = re.findall(r"^#+\s+(.*)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", sorted(OWN_PAGES))
def test_the_links_of_a_page_lead_somewhere(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    broken = []
    for target, anchor in re.findall(r"\]\(([\w.-]+\.md)(?:#([\w-]+))?\)", text):
        if not (DOCS / target).exists() or (anchor and anchor not in anchors(target)):
            broken.append(f"{target}#{anchor}" if anchor else target)
    assert broken == []
