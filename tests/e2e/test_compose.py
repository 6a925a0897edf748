"""docker-compose as an operator runs it, without Docker (these machines have
no Docker daemon): the compose file's Switchboard services run as the real
binaries with exactly the command and environment each container would get,
each on its own loopback address as on its own network, the services they
depend on (PostgreSQL, Redis, etcd) swapped for the test's own. Each must pass
the image's own HEALTHCHECK command (from deploy/Dockerfile); the control
planes elect one leader through etcd and both data planes connect. The file's
structure is checked too: health checks, start conditions, restart policies,
and Prometheus scraping every plane's metrics port."""

import json
import os
import re
import secrets as random
import subprocess

import httpx
import pytest
import yaml

from conftest import BIN_DIR, ROOT, Process, secret, wait_until

pytestmark = pytest.mark.timeout(180)

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
PLANES = ("control-plane", "data-plane")


def services():
    return yaml.safe_load(COMPOSE.read_text())["services"]


def healthcheck_command():
    """The image's HEALTHCHECK, as the argv Docker runs."""
    line = next(l for l in (ROOT / "deploy" / "Dockerfile").read_text().splitlines() if l.startswith("HEALTHCHECK"))
    return json.loads(line[line.index("CMD") + 3:])


def test_the_compose_file_starts_in_order_and_keeps_running():
    found = services()
    for name, service in found.items():
        assert service.get("restart") == "unless-stopped", f"{name}: no restart policy"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}: {condition}"
            # What a service waits for must be able to become healthy.
            dep = found[dependency]
            assert "healthcheck" in dep or dep.get("command", [None])[0] in PLANES, f"{dependency}: no health check"
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {t for job in prometheus["scrape_configs"] for s in job["static_configs"] for t in s["targets"]}
    planes = {n for n, s in found.items() if s.get("command", [None])[0] in PLANES}
    assert scraped == {f"{n}:9090" for n in planes}, "Prometheus scrapes every plane's metrics listener"
    assert all(found[n]["environment"]["SWITCHBOARD_METRICS_ADDR"] == "0.0.0.0:9090" for n in planes)


def test_the_compose_services_run_healthy_as_the_binaries(etcd_and_postgres, tmp_path):
    etcd, database_url = etcd_and_postgres
    tokens = {"SWITCHBOARD_ADMIN_TOKEN": secret("admin-" + random.token_hex(16)),
              "SWITCHBOARD_CLUSTER_TOKEN": secret("cluster-" + random.token_hex(16)),
              "SWITCHBOARD_SECRET_KEY": secret(random.token_hex(32))}
    found = {n: s for n, s in services().items() if s.get("command", [None])[0] in PLANES}
    addresses = {name: f"127.0.0.{40 + i}" for i, name in enumerate(found)}
    # The compose network's names, as this machine reaches the test's own services.
    swaps = {"switchboard:switchboard@postgres:5432/switchboard": database_url.split("://", 1)[1],
             "redis:6379": "127.0.0.1:6379/12", "etcd:2379": f"127.0.0.1:{etcd.port}",
             **{f"{name}:": f"{ip}:" for name, ip in addresses.items()}}
    processes = {}
    try:
        for name, service in found.items():
            ip, binary = addresses[name], service["command"][0]
            env = {}
            for key, value in service["environment"].items():
                value = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: tokens[m[1]], str(value))
                for old, new in swaps.items():
                    value = value.replace(old, new)
                env[key] = value.replace("0.0.0.0:", f"{ip}:")
            # Inside its container a plane listens on all of its own addresses: here, on its loopback one.
            listen = {"control-plane": {"SWITCHBOARD_HTTP_ADDR": f"{ip}:8081", "SWITCHBOARD_GRPC_ADDR": f"{ip}:50051"},
                      "data-plane": {"SWITCHBOARD_LISTEN": f"{ip}:8080"}}[binary]
            env = {**listen, **env}
            if "SWITCHBOARD_STATE_DIR" in env:
                env["SWITCHBOARD_STATE_DIR"] = str(tmp_path / name)
            processes[name] = Process(BIN_DIR / binary, [], tmp_path, env=env, absolute=True, exact_env=True,
                                      cwd=tmp_path).start()

        # The image's HEALTHCHECK, pointed at the service's address, passes for each.
        command = healthcheck_command()
        for name, service in found.items():
            argv = [a.replace("127.0.0.1", addresses[name]) for a in command]
            health = {"PATH": os.environ["PATH"],
                      "SWITCHBOARD_HEALTH_PORTS": service["environment"]["SWITCHBOARD_HEALTH_PORTS"]}

            def healthy():
                assert processes[name].proc.poll() is None, f"{name} exited:\n{processes[name].logs()[-2000:]}"
                return subprocess.run(argv, env=health, capture_output=True, timeout=10).returncode == 0
            wait_until(healthy, timeout=60, interval=0.5, what=f"{name} healthy")

        control_plane = next(n for n in found if found[n]["command"][0] == "control-plane")
        url = f"http://{addresses[control_plane]}:8081/api/v1/cluster"

        def view():
            return httpx.get(url, headers={"authorization": f"Bearer {tokens['SWITCHBOARD_ADMIN_TOKEN']}"}).json()
        wait_until(lambda: view()["leader"] and len(view()["control_planes"]) == 2
                   and sum(d["connected"] for d in view()["data_planes"]) == 2, what="2 control planes, 2 data planes")
        assert view()["leader"]["id"] in found
        # A health check is a real check: a stopped plane fails it.
        stopped = next(iter(found))
        processes[stopped].stop()
        argv = [a.replace("127.0.0.1", addresses[stopped]) for a in command]
        unhealthy = subprocess.run(argv, env={"PATH": os.environ["PATH"], "SWITCHBOARD_HEALTH_PORTS": "8081 8080"},
                                   capture_output=True)
        assert unhealthy.returncode != 0
    finally:
        for process in processes.values():
            process.stop()
