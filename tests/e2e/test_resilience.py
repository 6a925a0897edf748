"""The data plane keeps serving without the control plane, and no usage is lost or counted twice."""

import signal

import pytest

from conftest import wait_until

pytestmark = pytest.mark.timeout(180)


def chat(client, text="keep serving"):
    return client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": text}])


def stream(client, text="stream on"):
    chunks = list(client.chat.completions.create(
        model="gpt-test", stream=True, messages=[{"role": "user", "content": text}]))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_outage_restart_and_exact_usage(gateway):
    key = gateway.setup_basic()
    client = gateway.openai(key)
    for i in range(5):
        chat(client, f"before outage {i}")

    # The control plane dies hard; the data plane serves from its snapshot.
    gateway.cp.kill()
    for i in range(5):
        assert chat(client, f"during outage {i}").choices[0].message.content
    assert stream(client) == "Echo: stream on"

    # Restart the data plane while the control plane is still down: it serves
    # from the snapshot in its state dir, and keeps its unsent usage on disk.
    assert gateway.dp.stop(signal.SIGTERM) == 0
    assert list((gateway.state_dir / "usage-spool").glob("*.pb")), "unsent usage was not spooled"
    gateway.dp = gateway.start_data_plane()
    for i in range(5):
        chat(client, f"after restart {i}")
    assert stream(client, "still streaming") == "Echo: still streaming"

    # The control plane returns: everything reaches it exactly once.
    gateway.cp = gateway.start_control_plane()
    expected = gateway.mock_stats()
    assert expected["requests"] == 17
    wait_until(lambda: gateway.usage()["requests"] >= expected["requests"], timeout=20, what="spooled usage delivered")
    totals = gateway.usage()
    assert {k: totals[k] for k in expected} == expected
    wait_until(lambda: not list((gateway.state_dir / "usage-spool").glob("*.pb")), what="spool drained")

    # A data plane that reconnects current is not sent the snapshot again, and
    # the control plane shows it connected at the current version.
    def shown_current():
        listing = gateway.admin("GET", "/dataplanes", expect=200).json()
        planes = listing["data_planes"]
        return len(planes) == 1 and planes[0]["connected"] and planes[0]["applied_version"] == listing["current_version"]

    wait_until(shown_current, what="data plane listed at the current version")

    # New config still flows after the outage.
    gateway.admin("POST", "/routes", {"model": "after", "targets": [{"provider": "mock", "model": "m"}]}, expect=201)
    gateway.wait_synced()
    assert "after" in [m.id for m in client.models.list()]


def test_data_plane_without_snapshot_is_not_ready(tmp_path, gateway):
    gateway.cp.kill()
    gateway.state_dir = tmp_path / "empty-state"
    other = gateway.start_data_plane(wait_ready=False)
    import httpx

    wait_until(lambda: httpx.get(f"{gateway.dp_url}/healthz").status_code == 200, what="liveness")
    assert httpx.get(f"{gateway.dp_url}/readyz").status_code == 503
    other.stop()


def test_second_data_plane_on_a_taken_port_fails_loudly(tmp_path, gateway):
    """Workers share one listening socket, without SO_REUSEPORT: a second
    process on the same port must not silently take a share of the clients."""
    from conftest import Process

    second = Process("data-plane", ["--listen", f"127.0.0.1:{gateway.dp_port}",
                                    "--control-plane", f"http://127.0.0.1:{gateway.grpc_port}",
                                    "--cluster-token", gateway.cluster_token,
                                    "--state-dir", tmp_path / "second"], tmp_path).start()
    assert second.proc.wait(timeout=20) != 0
    assert "listen: cannot listen on" in second.logs()
