"""Probe records into OpenTelemetry (engine/otel.py): the SDK's in-memory exporters in this
process, then the real OTLP path end to end: a production-mode debuggee whose application
configured the SDK with its OTLP/HTTP exporter, a real DAP client setting a logpoint, and a
local HTTP receiver here that decodes what arrives with opentelemetry-proto."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
import warnings
from pathlib import Path

import pytest
from _e2e import kill_if_running

from fastattach import _options
from fastattach.engine import production
from fastattach.net.client import DAPClient

REPO_ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"probe_kind": "logpoint", "probe_breakpoint_id": 3, "probe_file": "/app/views.py", "probe_line": 42,
          "probe_thread": "MainThread", "probe_message": "user=alice", "probe_redacted": 1,
          "probe_snapshot": None, "probe_process": {"pid": 7}}


def test_the_otel_extra_is_in_the_dev_requirements():
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["otel"]
    requirements = {line.strip() for line in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    assert {"opentelemetry-api>=1.35", "opentelemetry-sdk>=1.35"} == set(extra) and set(extra) <= requirements


def test_without_opentelemetry_nothing_imports_it():
    code = textwrap.dedent("""
        import sys
        from fastattach import _options
        from fastattach.engine import production
        options = dict(_options.DEFAULTS, otel_span_events=True)
        production.emit_probe_record(options, "i=1", {"probe_kind": "logpoint"})
        assert "opentelemetry" not in sys.modules, sorted(m for m in sys.modules if "opentelemetry" in m)
        sys.modules["opentelemetry"] = None   # imported and then blocked: still no error, no import
        production.emit_probe_record(options, "i=2", {"probe_kind": "logpoint"})
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
    assert "OpenTelemetry" not in done.stderr


@pytest.fixture(scope="module")
def sdk():
    """The SDK as an application configures it, once per process (its providers can be set only once)."""
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra (requirements-dev.txt) is not installed")
    from opentelemetry import _logs, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    logs, spans = InMemoryLogRecordExporter(), InMemorySpanExporter()
    # Set once per process: if another test set them first, the exporters join those.
    _logs.set_logger_provider(LoggerProvider())
    trace.set_tracer_provider(TracerProvider())
    _logs.get_logger_provider().add_log_record_processor(SimpleLogRecordProcessor(logs))
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))
    yield logs, spans, trace.get_tracer("test_otel")


def test_each_probe_record_is_an_otel_log_record_in_the_active_span(sdk):
    logs, spans, tracer = sdk
    logs.clear()
    spans.clear()
    options = dict(_options.DEFAULTS, probe_logging=False)
    with tracer.start_as_current_span("GET /login") as span:
        production.emit_probe_record(options, "user=alice pw=<redacted>", FIELDS)
    production.emit_probe_record(options, "outside any span", FIELDS)
    first, second = [finished.log_record for finished in logs.get_finished_logs()]
    context = span.get_span_context()
    assert first.body == "user=alice pw=<redacted>" and first.severity_text == "INFO"
    assert (first.trace_id, first.span_id) == (context.trace_id, context.span_id)
    assert dict(first.attributes) == {
        "fastattach.probe.kind": "logpoint", "fastattach.probe.id": 3, "code.file.path": "/app/views.py",
        "code.line.number": 42, "thread.name": "MainThread", "fastattach.probe.message": "user=alice",
        "fastattach.probe.redacted": 1, "fastattach.probe.process": '{"pid":7}'}
    assert second.trace_id == 0 and second.body == "outside any span"
    assert not spans.get_finished_spans()[0].events, "span events are off by default"


def test_span_events_on_request(sdk):
    logs, spans, tracer = sdk
    logs.clear()
    spans.clear()
    options = dict(_options.DEFAULTS, probe_logging=False, otel_span_events=True, otel_logs=False)
    with tracer.start_as_current_span("GET /login"):
        production.emit_probe_record(options, "user=alice", FIELDS)
    (event,) = spans.get_finished_spans()[0].events
    assert event.name == "fastattach.probe" and event.attributes["code.line.number"] == 42
    assert not logs.get_finished_logs(), "otel_logs=False: no log record"


def test_logging_already_bridged_into_otel_gets_one_record_not_two(sdk):
    from opentelemetry.sdk._logs import LoggingHandler

    logs, _, tracer = sdk
    logs.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # 1.39+: it moves to opentelemetry-instrumentation-logging
        handler = LoggingHandler()
    probe_logger = production.probe_log
    probe_logger.addHandler(handler)
    level = probe_logger.level
    probe_logger.setLevel("INFO")
    try:
        with tracer.start_as_current_span("GET /login"):
            production.emit_probe_record(_options.DEFAULTS, "user=alice", FIELDS)
    finally:
        probe_logger.removeHandler(handler)
        probe_logger.setLevel(level)
    (record,) = [finished.log_record for finished in logs.get_finished_logs()]
    assert record.body == "user=alice" and record.attributes["probe_kind"] == "logpoint"   # the handler's


TARGET = textwrap.dedent("""
    import sys, time
    from opentelemetry import _logs, trace
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = LoggerProvider(resource=Resource.create({"service.name": "login-service"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=sys.argv[1], timeout=10), schedule_delay_millis=50))
    _logs.set_logger_provider(provider)
    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("login")

    def login(user, password):
        checked = len(user) + len(password)
        return checked  # LOG

    for i in range(1200):
        with tracer.start_as_current_span("login") as span:
            context = span.get_span_context()
            print(f"SPAN {context.trace_id:032x} {context.span_id:016x}", flush=True)
            login("alice", "hunter2-s3cr3t")
        time.sleep(0.05)
""")


class Receiver(http.server.ThreadingHTTPServer):
    """POST /v1/logs: OTLP/HTTP protobuf, decoded with opentelemetry-proto."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.records: list[tuple[int, object, object]] = []   # (received ns, resource, log record)
        self.arrived = threading.Condition()


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )

        received = time.time_ns()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        with self.server.arrived:
            for resource_logs in request.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        self.server.records.append((received, resource_logs.resource, scope_logs.scope, record))
            self.server.arrived.notify_all()
        answer = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):   # no access log on stderr
        pass


def test_logpoint_records_reach_an_otlp_http_receiver_with_trace_context(tmp_path):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="requirements-dev.txt is not installed")
    pytest.importorskip("opentelemetry.proto")
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    script = tmp_path / "login_target.py"
    script.write_text(TARGET)
    line = next(n for n, text in enumerate(TARGET.splitlines(), 1) if text.rstrip().endswith("# LOG"))
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/logs"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-Xfrozen_modules=off", "-m", "fastattach", "--listen", "127.0.0.1:0",
                                 "--production", str(script), endpoint], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=env)
    client = None
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"fastattach: listening on (\S+):(\d+)", err_path.read_text())):
            assert time.monotonic() < deadline and proc.poll() is None, err_path.read_text()
            time.sleep(0.05)
        client = DAPClient.connect(match.group(1), int(match.group(2)))
        client.attach(breakpoints={str(script): [{"line": line, "logMessage": "user={user} pw={password}"}]})
        deadline = time.monotonic() + 60
        with receiver.arrived:
            while len(receiver.records) < 3:
                assert time.monotonic() < deadline and proc.poll() is None, err_path.read_text()[-3000:]
                receiver.arrived.wait(0.5)
            records = list(receiver.records)
    finally:
        if client is not None:
            client.close()
        kill_if_running(proc)
        receiver.shutdown()
        receiver.server_close()
    spans = set(re.findall(r"^SPAN (\w{32}) (\w{16})$", out_path.read_text(), re.MULTILINE))
    round_trips = []
    for received, resource, scope, record in records:
        attributes = {a.key: a.value for a in record.attributes}
        resource_attributes = {a.key: a.value.string_value for a in resource.attributes}
        assert resource_attributes["service.name"] == "login-service" and scope.name == "fastattach.probe"
        assert record.body.string_value == "user=alice pw=<redacted>" and record.severity_text == "INFO"
        assert attributes["fastattach.probe.kind"].string_value == "logpoint"
        assert attributes["code.line.number"].int_value == line
        assert attributes["code.file.path"].string_value == str(script)
        assert attributes["fastattach.probe.redacted"].int_value == 1
        assert (record.trace_id.hex(), record.span_id.hex()) in spans, "the active span's ids"
        round_trips.append((received - record.time_unix_nano) / 1e6)
    print(f"\nOTLP/HTTP round trip (probe hit -> decoded at the receiver; BatchLogRecordProcessor every 50 ms), "
          f"{len(round_trips)} records: median {sorted(round_trips)[len(round_trips) // 2]:.1f} ms, "
          f"min {min(round_trips):.1f} ms, max {max(round_trips):.1f} ms")
