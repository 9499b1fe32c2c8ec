"""Log records shipped to the sump: the handler's promises (batched, bounded, never blocking),
the sump's files and queries, and ``cellframe logs`` reading them, on the embedded broker."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cellframe import Cell, MemoryBroker, Node, RoleRegistry, transition
from cellframe.cli.logs import format_record, parse_since
from cellframe.cli.main import main
from cellframe.client import Client
from cellframe.errors import BufferFullError, ConfigError
from cellframe.language.symbols import Keyword, Symbol
from cellframe.node.logship import SumpHandler, record_fields
from cellframe.roles.logfiles import RecordFilter, RotatingLines, read_records
from cellframe.roles.logsump import LogSumpCell, sump_folder
from cellframe.testing import wait_for
from cellframe.wire import tracing


class Noisy(Cell):
    role = "noisy"

    @transition("say")
    def say(self, text: str) -> None:
        logging.getLogger("tests.noisy").warning("said %s", text)


@pytest.fixture
def logger():
    """A logger of the test's own, so the handler sees only what the test logs."""
    named = logging.getLogger(f"tests.logship.{time.monotonic_ns()}")
    named.propagate = False
    named.setLevel(logging.DEBUG)
    yield named
    for handler in list(named.handlers):
        named.removeHandler(handler)
        handler.close()


@pytest.fixture
def sump(tmp_path):
    """A log sump node on the embedded broker, writing to ``tmp_path/sump``."""
    broker = MemoryBroker()
    registry = RoleRegistry({"logsump": [LogSumpCell]})
    node = Node("sump-01", transport=broker.connect(), registry=registry, role="logsump")
    node.settings = {"data-dir": str(tmp_path / "sump")}
    node.start()
    yield broker, node, tmp_path / "sump" / "logsump"
    node.stop()


def shipped_records(folder: Path) -> list[dict[str, Any]]:
    return list(read_records(folder))


def test_records_reach_the_sump_as_json_with_every_field(sump, logger) -> None:
    broker, _, folder = sump
    handler = SumpHandler(broker.connect(), "web-01", role=lambda: "web", interval=0.02)
    logger.addHandler(handler)
    logger.info("hello %s", "world", extra={"cell": "web-01-cache"})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    records = wait_for(lambda: len(shipped_records(folder)) == 2 and shipped_records(folder), 20)
    hello, failed = records
    assert {k: hello[k] for k in ("node", "role", "cell", "level", "logger", "message")} == {
        "node": "web-01", "role": "web", "cell": "web-01-cache", "level": "info",
        "logger": logger.name, "message": "hello world"}
    assert isinstance(hello["time"], float) and "exception" not in hello
    assert failed["level"] == "error" and "ValueError: boom" in failed["exception"]
    wait_for(lambda: handler.confirmed == 2, 20, what="both records confirmed")
    assert handler.last_confirmed is not None and handler.last_confirmed["message"] == "it failed"


def test_a_record_logged_in_a_cell_names_the_cell(tmp_path) -> None:
    broker = MemoryBroker()
    node = Node("noisy-01", transport=broker.connect(), role="noisy",
                registry=RoleRegistry({"noisy": [Noisy]})).start()
    seen: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record_fields(record, "noisy-01", "noisy"))

    keep = Keep()
    logging.getLogger("tests.noisy").addHandler(keep)
    try:
        with Client(broker.connect()) as client:
            client.send("cell.noisy-01", "(say \"hi\")")
            wait_for(lambda: seen, 20)
    finally:
        logging.getLogger("tests.noisy").removeHandler(keep)
        node.stop()
    assert seen[0]["cell"] == "noisy-01" and seen[0]["message"] == "said hi"


def test_a_record_logged_in_a_span_carries_its_trace_id(logger) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider

    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "x", (), None)
    tracer = tracing.enable(TracerProvider())
    try:
        with tracer.tracer.start_as_current_span("work") as span:
            fields = record_fields(record, "n", None)
        assert fields["trace_id"] == f"{span.get_span_context().trace_id:032x}"
        assert "trace_id" not in record_fields(record, "n", None)  # outside any span
    finally:
        tracing.disable()
    assert "trace_id" not in record_fields(record, "n", None)


class Refusing:
    """A transport in front of an embedded one that refuses every publish while ``full`` is
    set, as AmqpTransport does when its buffer of unconfirmed messages is full."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.full = threading.Event()

    def publish(self, *args: Any, **kwargs: Any) -> None:
        if self.full.is_set():
            raise BufferFullError("10000 messages await their confirms")
        self.inner.publish(*args, **kwargs)

    def flush(self, timeout: float) -> bool:
        return self.inner.flush(timeout)


def test_a_full_broker_neither_blocks_the_caller_nor_loses_what_fits_and_drops_are_reported(
        sump, logger) -> None:
    broker, node, folder = sump
    transport = Refusing(broker.connect())
    transport.full.set()
    handler = SumpHandler(transport, "web-01", capacity=1_000, interval=0.01)  # type: ignore[arg-type]
    logger.addHandler(handler)
    started = time.perf_counter()
    for index in range(3_000):
        logger.info("line %d", index)
    per_record = (time.perf_counter() - started) / 3_000
    assert per_record < 0.001, f"logging took {per_record * 1e6:.0f} us a record"
    assert handler.dropped == 2_000 and handler.counters()["waiting"] == 1_000
    transport.full.clear()  # the broker takes messages again
    wait_for(lambda: sum(r["message"].startswith("line ") for r in shipped_records(folder)) == 1_000,
             30, show=lambda: len(shipped_records(folder)))
    messages = [r["message"] for r in shipped_records(folder)]
    lines = [m for m in messages if m.startswith("line ")]
    assert lines == [f"line {i}" for i in range(1_000)]  # in order, none lost
    # A batch carries the drops counted when it was made: one note, or two if the broker
    # came back while the caller was still logging.
    notes = [m for m in messages if not m.startswith("line ")]
    assert all(note.startswith("web-01 dropped ") for note in notes)
    assert sum(int(note.split()[2]) for note in notes) == 2_000
    sump_cell = node.cells()["sump-01"]
    assert sump_cell.dropped == 2_000  # type: ignore[attr-defined]


def test_a_batch_too_large_for_one_message_is_split(sump, logger) -> None:
    broker, _, folder = sump
    handler = SumpHandler(broker.connect(), "web-01", batch_records=500, interval=0.01)
    logger.addHandler(handler)
    for index in range(500):
        logger.info("%d %s", index, "x" * 400)  # about 200 KB: four messages or more
    wait_for(lambda: len(shipped_records(folder)) == 500, 30)
    assert [int(r["message"].split()[0]) for r in shipped_records(folder)] == list(range(500))


def test_the_sump_answers_a_query_with_the_newest_matching_records(sump, logger) -> None:
    broker, _, folder = sump
    handler = SumpHandler(broker.connect(), "web-01", role=lambda: "web", interval=0.01)
    logger.addHandler(handler)
    for index in range(30):
        logger.log(logging.WARNING if index % 3 == 0 else logging.INFO, "n%d", index)
    wait_for(lambda: len(shipped_records(folder)) == 30, 20)
    with Client(broker.connect()) as client:
        client.send("role.logsump", [Symbol("logs-query"), Keyword("level"), "warning",
                                     Keyword("limit"), 4, Keyword("node"), "web-01"])
        [page] = wait_for(lambda: client.replies[:], 20)
        records = [json.loads(text) for text in page.expr[page.expr.index(Keyword("records")) + 1]]
        assert [r["message"] for r in records] == ["n18", "n21", "n24", "n27"]
        assert page.expr[-2:] == [Keyword("last"), True]
        client.send("role.logsump", [Symbol("logs-query"), Keyword("level"), "loud"])
        wait_for(lambda: len(client.replies) == 2, 20)
        assert client.replies[1].expr[0] == Symbol("error")
        assert "level must be one of" in client.replies[1].text


def test_the_sump_never_writes_in_the_working_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CELLFRAME_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert sump_folder("sump-01", {}) == tmp_path / "state" / "cellframe" / "sump-01" / "logsump"
    monkeypatch.setenv("CELLFRAME_DATA_DIR", str(tmp_path / "data"))
    assert sump_folder("sump-01", {}) == tmp_path / "data" / "sump-01" / "logsump"
    assert sump_folder("sump-01", {"data-dir": "/srv/cf"}) == Path("/srv/cf/logsump")


def test_a_file_rotates_past_its_size_and_keeps_its_newest_predecessors(tmp_path) -> None:
    lines = RotatingLines(tmp_path / "records.jsonl", max_bytes=100, keep=2)
    lines.open()
    for index in range(12):
        lines.write([json.dumps({"n": index, "pad": "x" * 30}) + "\n"])  # two lines a file
    lines.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["records.jsonl", "records.jsonl.1", "records.jsonl.2"]
    assert (tmp_path / "records.jsonl").read_text() == ""  # begun afresh after line 11
    assert [r["n"] for r in read_records(tmp_path)] == [8, 9, 10, 11]  # .2 then .1
    assert lines.rotations == 6


def test_filters_keep_a_level_and_the_ones_above_it() -> None:
    warning_up = RecordFilter(level="warning", since=10.0, role="web")
    assert warning_up.matches({"level": "error", "time": 11, "role": "web"})
    assert not warning_up.matches({"level": "info", "time": 11, "role": "web"})
    assert not warning_up.matches({"level": "error", "time": 9, "role": "web"})
    assert not warning_up.matches({"level": "error", "time": 11, "role": "proxy"})


def test_since_takes_relative_and_absolute_times() -> None:
    assert parse_since("90s", now=1000.0) == 910.0
    assert parse_since("2h", now=10_000.0) == 2_800.0
    assert parse_since("2025-01-31T12:00:00") == parse_since("2025-01-31T12:00:00+00:00")
    with pytest.raises(ConfigError, match="give 30s"):
        parse_since("yesterday")


@pytest.mark.parametrize("stamp", [float("nan"), float("inf"), 1e300, -1e300, 2.0**62, "noon", None])
def test_a_record_whose_time_no_calendar_holds_is_shown_without_one(stamp) -> None:
    """A record's time is what its node shipped; `cellframe logs` shows the record anyway."""
    line = format_record({"time": stamp, "level": "info", "node": "web-01", "message": "hi"})
    assert line == "? INFO     web-01 ?: hi"


def test_cellframe_logs_json_writes_json_whatever_numbers_a_record_holds(tmp_path) -> None:
    """A shipped record's numbers are its node's: NaN or an infinity (which Python's json
    reads and writes, and JSON has not) came out as NaN, which no JSON reader takes."""
    folder = tmp_path / "logsump"
    lines = RotatingLines(folder / "records.jsonl")
    lines.open()
    lines.write(['{"time": NaN, "node": "web-01", "level": "info", "message": "hi", '
                 '"load": Infinity}\n'])
    lines.close()
    result = CliRunner().invoke(main, ["logs", "--data-dir", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert record["time"] is None and record["load"] is None and record["message"] == "hi"


def test_cellframe_logs_reads_a_sump_folder_with_filters(tmp_path) -> None:
    folder = tmp_path / "logsump"
    lines = RotatingLines(folder / "records.jsonl")
    lines.open()
    for index, (node, level) in enumerate([("web-01", "info"), ("web-02", "error"), ("web-01", "error")]):
        lines.write([json.dumps({"time": 1_700_000_000 + index, "node": node, "role": "web",
                                 "cell": node, "level": level, "logger": "app",
                                 "message": f"m{index}", "exception": "Traceback\nValueError: x"
                                 if level == "error" else None}) + "\n"])
    lines.close()
    result = CliRunner().invoke(main, ["logs", "--data-dir", str(folder), "--node", "web-01",
                                       "--level", "error"])
    assert result.exit_code == 0, result.output
    assert result.output == format_record(json.loads(
        (folder / "records.jsonl").read_text().splitlines()[2])) + "\n"
    assert result.output.startswith("2023-11-14T22:13:22.000+00:00 ERROR    web-01/web/web-01 app: m2")
    assert "\n    ValueError: x" in result.output


def test_an_embedded_node_with_ship_logs_ships_the_services_records_until_it_stops(sump) -> None:
    broker, _, folder = sump
    service = logging.getLogger(f"tests.service.{time.monotonic_ns()}")
    with Node("svc-01", transport=broker.connect(), ship_logs=True) as node:
        handler = node.log_shipping
        assert handler in logging.getLogger().handlers
        service.info("order %d taken", 7)
        wait_for(lambda: [r for r in shipped_records(folder) if r["message"] == "order 7 taken"], 30,
                 what="the service's own record in the sump",
                 show=lambda: [r["message"] for r in shipped_records(folder)][-5:])
    assert handler not in logging.getLogger().handlers and node.log_shipping is None
    record = next(r for r in shipped_records(folder) if r["message"] == "order 7 taken")
    assert (record["node"], record["logger"], record["level"]) == ("svc-01", service.name, "info")
    stopped = wait_for(lambda: [r for r in shipped_records(folder)
                                if r["message"].startswith("node svc-01 stopped; log shipping")], 30,
                       what="the node's last words, shipped as it stopped")
    assert stopped and handler.dropped == 0


def test_a_second_node_in_one_process_may_not_ship_its_logs(sump) -> None:
    broker, _, _ = sump
    with Node("svc-01", transport=broker.connect(), ship_logs=True):
        second = Node("svc-02", transport=broker.connect(), ship_logs=True)
        with pytest.raises(ConfigError, match="already ships its logs as node svc-01"):
            second.start()
        second.stop()
    assert not [h for h in logging.getLogger().handlers if isinstance(h, SumpHandler)]
