"""Probe records into OpenTelemetry, when the application uses it (``pip install 'fastattach[otel]'``).

Each record production.emit_probe_record sends to the ``fastattach.probe`` logger also
becomes an OTel log record, made through the opentelemetry-api the application configured
with its SDK: the probe's fields as attributes, and the active trace and span ids (the
current context).  With ``otel_span_events`` the record is also an event on the current span.
fastattach writes no exporter: the application's SDK exports as it is configured to.

fastattach never imports opentelemetry itself when the application has not: a process that
does not use it pays nothing.  When the application already bridges ``logging`` into OTel
(the SDK's LoggingHandler on the probe logger's path), the logging record gets there that
way, and this module does not send a second one.
"""

from __future__ import annotations

import json
import logging
import sys
import time

log = logging.getLogger("fastattach")

_SCOPE = "fastattach.probe"
# probe_* logging fields -> OTel attribute names (semantic conventions where one exists);
# any other probe_X field becomes fastattach.probe.X.
_ATTRIBUTE_NAMES = {
    "probe_kind": "fastattach.probe.kind",
    "probe_breakpoint_id": "fastattach.probe.id",
    "probe_file": "code.file.path",
    "probe_line": "code.line.number",
    "probe_thread": "thread.name",
    "probe_message": "fastattach.probe.message",
    "probe_snapshot": "fastattach.probe.snapshot",
    "probe_redacted": "fastattach.probe.redacted",
}
_failed = False


def attributes_of(fields: dict) -> dict:
    """OTel attribute values are str, bool, int, float (or lists of one of them): anything else as JSON."""
    attributes = {}
    for name, value in fields.items():
        key = _ATTRIBUTE_NAMES.get(name) or f"fastattach.probe.{name.removeprefix('probe_')}"
        if value is None:
            continue
        if not isinstance(value, (str, bool, int, float)):
            value = json.dumps(value, separators=(",", ":"), default=str)
        attributes[key] = value
    return attributes


def _bridged_through_logging(logging_on: bool) -> bool:
    """An OTel logging handler (the SDK's LoggingHandler, or opentelemetry-instrumentation-logging's)
    sees fastattach.probe's records already."""
    if not logging_on:
        return False
    logger = logging.getLogger(_SCOPE)
    while logger is not None:
        if any(type(handler).__module__.startswith("opentelemetry.") for handler in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


def emit(o: dict, message: str, fields: dict) -> None:
    """Send one probe record to OTel if the application uses it.  Never raises: a broken SDK
    is logged once and left alone, the probe's other outputs go on."""
    global _failed
    if not (o["otel_logs"] or o["otel_span_events"]) or sys.modules.get("opentelemetry") is None:
        return
    try:
        # RSS: opentelemetry is the application's; imported only once it has imported it itself.
        from opentelemetry import _logs, context, trace

        attributes = None
        if o["otel_logs"] and not _bridged_through_logging(o["probe_logging"]):
            attributes = attributes_of(fields)
            now = time.time_ns()
            _logs.get_logger(_SCOPE).emit(_logs.LogRecord(
                timestamp=now, observed_timestamp=now, context=context.get_current(),
                severity_text="INFO", severity_number=_logs.SeverityNumber.INFO, body=message,
                attributes=attributes))
        if o["otel_span_events"]:
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event(_SCOPE, attributes if attributes is not None else attributes_of(fields))
    except Exception:
        if not _failed:
            _failed = True
            log.warning("fastattach: sending a probe record to OpenTelemetry failed; later failures are not "
                        "logged", exc_info=True)
