"""The metrics catalogue, after real traffic: every metric both planes export
has HELP and TYPE lines and is documented in docs/observability.md; the LLM
metrics count what the usage records say (requests by route, provider and
status class, tokens by kind, cost, time to first token); metrics are on their
own listener when asked; every metric the Grafana dashboard and the alert
rules query exists; and the rule file is valid (promtool)."""

import json
import re
import shutil
import subprocess

import httpx
import pytest

from conftest import IN_CI, ROOT, free_port, wait_until

pytestmark = pytest.mark.timeout(120)

DASHBOARD = ROOT / "deploy" / "grafana" / "switchboard.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
SUFFIXES = ("_bucket", "_sum", "_count")


def families(text):
    """{name: {"type", "help", "samples": [(labels, value)]}} of a Prometheus exposition."""
    found = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            found.setdefault(name, {"samples": []})["help"] = help_text
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ", 1)
            found.setdefault(name, {"samples": []})["type"] = kind
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name, _, labels = series.partition("{")
            base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s) and name[: -len(s)] in found), name)
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
            found.setdefault(base, {"samples": []})["samples"].append((labels, float(value)))
    return found


def total(family, **match):
    return sum(v for labels, v in family["samples"] if all(labels.get(k) == m for k, m in match.items()))


def queried(text):
    """The metric names a PromQL text uses."""
    return {re.sub("(_bucket|_sum|_count)$", "", m) for m in re.findall(r"\bswitchboard_[a-z_]+", text)}


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_the_catalogue_after_traffic(gateway):
    metrics_port = free_port()
    gateway.start_data_plane(extra=["--metrics-addr", f"127.0.0.1:{metrics_port}"])
    key = gateway.setup_basic()
    client = gateway.openai(key)
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "one two three"}])
    stream = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "streamed"}],
                                            stream=True, stream_options={"include_usage": True})
    streamed_usage = [c.usage for c in stream if c.usage][0]
    httpx.post(gateway.dp_url + "/v1/chat/completions", json={"model": "gpt-test", "messages": []},
               headers={"authorization": "Bearer sk-sb-not-a-key"})
    # A rate limit refuses the second request of a key allowed one a minute.
    limited = gateway.admin("POST", "/keys", {"name": "rpm-1", "limits": {"rpm": 1}}, expect=201).json()["key"]
    gateway.wait_synced()
    statuses = [httpx.post(gateway.dp_url + "/v1/chat/completions", headers={"authorization": f"Bearer {limited}"},
                           json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}).status_code
                for _ in range(2)]
    assert statuses == [200, 429]
    wait_until(lambda: len(gateway.usage_records()) == 3, what="the usage records")
    records = gateway.usage_records()

    # The public port no longer serves metrics; the metrics listener does.
    assert httpx.get(gateway.dp_url + "/metrics").status_code == 404
    dp = families(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
    cp = families(httpx.get(f"http://127.0.0.1:{gateway.cp_http_port}/metrics").text)

    # HELP and TYPE for each, and each in the documented catalogue.
    documented = set(re.findall(r"`(switchboard_[a-z_]+)", (ROOT / "docs" / "observability.md").read_text()))
    for plane, found in (("data plane", dp), ("control plane", cp)):
        for name, family in found.items():
            if not name.startswith("switchboard_"):
                continue
            assert family.get("help") and family.get("type"), f"{plane}: {name} has no HELP or TYPE"
            assert name in documented, f"{plane}: {name} is not in docs/observability.md"

    # The LLM metrics agree with the usage records.
    labels = {"model": "gpt-test", "provider": "mock"}
    assert total(dp["switchboard_model_requests_total"], status_class="2xx", **labels) == 3
    for kind, field in (("input", "prompt_tokens"), ("output", "completion_tokens")):
        assert total(dp["switchboard_model_tokens_total"], kind=kind, **labels) == sum(r[field] for r in records)
    assert total(dp["switchboard_model_tokens_total"], kind="output") >= streamed_usage.completion_tokens
    ttft = dp["switchboard_time_to_first_token_seconds"]["samples"]
    assert sum(v for l, v in ttft if l.get("le") == "+Inf") == 1, "one stream, one time to first token"
    assert max(float(l["le"]) for l, _ in ttft if l.get("le") not in (None, "+Inf")) == 600
    assert total(dp["switchboard_upstream_attempts_total"], result="ok", attempt="first", **labels) == 3
    assert total(dp["switchboard_limit_refusals_total"]) == 1
    assert total(dp["switchboard_breaker_open"], **labels) == 0
    assert total(dp["switchboard_requests_in_flight"]) == 0
    assert total(dp["switchboard_requests_total"], endpoint="chat.completions", status="401") == 1
    assert total(cp["switchboard_usage_records_ingested_total"]) == 3

    # Everything the dashboard and the alert rules query exists after traffic.
    exported = set(dp) | set(cp)
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    missing = queried("\n".join(expressions)) - exported
    assert not missing, f"the dashboard queries metrics nobody exports: {missing}"
    missing = queried(RULES.read_text()) - exported
    assert not missing, f"the alert rules query metrics nobody exports: {missing}"


def test_the_alert_rules_are_valid_and_fire():
    promtool = shutil.which("promtool")
    if not promtool:
        if IN_CI:
            raise AssertionError("promtool is required (Debian package prometheus, installed by `make test-deps`)")
        pytest.skip("promtool not installed")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", str(ROOT / "deploy" / "prometheus" / "alerts_test.yaml")],
                            capture_output=True, text=True, cwd=ROOT / "deploy" / "prometheus")
    assert tested.returncode == 0, tested.stdout + tested.stderr
