"""TLS to the backing services, against servers the test starts with
certificates of its own CA: PostgreSQL that accepts only TLS connections
(sslmode=require and verify-full work, plain TCP and a wrong CA are refused
with a clear error), Redis that speaks only TLS (rediss://, the CA given
as a file), and etcd that requires TLS, a client certificate and a password."""

import os
import secrets as random
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from conftest import IN_CI, Process, free_port, require, secret, wait_until
from pki import Authority

pytestmark = pytest.mark.timeout(180)


def postgres_bin(name):
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return found[-1]
    if IN_CI:
        raise AssertionError(f"PostgreSQL's {name} is required (Debian package postgresql)")
    pytest.skip(f"PostgreSQL's {name} not installed")


class TlsPostgres:
    """A PostgreSQL server of the test's own that takes TLS connections with a password, and nothing else."""

    def __init__(self, tmp, ca):
        self.port = free_port()
        self.password = secret("pg-" + random.token_hex(12))
        # Where the postgres user can reach (pytest's tmp is root's alone).
        self.root = root = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        root.chmod(0o755)
        issued = ca.issue("pg-server", "127.0.0.1", ips=["127.0.0.1"])[:2]
        cert, key = (Path(shutil.copy(path, root)) for path in issued)
        (root / "pw").write_text(self.password)
        run_as = {}
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            shutil.chown(root, "postgres")
            for path in (cert, key, root / "pw"):
                shutil.chown(path, "postgres")
            run_as = {"user": "postgres"}
        key.chmod(0o600)
        subprocess.run([postgres_bin("initdb"), "-D", root / "data", "-U", "postgres", "--pwfile", root / "pw",
                        "--auth", "scram-sha-256"], check=True, capture_output=True, **run_as)
        (root / "data" / "pg_hba.conf").write_text(
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 reject\n")
        self.proc = Process(postgres_bin("postgres"), [
            "-D", root / "data", "-h", "127.0.0.1", "-p", self.port, "-k", root,
            "-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}",
            "-c", "fsync=off",
        ], tmp, absolute=True, **run_as).start()
        wait_until(lambda: subprocess.run([postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                          capture_output=True).returncode == 0, what="PostgreSQL up")

    def url(self, query):
        return f"postgres://postgres:{self.password}@127.0.0.1:{self.port}/postgres?{query}"


def start_control_plane(tmp, database_url, extra=()):
    """A control plane on `database_url`: (process, its HTTP URL, its admin token)."""
    http, token = free_port(), secret("admin-" + random.token_hex(16))
    cp = Process("control-plane", [
        "--database-url", database_url, "--http-addr", f"127.0.0.1:{http}", "--grpc-addr", f"127.0.0.1:{free_port()}",
        "--admin-token", token, "--cluster-token", secret("c-" + random.token_hex(16)),
        "--secret-key", secret(random.token_hex(32)), *extra,
    ], tmp).start()
    return cp, f"http://127.0.0.1:{http}", token


def test_postgres_over_tls_with_verify_full_and_require_and_clear_refusals(tmp_path):
    ca = Authority(tmp_path, "backing-ca")
    postgres = TlsPostgres(tmp_path, ca)
    try:
        for query in (f"sslmode=verify-full&sslrootcert={ca.path}", "sslmode=require"):
            cp, url, token = start_control_plane(tmp_path, postgres.url(query))
            wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, what=f"control plane ready ({query})")
            created = httpx.post(url + "/api/v1/teams", json={"name": f"t-{random.token_hex(3)}"},
                                 headers={"authorization": f"Bearer {token}"})
            assert created.status_code == 201, created.text
            cp.stop()

        # Plain TCP is refused by the server; another CA's certificate by the control plane.
        other = Authority(tmp_path, "other-ca")
        for query, reason in (("sslmode=disable", "no encryption"),
                              (f"sslmode=verify-full&sslrootcert={other.path}", "certificate")):
            cp, _, _ = start_control_plane(tmp_path, postgres.url(query))
            assert cp.proc.wait(timeout=60) != 0, f"started with {query}"
            logs = cp.logs()
            assert "database" in logs and reason in logs, logs[-2000:]
    finally:
        postgres.proc.stop()
        shutil.rmtree(postgres.root, ignore_errors=True)


def redis_server():
    binary = shutil.which("redis-server")
    if not binary:
        if IN_CI:
            raise AssertionError("redis-server is required")
        pytest.skip("redis-server not installed")
    return binary


def redis_cli(port, *command):
    return subprocess.run(["redis-cli", "-p", str(port), *command], capture_output=True, text=True).stdout.strip()


class TlsRedis:
    """A redis-server of the test's own speaking only TLS."""

    def __init__(self, tmp, ca):
        binary = redis_server()
        self.port = free_port()
        cert, key, _ = ca.issue("redis-server", "127.0.0.1", ips=["127.0.0.1"])
        self.proc = Process(binary, [
            "--port", "0", "--tls-port", self.port, "--bind", "127.0.0.1", "--tls-cert-file", cert,
            "--tls-key-file", key, "--tls-ca-cert-file", ca.path, "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", tmp,
        ], tmp, absolute=True).start()
        self.url = f"rediss://127.0.0.1:{self.port}"
        wait_until(lambda: subprocess.run(["redis-cli", "--tls", "--cacert", str(ca.path), "-p", str(self.port),
                                           "ping"], capture_output=True, text=True).stdout.strip() == "PONG",
                   what="redis (TLS) up")


def a_limit_counted_in_redis(gateway, redis_flags):
    """A data plane on that Redis, limits failing closed without it: a key allowed two requests a
    minute (and tokens, a second counter of the same admission) gets two, then a 429."""
    limited = gateway.admin("POST", "/keys", {"name": "rpm-2", "limits": {"rpm": 2, "tpm": 100000}},
                            expect=201).json()["key"]
    gateway.start_data_plane(extra=[*redis_flags, "--rate-limits-on-redis-error", "closed"])
    # Redis is connected in the background; until then limits fail closed.
    wait_until(lambda: "connected to Redis" in gateway.dp.logs(), what="the data plane connected to Redis")
    client = gateway.openai(limited)
    for _ in range(2):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(Exception) as refused:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert getattr(refused.value, "status_code", None) == 429, refused.value


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_redis_over_tls_holds_the_shared_counters(gateway, tmp_path):
    ca = Authority(tmp_path, "redis-ca")
    redis = TlsRedis(tmp_path, ca)
    try:
        key = gateway.setup_basic()
        a_limit_counted_in_redis(gateway, ["--redis-url", redis.url, "--redis-ca", ca.path])
        # The counts are in that Redis (read over TLS), not in the data plane's memory.
        keys = subprocess.run(["redis-cli", "--tls", "--cacert", str(ca.path), "-p", str(redis.port), "--scan"],
                              capture_output=True, text=True, check=True).stdout.split()
        assert keys, "no counter in Redis"
        assert gateway.openai(key).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "ok"}]).choices[0].message.content == "Echo: ok"
    finally:
        redis.proc.stop()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_redis_with_an_untrusted_certificate_is_refused_clearly(gateway, tmp_path):
    redis = TlsRedis(tmp_path, Authority(tmp_path, "redis-ca"))
    try:
        gateway.setup_basic()
        limited = gateway.admin("POST", "/keys", {"name": "rpm-5", "limits": {"rpm": 5}}, expect=201).json()["key"]
        gateway.start_data_plane(extra=["--redis-url", redis.url, "--redis-ca",
                                        Authority(tmp_path, "other").path,
                                        "--rate-limits-on-redis-error", "closed"])
        response = httpx.post(gateway.dp_url + "/v1/chat/completions", headers={"authorization": f"Bearer {limited}"},
                              json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}, timeout=20)
        assert response.status_code == 503, response.text
        wait_until(lambda: "Redis unreachable" in gateway.dp.logs(), what="the refusal logged")
        assert "certificate" in gateway.dp.logs().lower(), gateway.dp.logs()[-2000:]
    finally:
        redis.proc.stop()


class TlsEtcd:
    """An etcd of the test's own: TLS only, client certificates required, and
    password authentication on (user root)."""

    def __init__(self, tmp, ca):
        self.port, peer = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        # Both uses: etcd's JSON gateway dials its own gRPC with this certificate.
        cert, key, _ = ca.issue("etcd-server", "127.0.0.1", ips=["127.0.0.1"], both=True)
        self.client = ca.issue("etcd-client", "switchboard", client=True)[:2]
        self.password = secret("etcd-" + random.token_hex(12))
        self.proc = Process(require("etcd", "etcd-server"), [
            "--name", "sb", "--data-dir", tmp / "etcd-tls",
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca.path, "--client-cert-auth",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"sb=http://127.0.0.1:{peer}",
        ], tmp, absolute=True).start()
        context = ssl.create_default_context(cafile=str(ca.path))
        context.load_cert_chain(*map(str, self.client))
        http = httpx.Client(verify=context)
        wait_until(lambda: http.get(self.url + "/health").json()["health"] == "true", what="etcd (TLS) healthy")
        # etcd's JSON gateway: a root user, then authentication on.
        for path, body in (("/v3/auth/user/add", {"name": "root", "password": self.password}),
                           ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                           ("/v3/auth/enable", {})):
            answer = http.post(self.url + path, json=body)
            assert answer.status_code == 200, f"{path}: {answer.text}"


def test_etcd_over_tls_with_a_client_certificate_and_a_password_elects_a_leader(tmp_path):
    ca = Authority(tmp_path, "etcd-ca")
    etcd = TlsEtcd(tmp_path, ca)
    client_cert, client_key = etcd.client
    etcd_flags = ["--etcd-endpoints", etcd.url, "--etcd-ca", ca.path, "--etcd-client-cert", client_cert,
                  "--etcd-client-key", client_key, "--etcd-username", "root"]
    try:
        for password, elected in ((etcd.password, True), (secret("wrong-" + random.token_hex(8)), False)):
            cp, url, token = start_control_plane(
                tmp_path, f"sqlite://{tmp_path}/cp-{elected}.db", [*etcd_flags, "--etcd-password", password])
            wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, what="control plane ready")

            def leader():
                return httpx.get(url + "/api/v1/cluster", headers={"authorization": f"Bearer {token}"}).json()["leader"]
            if elected:
                wait_until(leader, what="a leader elected through etcd")
            else:
                # Refused by etcd: no leader, and the log says why.
                wait_until(lambda: "etcd" in cp.logs() and "authentication failed" in cp.logs().lower(),
                           what="the refusal logged")
                assert not leader()
            cp.stop()
    finally:
        etcd.proc.stop()


class RedisCluster:
    """Three redis-server masters of the test's own, joined into one Redis Cluster."""

    def __init__(self, tmp):
        binary = redis_server()
        self.ports = [free_port() for _ in range(3)]
        self.procs = []
        for port in self.ports:
            directory = tmp / f"cluster-{port}"
            directory.mkdir()
            # The cluster bus port of its own: by default port + 10000, in the kernel's ephemeral range.
            self.procs.append(Process(binary, [
                "--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-port", free_port(),
                "--cluster-config-file", directory / "nodes.conf", "--dir", directory,
                "--save", "", "--appendonly", "no",
            ], tmp, absolute=True).start())
        try:
            for port in self.ports:
                wait_until(lambda: redis_cli(port, "ping") == "PONG", what=f"redis {port} up")
            created = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                                      "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True)
            assert created.returncode == 0, created.stdout + created.stderr
            wait_until(lambda: all("cluster_state:ok" in redis_cli(p, "cluster", "info") for p in self.ports),
                       what="the cluster ready")
        except BaseException:
            self.stop()
            raise
        self.url = ",".join(f"redis://127.0.0.1:{p}" for p in self.ports[:2])

    def keys(self):
        return [k for p in self.ports for k in redis_cli(p, "--scan").split()]

    def stop(self):
        for proc in self.procs:
            proc.stop()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_redis_cluster_holds_the_shared_counters_in_one_slot(gateway, tmp_path):
    cluster = RedisCluster(tmp_path)
    try:
        gateway.setup_basic()
        a_limit_counted_in_redis(gateway, ["--redis-url", cluster.url, "--redis-mode", "cluster"])
        # One admission checks several counters in one script: they share a hash tag, so one slot.
        keys = cluster.keys()
        assert len(keys) >= 2 and all(k.startswith("{switchboard}:") for k in keys), keys
    finally:
        cluster.stop()


class RedisSentinel:
    """A master, its replica and one sentinel watching them (quorum 1, a second to declare the master down)."""

    def __init__(self, tmp):
        binary = redis_server()
        self.master, self.replica, self.sentinel = free_port(), free_port(), free_port()
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.master_proc = Process(binary, ["--port", self.master, "--dir", tmp, *common], tmp, absolute=True).start()
        self.replica_proc = Process(binary, ["--port", self.replica, "--dir", tmp, "--replicaof", "127.0.0.1",
                                             self.master, *common], tmp, absolute=True).start()
        config = tmp / "sentinel.conf"
        config.write_text(f"port {self.sentinel}\nbind 127.0.0.1\ndir {tmp}\n"
                          f"sentinel monitor sb 127.0.0.1 {self.master} 1\n"
                          "sentinel down-after-milliseconds sb 1000\nsentinel failover-timeout sb 3000\n")
        self.sentinel_proc = Process(binary, [config, "--sentinel"], tmp, absolute=True).start()
        wait_until(lambda: "master_link_status:up" in redis_cli(self.replica, "info", "replication"),
                   what="the replica in sync")
        wait_until(lambda: self.named_master() == self.master, what="the sentinel watching the master")
        # A failover needs a replica the sentinel knows of (it learns them from the master's INFO).
        wait_until(lambda: str(self.replica) in redis_cli(self.sentinel, "sentinel", "replicas", "sb"), timeout=30,
                   what="the sentinel knowing the replica")

    def named_master(self):
        answer = redis_cli(self.sentinel, "sentinel", "get-master-addr-by-name", "sb").split()
        return int(answer[1]) if len(answer) == 2 else None

    def stop(self):
        for proc in (self.sentinel_proc, self.replica_proc, self.master_proc):
            proc.stop()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_redis_sentinel_names_the_master_and_the_limits_follow_a_failover(gateway, tmp_path):
    redis = RedisSentinel(tmp_path)
    try:
        gateway.setup_basic()
        a_limit_counted_in_redis(gateway, ["--redis-url", f"redis://127.0.0.1:{redis.sentinel}",
                                           "--redis-mode", "sentinel", "--redis-sentinel-master", "sb"])
        assert redis_cli(redis.master, "--scan"), "the counters are on the master"
        # The master dies; the sentinel promotes the replica; the data plane moves to it.
        redis.master_proc.kill()
        wait_until(lambda: redis.named_master() == redis.replica, timeout=30, what="the replica promoted")
        wait_until(lambda: f"127.0.0.1:{redis.replica}" in gateway.dp.logs(), timeout=15,
                   what="the data plane on the new master")
        once = gateway.admin("POST", "/keys", {"name": "rpm-1", "limits": {"rpm": 1}}, expect=201).json()["key"]
        gateway.wait_synced()
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "after"}]}
        statuses = [httpx.post(gateway.dp_url + "/v1/chat/completions", json=body, timeout=20,
                               headers={"authorization": f"Bearer {once}"}).status_code for _ in range(2)]
        assert statuses == [200, 429], "limits counted on the new master (closed, not open, on Redis errors)"
    finally:
        redis.stop()
