"""Finished spans as JSON lines in a file: for processes whose spans a test or a script
gathers (``cellframe --trace-file``). Imported only when tracing to a file is asked for:
it needs OpenTelemetry's SDK (``cellframe[otel]``).

One line per span: ``name``, ``kind``, ``trace_id``, ``span_id``, ``parent_span_id`` (hex;
None for a root), ``start`` and ``end`` (ns since the epoch), ``attributes``, ``status``,
``pid``. Each line is written and flushed whole, so spans from several processes can be read
back and joined by their ids.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

__all__ = ["JsonLinesExporter", "file_provider", "process_resource", "span_record"]

try:  # the otel extra brings orjson: 1.2 us a span record against 8.8 us for json's encoder
    import orjson
except ModuleNotFoundError:  # pragma: no cover - OpenTelemetry installed without the extra
    orjson = None  # type: ignore[assignment]

#: The standard library's encoder, kept for every line (``json.dumps(record, default=str)``
#: builds a JSONEncoder per call): without orjson, and for what orjson refuses (an integer
#: past 64 bits in an attribute).
_encode = json.JSONEncoder(default=str).encode


def _line(record: dict[str, Any]) -> bytes:
    """One span record as one JSON line; a traced node writes two a message."""
    if orjson is not None:
        try:
            return orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            pass
    return (_encode(record) + "\n").encode()


class Recorded(Protocol):
    """A span ``tracing.ExportingTracing`` recorded itself, in plain numbers (declared here:
    this module may not import tracing's, which imports it when asked to trace to a file)."""

    name: str
    kind: SpanKind
    trace_id: int
    span_id: int
    parent_id: int
    start: int
    attributes: dict[str, Any] | None
    end: int
    error: bool


#: A recorded span's line, ``span_record``'s keys in its order, filled in by ``%``: 1.1 us
#: a span against 1.9 to build that dict and encode it (3 when the batch is not in the
#: cache), which was most of what a traced node spent exporting. Only the name and the
#: attributes go through orjson; the ids, times and words are numbers and constants.
_RECORDED_LINE = (b'{"name":%b,"kind":"%b","trace_id":"%032x","span_id":"%016x",'
                  b'"parent_span_id":%b,"start":%d,"end":%d,"attributes":%b,"status":"%b",'
                  b'"pid":%d}\n')
_KIND_NAMES = {kind: kind.name.encode() for kind in SpanKind}


def recorded_record(span: Recorded, pid: int) -> dict[str, Any]:
    """A recorded span as ``span_record`` makes a ReadableSpan's dict."""
    return {
        "name": span.name, "kind": span.kind.name,
        "trace_id": f"{span.trace_id:032x}", "span_id": f"{span.span_id:016x}",
        "parent_span_id": f"{span.parent_id:016x}" if span.parent_id else None,
        "start": span.start, "end": span.end, "attributes": span.attributes or {},
        "status": "ERROR" if span.error else "UNSET", "pid": pid,
    }


def recorded_line(span: Recorded, pid: int) -> bytes:
    """A recorded span as one JSON line, the same bytes ``_line(recorded_record(...))``
    writes (a test holds them to it), without the dict."""
    if orjson is not None:
        try:
            return _RECORDED_LINE % (
                orjson.dumps(span.name), _KIND_NAMES[span.kind], span.trace_id, span.span_id,
                b'"%016x"' % span.parent_id if span.parent_id else b"null", span.start, span.end,
                orjson.dumps(span.attributes, default=str) if span.attributes else b"{}",
                b"ERROR" if span.error else b"UNSET", pid)
        except orjson.JSONEncodeError:  # a lone surrogate, an integer past 64 bits: json's way
            pass
    return _line(recorded_record(span, pid))


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a plain dict."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name if span.kind is not None else None,
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start": span.start_time,
        "end": span.end_time,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "pid": os.getpid(),
    }


class JsonLinesExporter(SpanExporter):
    """Appends each exported span to a file as one JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "ab")  # noqa: SIM115 (closed by shutdown)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.export_plain([span_record(span) for span in spans])

    def export_plain(self, records: Sequence[dict[str, Any]]) -> SpanExportResult:
        """Write spans already in ``span_record``'s form."""
        return self._write(b"".join([_line(record) for record in records]))

    def export_recorded(self, spans: Sequence[Recorded], pid: int) -> SpanExportResult:
        """Write the spans ``ExportingTracing`` recorded: what it hands this exporter,
        skipping the ReadableSpan it would make for any other (7 us a span, and 4 more to
        read it back here)."""
        return self._write(b"".join([recorded_line(span, pid) for span in spans]))

    def _write(self, text: bytes) -> SpanExportResult:
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(text)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def process_resource() -> Resource:
    """The resource of this process's spans: service ``cellframe`` and the process id."""
    return Resource.create({"service.name": "cellframe", "process.pid": os.getpid()})


def file_provider(path: str, *, batch: bool = False, sample: float = 1.0) -> TracerProvider:
    """A TracerProvider whose spans go to ``path``, one JSON line each; ``sample`` is the
    share of new traces recorded (a trace begun elsewhere follows its sender's choice)."""
    provider = TracerProvider(resource=process_resource(),
                              sampler=ParentBased(TraceIdRatioBased(sample)))
    exporter = JsonLinesExporter(path)
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider
