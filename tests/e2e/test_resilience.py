"""The data plane keeps serving without the control plane, and no usage is lost or counted twice."""

import asyncio
import json
import re
import resource
import signal
import time
from pathlib import Path

import httpx
import pytest

from conftest import Gateway, wait_until

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
    assert list((gateway.state_dir / "usage-spool").glob("*.batch")), "unsent usage was not spooled"
    gateway.start_data_plane()
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
    wait_until(lambda: not list((gateway.state_dir / "usage-spool").glob("*.batch")), what="spool drained")

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


def test_a_data_plane_back_after_changes_receives_the_changes_not_everything(gateway):
    key = gateway.setup_basic()
    gateway.openai(key).models.list()
    assert gateway.dp.stop(signal.SIGTERM) == 0
    created = [gateway.admin("POST", "/keys", {"name": f"while away {i}"}, expect=201).json()["key"]
               for i in range(20)]
    gateway.start_data_plane()
    gateway.wait_synced()
    for secret in created[:3] + created[-3:]:
        assert gateway.openai(secret).models.list().data
    metrics = httpx.get(gateway.dp_url + "/metrics").text
    assert 'switchboard_config_received_bytes_total{kind="delta"}' in metrics
    assert 'switchboard_config_received_bytes_total{kind="snapshot"}' not in metrics, \
        "a data plane with a copy on disk catches up by delta"


def execute(gateway, *statements):
    """SQL straight into the control plane's database, as a bad migration or
    a hand edit would write it: one transaction."""
    if gateway.kind == "sqlite":
        import sqlite3
        con = sqlite3.connect(gateway.database_url.removeprefix("sqlite://"), timeout=30)
        with con:
            for statement in statements:
                con.execute(statement)
        con.close()
    else:
        import psycopg
        with psycopg.connect(gateway.database_url) as con:
            for statement in statements:
                con.execute(statement)


def test_a_bad_delta_is_refused_and_the_data_plane_keeps_serving(gateway):
    key = gateway.setup_basic()
    client = gateway.openai(key)
    version = gateway.current_version()
    bad = '{"health_check_interval_ms":"soon"}'
    execute(gateway,
            f"UPDATE providers SET settings = '{bad}' WHERE name = 'mock'",
            "UPDATE config_version SET version = version + 1 WHERE id = 1",
            "INSERT INTO config_changes (version, kind, entity, committed_at) "
            "SELECT version, 'provider', 'mock', 0 FROM config_version WHERE id = 1")

    def refused():
        plane = gateway.admin("GET", "/dataplanes", expect=200).json()["data_planes"][0]
        return "health_check_interval_ms" in plane["last_error"] and plane["applied_version"] == version
    wait_until(refused, what="the delta NACKed with its reason")
    assert gateway.applied_version() == version
    assert chat(client).choices[0].message.content, "the version applied before keeps serving"

    # Mended: the data plane catches up (it asks for a whole snapshot after a refusal).
    execute(gateway,
            "UPDATE providers SET settings = '{}' WHERE name = 'mock'",
            "UPDATE config_version SET version = version + 1 WHERE id = 1",
            "INSERT INTO config_changes (version, kind, entity, committed_at) "
            "SELECT version, 'provider', 'mock', 0 FROM config_version WHERE id = 1")
    gateway.wait_synced()
    plane = gateway.admin("GET", "/dataplanes", expect=200).json()["data_planes"][0]
    assert plane["last_error"] == ""
    assert chat(client).choices[0].message.content


def test_sigterm_drains_readiness_first_then_in_flight_streams_finish(gateway):
    import threading
    import time

    key = gateway.setup_basic()
    gateway.start_data_plane(extra=("--drain-delay-ms", "1500"))
    client = gateway.openai(key)
    finished = []

    def slow_stream(i):
        chunks = list(client.chat.completions.create(
            model="gpt-test", stream=True, messages=[{"role": "user", "content": f"sleep-1200 stream {i}"}]))
        finished.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))

    streams = [threading.Thread(target=slow_stream, args=(i,)) for i in range(3)]
    for s in streams:
        s.start()
    time.sleep(0.3)
    gateway.dp.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    ready = httpx.get(f"{gateway.dp_url}/readyz")
    assert (ready.status_code, ready.text) == (503, "draining"), "unready from the first moment"
    # Still served during the drain delay, on a new connection, which is then closed.
    answer = httpx.post(f"{gateway.dp_url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                        json={"model": "gpt-test", "messages": [{"role": "user", "content": "during drain"}]})
    assert answer.status_code == 200 and answer.headers["connection"] == "close"
    for s in streams:
        s.join(30)
    assert sorted(finished) == [f"Echo: sleep-1200 stream {i}" for i in range(3)], finished
    assert gateway.dp.proc.wait(30) == 0
    # Every request of the drain was recorded and shipped before the exit.
    gateway.start_data_plane()
    wait_until(lambda: gateway.usage(model="gpt-test")["requests"] == 4, what="usage of the drained requests")


def test_a_data_plane_killed_hard_loses_no_usage_of_answered_requests(gateway):
    """Records are journaled within ~50 ms of their answer, long before their
    batch is due: a SIGKILL 150 ms after the last answer loses none, and the
    restarted data plane sends them once."""
    import time

    key = gateway.setup_basic()
    gateway.start_data_plane(extra=("--usage-flush-ms", "60000"))
    client = gateway.openai(key)
    total = 60
    for i in range(total):
        chat(client, f"before the kill {i}")
    time.sleep(0.15)
    gateway.dp.kill()
    assert gateway.usage(model="gpt-test")["requests"] == 0, "nothing was due to be sent yet"
    gateway.start_data_plane()
    wait_until(lambda: gateway.usage(model="gpt-test")["requests"] == total, what="journaled usage sent")
    time.sleep(1)
    assert gateway.usage(model="gpt-test")["requests"] == total, "none doubled"
    assert not list((gateway.state_dir / "usage-spool").glob("*.batch")), "the spool is empty again"


def test_a_control_plane_drains_before_it_stops(gateway):
    import time

    gateway.setup_basic()
    gateway.cp.stop()
    gateway.cp = gateway.start_control_plane(extra=("--drain-delay-ms", "1000"))
    ready = f"http://127.0.0.1:{gateway.cp_http_port}/readyz"
    gateway.cp.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    answer = httpx.get(ready)
    assert (answer.status_code, answer.text) == (503, "draining"), "unready from the first moment"
    assert gateway.admin("GET", "/providers").status_code == 200, "still serving during the drain"
    assert gateway.cp.proc.wait(10) == 0


SURGE = 3_000


async def hold_connections(port, key, count, while_held):
    """Opens `count` keep-alive connections, each answered one chat request, and
    holds them all open while `while_held()` runs; then closes them."""
    body = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "surge"}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    opened, limit = [], asyncio.Semaphore(64)

    async def connect():
        async with limit:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])
            await reader.readexactly(length)
            opened.append(writer)

    try:
        await asyncio.gather(*(connect() for _ in range(count)))
        return while_held()
    finally:
        for writer in opened:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in opened), return_exceptions=True)


def test_memory_a_surge_of_connections_held_is_given_back_once_they_close(tmp_path):
    # Raised before the data plane starts: it inherits the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * SURGE)), hard))
    gw = Gateway(tmp_path, f"sqlite://{tmp_path}/control-plane.db")
    try:
        key = gw.setup_basic()
        status = Path(f"/proc/{gw.dp.proc.pid}/status")

        def rss_mib():
            return int(re.search(r"VmRSS:\s+(\d+) kB", status.read_text())[1]) / 1024

        # What the first requests set up once (pools, metric handles) is not the surge's.
        asyncio.run(hold_connections(gw.dp_port, key, 64, rss_mib))
        before = rss_mib()
        held = asyncio.run(hold_connections(gw.dp_port, key, SURGE, rss_mib))
        grown = held - before
        # Each connection holds hyper's buffers and its task: tens of MiB in all.
        assert grown > 20, f"{SURGE} connections grew the data plane only {grown:.1f} MiB"
        # glibc alone keeps it: the connections' pages stay resident after they close.
        deadline = time.monotonic() + 10
        while (now := rss_mib()) >= before + grown / 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert now < before + grown / 2, f"RSS {before:.0f} MiB before, {held:.0f} held, {now:.0f} after they closed"
        assert "freed memory given back" in gw.dp.logs()
    finally:
        gw.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
