"""End-to-end fixtures: real binaries on loopback ports, a real database
(SQLite file or a fresh PostgreSQL database), a mock OpenAI-compatible upstream, and
the official clients."""

import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import loopback  # noqa: E402  (shared with the other suite)
from loopback import drop_postgres_database, free_port  # noqa: E402

BIN_DIR = Path(os.environ.get("SWITCHBOARD_BIN_DIR", ROOT / "target" / "debug"))
IN_CI = os.environ.get("CI") == "true"
MOCK_KEY = "sk-mock-upstream"

# Every secret the suite hands to or gets from Switchboard, and every output
# file of the processes it runs: at the end of the session no secret may
# appear in any output (logs, metrics).
SECRETS = {MOCK_KEY, "mock-secret-key"}
OUTPUTS = []

# Every error body any client of the suite receives (httpx underlies the
# openai and anthropic SDKs too) is an output as well.
ERROR_BODIES = Path(tempfile.mkstemp(prefix="switchboard-error-bodies-", suffix=".txt")[1])
OUTPUTS.append(ERROR_BODIES)
_send = httpx.Client.send


def _send_recording_errors(client, request, **kwargs):
    response = _send(client, request, **kwargs)
    if response.status_code >= 400:
        response.read()
        with ERROR_BODIES.open("ab") as out:
            out.write(f"{request.method} {request.url} {response.status_code}\n".encode() + response.content + b"\n")
    return response


httpx.Client.send = _send_recording_errors


def secret(value):
    assert value, "an empty secret would match every output"
    SECRETS.add(value)
    return value


def wait_until(predicate, timeout=15.0, interval=0.05, what="condition"):
    """Waits for `predicate` to answer something true, and answers it."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # the service may not be up yet
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last error: {last_error!r}")


def metric_value(base_url, series):
    """The value of one series (`name{labels}`, as exposed) on `base_url`/metrics; 0 when absent."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def seconds_until_counted(dp_urls, request, timeout=10.0):
    """Seconds from `request()` until every data plane at `dp_urls` has received a spend count from its
    control plane, measured once no count of earlier traffic is on its way."""
    series = 'switchboard_config_received_bytes_total{kind="counters"}'
    received = lambda: [metric_value(url, series) for url in dp_urls]  # noqa: E731

    def quiet():
        before = received()
        time.sleep(1)
        return received() == before
    wait_until(quiet, timeout=15, interval=0, what="no spend counts on their way")
    before = received()
    started = time.monotonic()
    request()
    wait_until(lambda: all(now > then for now, then in zip(received(), before)), timeout=timeout, interval=0.02,
               what="the spend count on every data plane")
    return time.monotonic() - started


class Process:
    """A binary running with its output in a log file, stopped at teardown."""

    def __init__(self, name, args, log_dir, env=None, absolute=False, exact_env=False, **popen):
        """`name` is one of Switchboard's binaries, or with `absolute` any program's path.
        With `exact_env` the process gets `env` and PATH only; `popen` goes to Popen (cwd, user)."""
        self.name = Path(name).name
        self.args = [str(name if absolute else BIN_DIR / name)] + [str(a) for a in args]
        self.log_path = Path(log_dir) / f"{self.name}-{secrets.token_hex(3)}.log"
        if exact_env:
            self.env = {"PATH": os.environ["PATH"], **env}
        else:
            # Debug for Switchboard's own crates: every span field and event is searched for secrets.
            log = "info,sqlx=warn,control_plane=debug,data_plane=debug,shared=debug"
            # No drain delay on SIGTERM unless a test asks for one: stops stay quick.
            self.env = {**os.environ, "SWITCHBOARD_LOG": log, "SWITCHBOARD_DRAIN_DELAY_MS": "0", **(env or {})}
        self.popen = popen
        self.proc = None

    def start(self):
        OUTPUTS.append(self.log_path)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log, env=self.env,
                                     **self.popen)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill(self):
        return self.stop(signal.SIGKILL)

    def logs(self):
        return self.log_path.read_text(errors="replace")


class Gateway:
    """One control plane, one data plane and a mock upstream, wired together."""

    def __init__(self, tmp: Path, database_url: str):
        self.tmp = tmp
        self.database_url = database_url
        self.admin_token = secret("admin-" + secrets.token_hex(16))
        self.cluster_token = secret("cluster-" + secrets.token_hex(16))
        self.secret_key = secret(secrets.token_hex(32))
        self.grpc_port, self.cp_http_port, self.dp_port = free_port(), free_port(), free_port()
        self.state_dir = tmp / "dp-state"
        self.processes = []
        # Plain HTTP unless a test turns TLS on; `ca` is then what clients trust.
        self.cp_scheme = self.dp_scheme = self.grpc_scheme = "http"
        self.ca = None
        try:
            self.mock = Process("mock-provider", ["--kind", "openai_compatible", "--api-key", MOCK_KEY], tmp).start()
            self.processes.append(self.mock)
            line = self.mock.proc.stdout.readline().decode()
            self.mock_url = "http://" + line.strip().rsplit(" ", 1)[-1]
            self.cp = self.start_control_plane()
            self.dp = self.start_data_plane()
        except BaseException:
            # A half-started gateway must not leave its processes behind.
            for process in reversed(self.processes):
                process.stop()
            raise

    # ---- processes

    def start_control_plane(self, http_port=None, extra=(), env=None):
        args = [
            "--database-url", self.database_url,
            "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
            "--http-addr", f"127.0.0.1:{http_port or self.cp_http_port}",
            "--admin-token", self.admin_token,
            "--cluster-token", self.cluster_token,
            "--secret-key", self.secret_key,
            *extra,
        ]
        if "--config-poll-ms" not in extra:
            args += ["--config-poll-ms", "200"]
        cp = Process("control-plane", args, self.tmp, env=env).start()
        self.processes.append(cp)
        port = http_port or self.cp_http_port
        ready = f"{self.cp_scheme}://127.0.0.1:{port}/readyz"
        wait_until(lambda: httpx.get(ready, verify=self.verify).status_code == 200, what="control plane ready")
        return cp

    def start_data_plane(self, wait_ready=True, extra=(), env=None):
        if getattr(self, "dp", None) is not None:
            self.dp.stop()
        defaults = {
            "--listen": f"127.0.0.1:{self.dp_port}",
            "--control-plane": f"{self.grpc_scheme}://127.0.0.1:{self.grpc_port}",
            "--cluster-token": self.cluster_token,
            "--state-dir": self.state_dir,
            "--max-body-bytes": "65536",
            "--upstream-timeout-ms": "1500",
            "--usage-flush-ms": "100",
        }
        # A flag in `extra` replaces its default.
        args = [a for flag, value in defaults.items() if flag not in extra for a in (flag, value)] + list(extra)
        dp = self.dp = Process("data-plane", args, self.tmp, env=env).start()
        self.processes.append(dp)
        if wait_ready:
            wait_until(lambda: httpx.get(f"{self.dp_url}/readyz", verify=self.verify).status_code == 200,
                       what="data plane ready")
        return dp

    def close(self):
        # The metrics are output too: scraped once more, to be searched for secrets.
        for name, url in (("dp", self.dp_url), ("cp", f"{self.cp_scheme}://127.0.0.1:{self.cp_http_port}")):
            try:
                path = self.tmp / f"metrics-{name}-{secrets.token_hex(3)}.txt"
                path.write_text(httpx.get(url + "/metrics", timeout=2, verify=self.verify).text)
                OUTPUTS.append(path)
            except httpx.HTTPError:
                pass
        for process in reversed(self.processes):
            process.stop()

    # ---- clients

    @property
    def verify(self):
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    @property
    def dp_url(self):
        return f"{self.dp_scheme}://127.0.0.1:{self.dp_port}"

    @property
    def admin_url(self):
        return f"{self.cp_scheme}://127.0.0.1:{self.cp_http_port}/api/v1"

    def admin(self, method, path, json=None, expect=None, token=None, params=None):
        headers = {"authorization": f"Bearer {token or self.admin_token}"}
        response = httpx.request(method, self.admin_url + path, json=json, headers=headers, params=params, timeout=10,
                                 verify=self.verify)
        created = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        for field in ("key", "token"):  # API key and admin token secrets, shown once
            if isinstance(created, dict) and isinstance(created.get(field), str):
                secret(created[field])
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def openai(self, key, **kwargs):
        import openai

        if self.ca:
            kwargs.setdefault("http_client", httpx.Client(verify=self.verify))
        return openai.OpenAI(base_url=f"{self.dp_url}/v1", api_key=key, max_retries=0, timeout=20, **kwargs)

    def applied_version(self):
        text = httpx.get(f"{self.dp_url}/readyz", verify=self.verify).text
        return int(text.rsplit(" ", 1)[-1].rstrip(")")) if "version" in text else 0

    def current_version(self):
        return self.admin("GET", "/dataplanes", expect=200).json()["current_version"]

    def wait_synced(self):
        wait_until(lambda: self.applied_version() == self.current_version(), what="data plane synced")

    def setup_basic(self, models=None):
        """A provider on the mock, a route `gpt-test` and one key; returns the key secret."""
        self.admin("POST", "/providers", {"name": "mock", "kind": "openai_compatible",
                                           "base_url": self.mock_url + "/v1", "api_key": MOCK_KEY}, expect=201)
        self.admin("POST", "/routes", {"model": "gpt-test", "targets": [{"provider": "mock", "model": "gpt-4o-mini"}]},
                   expect=201)
        body = {"name": "e2e"}
        if models is not None:
            body["models"] = models
        key = self.admin("POST", "/keys", body, expect=201).json()["key"]
        self.wait_synced()
        return key

    def mock_stats(self):
        """What the mock billed: requests and tokens."""
        stats = httpx.get(self.mock_url + "/_mock/stats").json()
        return {k: stats[k] for k in ("requests", "prompt_tokens", "completion_tokens", "total_tokens")}

    def usage(self, **params):
        return self.admin("GET", "/usage", params=params, expect=200).json()

    def usage_records(self, **params):
        return self.admin("GET", "/usage/records", params=params, expect=200).json()["records"]


def json_server(answer):
    """An HTTP server on loopback for a test's webhooks and key sets: `answer(method, body)` (the request's
    JSON, or None) gives (status, JSON value or None). Answers (server, base URL)."""

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            length = int(self.headers.get("content-length") or 0)
            status, value = answer(self.command, json.loads(self.rfile.read(length)) if length else None)
            body = b"" if value is None else json.dumps(value).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Redis:
    """A Redis server of the test's own, on a loopback port, keeping nothing on disk."""

    def __init__(self, tmp):
        self.port = free_port()
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}"
        wait_until(self.up, what="redis up")

    def up(self):
        import socket
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def command(self, *args):
        """One command; its answer as text (None for a missing value). Simple, integer and bulk answers only."""
        import socket
        request = f"*{len(args)}\r\n" + "".join(f"${len(str(a).encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request.encode())
            answer = sock.makefile("rb")
            head = answer.readline().decode().rstrip("\r\n")
            if head[:1] in (":", "+"):
                return head[1:]
            assert head.startswith("$"), head
            size = int(head[1:])
            return None if size < 0 else answer.read(size + 2)[:-2].decode()

    def script_calls(self):
        """Lua scripts run so far (EVALSHA calls, from INFO commandstats)."""
        for line in self.command("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_evalsha:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def require(binary, package):
    if shutil.which(binary):
        return shutil.which(binary)
    if IN_CI:
        raise AssertionError(f"{binary} is required (Debian package {package}, installed by `make test-deps`)")
    pytest.skip(f"{binary} not installed")


class Etcd:
    """A one-member etcd of the test's own."""

    def __init__(self, tmp):
        binary = require("etcd", "etcd-server")
        self.port, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Process(binary, [
            "--name", "sb", "--data-dir", tmp / "etcd",
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"sb=http://127.0.0.1:{peer}",
        ], tmp, absolute=True).start()
        wait_until(lambda: httpx.get(self.url + "/health").json()["health"] == "true", what="etcd healthy")


@pytest.fixture
def etcd_and_postgres(tmp_path):
    """etcd and a fresh PostgreSQL database of the test's own: (etcd, database URL). Requested before
    what runs on them, they are stopped and dropped after it."""
    etcd = Etcd(tmp_path)
    name, url = postgres_database()
    yield etcd, url
    etcd.proc.stop()
    drop_postgres_database(name)


@pytest.fixture
def redis(tmp_path):
    if not shutil.which("redis-server"):
        if IN_CI:
            raise AssertionError("redis-server is required")
        pytest.skip("redis-server not installed")
    server = Redis(tmp_path)
    yield server
    server.stop()



@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_output():
    """After every test: search every process's log and the scraped metrics
    for every secret the suite used (admin, cluster and API keys, provider
    credentials, the secret key)."""
    yield
    leaks = []
    for path in OUTPUTS:
        try:
            text = Path(path).read_text(errors="replace")
        except FileNotFoundError:
            continue
        leaks += [(str(path), value[:8] + "...") for value in SECRETS if value in text]
    assert not leaks, f"secrets found in outputs: {leaks}"
    ERROR_BODIES.unlink(missing_ok=True)


def postgres_database():
    """A fresh, empty database for one test; dropped afterwards."""
    import psycopg

    try:
        return loopback.postgres_database("sb_e2e_")
    except psycopg.OperationalError as error:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL unreachable: {error}")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    if request.param == "sqlite":
        yield "sqlite", f"sqlite://{tmp_path}/control-plane.db"
    else:
        name, url = postgres_database()
        yield "postgres", url
        drop_postgres_database(name)


@pytest.fixture
def gateway(database, tmp_path):
    gw = Gateway(tmp_path, database[1])
    gw.kind = database[0]
    yield gw
    gw.close()


@pytest.fixture
def pg_gateway(tmp_path):
    """A gateway on PostgreSQL only: for what SQLite, being single-node, does not do."""
    name, url = postgres_database()
    gw = Gateway(tmp_path, url)
    gw.kind = "postgres"
    yield gw
    gw.close()
    drop_postgres_database(name)


@pytest.fixture(scope="session")
def grpc_stubs(tmp_path_factory):
    """Python stubs generated from proto/ with grpcio-tools, as a client team would."""
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    proto_dir = ROOT / "proto"
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    files = [str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto")]
    assert protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *files]) == 0
    sys.path.insert(0, str(out))
    from switchboard.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402

    return admin_pb2, admin_pb2_grpc
