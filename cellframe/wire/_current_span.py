"""The span current while a cell applies a message with ``tracing.ExportingTracing`` on.
Imported only then: it needs OpenTelemetry's API (``cellframe[otel]``).

Inside ``apply`` the current span must be an OpenTelemetry span, so that what the action
sends, and anything it traces with a tracer of its own, joins the trace. A ``NonRecordingSpan``
needs a ``SpanContext``, and making one (its checks, its ``TraceFlags``) cost 0.5 us of the
1.1 us it took to make the apply span current, on every message, when most actions never ask
for it. This span makes its ``SpanContext`` the first time it is asked, and ``ExportingTracing``
reads the ids it continues from the recorded span it holds, without asking.
"""

from __future__ import annotations

from typing import Any, Protocol

from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

__all__ = ["CurrentSpan", "Recorded"]


class Recorded(Protocol):
    """What this span reads of the span ``ExportingTracing`` records (``tracing._Open``)."""

    trace_id: int
    span_id: int
    trace_flags: int
    trace_state: Any


class CurrentSpan(NonRecordingSpan):
    """A ``NonRecordingSpan`` for ``recorded``, its ``SpanContext`` made when first asked."""

    def __init__(self, recorded: Recorded) -> None:  # no super().__init__: no context yet
        self.recorded = recorded
        self._made: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        made = self._made
        if made is None:
            span = self.recorded
            made = self._made = SpanContext(span.trace_id, span.span_id, is_remote=False,
                                            trace_flags=TraceFlags(span.trace_flags),
                                            trace_state=span.trace_state)
        return made

    def __repr__(self) -> str:
        return f"CurrentSpan({self.get_span_context()!r})"
