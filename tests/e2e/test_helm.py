"""The Helm chart as Kubernetes would run it. Each values set an operator would
use is rendered with Helm's own Go SDK (helm-python-sdk), every manifest is
validated against the Kubernetes schemas (strict), and then the real binaries
run with exactly the command, arguments, environment and files each rendered
container gets: every pod on its own loopback address, a Service's name
resolving to one of its pods, external hosts (PostgreSQL, Redis, etcd) to the
test's own, and paths the pod mounts to directories holding what Kubernetes
would put there. Run as root, a pod runs as its securityContext's user in a
working directory it cannot write, as with a read-only root filesystem. Every
pod must become ready by its own readiness probe, and the chart's `helm test`
pod must pass."""

import base64
import json
import os
import re
import secrets as random
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import BIN_DIR, ROOT, Process, secret, wait_until
from pki import Authority

import helm_python as helm
import kubernetes_validate

pytestmark = pytest.mark.timeout(240)

CHART = ROOT / "helm" / "switchboard"
RELEASE, NAMESPACE = "sb", "switchboard"
KUBE_VERSION = "1.32.0"
CP, DP = "sb-switchboard-control-plane", "sb-switchboard-data-plane"
# Custom resources have no schema in kubernetes-validate: their required fields are checked instead.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector.matchLabels", "spec.endpoints"],
    ("cert-manager.io/v1", "Certificate"): ["spec.secretName", "spec.dnsNames", "spec.issuerRef.name"],
    ("monitoring.coreos.com/v1", "PrometheusRule"): ["spec.groups"],
}


def render(values):
    """The chart's manifests for `values`, validated; and its NOTES."""
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]
    for doc in docs:
        kind = (doc["apiVersion"], doc["kind"])
        if kind in CUSTOM_RESOURCES:
            for field in CUSTOM_RESOURCES[kind]:
                value = doc
                for part in field.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                assert value, f"{doc['kind']} {doc['metadata']['name']}: {field} missing"
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    return docs, rendered[f"{CHART.name}/templates/NOTES.txt"]


def kinds(docs):
    return sorted({doc["kind"] for doc in docs})


class Pod:
    def __init__(self, name, spec, labels, ip):
        self.name, self.spec, self.labels, self.ip = name, spec, labels, ip
        self.process = None

    @property
    def container(self):
        return self.spec["containers"][0]

    def port(self, port):
        """A container port by name or number."""
        if isinstance(port, int):
            return port
        return next(p["containerPort"] for p in self.container["ports"] if p["name"] == port)

    def probe_url(self, probe="readinessProbe"):
        get = self.container[probe]["httpGet"]
        scheme = get.get("scheme", "HTTP").lower()
        return f"{scheme}://{self.ip}:{self.port(get['port'])}{get['path']}"


class Cluster:
    """Rendered Deployments run as processes, one loopback address per pod."""

    def __init__(self, docs, tmp, existing_secrets=(), external=None):
        self.tmp = tmp
        # Pods' files live where their (non-root) user can read them, not under pytest's 0700 tmp.
        self.root = Path(tempfile.mkdtemp(prefix="switchboard-pods-"))
        self.root.chmod(0o755)
        self.secrets = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
                        for d in docs if d["kind"] == "Secret"}
        self.secrets.update(existing_secrets)
        for values in self.secrets.values():
            for key, value in values.items():
                if key in ("admin-token", "cluster-token", "secret-key", "database-url", "etcd-password"):
                    secret(value)
        self.pods = []
        for deployment in (d for d in docs if d["kind"] == "Deployment"):
            template = deployment["spec"]["template"]
            for i in range(deployment["spec"].get("replicas", 2)):
                ip = f"127.0.0.{10 + len(self.pods)}"
                self.pods.append(Pod(f"{deployment['metadata']['name']}-{i}", template["spec"],
                                     template["metadata"]["labels"], ip))
        # A Service's name, alone or qualified, with or without its port, reaches its first pod.
        self.addresses = dict(external or {})
        for service in (d for d in docs if d["kind"] == "Service"):
            name = service["metadata"]["name"]
            selector = service["spec"]["selector"]
            pod = next(p for p in self.pods if all(p.labels.get(k) == v for k, v in selector.items()))
            for host in (f"{name}.{NAMESPACE}.svc.cluster.local", f"{name}.{NAMESPACE}.svc", name):
                for port in service["spec"]["ports"]:
                    self.addresses[f"{host}:{port['port']}"] = f"{pod.ip}:{pod.port(port['targetPort'])}"
                self.addresses[host] = pod.ip
        self.docs = docs

    def loopback(self, text, pod=None, mounts=()):
        """`text` with cluster addresses and mounted paths as this machine has them."""
        if pod:
            text = text.replace("0.0.0.0:", f"{pod.ip}:")
        for name in sorted(self.addresses, key=len, reverse=True):
            text = re.sub(r"(?<![\w.-])" + re.escape(name) + r"(?![\w-])", self.addresses[name], text)
        # Paths last (local paths may hold service names), in one pass: a path already
        # swapped must not match a shorter mount (/tmp).
        if mounts:
            local = dict(mounts)
            paths = "|".join(re.escape(path) for path, _ in mounts)
            text = re.sub(f"(?:{paths})(?=/|$)", lambda m: str(local[m[0]]), text)
        return text

    def volume(self, pod, name):
        """The local directory holding what Kubernetes would mount for `name`."""
        volume = next(v for v in pod.spec["volumes"] if v["name"] == name)
        if "persistentVolumeClaim" in volume:
            path = self.root / "pvc" / volume["persistentVolumeClaim"]["claimName"]
        else:
            path = self.root / pod.name / name
        path.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            source = volume["secret"]["secretName"]
            assert source in self.secrets, f"pod {pod.name}: Secret {source} does not exist"
            data = self.secrets[source]
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (path / item["path"]).write_text(data[item["key"]])
        return path

    def start(self, pod):
        container = pod.container
        mounts = sorted(((m["mountPath"], self.volume(pod, m["name"])) for m in container.get("volumeMounts", [])),
                        key=lambda m: len(m[0]), reverse=True)
        env = {}
        for var in container.get("env", []):
            if "value" in var:
                # Kubernetes expands $(NAME) of variables defined before.
                value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
            elif "secretKeyRef" in var["valueFrom"]:
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["name"] in self.secrets, f"pod {pod.name}: Secret {ref['name']} does not exist"
                assert ref["key"] in self.secrets[ref["name"]], f"Secret {ref['name']} has no key {ref['key']}"
                value = self.secrets[ref["name"]][ref["key"]]
            else:
                value = {"status.podIP": pod.ip, "metadata.name": pod.name}[var["valueFrom"]["fieldRef"]["fieldPath"]]
            env[var["name"]] = self.loopback(value, pod, mounts)
        command = container["command"] + container.get("args", [])
        args = [self.loopback(a, pod, mounts) for a in command[1:]]
        popen = {}
        security = {**pod.spec.get("securityContext", {}), **container.get("securityContext", {})}
        if os.geteuid() == 0:
            # The image's user, and no writable root filesystem: only the mounts are the pod's.
            uid, gid = security["runAsUser"], security.get("fsGroup", security.get("runAsGroup", 0))
            for _, local in mounts:
                for path in [local, *local.rglob("*")]:
                    os.chown(path, uid, gid)
            workdir = self.root / pod.name / "root"
            workdir.mkdir(parents=True, exist_ok=True)
            if security.get("readOnlyRootFilesystem"):
                workdir.chmod(0o555)
            popen = {"user": uid, "group": gid, "extra_groups": [], "cwd": workdir}
        pod.process = Process(command[0], args, self.tmp, env=env, exact_env=True, **popen).start()

    def up(self):
        """Starts every pod at once, as a fresh install does, and waits until each is ready."""
        for pod in self.pods:
            self.start(pod)
        for pod in self.pods:
            url = pod.probe_url()

            def ready():
                assert pod.process.proc.poll() is None, f"{pod.name} exited:\n{pod.process.logs()[-3000:]}"
                return httpx.get(url, verify=False, timeout=2).status_code == 200
            wait_until(ready, timeout=60, interval=0.2, what=f"{pod.name} ready at {url}")

    def helm_test(self):
        """Runs each `helm test` pod's container here; answers its output."""
        outputs = []
        for doc in self.docs:
            if doc["kind"] != "Pod" or doc["metadata"].get("annotations", {}).get("helm.sh/hook") != "test":
                continue
            container = doc["spec"]["containers"][0]
            command = [self.loopback(a) for a in container["command"] + container.get("args", [])]
            workdir = Path(tempfile.mkdtemp(prefix="switchboard-helm-test-"))
            command = [c.replace("/tmp/", f"{workdir}/") for c in command]
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"helm test {doc['metadata']['name']} failed:\n{done.stdout}{done.stderr}"
            outputs.append(done.stdout)
            shutil.rmtree(workdir, ignore_errors=True)
        assert outputs, "the chart has no helm test pod"
        return outputs

    def stop(self):
        # As Kubernetes deletes pods: all at once, each taking its rendered drain delay.
        running = [pod.process for pod in self.pods if pod.process and pod.process.proc.poll() is None]
        for process in running:
            process.proc.terminate()
        for process in running:
            process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def run_chart(tmp_path):
    clusters = []

    def run(docs, **kwargs):
        for binary in ("control-plane", "data-plane"):
            assert (BIN_DIR / binary).exists(), f"{BIN_DIR / binary} not built"
        cluster = Cluster(docs, tmp_path, **kwargs)
        clusters.append(cluster)
        cluster.up()
        return cluster
    yield run
    for cluster in clusters:
        cluster.stop()


def by_kind(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def container_env(doc):
    return {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_default_values_install_runs_and_passes_helm_test(run_chart):
    docs, notes = render(None)
    assert kinds(docs) == ["Deployment", "PersistentVolumeClaim", "Pod", "PodDisruptionBudget", "Secret",
                           "Service", "ServiceAccount"]
    dp = by_kind(docs, "Deployment", DP)[0]
    pod = dp["spec"]["template"]["spec"]
    env = container_env(dp)
    # The crash loop this test is for: a large integer rendered as a float.
    assert env["SWITCHBOARD_MAX_BODY_BYTES"]["value"] == "33554432"
    # Streams get the grace period, minus the pre-stop wait, the drain and a margin.
    assert pod["terminationGracePeriodSeconds"] == 300
    assert env["SWITCHBOARD_SHUTDOWN_GRACE_MS"]["value"] == str((300 - 5 - 5 - 5) * 1000)
    assert pod["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    security = pod["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] >= 1000
    assert "checksum/secret" in dp["spec"]["template"]["metadata"]["annotations"]
    # Metrics on their own port, and the public port does not serve them.
    assert env["SWITCHBOARD_METRICS_ADDR"]["value"] == "0.0.0.0:9090"
    assert "helm test sb" in notes

    cluster = run_chart(docs)
    dp_pod = next(p for p in cluster.pods if p.name.startswith(DP))
    assert httpx.get(f"http://{dp_pod.ip}:8080/metrics").status_code == 404
    assert "switchboard_" in httpx.get(f"http://{dp_pod.ip}:9090/metrics").text
    output = cluster.helm_test()[0]
    assert '"code":"invalid_api_key"' in output


def test_highly_available_values_run_three_control_planes_electing_a_leader_through_etcd(etcd_and_postgres,
                                                                                          run_chart):
    etcd, url = etcd_and_postgres
    admin_token = secret("admin-" + random.token_hex(16))
    existing = {"switchboard-prod": {
        "admin-token": admin_token,
        "cluster-token": secret("cluster-" + random.token_hex(16)),
        "secret-key": secret(random.token_hex(32)),
        # As an operator writes them: cluster hosts, swapped below for the test's own.
        "database-url": url.replace("127.0.0.1:5432", "postgres.infra.svc:5432"),
        "redis-url": "redis://redis.infra.svc:6379/9",
    }}
    values = {
        "secrets": {"existingSecret": "switchboard-prod"},
        "database": {"kind": "postgres"},
        "redis": {"enabled": True},
        "etcd": {"endpoints": ["http://etcd.infra.svc:2379"]},
        "controlPlane": {"replicas": 3},
        "dataPlane": {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 2}},
        "networkPolicy": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                    "grafanaDashboard": {"enabled": True}},
        "ingress": {"enabled": True, "className": "nginx", "tls": [{"hosts": ["switchboard.example.com"],
                                                                       "secretName": "switchboard-ingress"}]},
    }
    docs, _ = render(values)
    assert kinds(docs) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy",
                           "Pod", "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount",
                           "ServiceMonitor"]
    rules = by_kind(docs, "PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert rules == shipped["groups"][0]["rules"], "the chart ships deploy/prometheus/alerts.yaml"
    dashboard = json.loads(by_kind(docs, "ConfigMap")[0]["data"]["switchboard.json"])
    assert dashboard["uid"] == "switchboard"
    assert not by_kind(docs, "Secret"), "with existingSecret the chart creates none"
    cp = by_kind(docs, "Deployment", CP)[0]
    assert "strategy" not in cp["spec"], "PostgreSQL control planes roll one by one"
    assert cp["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "replicas" not in by_kind(docs, "Deployment", DP)[0]["spec"], "the HPA owns the replica count"
    cluster = run_chart(docs, existing_secrets=existing, external={
        "postgres.infra.svc:5432": "127.0.0.1:5432",
        "redis.infra.svc:6379": "127.0.0.1:6379",
        "etcd.infra.svc:2379": f"127.0.0.1:{etcd.port}",
    })
    cp_pods = [p for p in cluster.pods if p.name.startswith(CP)]

    def view():
        return httpx.get(f"http://{cp_pods[0].ip}:8081/api/v1/cluster", timeout=5,
                         headers={"authorization": f"Bearer {admin_token}"}).json()
    wait_until(lambda: view()["leader"] and len(view()["control_planes"]) == 3, what="three replicas, one leader")
    assert view()["leader"]["id"] in {p.name for p in cp_pods}
    cluster.helm_test()


def test_tls_values_serve_https_and_the_planes_use_mutual_tls(run_chart, tmp_path):
    ca = Authority(tmp_path, "cluster-ca")
    # What cert-manager (or an operator) writes: each plane's certificate names its Service; the
    # test's pods are on 127.0.0.10-12, so the certificates name those addresses too.
    pod_ips = [f"127.0.0.{i}" for i in range(10, 13)]
    existing = {}
    for secret_name, service, client in (("sb-cp-tls", CP, False), ("sb-dp-tls", DP, True)):
        cert, key, _ = ca.issue(secret_name, service, dns=[service, f"{service}.{NAMESPACE}.svc"], ips=pod_ips,
                                client=client, both=client)
        existing[secret_name] = {"tls.crt": cert.read_text(), "tls.key": key.read_text(),
                                 "ca.crt": ca.path.read_text()}
    # And a private CA for providers, from a Secret of the operator's: the data planes start only if they can use it.
    existing["provider-ca"] = {"bundle.pem": Authority(tmp_path, "provider-ca").path.read_text()}
    docs, _ = render({"tls": {"enabled": True, "controlPlaneSecret": "sb-cp-tls", "dataPlaneSecret": "sb-dp-tls"},
                      "dataPlane": {"upstreamCaSecret": {"name": "provider-ca", "key": "bundle.pem"}}})
    cp_env = container_env(by_kind(docs, "Deployment", CP)[0])
    assert cp_env["SWITCHBOARD_CLUSTER_CLIENT_CA"]["value"] == "/etc/switchboard/tls/ca.crt"
    dp_env = container_env(by_kind(docs, "Deployment", DP)[0])
    assert dp_env["SWITCHBOARD_CONTROL_PLANE"]["value"].startswith("https://")
    assert dp_env["SWITCHBOARD_UPSTREAM_CA"]["value"] == "/etc/switchboard/upstream-ca/ca.crt"

    cluster = run_chart(docs, existing_secrets=existing)
    cp_pod, dp_pod = (next(p for p in cluster.pods if p.name.startswith(n)) for n in (CP, DP))
    verify = ssl.create_default_context(cafile=str(ca.path))
    assert httpx.get(f"https://{dp_pod.ip}:8080/healthz", verify=verify).status_code == 200
    # The data planes reached the control plane with their certificate: it knows them by its name.
    token = cluster.secrets["sb-switchboard"]["admin-token"]
    planes = httpx.get(f"https://{cp_pod.ip}:8081/api/v1/dataplanes", verify=verify,
                       headers={"authorization": f"Bearer {token}"}).json()["data_planes"]
    assert sum(p["id"].startswith(f"{DP}/") and p["connected"] for p in planes) == 2, planes
    cluster.helm_test()


def test_cert_manager_values_render_certificates_for_both_planes():
    docs, _ = render({"tls": {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "internal-ca"}}}})
    certificates = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "Certificate")}
    assert set(certificates) == {CP, DP}
    assert "client auth" in certificates[DP]["usages"] and "client auth" not in certificates[CP]["usages"]
    mounted = {v["name"]: v for v in by_kind(docs, "Deployment", DP)[0]["spec"]["template"]["spec"]["volumes"]}
    assert mounted["tls"]["secret"]["secretName"] == certificates[DP]["secretName"]


@pytest.mark.parametrize("values,named", [
    ({"dataPlane": {"maxBodyBytes": "32MiB"}}, "/dataPlane/maxBodyBytes"),
    ({"controlPlane": {"replicas": 3}}, "/controlPlane/replicas"),
    ({"secrets": {"secretKey": "not-hex"}}, "/secrets/secretKey"),
    ({"database": {"kind": "mysql"}}, "/database/kind"),
    ({"dataPlane": {"replica": 3}}, "replica"),
    ({"tls": {"enabled": True, "certManager": {"enabled": True}}}, "/tls/certManager/issuerRef/name"),
    ({"redis": {"enabled": True, "mode": "sentinel"}}, "/redis/sentinelMaster"),
])
def test_bad_values_are_refused_naming_the_field(values, named):
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    assert named in str(refused.value), str(refused.value)


def test_postgres_without_a_url_is_refused_naming_the_value():
    with pytest.raises(helm.HelmError) as refused:
        render({"database": {"kind": "postgres"}, "controlPlane": {"replicas": 2}})
    assert "database.url" in str(refused.value)
