"""Processes for the benchmarks: the load mock, a control plane and data
planes, started from the built binaries on loopback, stopped on exit."""

import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from loopback import free_port, nginx_conf  # noqa: E402  (shared with the other suite)

ADMIN_TOKEN = "bench-admin-token-0123456789"
CLUSTER_TOKEN = "bench-cluster-token-0123456789"


def wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its direct children (nginx's master and workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(child)) for child in children)


class Stack:
    """Everything the benchmarks talk to; `bin_dir` holds the built binaries."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.work = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
        self.procs = []
        self.data_planes = []

    def spawn(self, name, *args, log=None, env=None, wrap=()):
        """`wrap`: a command to run the binary under (valgrind, say)."""
        out = open(self.work / (log or f"{name}.log"), "ab")
        proc = subprocess.Popen(
            [*wrap, str(self.bin_dir / name), *map(str, args)],
            stdout=subprocess.PIPE if name.startswith("mock") else out,
            stderr=out,
            env={**os.environ, "SWITCHBOARD_DRAIN_DELAY_MS": "0", **(env or {})},
        )
        self.procs.append(proc)
        return proc

    def mock(self, **flags) -> str:
        """Starts a load mock; answers its base URL (with /v1): https:// when
        `tls_cert` and `tls_key` are among the flags."""
        port = free_port()
        args = ["--listen", f"127.0.0.1:{port}"]
        for flag, value in flags.items():
            args += [f"--{flag.replace('_', '-')}", value]
        proc = self.spawn("mock-load", *args, log=f"mock-{port}.log")
        proc.stdout.readline()  # "listening on ..."
        return f"{'https' if 'tls_cert' in flags else 'http'}://127.0.0.1:{port}/v1"

    def nginx(self, upstream: str, workers: int) -> str:
        """nginx as a plain reverse proxy in front of `upstream` (a base URL
        with /v1): the reference every figure is also given against. Answers
        its base URL."""
        port = free_port()
        host = upstream.split("//", 1)[1].split("/", 1)[0]
        root = self.work / f"nginx-{port}"
        root.mkdir()
        conf = nginx_conf(root, port, f"    server {host};\n    keepalive 256;", workers=workers, connections=65535)
        proc = subprocess.Popen([shutil.which("nginx") or "nginx", "-p", str(root), "-c", str(conf),
                                 "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)

        def up():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            return conn.getresponse().status > 0
        wait_until(up, what="nginx")
        return f"http://127.0.0.1:{port}/v1"

    def control_plane(self, config_poll_ms=500, database_url=None):
        """On a SQLite file in the work directory unless `database_url` is given."""
        self.grpc_port, self.admin_port = free_port(), free_port()
        self.db = self.work / "cp.db"
        self.cp = self.spawn(
            "control-plane",
            "--database-url", database_url or f"sqlite://{self.db}",
            # Generated on a SQLite file's first start; PostgreSQL needs one given.
            *(["--secret-key", secrets.token_hex(32)] if database_url else []),
            "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
            "--http-addr", f"127.0.0.1:{self.admin_port}",
            "--admin-token", ADMIN_TOKEN,
            "--cluster-token", CLUSTER_TOKEN,
            "--config-poll-ms", config_poll_ms,
            "--log", "warn",
        )
        wait_until(lambda: self.get(self.admin_port, "/readyz")[0] == 200, what="control plane")

    def data_plane(self, *extra, port=None, index=None, env=None, wrap=()) -> "DataPlane":
        """A new data plane; with `port` and `index` of a stopped one, that
        one again (same state dir: it starts from its copy on disk)."""
        port = port or free_port()
        index = len(self.procs) if index is None else index
        proc = self.spawn(
            "data-plane",
            "--listen", f"127.0.0.1:{port}",
            "--control-plane", f"http://127.0.0.1:{self.grpc_port}",
            "--cluster-token", CLUSTER_TOKEN,
            "--state-dir", self.work / f"dp{index}",
            "--log", "warn",
            *extra,
            log=f"dp{index}.log",
            env=env,
            wrap=wrap,
        )
        dp = DataPlane(proc, port, index)
        wait_until(lambda: self.get(port, "/readyz")[0] == 200, what="data plane")
        self.data_planes.append(dp)
        return dp

    def get(self, port, path, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()

    def admin(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=120)
        conn.request(
            method,
            f"/api/v1/{path}",
            body=json.dumps(body) if body is not None else None,
            headers={"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"},
        )
        response = conn.getresponse()
        payload = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload) if payload else None

    def provider(self, name, base_url):
        self.admin("POST", "providers", {"name": name, "kind": "openai_compatible", "base_url": base_url, "api_key": "sk-bench"})

    def route(self, model, provider, upstream="load"):
        self.admin("POST", "routes", {"model": model, "targets": [{"provider": provider, "model": upstream}]})

    def key(self) -> str:
        return self.admin("POST", "keys", {"name": "bench"})["key"]

    def usage_requests(self, **filters) -> int:
        """Requests the control plane has usage records of."""
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        return int(self.admin("GET", f"usage?{query}")["requests"])

    def wait_usage(self, expected: int, timeout=60.0, **filters) -> int:
        """Waits for `expected` usage records (shipped every 50 ms); answers how many arrived."""
        deadline = time.monotonic() + timeout
        while (seen := self.usage_requests(**filters)) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        return seen

    def wait_model(self, dp, key, model, timeout=60.0):
        wait_until(
            lambda: model.encode() in self.get(dp.port, "/v1/models", {"authorization": f"Bearer {key}"})[1],
            timeout=timeout,
            what=f"{model} on the data plane",
        )

    def stop(self, dp: "DataPlane"):
        dp.proc.terminate()
        dp.proc.wait(30)
        self.data_planes.remove(dp)

    def cp_metric(self, name) -> float | None:
        return metric(self.admin_port, name)

    def usage_lost(self) -> bool:
        return any((dp.metric("switchboard_usage_lost_total") or 0) > 0 for dp in self.data_planes)

    def close(self):
        """Data planes first, so their last usage reaches the control plane."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        shutil.rmtree(self.work, ignore_errors=True)


def metric(port, name) -> float | None:
    """The first sample of `name` on a Prometheus endpoint."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class DataPlane:
    def __init__(self, proc, port, index):
        self.proc = proc
        self.port = port
        self.index = index
        self.url = f"http://127.0.0.1:{port}/v1"

    def metric(self, name) -> float | None:
        return metric(self.port, name)
