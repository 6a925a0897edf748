"""The multi-node picture, on loopback: etcd, PostgreSQL, Redis, two control
planes (leader elected through etcd), three data planes, and nginx in front
of the data planes as a Kubernetes Service would be. Driven with the official
openai SDK through nginx."""

import concurrent.futures
import secrets as random
import signal
import threading
import time

import httpx
import openai
import pytest

from conftest import (MOCK_KEY, Etcd, Process, Redis, drop_postgres_database, free_port,
                      postgres_database, require, secret, seconds_until_counted, wait_until)
from loopback import nginx_conf

MODEL = "gpt-cluster"
LEASE_SECONDS = 3  # the leader's lease: a dead leader is replaced within about this long
# The replicas' fallback poll of the database, too slow for any test here to pass on: what one replica
# writes reaches the other through PostgreSQL's NOTIFY.
POLL_MS = 30_000


class Nginx:
    """nginx as the data planes' load balancer: round robin, keep-alive to
    the upstreams, and the next upstream when one refuses a connection."""

    def __init__(self, tmp, upstream_ports):
        binary = require("nginx", "nginx")
        self.port = free_port()
        root = tmp / "nginx"
        root.mkdir()
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
        conf = nginx_conf(root, self.port, f"""{servers}
    keepalive 32;
    # Well below the data planes' drain delay (2 s): an idle pooled connection
    # is closed by nginx before a draining data plane stops listening, so nginx
    # never sends a POST down a connection at the instant it is closed (with
    # a margin for a loaded machine's timers).
    keepalive_timeout 500ms;""", location="""      proxy_next_upstream error timeout;
      proxy_connect_timeout 2s;
      proxy_read_timeout 60s;""")
        self.proc = Process(binary, ["-p", root, "-c", conf, "-g", "daemon off;"], tmp,
                            absolute=True).start()
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: httpx.get(self.url + "/healthz").status_code == 200, what="nginx up")


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.processes = []
        self.admin_token = secret("admin-" + random.token_hex(16))
        self.cluster_token = secret("cluster-" + random.token_hex(16))
        self.secret_key = secret(random.token_hex(32))
        self.db_name, self.database_url = postgres_database()
        try:
            self.etcd = Etcd(tmp)
            self.processes.append(self.etcd.proc)
            self.redis = Redis(tmp)
            self.mock = self.spawn("mock-provider", ["--kind", "openai_compatible", "--api-key", MOCK_KEY])
            self.mock_url = "http://" + self.mock.proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
            self.cps = [self.control_plane(name) for name in ("cp-a", "cp-b")]
            a, b = (f"http://127.0.0.1:{cp['grpc']}" for cp in self.cps)
            # Two follow replica A first, one replica B.
            self.dps = [self.data_plane(i, order) for i, order in enumerate(((a, b), (a, b), (b, a)))]
            self.nginx = Nginx(tmp, [dp["port"] for dp in self.dps])
            self.processes.append(self.nginx.proc)
            self.setup()
            self.started = time.monotonic()
        except BaseException:
            self.close()
            raise

    def spawn(self, name, args, env=None):
        process = Process(name, args, self.tmp, env=env).start()
        self.processes.append(process)
        return process

    # ---- control planes

    def control_plane(self, name):
        cp = {"name": name, "grpc": free_port(), "http": free_port()}
        cp["args"] = [
            "--database-url", self.database_url,
            "--grpc-addr", f"127.0.0.1:{cp['grpc']}", "--http-addr", f"127.0.0.1:{cp['http']}",
            "--admin-token", self.admin_token, "--cluster-token", self.cluster_token,
            "--secret-key", self.secret_key, "--replica-id", name,
            "--etcd-endpoints", self.etcd.url, "--leader-lease-seconds", LEASE_SECONDS,
            "--config-poll-ms", POLL_MS,
        ]
        self.start_control_plane(cp)
        return cp

    def start_control_plane(self, cp):
        cp["process"] = self.spawn("control-plane", cp["args"])
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{cp['http']}/readyz").status_code == 200,
                   what=f"{cp['name']} ready")

    def admin(self, method, path, json=None, cp=0, expect=None):
        url = f"http://127.0.0.1:{self.cps[cp]['http']}/api/v1{path}"
        response = httpx.request(method, url, json=json, timeout=10,
                                 headers={"authorization": f"Bearer {self.admin_token}"})
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def view(self, cp=0):
        return self.admin("GET", "/cluster", cp=cp, expect=200).json()

    def leader(self, cp=0):
        return (self.view(cp)["leader"] or {}).get("id")

    def leader_metric(self, cp):
        text = httpx.get(f"http://127.0.0.1:{self.cps[cp]['http']}/metrics", timeout=5).text
        return 'switchboard_leader{job="spend-counter"} 1' in text

    # ---- data planes

    def data_plane(self, i, order):
        dp = {"port": free_port(), "state": self.tmp / f"dp{i}"}
        dp["args"] = [
            "--listen", f"127.0.0.1:{dp['port']}", "--control-plane", ",".join(order),
            "--cluster-token", self.cluster_token, "--state-dir", dp["state"],
            "--usage-flush-ms", "100", "--redis-url", self.redis.url,
        ]
        self.start_data_plane(dp)
        return dp

    def start_data_plane(self, dp):
        dp["process"] = self.spawn("data-plane", dp["args"], env={"SWITCHBOARD_DRAIN_DELAY_MS": "2000"})
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{dp['port']}/readyz").status_code == 200,
                   what="data plane ready")

    def wait_synced(self):
        version = self.view()["config_version"]
        for dp in self.dps:
            wait_until(lambda: httpx.get(f"http://127.0.0.1:{dp['port']}/readyz").text.endswith(f"{version})"),
                       what="data plane synced")

    def setup(self):
        self.admin("POST", "/providers", {"name": "mock", "kind": "openai_compatible",
                                           "base_url": self.mock_url + "/v1", "api_key": MOCK_KEY}, expect=201)
        self.admin("POST", "/routes", {"model": MODEL, "targets": [{"provider": "mock", "model": "gpt-4o-mini"}]},
                   expect=201)

    def new_key(self, name, **body):
        key = self.admin("POST", "/keys", {"name": name, **body}, expect=201).json()
        secret(key["key"])
        self.wait_synced()
        return key

    def client(self, key, url=None):
        return openai.OpenAI(base_url=(url or self.nginx.url) + "/v1", api_key=key, max_retries=0, timeout=20)

    def close(self):
        for process in reversed(self.processes):
            process.stop()
        if getattr(self, "redis", None):
            self.redis.stop()
        drop_postgres_database(self.db_name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


def ask(client, text="hello"):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])


class Load:
    """Requests back to back from `threads` threads until stopped; every failure is kept."""

    def __init__(self, client, threads):
        self.client, self.sent, self.failures = client, 0, []
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stopping.is_set():
            try:
                ask(self.client)
                with self.lock:
                    self.sent += 1
            except Exception as error:  # reported by the test
                self.failures.append(repr(error))

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join()


def test_a_write_through_one_replica_reaches_data_planes_on_the_other_within_a_second(cluster):
    view = cluster.view()
    assert {cp["id"] for cp in view["control_planes"]} == {"cp-a", "cp-b"}
    assert sum(cp["is_leader"] for cp in view["control_planes"]) == 1
    on_b = [dp for dp in view["data_planes"] if dp["control_plane"] == "cp-b" and dp["connected"]]
    assert on_b, view["data_planes"]
    dp_on_b = f"http://127.0.0.1:{cluster.dps[2]['port']}"

    # Raw HTTP: what is measured is propagation, not the SDK's first-call warm-up.
    def status(secret_key):
        return httpx.post(dp_on_b + "/v1/chat/completions", timeout=5,
                          headers={"authorization": f"Bearer {secret_key}"},
                          json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).status_code

    started = time.monotonic()
    key = cluster.admin("POST", "/keys", {"name": "across"}, cp=0, expect=201).json()
    secret(key["key"])
    wait_until(lambda: status(key["key"]) == 200, timeout=5, interval=0.01, what="new key served through replica B")
    created_in = time.monotonic() - started

    started = time.monotonic()
    cluster.admin("DELETE", f"/keys/{key['id']}", cp=0, expect=200)
    wait_until(lambda: status(key["key"]) == 401, timeout=5, interval=0.01,
               what="revoked key refused through replica B")
    revoked_in = time.monotonic() - started
    print(f"created -> served in {created_in * 1000:.0f} ms; revoked -> refused in {revoked_in * 1000:.0f} ms")
    assert created_in < 1.0 and revoked_in < 1.0


def test_traffic_under_budgets_never_moves_the_config_version(cluster):
    key = cluster.new_key("budgeted", budget={"amount": "1000", "currency": "USD", "period": "monthly"},
                          limits={"max_tokens": 100_000_000})
    client = cluster.client(key["key"])
    versions = {cluster.view(cp)["config_version"] for cp in (0, 1)}
    assert len(versions) == 1
    load = Load(client, 2)
    seen = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen |= {cluster.view(cp)["config_version"] for cp in (0, 1)}
        time.sleep(1)
    load.stop()
    assert not load.failures, load.failures[:3]
    assert load.sent > 100
    assert seen == versions, f"the version moved under traffic: {sorted(seen)}"
    # Spend was counted meanwhile: it travels as counters, not config.
    wait_until(lambda: cluster.admin("GET", f"/keys/{key['id']}", expect=200).json()["spend"]["requests"]
               == load.sent, timeout=10, what="spend counted")
    assert cluster.view()["config_version"] in versions


def test_a_spend_count_reaches_the_data_planes_of_both_replicas_at_once(cluster):
    """The leader's count wakes its own replica's counter feed, and the other's through NOTIFY."""
    key = cluster.new_key("counted", budget={"amount": "1000", "currency": "USD", "period": "monthly"})
    took = seconds_until_counted([f"http://127.0.0.1:{dp['port']}" for dp in cluster.dps],
                                 lambda: ask(cluster.client(key["key"])))
    print(f"request -> its spend count on the data planes of both replicas in {took * 1000:.0f} ms")
    assert took < 3


def test_leader_failover_under_load_loses_and_doubles_no_usage(cluster):
    key = cluster.new_key("failover")
    client = cluster.client(key["key"])
    leader = cluster.leader()
    assert leader in ("cp-a", "cp-b")
    dead = 0 if leader == "cp-a" else 1
    survivor = 1 - dead
    assert cluster.leader_metric(dead) and not cluster.leader_metric(survivor)
    # The follower has campaigned longer than two leases: its campaign waits for the leader, it is not
    # ended and begun again (which once put up to a lease of back-off between the leader's death and
    # the next campaign).
    time.sleep(max(0.0, cluster.started + 2 * LEASE_SECONDS + 1 - time.monotonic()))
    assert "leader election: not leading" not in cluster.cps[survivor]["process"].logs()

    total, rate = 2000, 200.0
    kill_at, restart_at = 400, 1400
    taken_over = {}
    started = time.monotonic()

    def watch_takeover(killed_at):
        while time.monotonic() - killed_at < 15:
            try:
                if cluster.leader(survivor) == cluster.cps[survivor]["name"]:
                    taken_over["after"] = time.monotonic() - killed_at
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    watcher = []

    def one(i):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        if i == kill_at:
            cluster.cps[dead]["process"].kill()
            watcher.append(threading.Thread(target=watch_takeover, args=(time.monotonic(),)))
            watcher[0].start()
        if i == restart_at:
            cluster.start_control_plane(cluster.cps[dead])
        try:
            ask(client, f"request {i}")
            return None
        except Exception as error:  # every failure is reported
            return f"{i}: {error!r}"

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        failures = [f for f in pool.map(one, range(total)) if f]
    watcher[0].join()
    assert not failures, failures[:5]
    assert taken_over.get("after") is not None and taken_over["after"] < LEASE_SECONDS + 2, taken_over
    print(f"2,000 requests, leader killed and restarted: 0 failed; new leader after {taken_over['after']:.2f} s")
    # Every request counted once: spooled batches resent, duplicates ignored.
    wait_until(lambda: usage_of(cluster, key, survivor) >= total, timeout=30, what="usage shipped")
    time.sleep(1)
    assert usage_of(cluster, key, survivor) == total
    assert cluster.view()["leader"] is not None


def usage_of(cluster, key, cp):
    url = f"http://127.0.0.1:{cluster.cps[cp]['http']}/api/v1/usage"
    return httpx.get(url, params={"key_id": key["id"]}, timeout=10,
                     headers={"authorization": f"Bearer {cluster.admin_token}"}).json()["requests"]


def test_a_paused_leader_does_not_lead_when_it_wakes(cluster):
    leader = cluster.leader()
    paused = 0 if leader == "cp-a" else 1
    other = 1 - paused
    process = cluster.cps[paused]["process"].proc
    process.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: cluster.leader(other) == cluster.cps[other]["name"], timeout=8,
                   what="the other replica leads")
    finally:
        process.send_signal(signal.SIGCONT)
    # Awake again, it finds its lease gone: it stops its jobs, and one replica leads.
    wait_until(lambda: not cluster.leader_metric(paused), timeout=5, what="the woken replica steps down")
    assert cluster.leader_metric(other)
    assert cluster.leader(paused) == cluster.cps[other]["name"]


def test_rolling_restart_of_the_data_planes_under_load_fails_no_request(cluster):
    key = cluster.new_key("rolling")
    load = Load(cluster.client(key["key"]), 4)
    try:
        time.sleep(0.5)
        for dp in cluster.dps:
            process = dp["process"]
            process.proc.send_signal(signal.SIGTERM)
            assert process.proc.wait(30) == 0, "a drained data plane exits 0"
            cluster.start_data_plane(dp)
            time.sleep(0.5)
    finally:
        load.stop()
    assert not load.failures, load.failures[:5]
    assert load.sent > 200
    print(f"rolling restart of 3 data planes: {load.sent} requests, 0 failed")


def test_a_second_replica_on_one_sqlite_file_refuses_to_start(tmp_path):
    url = f"sqlite://{tmp_path}/one.db"
    args = lambda: ["--database-url", url, "--grpc-addr", f"127.0.0.1:{free_port()}",  # noqa: E731
                    "--http-addr", f"127.0.0.1:{free_port()}", "--admin-token", secret(random.token_hex(16)),
                    "--cluster-token", secret(random.token_hex(16)), "--secret-key", secret(random.token_hex(32))]
    first = Process("control-plane", args(), tmp_path).start()
    try:
        wait_until(lambda: "control plane listening" in first.logs(), what="first replica up")
        second = Process("control-plane", args(), tmp_path).start()
        assert second.proc.wait(20) != 0
        assert "another control plane already uses this SQLite database" in second.logs()
    finally:
        first.stop()
