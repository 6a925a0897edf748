"""OpenTelemetry traces, received by an OTLP collector the test runs (gRPC, and
HTTP with protobuf): a request's server span continues the client's
`traceparent`, its steps (auth, route, limits, each upstream attempt, the
usage hand-off) are its children with the GenAI conventions' attributes, the
provider is called with the attempt's span as parent, and the trace id is in
the usage record and the JSON logs. Admin calls to the control plane are
traced too. Without an endpoint nothing is exported, and the client's
`traceparent` is still passed on and recorded."""

import http.server
import json
import secrets as random
import threading
from concurrent import futures

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import free_port, wait_until

pytestmark = pytest.mark.timeout(120)

SERVER, CLIENT = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT


def value(any_value):
    return getattr(any_value, any_value.WhichOneof("value"))


class Collector:
    """Every span exported to it, with its resource's attributes."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def take(self, request):
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append((resource, span))

    def trace(self, trace_id):
        with self.lock:
            return [(r, s) for r, s in self.spans if s.trace_id.hex() == trace_id]


class GrpcCollector(Collector, trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        super().__init__()
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()
        self.env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}

    def Export(self, request, context):  # noqa: N802 (the gRPC method's name)
        self.take(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def stop(self):
        self.server.stop(0)


class HttpCollector(Collector):
    def __init__(self):
        super().__init__()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf"
                collector.take(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.server.server_port}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}

    def stop(self):
        self.server.shutdown()


def attributes(span):
    return {a.key: value(a.value) for a in span.attributes}


def traceparent():
    trace_id, parent_id = random.token_hex(16), random.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


def chat(gateway, key, headers):
    return gateway.openai(key).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "trace me"}], extra_headers=headers)


@pytest.fixture
def collector():
    server = GrpcCollector()
    yield server
    server.stop()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_request_and_an_admin_call_are_traced_over_otlp_grpc(gateway, collector):
    env = {**collector.env, "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e",
           "SWITCHBOARD_LOG_FORMAT": "json"}
    gateway.cp.stop()
    gateway.cp = gateway.start_control_plane(env=env)
    gateway.start_data_plane(env=env)
    key = gateway.setup_basic()

    trace_id, parent_id, header = traceparent()
    assert chat(gateway, key, {"traceparent": header, "tracestate": "vendor=1"}).choices[0].message.content
    wait_until(lambda: len(collector.trace(trace_id)) >= 6, timeout=20, what="the request's spans")
    spans = {span.name.split(" ")[0] if span.kind == SERVER else span.name: (resource, span)
             for resource, span in collector.trace(trace_id)}

    resource, request = spans["chat"]
    assert resource["service.name"] == "switchboard-data-plane"
    assert resource["deployment.environment"] == "e2e"
    assert request.name == "chat gpt-test" and request.kind == SERVER
    assert request.parent_span_id.hex() == parent_id, "the client's span is the parent"
    attrs = attributes(request)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-test"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.system"] == "openai_compatible"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["http.response.status_code"] == 200

    for step in ("auth", "route", "limits", "usage"):
        assert spans[step][1].parent_span_id == request.span_id, step
    _, upstream = next((r, s) for r, s in collector.trace(trace_id) if s.kind == CLIENT)
    assert upstream.parent_span_id == request.span_id and upstream.name == "chat gpt-4o-mini"
    attrs = attributes(upstream)
    assert (attrs["provider"], attrs["gen_ai.request.model"], attrs["switchboard.attempt"],
            attrs["http.response.status_code"]) == ("mock", "gpt-4o-mini", 1, 200)

    # The provider was called with the attempt's span as parent, the client's state kept.
    sent = httpx.get(gateway.mock_url + "/_mock/last").json()["headers"]
    assert sent["traceparent"].split("-")[1:3] == [trace_id, upstream.span_id.hex()]
    assert sent["tracestate"] == "vendor=1"

    # The usage record and the request's log lines carry the trace id.
    wait_until(lambda: gateway.admin("GET", "/usage/records", params={"trace_id": trace_id}).json()["records"],
               what="the usage record")
    logged = {json.loads(line).get("span", {}).get("trace_id")
              for line in gateway.dp.logs().splitlines() if line.startswith("{")}
    assert trace_id in logged, f"no log line with the trace id {trace_id}: {logged}"

    # An admin call, in the admin's trace.
    admin_trace, admin_parent, header = traceparent()
    httpx.post(f"http://127.0.0.1:{gateway.cp_http_port}/api/v1/teams", json={"name": "traced"},
               headers={"authorization": f"Bearer {gateway.admin_token}", "traceparent": header})
    wait_until(lambda: collector.trace(admin_trace), what="the admin call's span")
    resource, span = collector.trace(admin_trace)[0]
    assert resource["service.name"] == "switchboard-control-plane"
    assert (span.name, span.kind, span.parent_span_id.hex()) == ("POST /api/v1/teams", SERVER, admin_parent)
    assert attributes(span)["status"] == 201


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_http_export_starts_a_trace_for_a_request_without_one(gateway):
    collector = HttpCollector()
    try:
        gateway.start_data_plane(env=collector.env)
        key = gateway.setup_basic()
        chat(gateway, key, {})
        wait_until(lambda: any(s.kind == SERVER for _, s in collector.spans), timeout=20, what="a server span")
        request = next(s for _, s in collector.spans if s.kind == SERVER)
        assert not request.parent_span_id, "a new trace"
        records = gateway.admin("GET", "/usage/records", params={"trace_id": request.trace_id.hex()}).json()
        assert len(records["records"]) == 1
    finally:
        collector.stop()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_without_an_endpoint_the_clients_trace_is_passed_on_and_recorded(gateway):
    key = gateway.setup_basic()
    trace_id, _, header = traceparent()
    chat(gateway, key, {"traceparent": header})
    assert httpx.get(gateway.mock_url + "/_mock/last").json()["headers"]["traceparent"] == header
    wait_until(lambda: gateway.admin("GET", "/usage/records", params={"trace_id": trace_id}).json()["records"],
               what="the usage record with the client's trace id")
    # A malformed traceparent is passed on as it came, but names no trace.
    chat(gateway, key, {"traceparent": "00-not-a-trace"})
    assert httpx.get(gateway.mock_url + "/_mock/last").json()["headers"]["traceparent"] == "00-not-a-trace"


def test_bad_otel_settings_refuse_to_start_naming_the_variable(tmp_path):
    from conftest import Process
    for env, named in ((({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_SAMPLER": "often"}),
                        "OTEL_TRACES_SAMPLER"),
                       (({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "smtp"}),
                        "OTEL_EXPORTER_OTLP_PROTOCOL")):
        process = Process("data-plane", ["--cluster-token", "x" * 20, "--state-dir", tmp_path / "s"], tmp_path,
                          env=env).start()
        assert process.proc.wait(timeout=20) == 2
        assert named in process.logs()
