"""TLS on both HTTP listeners (certificates reloaded from their files without a
restart) and mTLS between data planes and the control plane: the control
plane takes a data plane's identity from its certificate and refuses one
without a certificate from the cluster CA, token or not."""

import socket
import ssl
import time

import grpc
import httpx
import pytest
from conftest import Process, free_port, wait_until
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
