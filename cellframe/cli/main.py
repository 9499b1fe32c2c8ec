"""The ``cellframe`` command: run a node, send to the cluster, print DNS config, and more.

Every sub-command builds its backends as objects (transport, resolver, signer) from its
options and hands them to the library; nothing here chooses a backend by importing a name.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from ..config.bundled import bundled_zone
from ..errors import CellframeError, ConfigError
from .failure import CliError, OneLineErrors
from .failure import fail as _fail
from .params import POSITIVE_SECONDS, SECONDS, UTF8, FilePath, NumberRange
from .trust import key_options, keys, make_signer

__all__ = ["main"]

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: How long ``send`` waits for the broker to confirm (or return) what it sent.
CONFIRM_TIMEOUT = 10.0




def _complete_target(ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
    from .completion import complete_target

    return complete_target(ctx, param, incomplete)


def zone_option(function: Any) -> Any:
    function = click.option("--domain", type=UTF8, help="DNS zone of the cluster (with --dns).")(function)
    function = click.option("--dns", "dns_server", type=UTF8, metavar="HOST:PORT",
                            help="DNS server to ask.")(function)
    function = click.option("--example", is_flag=True,
                            help="Read the bundled example zone (no --zone or --dns).")(function)
    return click.option("--zone", "zone_file", type=FilePath(dir_okay=False),
                        help="Zone file to read.")(function)


def make_resolver(zone_file: str | None, dns_server: str | None, domain: str | None,
                  example: bool = False) -> Any:
    """The resolver the options name; the bundled example zone only if asked for by name."""
    from ..config.resolvers import resolver_from_options

    if example:
        if zone_file is not None or dns_server is not None:
            raise CliError("--example reads the bundled zone: give it without --zone or --dns")
        zone_file = str(bundled_zone())
    elif dns_server is None and zone_file is None:
        raise CliError("no cluster configuration: give --zone FILE or --dns HOST:PORT "
                       "(or --example for the bundled example zone)")
    try:
        return resolver_from_options(zone_file=zone_file, dns=dns_server, domain=domain)
    except CellframeError as error:
        raise _fail(error) from error


def make_transport(amqp: tuple[str, ...] | list[str] | None, *, exchange: str | None = None,
                   name: str | None = None, quorum: bool = False) -> Any:
    if not amqp:
        from ..transports.memory import MemoryTransport

        return MemoryTransport()
    from ..transports.amqp import AmqpTransport
    from ..transports.topology import amqp_topology

    try:
        return AmqpTransport(list(amqp), name=name, quorum=quorum, tls=_tls_options(),
                             **amqp_topology(exchange))
    except CellframeError as error:
        raise _fail(error) from error


def _tls_options() -> Any:
    """The ``TlsOptions`` of this command's ``--tls-*`` options, or None if none was given."""
    from ..transports.tls import TlsOptions

    given = click.get_current_context().meta.get("cellframe.tls", {})
    return TlsOptions(**given) if given else None


def _remember_tls(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        ctx.meta.setdefault("cellframe.tls", {})[param.name] = value


def tls_options(function: Any) -> Any:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-server-name`` for amqps:// URLs."""
    for flag, name, doc in (
            ("--tls-server-name", "server_name", "Name the broker's certificate must carry "
                                                  "(default: the URL's host)."),
            ("--tls-key", "key", "Client key for mutual TLS (PEM)."),
            ("--tls-cert", "cert", "Client certificate for mutual TLS (PEM)."),
            ("--tls-ca", "ca", "CA file the broker's certificate is checked against "
                               "(default: the system's CAs).")):
        text = name == "server_name"  # the others are paths, which need not be UTF-8
        function = click.option(flag, name, metavar="NAME" if text else "FILE",
                                type=UTF8 if text else FilePath(dir_okay=False),
                                expose_value=False, callback=_remember_tls, help=doc)(function)
    return function


def topology_option(function: Any) -> Any:
    """``--exchange`` and ``--queue-prefix``: several clusters (or test runs) on one broker;
    and the ``--tls-*`` options of amqps:// URLs."""
    function = tls_options(function)
    function = click.option("--queue-prefix", type=UTF8, default="", metavar="PREFIX",
                            help="Prefix of every queue name this command declares.")(function)
    return click.option("--exchange", type=UTF8, metavar="NAME",
                        help="Control exchange (default cellframe.control); the dead letters "
                             "go to NAME.dead-letter.")(function)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("--json-logs", is_flag=True, help="Log one JSON object per line.")
@click.option("--trace-file", type=FilePath(dir_okay=False), metavar="PATH",
              envvar="CELLFRAME_TRACE_FILE",
              help="Trace messages with OpenTelemetry (cellframe[otel]), each span a JSON line "
                   "in PATH ({pid}: the process id).")
@click.option("--trace-sample", type=NumberRange(0.0, 1.0), default=1.0, show_default=True,
              envvar="CELLFRAME_TRACE_SAMPLE", help="With --trace-file: the share of new traces recorded.")
def main(verbose: int, json_logs: bool, trace_file: str | None, trace_sample: float) -> None:
    """cellframe: self-healing clusters built like stem cells."""
    from ..node.logs import configure_logging

    if click.get_current_context().invoked_subcommand == "node":
        # A node's console tells its story at INFO: role changes, peers up, down and left,
        # claims, stop (pika stays quiet below -vv).
        verbose = max(verbose, 1)
    configure_logging(verbose=verbose, json_lines=json_logs)
    if trace_file:
        from ..wire.tracing import enable_to_file

        try:
            enable_to_file(trace_file, sample=trace_sample)
        except CellframeError as error:
            raise _fail(error) from error


@main.command()
@click.argument("name", required=False, type=UTF8)
@zone_option
@key_options
@click.option("--amqp", type=UTF8, multiple=True, metavar="URL", help="Broker URL (repeat for fail-over).")
@click.option("--role", type=UTF8, help="Play this role instead of the one DNS names.")
@click.option("--diagnostic", is_flag=True, help="Reflect errant messages to the dead letters.")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Expose Prometheus metrics on this port (0: any free port).")
@click.option("--metrics-addr", type=UTF8, default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address the metrics listen on (0.0.0.0 for every interface).")
@click.option("--plugin", "plugins", type=UTF8, multiple=True, metavar="MODULE:ATTR",
              help="Register more roles: ATTR is a Cell class (under its `role`) or a mapping "
                   "role -> Cell class(es). Repeatable; like the cellframe.roles entry points.")
@click.option("--data-dir", type=FilePath(file_okay=False), envvar="CELLFRAME_DATA_DIR",
              help="Where cells keep data (a shard's store: DIR/NAME/shard-ID; the log sump's "
                   "files: DIR/NAME/logsump; DNS data-dir wins).")
@click.option("--quorum", is_flag=True, help="Declare durable queues (the role mailboxes) as "
              "quorum queues with a delivery limit: for a RabbitMQ cluster.")
@click.option("--keys", "key_files", multiple=True, type=FilePath(dir_okay=False),
              envvar="CELLFRAME_KEYS", help="Key file of the keys this node accepts "
              "(repeatable; reread on SIGHUP or when changed).")
@click.option("--insecure", is_flag=True, help="Run with no keys: unsigned and unchecked "
              "(a warning is logged every minute).")
@topology_option
def node(name: str, zone_file: str | None, dns_server: str | None, domain: str | None,
         example: bool, secret_file: str | None, key_file: str | None,
         amqp: tuple[str, ...], role: str | None, diagnostic: bool,
         metrics_port: int | None, metrics_addr: str, plugins: tuple[str, ...],
         data_dir: str | None, quorum: bool, key_files: tuple[str, ...], insecure: bool,
         exchange: str | None, queue_prefix: str) -> None:
    """Run the management daemon of node NAME (default: this host's name) until SIGTERM."""
    import socket

    from ..config.txtconfig import node_name_from_hostname
    from ..node.process import registry_with_plugins, run_node

    name = name or node_name_from_hostname()
    signer = make_signer(secret_file, key_file=key_file, key_files=key_files, exchange=exchange,
                         node=name)
    if signer is None and not insecure:
        raise CliError("no keys: give --keys FILE (see `cellframe keys new --node`), "
                       "--secret-file FILE or $CELLFRAME_SECRET; or --insecure to run unsigned")
    if signer is not None and insecure:
        raise CliError("--insecure contradicts the keys given: drop one")
    resolver = make_resolver(zone_file, dns_server, domain, example)
    if data_dir:
        os.environ["CELLFRAME_DATA_DIR"] = str(Path(data_dir).resolve())  # read by shard cells

    try:
        registry = registry_with_plugins(plugins)
        run_node(
            name,
            # Named for the node, so the broker's tools show which connection is whose.
            transport=make_transport(amqp, exchange=exchange, quorum=quorum,
                                     name=f"{name}@{socket.gethostname()}:{os.getpid()}"),
            resolver=resolver,
            signer=signer,
            role=role,
            diagnostic=diagnostic,
            metrics_port=metrics_port,
            metrics_addr=metrics_addr,
            registry=registry,
            queue_prefix=queue_prefix,
        )
    except CellframeError as error:
        raise _fail(error) from error


@main.command()
@click.argument("target", type=UTF8, shell_complete=_complete_target)
@click.argument("expression", type=UTF8)
@key_options
@click.option("--amqp", type=UTF8, multiple=True, metavar="URL", default=[DEFAULT_AMQP],
              show_default=True)
@click.option("--wait", "wait_seconds", type=SECONDS, default=0.0,
              help="Print the call-backs answering it that arrive within this many seconds.")
@click.option("--hy", "hy_syntax", is_flag=True, help="EXPRESSION is written in Hy.")
@topology_option
def send(target: str, expression: str, secret_file: str | None, key_file: str | None,
         amqp: tuple[str, ...], wait_seconds: float, hy_syntax: bool, exchange: str | None,
         queue_prefix: str) -> None:
    """Send EXPRESSION to TARGET (all, node:NAME, role:NAME, each:NAME or cell:NAME).

    Returns once the broker has confirmed the message; with --wait, prints each call-back
    that answers it (matched by correlation id) as it arrives, on stdout, one expression a
    line. What happened goes to stderr.

    \b
    Exit codes:
      0  delivered (with --wait: call-backs came, and none was an error)
      1  not delivered: nothing listens on TARGET, or the broker did not confirm
      2  a usage or environment error (bad option, expression, broker URL, key), or a node
         refused the message (a wrong key, or one without the capability: it says so at once)
      3  with --wait: a call-back was an (error ...)
      4  with --wait: no call-back came (the message may have been a no-op)"""
    from ..language.hylang import read_hy
    from ..language.reader import read
    from ..wire.routing import parse_target
    from .sending import send_and_report

    try:
        key = parse_target(target)
        expr = read_hy(expression) if hy_syntax else read(expression)
    except CellframeError as error:
        raise _fail(error) from error
    # The key before the broker: a bad key file is one line at once, not after a connection.
    signer = make_signer(secret_file, key_file=key_file, exchange=exchange)
    with make_transport(amqp, exchange=exchange) as transport:
        code = send_and_report(transport, key, expr, signer=signer,
                               queue_prefix=queue_prefix, wait=wait_seconds,
                               confirm_timeout=CONFIRM_TIMEOUT, target=target)
    sys.exit(code)


@main.command()
@click.argument("name", type=UTF8)
@zone_option
def env(name: str, zone_file: str | None, dns_server: str | None, domain: str | None,
        example: bool) -> None:
    """Print node NAME's DNS configuration as shell export lines (for eval in bash)."""
    from ..config.shellenv import export_lines

    resolver = make_resolver(zone_file, dns_server, domain, example)
    try:
        config = resolver.node_config(name)
        # No records and not listed either: a typo, not a spare (spares are in _nodes).
        unknown = not config.settings and name not in resolver.node_names()
    except CellframeError as error:
        raise _fail(error) from error
    finally:
        resolver.close()
    if unknown:
        raise CliError(f"node {name!r} is not in the zone: it has no TXT records and _nodes "
                       f"does not list it (a typo? a spare must be listed in _nodes)")
    lines, rejected = export_lines(config)
    for line in lines:
        click.echo(line)
    for problem in rejected:
        click.echo(f"# not exported: {problem}", err=True)
    for warning in config.warnings:
        click.echo(f"# warning: {warning}", err=True)


@main.command()
@key_options
@click.option("--amqp", type=UTF8, multiple=True, metavar="URL", default=[DEFAULT_AMQP],
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
@click.option("--watch", is_flag=True, help="Refresh the table in place until Ctrl-C.")
@click.option("--window", type=POSITIVE_SECONDS, default=1.0, show_default=True,
              help="Seconds to gather the nodes' call-backs.")
@click.option("--interval", type=POSITIVE_SECONDS, default=2.0, show_default=True,
              help="--watch period.")
@topology_option
def status(secret_file: str | None, key_file: str | None, amqp: tuple[str, ...], as_json: bool, watch: bool,
           window: float, interval: float, exchange: str | None, queue_prefix: str) -> None:
    """Show the cluster: every node (the silent and the dead too), roles against the intent,
    cells and states, health, heartbeats, counters. Exits 1 when no node answered, 2 when
    they refused it (a key without the capability)."""
    import json

    from rich.console import Console
    from rich.live import Live

    from ..client import Client
    from ..transports.amqp import redacted
    from .picture import ClusterPicture
    from .sending import refusal
    from .status import collect_status, status_view, to_json_ready

    console = Console()
    if not console.is_terminal:  # piped: rich would squeeze the table into 80 columns
        console = Console(width=400)
    signer = make_signer(secret_file, key_file=key_file, exchange=exchange)
    transport = make_transport(amqp, exchange=exchange)
    client = Client(transport, signer=signer, queue_prefix=queue_prefix)
    try:
        if watch:
            with Live(status_view([]), console=console, auto_refresh=False) as live:
                while True:
                    live.update(status_view(collect_status(client, window=window)), refresh=True)
                    threading.Event().wait(interval)
        nodes = collect_status(client, window=window)
        if as_json:
            click.echo(json.dumps({"nodes": to_json_ready(nodes),
                                   **ClusterPicture.from_statuses(nodes).as_dict()},
                                  sort_keys=True))
        elif nodes:
            console.print(status_view(nodes))
    except KeyboardInterrupt:
        if watch:  # how a watch ends, as with watch(1): not a failure
            return
        raise  # a one-shot status cut short: click says "Aborted!" and exits 1
    finally:
        client.close()
        transport.close()
    # A node that refused our (status) answered too: "no node answered" blamed the secret.
    refused = [str(r) for r in client.refused]
    refused += [line for r in client.replies if (line := refusal(r)) is not None]
    if refused and not nodes:
        raise CliError(refused[0])
    for line in refused:
        click.echo(f"warning: {line}", err=True)
    if not nodes:
        raise click.ClickException(
            f"no node answered within {window:g} s. Check that nodes run "
            f"(cellframe node NAME --amqp URL), on this broker ({', '.join(redacted(u) for u in amqp)}), "
            f"with the same --exchange/--queue-prefix and cluster secret (unsigned "
            f"requests get no answer from signed nodes), or give them longer (--window)")


@main.command()
@key_options
@click.option("--amqp", type=UTF8, multiple=True, metavar="URL", default=[DEFAULT_AMQP],
              show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as the nodes ship them.")
@click.option("--node", type=UTF8, help="Only this node's records.")
@click.option("--role", type=UTF8, help="Only records of nodes playing this role.")
@click.option("--level", type=click.Choice(["debug", "info", "warning", "error", "critical"]),
              help="Only records at this level or above.")
@click.option("--since", type=UTF8, metavar="T", help="Only records since T: 30s, 10m, 2h, 1d, or an ISO time.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="At most this many of the newest records before following.")
@click.option("--data-dir", type=FilePath(file_okay=False, exists=True),
              help="Read a log sump's folder (the one holding records.jsonl) instead of asking it.")
@click.option("--json", "as_json", is_flag=True, help="Print each record as its JSON line.")
@click.option("--timeout", type=POSITIVE_SECONDS, default=10.0, show_default=True,
              help="Seconds to wait for the sump's answer.")
@topology_option
def logs(secret_file: str | None, key_file: str | None, amqp: tuple[str, ...], follow: bool, node: str | None,
         role: str | None, level: str | None, since: str | None, limit: int, data_dir: str | None,
         as_json: bool, timeout: float, exchange: str | None, queue_prefix: str) -> None:
    """Show the cluster's log records, from the log sump, and live with --follow."""
    import json

    from ..client import Client
    from ..roles.logfiles import RECORDS_FILE, RecordFilter
    from .logs import LogQuery, follow_file, format_record, parse_since, read_folder
    from .status import to_json_ready

    def show(record: dict[str, Any]) -> None:
        click.echo(json.dumps(to_json_ready(record), ensure_ascii=False) if as_json
                   else format_record(record))

    try:
        wanted = RecordFilter(node, role, level, parse_since(since) if since else None)
        if data_dir:
            for record in read_folder(Path(data_dir), wanted, limit):
                show(record)
            if follow:
                stopped = _stopped_by_signals()
                follow_file(Path(data_dir) / RECORDS_FILE, wanted, show, stopped)
            return
    except CellframeError as error:
        raise _fail(error) from error
    signer = make_signer(secret_file, key_file=key_file, exchange=exchange)
    transport = make_transport(amqp, exchange=exchange)
    client = Client(transport, signer=signer, queue_prefix=queue_prefix)
    try:
        query = LogQuery(client, wanted, limit=limit, show=show)
        if follow:  # bound before asking: nothing shipped in between is missed
            query.follow(lambda pattern: transport.bind(client.queue, pattern))
        if not query.ask(timeout) and not follow:
            raise CliError(f"no log sump answered within {timeout:g} s (is a logsump node running?)")
        if follow:
            _stopped_by_signals().wait()
    finally:
        client.close()
        transport.close()


@main.command("dead-letters")
@click.option("--amqp", type=UTF8, multiple=True, metavar="URL", default=[DEFAULT_AMQP],
              show_default=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="At most this many letters.")
@click.option("--idle", type=POSITIVE_SECONDS, default=2.0, show_default=True,
              help="Stop once no letter has come for this many seconds.")
@click.option("--take", is_flag=True, help="Remove the letters shown (default: leave them).")
@click.option("--json", "as_json", is_flag=True, help="Print each letter as one JSON object.")
@click.option("--exchange", type=UTF8, metavar="NAME", help="The cluster's control exchange (default "
              "cellframe.control): its dead letters are NAME.dead-letter.")
def dead_letters(amqp: tuple[str, ...], limit: int, idle: float, take: bool, as_json: bool,
                 exchange: str | None) -> None:
    """Show the dead letters: messages a node in diagnostic mode ignored or refused, with the
    reason (turn it on with `cellframe send node:NAME '(diagnostic true)'`)."""
    import json

    from .deadletters import format_letter, read_dead_letters

    with make_transport(amqp, exchange=exchange) as transport:
        letters = read_dead_letters(transport, limit=limit, idle=idle, take=take)
    from .status import to_json_ready

    for letter in letters:
        click.echo(json.dumps(to_json_ready(letter.as_dict()), sort_keys=True) if as_json
                   else format_letter(letter))
    if not as_json:
        kept = "removed" if take else "left in the queue"
        click.echo(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''} ({kept})", err=True)


@main.command()
@zone_option
@click.option("--amqp", type=UTF8, metavar="URL", help="Run the nodes as processes on this RabbitMQ.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--timeout", type=POSITIVE_SECONDS, default=30.0, show_default=True,
              help="Seconds to wait for each step before declaring the healing failed.")
def demo(zone_file: str | None, dns_server: str | None, domain: str | None, example: bool,
         amqp: str | None,
         as_json: bool, timeout: float) -> None:
    """Start a local cluster, kill nodes, and watch it heal (exit 0 only if it did)."""
    import json

    from rich.console import Console

    from .demo import Scenario
    from .demo_launchers import EmbeddedLauncher, ProcessLauncher

    if logging.getLogger().level >= logging.WARNING:
        # The demo narrates the healing itself; the nodes' own warnings (unroutable requests
        # in the detection gap, the zone's deliberately broken record) would drown it out.
        logging.getLogger("cellframe").setLevel(logging.ERROR)
    console = Console(stderr=as_json)
    zone = zone_file or (None if dns_server else str(bundled_zone()))
    try:
        if amqp:
            launcher: Any = ProcessLauncher(amqp, zone=zone, dns=dns_server, domain=domain)
        else:
            launcher = EmbeddedLauncher(zone or str(bundled_zone()))
        scenario = Scenario(launcher, timeout=timeout,
                            show=lambda line: console.print(line, highlight=False))
        summary = scenario.run()
    except CellframeError as error:
        raise _fail(error) from error
    if as_json:
        click.echo(json.dumps(summary.as_dict(), sort_keys=True))
    else:
        from .demo import summary_table

        console.print(summary_table(summary))
    sys.exit(0 if summary.healed else 1)


@main.command()
@click.option("--nodes", type=click.IntRange(2, 100_000), default=100, show_default=True)
@click.option("--seconds", type=NumberRange(1.0, 86_400.0), default=30.0, show_default=True,
              help="Virtual seconds after a 5 s warm-up.")
@click.option("--loss", type=NumberRange(0.0, 0.5), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--watchers", type=click.IntRange(0), default=3, show_default=True,
              help="The watch ring's k (0: every node hears every heartbeat).")
@click.option("--crashes", type=click.IntRange(0), default=10, show_default=True)
@click.option("--cold-start", is_flag=True,
              help="Start with empty views and real hellos (n**2 deliveries) instead of converged.")
@click.option("--partition", "partition_text", type=UTF8, metavar="FRACTION@AT+SECONDS",
              help="Split FRACTION of the nodes (chosen by the seed) from the rest AT virtual "
                   "seconds after the warm-up, for SECONDS, then heal (e.g. 0.3@10+5).")
@click.option("--roles", type=click.IntRange(0), default=0, show_default=True,
              help="One-slot roles in the DNS intent, held by the first nodes and reconciled "
                   "(the report then says which roles were held twice after a partition).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
def simulate(nodes: int, seconds: float, loss: float, seed: int, watchers: int, crashes: int,
             cold_start: bool, partition_text: str | None, roles: int, as_json: bool) -> None:
    """Run the real membership code for NODES nodes on a virtual clock and broker; report
    detection time, false downs and messages per node per second."""
    import json

    from ..simulation import PartitionFault
    from ..simulation import simulate as run

    if roles > nodes:  # each is held by one of the first nodes; a million took hours
        raise click.BadParameter(f"{roles} one-slot roles need at least as many nodes, not {nodes}",
                                 param_hint="--roles")
    try:
        partition = PartitionFault.parse(partition_text) if partition_text else None
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--partition") from error
    report = run(nodes, seconds=seconds, seed=seed, loss=loss, watchers=watchers,
                 crashes=crashes, converged=not cold_start, partition=partition,
                 roles=roles).as_dict()
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    for key, value in report.items():
        click.echo(f"{key:<30} {value}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
@click.option("--quick", is_flag=True, help="Smaller runs (a minute instead of several).")
@click.option("--only", type=UTF8, multiple=True, metavar="KEY", help="Run only these comparisons.")
@click.option("--amqp", type=UTF8, metavar="URL", default=DEFAULT_AMQP, show_default=True)
def bench(as_json: bool, quick: bool, only: tuple[str, ...], amqp: str) -> None:
    """Measure cellframe against raw pykka, raw pika, lark and SQLite, in one run."""
    import json
    from urllib.parse import urlparse

    from rich.console import Console
    from rich.table import Table

    from ..benchmarks.comparisons import COMPARISONS, run_comparisons

    console = Console(stderr=True)
    parsed = urlparse(amqp)
    broker = _port_open(parsed.hostname or "127.0.0.1", parsed.port or 5672)
    with console.status("benchmarking") as spinner:
        results = run_comparisons(
            quick=quick, only=list(only) or None, broker_available=broker,
            progress=lambda title: spinner.update(f"benchmarking: {title}"),
        )
    if as_json:
        click.echo(json.dumps(results, sort_keys=True))
        return
    table = Table(title="cellframe bench (ratio = cellframe / baseline, same run)")
    for column in ("comparison", "ratio", "goal", "figures"):
        table.add_column(column)
    for comparison in COMPARISONS:
        figures = results.get(comparison.key)
        if figures is None:
            continue
        ratio = figures.get("ratio", figures.get("p99_ms", "-"))
        rest = ", ".join(f"{k}={v}" for k, v in figures.items() if k not in ("ratio", "goal"))
        table.add_row(comparison.title, str(ratio), comparison.goal, rest)
    Console().print(table)


@main.command()
@zone_option
@key_options
@click.option("--amqp", type=UTF8, multiple=True, metavar="URL", help="Talk to the cluster on this "
              "RabbitMQ (repeat for fail-over); without it, start a local cluster on the "
              "embedded transport and talk to that.")
@click.option("--history", type=FilePath(dir_okay=False), help="History file "
              "(default ~/.cellframe_history).")
@topology_option
def repl(zone_file: str | None, dns_server: str | None, domain: str | None,
         example: bool, secret_file: str | None, key_file: str | None,
         amqp: tuple[str, ...], history: str | None,
         exchange: str | None, queue_prefix: str) -> None:
    """An interactive prompt: TARGET EXPRESSION lines, call-backs printed as they arrive."""
    from ..client import Client
    from .repl import DEFAULT_HISTORY, Repl

    cluster = None
    _refuse_remote_options_without_amqp(amqp)
    if amqp:
        signer = make_signer(secret_file, key_file=key_file, exchange=exchange)
        transport = make_transport(amqp, exchange=exchange)
    else:
        from ..node.cluster import LocalCluster
        from ..wire.keys import new_key
        from ..wire.signing import Signer

        logging.getLogger("cellframe").setLevel(logging.ERROR)
        signer = Signer(new_key("local", kind="node"))  # ephemeral: secure with no set-up
        try:
            cluster = LocalCluster(zone_file or str(bundled_zone()), signer=signer).start()
        except CellframeError as error:
            raise _fail(error) from error
        transport = cluster.broker.connect(name="repl")
        click.echo(f"local cluster on the embedded transport: {', '.join(cluster.names)}")
    client = Client(transport, signer=signer, queue_prefix=queue_prefix)
    session = Repl.with_file_history(client, Path(history) if history else DEFAULT_HISTORY)
    client.on_reply = session.on_reply
    click.echo("type TARGET EXPRESSION, e.g. node:web-01 (status); ,help for more; Ctrl-D quits")
    try:
        session.run()
    finally:
        client.close()
        transport.close()
        if cluster is not None:
            cluster.stop()


#: repl's options that only a cluster on a broker reads (the local one has a key of its own).
_REMOTE_OPTIONS = {"key_file": "--key", "secret_file": "--secret-file", "dns_server": "--dns",
                   "domain": "--domain", "exchange": "--exchange"}


def _refuse_remote_options_without_amqp(amqp: tuple[str, ...]) -> None:
    """`repl --key ops.key` with --amqp forgotten talked to a local toy cluster, the key
    unread. Options from the environment ($CELLFRAME_KEY) stay quiet: they are not a typo."""
    if amqp:
        return
    ctx = click.get_current_context()
    given = [flag for name, flag in _REMOTE_OPTIONS.items()
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    given += [f"--tls-{name.replace('_', '-')}" for name in ctx.meta.get("cellframe.tls", {})]
    if given:
        raise CliError(f"{', '.join(given)} without --amqp: give --amqp URL to talk to that "
                       "cluster (without it, repl starts a local one with a key of its own)")


def _stopped_by_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT (Ctrl-C) set, for a command that runs until told."""
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    return stopped


def _port_open(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


main.add_command(keys)
