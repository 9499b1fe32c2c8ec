"""Traces across AMQP: W3C trace context in the headers, spans per the messaging semantic
conventions, one trace from a send through two cells and back; and nothing at all without
the extra."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cellframe import Client, MemoryBroker, Node, RoleRegistry, Symbol
from cellframe.testing import wait_for
from cellframe.wire import tracing
from tests.process_cells import Echo, Relay
from tests.process_support import REPO, ProcessCluster, child_env

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from cellframe.wire._trace_files import span_record  # noqa: E402

REGISTRY = RoleRegistry({"relay": [Relay], "echo": [Echo]})


class Exported:
    """The spans tracing exported: through an SDK TracerProvider, or cellframe's own
    recording (``enable_exporting``), both into the SDK's in-memory exporter."""

    def __init__(self, way: str) -> None:
        self.exporter = InMemorySpanExporter()
        if way == "provider":
            provider = sdk.TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.tracing = tracing.enable(provider)
        else:
            self.tracing = tracing.enable_exporting(self.exporter)
            self.tracing.interval = 0.01

    def get_finished_spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture(params=["provider", "exporting"])
def spans(request):
    """Tracing on, one way or the other; off again after the test."""
    exported = Exported(request.param)
    try:
        yield exported
    finally:
        tracing.disable()
        exported.tracing.shutdown()


def assert_one_linked_trace(records: list[dict[str, Any]]) -> None:
    """client send -> deliver relay -> apply relay -> send echo -> deliver -> apply echo ->
    call-back -> deliver at the client: one trace, each span the child of the one before."""
    assert len({r["trace_id"] for r in records}) == 1, "more than one trace"
    ids = {r["span_id"]: r for r in records}
    [root] = [r for r in records if r["parent_span_id"] is None]
    walk, span = [root], root
    while True:
        children = [r for r in records if r["parent_span_id"] == span["span_id"]]
        if not children:
            break
        assert len(children) == 1, f"{span['name']} has children {[c['name'] for c in children]}"
        span = children[0]
        walk.append(span)
    assert [r["name"].rsplit(" ", 1)[0] if not r["name"].startswith("apply") else r["name"]
            for r in walk] == ["send", "deliver", "apply relay", "send", "deliver", "apply echo",
                               "call-back", "deliver"]
    assert [r["kind"] for r in walk] == ["PRODUCER", "CONSUMER", "INTERNAL", "PRODUCER",
                                         "CONSUMER", "INTERNAL", "PRODUCER", "CONSUMER"]
    assert len(ids) == len(records) == 8
    first_send, apply_echo = walk[0], walk[5]
    assert first_send["attributes"]["messaging.system"] == "rabbitmq"
    assert first_send["attributes"]["messaging.operation.type"] == "send"
    assert first_send["attributes"]["messaging.destination.name"] == "cell.relay-01"
    assert walk[1]["attributes"]["messaging.operation.name"] == "deliver"
    assert walk[1]["attributes"]["messaging.message.id"] == first_send["attributes"]["messaging.message.id"]
    assert apply_echo["attributes"]["cellframe.verb"] == "echo"
    assert apply_echo["attributes"]["cellframe.result"] == "applied"
    assert apply_echo["attributes"]["cellframe.transition"] == "ready -> ready"
    assert walk[6]["attributes"]["messaging.operation.name"] == "call-back"


def test_a_send_through_two_cells_and_its_call_back_make_one_trace(spans) -> None:
    broker = MemoryBroker()
    nodes = [Node(name, transport=broker.connect(), registry=REGISTRY, role=role).start()
             for name, role in (("relay-01", "relay"), ("echo-01", "echo"))]
    try:
        with Client(broker.connect()) as client:
            client.send("cell.relay-01", '(relay "echo-01" "hi")')
            [reply] = wait_for(lambda: client.replies[:], 20)
            assert reply.expr == [Symbol("echoed"), "hi", "echo-01"]
            wait_for(lambda: len(spans.get_finished_spans()) == 8, 20,
                     show=lambda: [s.name for s in spans.get_finished_spans()])
    finally:
        for node in nodes:
            node.stop()
    assert_one_linked_trace([span_record(s) for s in spans.get_finished_spans()])


def test_every_message_carries_the_w3c_traceparent_of_its_send_span(spans) -> None:
    broker = MemoryBroker()
    seen = []
    transport = broker.connect()
    transport.declare_queue("watch", exclusive=True)
    transport.bind("watch", "cell.#")
    transport.consume("watch", lambda d: (seen.append(d.envelope), d.ack()))
    client = Client(broker.connect())
    client.send("cell.anyone", "(ping)")
    [envelope] = wait_for(lambda: seen[:], 20)
    [send] = wait_for(spans.get_finished_spans, 20)
    context = send.get_span_context()
    version, trace_id, span_id, flags = envelope.headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert int(flags, 16) & 1, "not marked sampled"
    client.close()


class Lamp:
    """The little of a cell an apply span reads."""

    def __init__(self) -> None:
        from cellframe.cell.cell import CellCounters

        self.cell_name, self.cell_state, self.cell_counters = "lamp-01", "off", CellCounters()


def test_a_span_an_action_starts_with_its_own_tracer_is_a_child_of_the_apply_span(spans) -> None:
    from cellframe.wire.envelope import Envelope, Message

    envelope = Envelope(b"(on)", headers={})
    spans.tracing.on_send(envelope, "cell.lamp-01")
    delivered = spans.tracing.on_deliver(envelope, "cell.lamp-01")
    own = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(own))
    lamp = Lamp()

    def action(message: Message) -> None:
        lamp.cell_counters.applied += 1
        with provider.get_tracer("the action's own").start_as_current_span("own work"):
            pass

    spans.tracing.apply(lamp, Message([Symbol("on")], id="m-1", trace=delivered), action)
    [mine] = own.get_finished_spans()
    [applied] = wait_for(lambda: [s for s in spans.get_finished_spans() if s.name == "apply on"], 20)
    assert mine.parent.span_id == applied.context.span_id
    assert mine.context.trace_id == applied.context.trace_id
    assert mine.context.trace_flags.sampled
    assert applied.attributes["cellframe.result"] == "applied"


def test_a_refused_message_is_an_error_span_with_its_result(spans) -> None:
    broker = MemoryBroker()
    node = Node("echo-01", transport=broker.connect(), registry=REGISTRY, role="echo").start()
    try:
        with Client(broker.connect()) as client:
            client.send("cell.echo-01", "(echo 1 2 3)")  # one argument too many
            wait_for(lambda: client.replies[:], 20)
        wait_for(lambda: any(s.name == "apply echo" for s in spans.get_finished_spans()), 20)
    finally:
        node.stop()
    [applied] = [s for s in spans.get_finished_spans() if s.name == "apply echo"]
    assert applied.attributes["cellframe.result"] == "refused"
    assert applied.status.status_code.name == "ERROR"


def test_without_tracing_nothing_of_opentelemetry_is_imported() -> None:
    program = """
import sys
from cellframe import Client, MemoryBroker, Node, RoleRegistry
from cellframe.testing import wait_for
from tests.process_cells import Echo
broker = MemoryBroker()
node = Node("echo-01", transport=broker.connect(), role="echo",
            registry=RoleRegistry({"echo": [Echo]})).start()
with Client(broker.connect()) as client:
    client.send("cell.echo-01", '(echo "hi")')
    wait_for(lambda: client.replies[:], 5)
node.stop()
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
assert loaded == [], loaded
print("clean")
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, env=child_env(), cwd=str(REPO))
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stderr[-2000:]


@pytest.mark.amqp
@pytest.mark.slow
def test_cellframe_send_wait_yields_one_trace_across_three_processes(amqp_url, tmp_path, monkeypatch) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    monkeypatch.setenv("CELLFRAME_TRACE_FILE", str(traces / "node-{pid}.jsonl"))
    cluster = ProcessCluster(amqp_url, tmp_path)
    try:
        cluster.start(["relay-01"], "--role", "relay")
        cluster.start(["echo-01"], "--role", "echo")
        monkeypatch.delenv("CELLFRAME_TRACE_FILE")
        sent = subprocess.run(
            [sys.executable, "-m", "cellframe", "--trace-file", str(traces / "send.jsonl"),
             "send", "cell:relay-01", '(relay "echo-01" "across")', "--wait", "3",
             "--amqp", cluster.url, "--exchange", cluster.exchange,
             "--queue-prefix", cluster.prefix, "--secret-file", str(cluster.secret_file)],
            capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))
        assert sent.returncode == 0, sent.stderr[-2000:]
        assert sent.stdout.strip() == '(echoed "across" "echo-01")'
        for name in ("relay-01", "echo-01"):
            assert cluster.terminate(name) == 0  # a clean exit flushes the batched spans
    finally:
        cluster.close()
    records = [json.loads(line) for path in sorted(traces.glob("*.jsonl"))
               for line in path.read_text().splitlines()]
    records = [r for r in records if r["name"].split(" ")[0] in ("send", "deliver", "apply", "call-back")
               and _about_the_request(r)]
    assert len({r["pid"] for r in records}) == 3, "the spans do not come from three processes"
    assert_one_linked_trace(records)


def _about_the_request(record: dict[str, Any]) -> bool:
    """Spans of the request's journey, not of the nodes' own traffic (heartbeats and such)."""
    destination = record["attributes"].get("messaging.destination.name", "")
    verb = record["attributes"].get("cellframe.verb")
    return (destination.startswith(("cell.relay-01", "cell.echo-01", "reply."))
            or verb in ("relay", "echo"))


def test_an_unsampled_trace_still_carries_its_context_and_records_nothing() -> None:
    exporter = InMemorySpanExporter()
    traced = tracing.enable_exporting(exporter, sample=0.0)
    broker = MemoryBroker()
    node = Node("echo-01", transport=broker.connect(), registry=REGISTRY, role="echo").start()
    try:
        with Client(broker.connect()) as client:
            client.send("cell.echo-01", '(echo "quiet")')
            wait_for(lambda: client.replies[:], 20)
    finally:
        node.stop()
        tracing.disable()
        traced.shutdown()
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("attributes", [
    {"messaging.message.id": "55b3c06e", "messaging.message.body.size": 100},
    {"cellframe.verb": "héllo", "big": 1 << 70, "odd": Symbol("x")},  # past orjson: json's way
])
def test_the_file_exporter_writes_each_span_record_as_one_json_line(tmp_path, attributes) -> None:
    from cellframe.wire._trace_files import JsonLinesExporter

    records = [{"name": f"deliver cell.x-{i}", "kind": "CONSUMER", "trace_id": "a" * 32,
                "span_id": f"{i:016x}", "parent_span_id": None, "start": 1, "end": 2,
                "attributes": attributes, "status": "UNSET", "pid": 7} for i in range(3)]
    exporter = JsonLinesExporter(str(tmp_path / "spans.jsonl"))
    exporter.export_plain(records)
    exporter.shutdown()
    lines = (tmp_path / "spans.jsonl").read_text(encoding="utf-8").splitlines()
    expected = [{**record, "attributes": {key: value if isinstance(value, (str, int)) else str(value)
                                          for key, value in attributes.items()}}
                for record in records]
    assert [json.loads(line) for line in lines] == expected


@pytest.mark.parametrize("attributes", [
    None, {"messaging.message.id": "55b3c06e", "messaging.destination.name": 'cell."q"\\é'},
    {"cellframe.verb": "héllo", "big": 1 << 70, "odd": Symbol("x")},  # past orjson: json's way
])
@pytest.mark.parametrize("name", ["deliver cell.x", "send \ud800 lone"])
@pytest.mark.parametrize("parent_id", [0, 0xB7AD6B7169203331])
def test_a_recorded_span_is_written_as_the_line_of_its_span_record(attributes, name, parent_id) -> None:
    from cellframe.wire._trace_files import _line, recorded_line, recorded_record
    from cellframe.wire.tracing import _Open

    span = _Open(name, trace.SpanKind.CONSUMER, 0x0AF7651916CD43DD8448EB211C80319C, 0xFF, 1, None,
                 parent_id, True, 1_700_000_000_000_000_001, attributes)
    span.end = 1_700_000_000_000_000_002
    for error in (False, True):
        span.error = error
        record = recorded_record(span, 7)
        assert record["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert record["span_id"] == "00000000000000ff"
        assert record["status"] == ("ERROR" if error else "UNSET")
        assert recorded_line(span, 7) == _line(record)


@pytest.mark.parametrize("traceparent", [
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # an all-zero trace id
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # a version we do not know
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333z-01",  # not hex
    "garbage", 42,
])
def test_a_malformed_traceparent_starts_a_new_trace_instead_of_failing(spans, traceparent) -> None:
    from cellframe.wire.envelope import Envelope

    envelope = Envelope(b"(ping)", headers={"traceparent": traceparent})
    context = spans.tracing.on_deliver(envelope, "cell.x")
    assert context is not None
    [deliver] = wait_for(spans.get_finished_spans, 20)
    assert deliver.parent is None  # a root: the header named no valid parent


def test_the_tracing_page_runs_as_written() -> None:
    import re

    page = (REPO / "docs" / "tracing.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert blocks, "docs/tracing.md lost its example"
    try:
        for block in blocks:
            exec(block, {})  # our own doc's example, not received text
    finally:
        tracing.disable()
