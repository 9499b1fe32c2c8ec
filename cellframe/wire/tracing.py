"""Traces across AMQP with OpenTelemetry: W3C trace context in every message, and spans that
follow the messaging semantic conventions. Off unless enabled; needs ``cellframe[otel]``.

pika's ``SelectConnection`` is not instrumented by opentelemetry-python-contrib (#920), and a
broker in between loses the trace, so cellframe carries it itself. Once ``enable()`` is called
(``cellframe --trace-file PATH ...`` calls it in a process):

- ``send`` (PRODUCER): ``envelope_for`` opens a span ``send <routing key>``, a child of what
  is current (a cell's ``apply``, or the caller's own span), and writes its context into the
  envelope's headers as ``traceparent`` (and ``tracestate``), before the envelope is signed. A
  call-back (a send to ``reply.<name>``) is named ``call-back <routing key>``.
- ``deliver`` (CONSUMER): a node reading a delivery opens ``deliver <routing key>`` as a child
  of the context in its headers, and hands that context to the cell with the ``Message``
  (``Message.trace``); a client does the same for a call-back, around ``on_reply``.
- ``apply`` (INTERNAL): the cell evaluates and applies the message in ``apply <verb>``, a child
  of ``deliver``, with ``cellframe.verb``, ``cellframe.transition`` (``from -> to``) and
  ``cellframe.result`` (``applied``, ``ignored``, ``refused``, ``error``, ``duplicate``). It
  is the current span while the action runs, so what the action sends, and its call-back,
  continue the request's trace.

Messaging attributes: ``messaging.system`` (``rabbitmq``), ``messaging.operation.type``
(``send``, ``process``), ``messaging.operation.name`` (``send``, ``call-back``, ``deliver``),
``messaging.destination.name`` (the routing key; the exchange is the transport's) and
``messaging.message.id``.

Without ``enable()``, ``active`` stays None: the hooks in ``envelope_for``, the node, the client
and the cell are one attribute test each, and opentelemetry is never imported (a test checks).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..errors import MissingExtraError


class Envelope(Protocol):
    """What tracing reads and writes of an ``envelope.Envelope`` (declared here: envelope.py
    imports this module, so this one may not import it)."""

    body: bytes
    message_id: str
    headers: dict[str, Any]


class Message(Protocol):
    """What tracing reads of an ``envelope.Message``."""

    @property
    def expr(self) -> Any: ...

    @property
    def id(self) -> str: ...

    @property
    def trace(self) -> Any: ...


_M = TypeVar("_M", bound=Message)

__all__ = ["TRACEPARENT", "TRACESTATE", "TRACE_FILE_ENV", "TRACE_SAMPLE_ENV", "ExportingTracing",
           "Tracing", "active", "disable", "enable", "enable_exporting", "enable_to_file"]

#: ``cellframe --trace-file`` reads this too: a path, ``{pid}`` replaced by the process id;
#: and ``--trace-sample`` this one: the share of new traces recorded.
TRACE_FILE_ENV = "CELLFRAME_TRACE_FILE"
TRACE_SAMPLE_ENV = "CELLFRAME_TRACE_SAMPLE"

#: The W3C Trace Context headers.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

#: The tracing in force, or None (off: the default).
active: Tracing | None = None

_RESULTS = ("applied", "ignored", "refused", "errors", "duplicates")
#: A cell's counts of each result, in one call (0.12 us against 0.31 for five getattrs).
_counts = operator.attrgetter(*_RESULTS)
#: What an apply span says of each: its ``cellframe.result``, and whether it is an error.
_OUTCOMES = (("applied", False), ("ignored", False), ("refused", True), ("error", True),
             ("duplicate", False))


def _outcome(before: tuple[int, ...], after: tuple[int, ...]) -> tuple[str, bool]:
    """The outcome of the first count that moved, in ``_RESULTS``' order; applied if none
    did. A plain loop: 0.24 us against 0.85 for ``next()`` over a generator and a lookup."""
    for outcome, b, a in zip(_OUTCOMES, before, after, strict=True):
        if a > b:
            return outcome
    return _OUTCOMES[0]


def _import_api() -> Any:
    try:
        from opentelemetry import trace
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "tracing needs OpenTelemetry, which comes with an extra: pip install 'cellframe[otel]'"
        ) from exc
    return trace


class Tracing:
    """The spans cellframe makes, through an OpenTelemetry ``TracerProvider``'s tracer: every
    processor, sampler and exporter configured on it applies (``enable(provider)``).

    The hooks run on every message, so they take the short way where OpenTelemetry's general
    one costs: ``traceparent`` is written and read here (the W3C format is four fixed fields;
    the TraceContext propagator's regular expressions took 16 us a message of the 50 a send
    span cost), spans are started with ``start_span`` and made current by hand rather than
    through context managers, and each carries only the attributes the conventions require
    (the SDK checks every attribute as it is set: 3 us each here). ``ExportingTracing`` goes
    further, for throughput.
    """

    def __init__(self, provider: Any = None) -> None:
        trace = _import_api()
        from opentelemetry import context
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

        self._trace = trace
        self._attach, self._detach = context.attach, context.detach
        self._set_span = trace.set_span_in_context
        self._non_recording, self._span_context = NonRecordingSpan, SpanContext
        self._flags, self._state = TraceFlags, TraceState
        self.provider = provider if provider is not None else trace.get_tracer_provider()
        self.tracer = self.provider.get_tracer("cellframe")
        self._producer = trace.SpanKind.PRODUCER
        self._consumer = trace.SpanKind.CONSUMER
        self._internal = trace.SpanKind.INTERNAL
        self._error = trace.Status(trace.StatusCode.ERROR)

    # -- the hooks --------------------------------------------------------------------

    def on_send(self, envelope: Envelope, target: str) -> None:
        """A send span for ``envelope`` to ``target``, its context put in the headers."""
        operation = "call-back" if target.startswith("reply.") else "send"
        span = self._start(f"{operation} {target}", self._producer, None,
                           _messaging(envelope, target, "send", operation))
        context = self._context_of(span)
        headers = envelope.headers
        headers[TRACEPARENT] = "00-%032x-%016x-%02x" % (  # noqa: UP031 (0.32 us; the f-string 0.51)
            context.trace_id, context.span_id, context.trace_flags)
        if context.trace_state:
            headers[TRACESTATE] = context.trace_state.to_header()
        self._end(span)

    def on_deliver(self, envelope: Envelope, key: str) -> Any:
        """A deliver span for ``envelope`` received on ``key``, a child of the context in its
        headers; returns the span's context, for the cell that applies it."""
        span = self._start(f"deliver {key}", self._consumer, self._parent(envelope.headers),
                           _messaging(envelope, key, "process", "deliver"))
        self._end(span)
        return self._current(span)

    def delivering(self, envelope: Envelope, key: str, then: Callable[[], None]) -> None:
        """``then()`` inside a deliver span (a client's call-back, around ``on_reply``)."""
        span = self._start(f"deliver {key}", self._consumer, self._parent(envelope.headers),
                           _messaging(envelope, key, "process", "deliver"))
        token = self._attach(self._current(span))
        try:
            then()
        finally:
            self._detach(token)
            self._end(span)

    def apply(self, cell: Any, message: _M, handle: Callable[[_M], None]) -> None:
        """``handle(message)`` inside an apply span: the cell's evaluation and transition."""
        expr = message.expr
        verb = getattr(expr[0], "name", None) if isinstance(expr, list) and expr else None
        counters = cell.cell_counters
        before_state = cell.cell_state
        before = _counts(counters)
        span = self._start(f"apply {verb or 'message'}", self._internal, message.trace, None)
        token = self._attach(self._current(span))
        try:
            handle(message)
        finally:
            self._detach(token)
            result, error = _outcome(before, _counts(counters))
            self._end(span, {"cellframe.cell": cell.cell_name, "cellframe.verb": verb or "",
                             "cellframe.transition": f"{before_state} -> {cell.cell_state}",
                             "cellframe.result": result}, error=error)

    def trace_id(self) -> str | None:
        """The current trace id (32 hex digits), or None outside any span."""
        context = self._trace.get_current_span().get_span_context()
        return f"{context.trace_id:032x}" if context.is_valid else None

    def shutdown(self) -> None:
        """Export what is left (the provider's processors flush on its shutdown)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()

    # -- spans, through the provider's tracer ---------------------------------------------

    def _start(self, name: str, kind: Any, parent: Any, attributes: dict[str, Any] | None) -> Any:
        return self.tracer.start_span(name, context=parent, kind=kind, attributes=attributes)

    def _end(self, span: Any, attributes: dict[str, Any] | None = None, *, error: bool = False) -> None:
        if attributes:
            span.set_attributes(attributes)
        if error:
            span.set_status(self._error)
        span.end()

    def _context_of(self, span: Any) -> Any:
        return span.get_span_context()

    def _current(self, span: Any) -> Any:
        """A context in which ``span`` is the current one."""
        return self._set_span(span)

    def _parent(self, headers: dict[str, Any]) -> Any:
        """The context a W3C ``traceparent`` header names, or None (a new trace)."""
        ids = _header_ids(headers)
        if ids is None:
            return None
        remote = self._span_context(ids[0], ids[1], is_remote=True, trace_flags=self._flags(ids[2]),
                                    trace_state=self._state.from_header([ids[3]]) if ids[3] else None)
        return self._set_span(self._non_recording(remote))


def _header_ids(headers: dict[str, Any]) -> tuple[int, int, int, str | None] | None:
    """Trace id, parent span id, flags and tracestate from a W3C ``traceparent`` header, or
    None if it is missing or malformed: version 00, 32 and 16 hex digits, not all zero, 2 of
    flags."""
    value = headers.get(TRACEPARENT)
    # The dashes where the four fields end, and no others: what splitting on them and
    # checking the fields' lengths found, without the list.
    if (type(value) is not str or len(value) != 55 or value[2] != "-" or value[35] != "-"
            or value[52] != "-" or value[:2] != "00" or value.count("-") != 3):
        return None
    try:
        trace_id, span_id, flags = int(value[3:35], 16), int(value[36:52], 16), int(value[53:], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    state = headers.get(TRACESTATE)
    return trace_id, span_id, flags, state if isinstance(state, str) and state else None


class _Open:
    """A span ExportingTracing has begun, in plain numbers: what it needs to record it once
    it ends (the OpenTelemetry objects are made on the exporting thread). Its end time and
    whether it failed are kept on it too, so a span waits for export as one object, without a
    tuple around it."""

    __slots__ = ("name", "kind", "trace_id", "span_id", "trace_flags", "trace_state", "parent_id",
                 "parent_remote", "start", "attributes", "end", "error")

    def __init__(self, name: str, kind: Any, trace_id: int, span_id: int, trace_flags: int,
                 trace_state: Any, parent_id: int, parent_remote: bool, start: int,
                 attributes: dict[str, Any] | None) -> None:
        self.name, self.kind, self.trace_id, self.span_id = name, kind, trace_id, span_id
        self.trace_flags, self.trace_state = trace_flags, trace_state
        self.parent_id, self.parent_remote = parent_id, parent_remote
        self.start, self.attributes = start, attributes
        self.end, self.error = 0, False


class ExportingTracing(Tracing):
    """The same spans, recorded by cellframe and handed to an OpenTelemetry ``SpanExporter``
    (OTLP, a file, the SDK's in-memory one) in batches from a thread of its own.

    What the SDK's tracer does per span (sampler, attribute checks, span processors, a
    ReadableSpan copy at the end) cost 18 us for a bare span here, and a node makes two a
    message; this records a span in a few microseconds: its ids, its times and a dict. The
    current span inside ``apply`` is then a non-recording one that carries the ids, so what
    an action sends, logs or traces with a tracer of its own joins the trace. ``sample`` is
    the share of new traces recorded (a trace begun elsewhere follows its sender's choice).
    At most ``capacity`` spans wait; more are dropped and counted (``dropped``).
    """

    def __init__(self, exporter: Any, *, resource: Any = None, sample: float = 1.0,
                 batch_spans: int = 512, interval: float = 0.5, capacity: int = 50_000) -> None:
        super().__init__(provider=_NoProvider())
        import collections
        import random
        import threading
        import time

        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.exporter = exporter
        self.resource = resource if resource is not None else Resource.create({"service.name": "cellframe"})
        self.sample = sample
        self.batch_spans, self.interval, self.capacity = batch_spans, interval, capacity
        self.dropped = 0
        self.exported = 0
        self._readable, self._scope = ReadableSpan, InstrumentationScope("cellframe")
        self._now = time.time_ns
        self._bits, self._random = random.getrandbits, random.random
        self._done: collections.deque[_Open] = collections.deque()
        self._unset = self._trace.Status(self._trace.StatusCode.UNSET)
        from ._current_span import CurrentSpan

        self._current_span = CurrentSpan  # its SpanContext made only if asked: 0.6 us a message
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cellframe-spans", daemon=True)
        self._thread.start()
        import atexit

        atexit.register(self.shutdown)

    def on_deliver(self, envelope: Envelope, key: str) -> Any:
        """As ``Tracing.on_deliver``, without OpenTelemetry objects: the header's numbers go
        straight into the span, and the span itself is what the cell gets."""
        ids = _header_ids(envelope.headers)
        attributes = _messaging(envelope, key, "process", "deliver")
        if ids is None:
            span = self._start(f"deliver {key}", self._consumer, None, attributes)
        else:
            span = _Open(f"deliver {key}", self._consumer, ids[0], self._bits(64) or 1, ids[2],
                         self._state.from_header([ids[3]]) if ids[3] else None, ids[1], True,
                         self._now(), attributes)
        self._end(span)
        return span

    def _start(self, name: str, kind: Any, parent: Any, attributes: dict[str, Any] | None) -> Any:
        if type(parent) is not _Open:  # not a deliver span handed to the cell
            current = self._trace.get_current_span(parent)
            if type(current) is not self._current_span:  # not inside an apply span either
                above = current.get_span_context()
                if above.is_valid:
                    return _Open(name, kind, above.trace_id, self._bits(64) or 1,
                                 int(above.trace_flags), above.trace_state or None, above.span_id,
                                 above.is_remote, self._now(), attributes)
                flags = 1 if self._random() < self.sample else 0
                return _Open(name, kind, self._bits(128) or 1, self._bits(64) or 1, flags, None, 0,
                             False, self._now(), attributes)
            parent = current.recorded
        return _Open(name, kind, parent.trace_id, self._bits(64) or 1, parent.trace_flags,
                     parent.trace_state, parent.span_id, False, self._now(), attributes)

    def _end(self, span: Any, attributes: dict[str, Any] | None = None, *, error: bool = False) -> None:
        if not span.trace_flags & 1:  # not sampled: it carried its context, nothing to record
            return
        if attributes:
            span.attributes = {**span.attributes, **attributes} if span.attributes else attributes
        done = self._done
        if len(done) >= self.capacity:
            self.dropped += 1
            return
        span.end, span.error = self._now(), error
        done.append(span)
        if len(done) == self.batch_spans:
            self._wake.set()

    def _context_of(self, span: Any) -> Any:
        return span  # it has trace_id, span_id, trace_flags and trace_state, as a SpanContext

    def _current(self, span: Any) -> Any:
        return self._set_span(self._current_span(span))

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self._export()

    def _export(self) -> None:
        done = self._done
        while done:
            batch = [done.popleft() for _ in range(min(len(done), self.batch_spans))]
            recorded = getattr(self.exporter, "export_recorded", None)  # cellframe's own file exporter
            try:
                if recorded is not None:
                    recorded(batch, self._pid)
                else:
                    self.exporter.export([self._readable_span(span) for span in batch])
                self.exported += len(batch)
            except Exception:  # an exporter's failure must not stop the node: count, go on
                self.dropped += len(batch)

    def _readable_span(self, span: _Open) -> Any:
        context = self._span_context(span.trace_id, span.span_id, is_remote=False,
                                     trace_flags=self._flags(span.trace_flags),
                                     trace_state=span.trace_state)
        parent = self._span_context(span.trace_id, span.parent_id, is_remote=span.parent_remote,
                                    trace_flags=self._flags(span.trace_flags)) if span.parent_id else None
        return self._readable(span.name, context=context, parent=parent, resource=self.resource,
                              attributes=span.attributes, kind=span.kind, start_time=span.start,
                              end_time=span.end, status=self._error if span.error else self._unset,
                              instrumentation_scope=self._scope)

    def shutdown(self) -> None:
        """Export what waits, then shut the exporter down (idempotent)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        self._thread.join(10)
        self._export()
        self.exporter.shutdown()


class _NoProvider:
    """ExportingTracing makes its spans itself: a provider that is never asked for spans."""

    def get_tracer(self, name: str) -> None:
        return None


def _messaging(envelope: Envelope, key: str, kind: str, operation: str) -> dict[str, Any]:
    """The messaging conventions' attributes; the routing key is the destination."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": kind,
        "messaging.operation.name": operation,
        "messaging.destination.name": key,
        "messaging.message.id": envelope.message_id,
    }


def enable(provider: Any = None) -> Tracing:
    """Turn tracing on in this process, on ``provider`` (an OpenTelemetry TracerProvider;
    default: the global one). Needs ``opentelemetry-api`` (``cellframe[otel]``)."""
    global active
    active = Tracing(provider)
    return active


def enable_exporting(exporter: Any, *, resource: Any = None, sample: float = 1.0) -> ExportingTracing:
    """Turn tracing on in this process, cellframe recording the spans and handing them to
    ``exporter`` (an OpenTelemetry SpanExporter) in batches: the fast way
    (``ExportingTracing``). Needs ``opentelemetry-sdk`` (``cellframe[otel]``)."""
    global active
    if not 0.0 <= sample <= 1.0:
        from ..errors import ConfigError

        raise ConfigError(f"a sample ratio is from 0 to 1, got {sample!r}")
    try:
        exporting = ExportingTracing(exporter, resource=resource, sample=sample)
    except ModuleNotFoundError as exc:
        raise MissingExtraError("exporting spans needs OpenTelemetry's SDK: pip install "
                                "'cellframe[otel]'") from exc
    active = exporting
    return exporting


def disable() -> None:
    """Turn tracing off: the hooks cost one attribute test again."""
    global active
    active = None


def enable_to_file(path: str, *, sample: float = 1.0) -> ExportingTracing:
    """Tracing whose spans go to ``path``, one JSON line each (``{pid}`` becomes the process
    id): for a process whose spans a test or a script gathers (``cellframe --trace-file``)."""
    try:
        from ._trace_files import JsonLinesExporter, process_resource
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "tracing to a file needs OpenTelemetry's SDK: pip install 'cellframe[otel]'") from exc
    return enable_exporting(JsonLinesExporter(path.replace("{pid}", str(os.getpid()))),
                            resource=process_resource(), sample=sample)
