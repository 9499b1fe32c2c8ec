"""Random arguments to every ``cellframe`` command never end in a Python traceback: each run
either does its work or exits with one clear ``Error:`` line.

What would block or take long is stopped at its boundary and counted as reached: running a
node, the demo's scenario, the bench, the REPL's prompt and a log follower raise ``Reached``;
opening a broker connection checks the URL as the real transport does, then reports the
broker unreachable at once (a random host would take the 10 s connect timeout); a DNS query
reports a lookup failure. Everything between the arguments and those boundaries is the real
code. Bounded: a few dozen examples a command, a few seconds in all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellframe.cli.main import main
from cellframe.errors import BrokerUnavailableError, DnsLookupError
from tests import cli_support

ZONE = cli_support.ZONE

COMMANDS = sorted(main.commands)


class Reached(Exception):
    """A command got past its arguments to the work it exists for."""


def _reached(*args: Any, **kwargs: Any) -> Any:
    raise Reached


def _no_broker(self: Any, urls: Any, *args: Any, name: str | None = None, **kwargs: Any) -> None:
    from cellframe.transports.amqp import _parameters

    _parameters(urls, heartbeat=30, name=name or "fuzz")  # the real URL checks
    raise BrokerUnavailableError("no broker in the fuzz test")


def _no_dns(self: Any, label: str) -> Any:
    raise DnsLookupError("no DNS server in the fuzz test")


@pytest.fixture(autouse=True)
def boundaries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from cellframe.benchmarks import comparisons
    from cellframe.cli import demo, logs, repl
    from cellframe.config.resolvers import DnsServerResolver
    from cellframe.node import cluster, process
    from cellframe.transports.amqp import AmqpTransport

    monkeypatch.setattr(process, "run_node", _reached)
    monkeypatch.setattr(demo.Scenario, "run", _reached)
    monkeypatch.setattr(comparisons, "run_comparisons", _reached)
    monkeypatch.setattr(repl.Repl, "run", _reached)
    monkeypatch.setattr(cluster.LocalCluster, "start", _reached)
    monkeypatch.setattr(logs, "follow_file", _reached)
    monkeypatch.setattr(AmqpTransport, "__init__", _no_broker)
    monkeypatch.setattr(DnsServerResolver, "_lookup", _no_dns)
    yield


VALUES = st.sampled_from([
    "", "-1", "0", "0.5", "nan", "inf", "1e400", "65536", "all", "node:web-01", "role:",
    "cell:x", "bogus:x", "(ping)", "(", ")", '(load "\udcff")', "\udcff", "web-01", "nosuch",
    "amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://h:99999/", "not a url", "http://x/",
    "127.0.0.1:1", "notahost", str(ZONE), "README.md", "/nonexistent/x", "mod:attr", "x" * 300,
]) | st.text(max_size=12)


def arguments(command: click.Command) -> st.SearchStrategy[list[str]]:
    """Lists of this command's own option names and arbitrary values, in any order."""
    names = [name for param in command.params for name in getattr(param, "opts", [])
             if name not in ("--follow", "-f", "--watch")]  # run until Ctrl-C by design
    token = st.sampled_from(names) | VALUES if names else VALUES
    return st.lists(token, max_size=6)


def no_traceback(command: str, args: list[str]) -> None:
    result = CliRunner().invoke(main, [command, *args])
    error = result.exception
    if error is None or isinstance(error, SystemExit | Reached):
        assert "Traceback" not in result.output
        if result.exit_code not in (0, None) and not isinstance(error, Reached):
            # One line that says what is wrong; or, for a group given no command (cellframe
            # keys), its help listing the commands.
            helped = isinstance(main.commands[command], click.Group) and \
                "Commands:" in result.output
            assert helped or "Error" in result.output or "error" in result.output, \
                result.output
        return
    raise AssertionError(f"cellframe {command} {args!r} raised {error!r}:\n{result.output}") from error


@pytest.mark.parametrize("command", COMMANDS)
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_arguments_never_end_in_a_traceback(command: str, data: st.DataObject,
                                                   tmp_path: Path) -> None:
    args = data.draw(arguments(main.commands[command]), label="args")
    no_traceback(command, args)


def test_the_check_catches_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from cellframe.config import shellenv

    assert {"bench", "demo", "env", "logs", "node", "repl", "send", "status"} <= set(COMMANDS)
    no_traceback("env", ["web-01", "--zone", str(ZONE)])
    monkeypatch.setattr(shellenv, "export_lines", _boom)
    with pytest.raises(AssertionError, match="raised RuntimeError"):
        no_traceback("env", ["web-01", "--zone", str(ZONE)])


def _boom(*args: Any) -> Any:
    raise RuntimeError("a bug")


@pytest.mark.parametrize("args", [
    ["logs", "--secret-file", "\x00"],  # open() raised ValueError
    ["repl", "--zone", "--zone"],  # the local cluster's DnsLookupError escaped
    ["env", "name", "--domain", ""],  # dnspython's ValueError: non-origin SOA
    ["node", "--domain", ""],
    ["send", "all", "(ping)", "--wait", "nan"],  # nan passes every range check
    ["status", "--window", "nan"],
    ["simulate", "--seconds", "nan"],  # ran, and reported nothing
    ["simulate", "--seconds", "inf"],  # ran for ever, as did 1e308
    ["simulate", "--seconds", "1e308"],
    ["simulate", "--loss", "nan"],
    ["simulate", "--nodes", "3", "--roles", "4"],  # --roles 1000000: hours
])
def test_what_the_fuzz_found_stays_fixed(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Error" in result.output and "Traceback" not in result.output
