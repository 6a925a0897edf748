"""TLS on both HTTP listeners (certificates reloaded from their files without a
restart), HTTPS providers reached over HTTP/2, and mTLS between data planes
and the control plane: the control plane takes a data plane's identity from
its certificate and refuses one without a certificate from the cluster CA,
token or not."""

import socket
import ssl
import threading
import time

import grpc
import httpx
import openai
import pytest
from conftest import MOCK_KEY, Process, free_port, wait_until
from pki import Authority

pytestmark = pytest.mark.timeout(180)


def presented_certificate(port, ca):
    """The DER certificate a listener presents to a new connection."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def test_tls_listeners_and_mtls_between_the_planes(gateway, tmp_path):
    ca = Authority(tmp_path, "cluster-ca")
    cp_cert, cp_key, _ = ca.issue("cp", "control-plane", dns=["localhost"], ips=["127.0.0.1"])
    dp_cert, dp_key, dp_der = ca.issue("dp", "data-plane", dns=["localhost"], ips=["127.0.0.1"])
    client_cert, client_key, _ = ca.issue("dp-client", "dp-edge-1", dns=["dp-edge-1.cluster"], client=True)
    gateway.ca = ca.path

    gateway.cp.stop()
    gateway.cp_scheme = gateway.grpc_scheme = "https"
    gateway.cp = gateway.start_control_plane(extra=(
        "--tls-cert", str(cp_cert), "--tls-key", str(cp_key), "--cluster-client-ca", str(ca.path),
        "--tls-reload-ms", "200"))
    gateway.dp_scheme = "https"
    mtls = ("--control-plane-ca", str(ca.path), "--cluster-client-cert", str(client_cert),
            "--cluster-client-key", str(client_key))
    gateway.start_data_plane(extra=(*mtls, "--tls-cert", str(dp_cert), "--tls-key", str(dp_key),
                                    "--tls-reload-ms", "200"))

    # The whole path over TLS: admin REST, the config stream, the public API with the official SDK.
    key = gateway.setup_basic()
    reply = gateway.openai(key).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "tls"}])
    assert reply.choices[0].message.content == "Echo: tls"
    stream = gateway.openai(key).chat.completions.create(model="gpt-test", stream=True,
                                                         messages=[{"role": "user", "content": "h2 too"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: h2 too"
    with httpx.Client(verify=gateway.verify, http2=False) as client:
        assert client.get(f"{gateway.dp_url}/healthz").status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{gateway.dp_port}/healthz", timeout=3)

    # The control plane knows the data plane by its certificate's name, then the id it claims
    # (which only tells apart replicas sharing a certificate).
    # (The plain data plane stopped above may still count as connected for a while.)
    def connected():
        return {p["id"] for p in gateway.admin("GET", "/dataplanes", expect=200).json()["data_planes"] if p["connected"]}

    before = connected()
    assert any(id.startswith("dp-edge-1.cluster/") for id in before), before

    # Data planes without a cluster certificate are refused, with the right token or a foreign CA's certificate.
    rogue = Authority(tmp_path, "rogue-ca")
    rogue_cert, rogue_key, _ = rogue.issue("rogue", "dp-rogue", dns=["dp-rogue"], client=True)
    outsiders = []
    for name, extra in (("no-cert", ("--control-plane-ca", str(ca.path))),
                        ("rogue", ("--control-plane-ca", str(ca.path), "--cluster-client-cert", str(rogue_cert),
                                   "--cluster-client-key", str(rogue_key)))):
        port = free_port()
        outsider = Process("data-plane", [
            "--listen", f"127.0.0.1:{port}", "--control-plane", f"https://127.0.0.1:{gateway.grpc_port}",
            "--cluster-token", gateway.cluster_token, "--state-dir", str(tmp_path / f"state-{name}"), *extra,
        ], tmp_path).start()
        gateway.processes.append(outsider)
        outsiders.append(port)
    time.sleep(3)
    for port in outsiders:
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 503, "an outsider got a snapshot"
    assert connected() <= before

    # Renewed certificates are picked up from their files, without a restart.
    assert presented_certificate(gateway.dp_port, ca.path) == dp_der
    _, _, renewed_dp = ca.issue("dp", "data-plane-renewed", dns=["localhost"], ips=["127.0.0.1"])
    wait_until(lambda: presented_certificate(gateway.dp_port, ca.path) == renewed_dp, what="data plane cert reloaded")
    _, _, renewed_cp = ca.issue("cp", "control-plane-renewed", dns=["localhost"], ips=["127.0.0.1"])
    wait_until(lambda: presented_certificate(gateway.cp_http_port, ca.path) == renewed_cp,
               what="control plane cert reloaded")
    # A broken file is refused and the certificate in use stays.
    dp_cert.write_text("not a certificate")
    wait_until(lambda: 'result="error"' in httpx.get(f"{gateway.dp_url}/metrics", verify=gateway.verify).text,
               what="failed reload counted")
    assert presented_certificate(gateway.dp_port, ca.path) == renewed_dp
    assert gateway.openai(key).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "still"}]).choices[0].message.content == "Echo: still"


def test_admin_grpc_over_tls_needs_only_its_token(gateway, grpc_stubs, tmp_path):
    pb, pb_grpc = grpc_stubs
    ca = Authority(tmp_path, "ca")
    cert, key, _ = ca.issue("cp", "control-plane", dns=["localhost"], ips=["127.0.0.1"])
    gateway.ca = ca.path
    gateway.cp.stop()
    gateway.cp_scheme = "https"
    gateway.cp = gateway.start_control_plane(extra=("--tls-cert", str(cert), "--tls-key", str(key),
                                                    "--cluster-client-ca", str(ca.path)))
    channel = grpc.secure_channel(f"127.0.0.1:{gateway.grpc_port}",
                                  grpc.ssl_channel_credentials(root_certificates=ca.path.read_bytes()),
                                  options=[("grpc.ssl_target_name_override", "localhost")])
    admin = pb_grpc.AdminServiceStub(channel)
    auth = [("authorization", f"Bearer {gateway.admin_token}")]
    assert list(admin.ListProviders(pb.ListProvidersRequest(), metadata=auth).providers) == []
    with pytest.raises(grpc.RpcError) as error:
        admin.ListProviders(pb.ListProvidersRequest())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_https_provider_is_reached_over_http2_trusting_the_upstream_ca(gateway, tmp_path):
    """Hosted providers speak HTTPS: the data plane negotiates HTTP/2 with them (ALPN) and
    multiplexes requests over its connections. It trusts the public roots, and `--upstream-ca`
    for a provider behind a private CA; without it that provider's certificate is refused."""
    ca = Authority(tmp_path, "provider-ca")
    cert, cert_key, _ = ca.issue("provider", "provider", ips=["127.0.0.1"])
    mock = Process("mock-provider", ["--kind", "openai_compatible", "--api-key", MOCK_KEY,
                                     "--tls-cert", cert, "--tls-key", cert_key], tmp_path).start()
    gateway.processes.append(mock)
    url = "https://" + mock.proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
    gateway.admin("POST", "/providers", {"name": "hosted", "kind": "openai_compatible", "base_url": url + "/v1",
                                         "api_key": MOCK_KEY}, expect=201)
    gateway.admin("POST", "/routes", {"model": "gpt-hosted", "targets": [{"provider": "hosted", "model": "m"}]},
                  expect=201)
    key = gateway.admin("POST", "/keys", {"name": "hosted"}, expect=201).json()["key"]
    gateway.wait_synced()
    ask = [{"role": "user", "content": "over h2"}]

    with pytest.raises(openai.APIStatusError) as refused:
        gateway.openai(key).chat.completions.create(model="gpt-hosted", messages=ask)
    assert refused.value.status_code == 502, refused.value.response.text
    assert refused.value.response.json()["error"]["message"]
    # The operator's log says why: the certificate's issuer is unknown.
    wait_until(lambda: "invalid peer certificate: UnknownIssuer" in gateway.dp.logs(), what="the TLS cause logged")

    # A CA file without a certificate stops the data plane at start, naming the flag.
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    failed = gateway.start_data_plane(wait_ready=False, extra=("--upstream-ca", str(empty)))
    assert failed.proc.wait(timeout=20) != 0
    assert "upstream_ca: no certificate in" in failed.logs()

    gateway.start_data_plane(extra=("--upstream-ca", str(ca.path)))
    client = gateway.openai(key)
    assert client.chat.completions.create(model="gpt-hosted", messages=ask).choices[0].message.content == \
        "Echo: over h2"
    # Streams at once, which HTTP/2 carries side by side on the pools' connections.
    texts = [None] * 12

    def stream(i):
        chunks = client.chat.completions.create(model="gpt-hosted", stream=True,
                                                messages=[{"role": "user", "content": f"stream {i}"}])
        texts[i] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert texts == [f"Echo: stream {i}" for i in range(len(texts))]
    stats = httpx.get(url + "/_mock/stats", verify=ssl.create_default_context(cafile=str(ca.path))).json()
    # The refused attempt never reached the mock; everything that did came over HTTP/2.
    assert stats["requests"] == stats["http2_requests"] == 1 + len(texts), stats

    def statuses():
        records = gateway.usage_records(model="gpt-hosted")
        return sorted(r["status"] for r in records) if len(records) >= 2 + len(texts) else None

    # Every request recorded: the refused one with its 502.
    assert wait_until(statuses, what="usage recorded") == [200] * (1 + len(texts)) + [502]
