"""Routing and resilience end to end: strategies, retries, fallbacks, circuit
breaking, timeouts, keepalives and A/B splits, against mock providers that
fail on command (by upstream model name, or by an outage switched on and
off at the mock)."""

import collections
import json
import time

import httpx
import openai
import pytest

from conftest import Gateway, Process, wait_until

KEEPALIVE_MS = 1500


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing")
    gw = Gateway(tmp, f"sqlite://{tmp}/control-plane.db")
    try:
        gw.dp = gw.start_data_plane(extra=(
            "--breaker-failures", "3", "--breaker-cooldown-ms", "600", "--breaker-min-requests", "1000",
            "--stream-keepalive-ms", str(KEEPALIVE_MS), "--retry-budget", "1.0", "--retry-backoff-ms", "20",
        ))
        # A second mock whose streams pause a second between events (idle timeouts).
        paced = Process("mock-provider", ["--kind", "openai_compatible", "--chunk-gap-ms", "1000"], tmp).start()
        gw.processes.append(paced)
        paced_url = "http://" + paced.proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
        for name, url in (("mock", gw.mock_url), ("paced", paced_url)):
            gw.admin("POST", "/providers", {"name": name, "kind": "openai_compatible", "base_url": url + "/v1",
                                            "api_key": "sk-mock-upstream"}, expect=201)
        gw.key = gw.admin("POST", "/keys", {"name": "routing"}, expect=201).json()["key"]
        yield gw
    finally:
        gw.close()


def route(gw, model, targets, **policy):
    body = {"model": model, "targets": [{"provider": "mock", **t} if isinstance(t, dict) else
                                        {"provider": "mock", "model": t} for t in targets], **policy}
    if gw.admin("GET", f"/routes/{model}").status_code == 200:
        gw.admin("PUT", f"/routes/{model}", body, expect=200)
    else:
        gw.admin("POST", "/routes", body, expect=201)
    gw.wait_synced()


def chat(gw, model, text="hi", key=None, stream=False, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream, **extra}
    return httpx.post(f"{gw.dp_url}/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key or gw.key}"})


def served_by(gw, model, n, **kwargs):
    counts = collections.Counter()
    for _ in range(n):
        response = chat(gw, model, **kwargs)
        assert response.status_code == 200, response.text
        counts[response.headers["x-switchboard-model"]] += 1
    return counts


def test_strategies_distribute_traffic(gw):
    route(gw, "weighted", [{"model": "t-a", "weight": 3}, {"model": "t-b", "weight": 1}])
    assert served_by(gw, "weighted", 200) == {"t-a": 150, "t-b": 50}, "smooth weighted round robin is exact"
    route(gw, "rr", ["t-a", "t-b", "t-c"], strategy="round_robin")
    assert served_by(gw, "rr", 150) == {"t-a": 50, "t-b": 50, "t-c": 50}
    route(gw, "random", ["t-a", "t-b"], strategy="random")
    counts = served_by(gw, "random", 300)
    assert 110 <= counts["t-a"] <= 190, counts
    route(gw, "tiers", [{"model": "t-backup", "priority": 1}, {"model": "t-main", "priority": 0}], strategy="priority")
    assert served_by(gw, "tiers", 30) == {"t-main": 30}
    # The lower tier is used only when the first is unhealthy.
    httpx.put(gw.mock_url + "/_mock/outage", json={"model": "t-main", "failure": "500"})
    try:
        counts = served_by(gw, "tiers", 20)
        assert counts == {"t-backup": 20}, counts
    finally:
        httpx.request("DELETE", gw.mock_url + "/_mock/outage", json={"model": "t-main"})
    # Least latency: a target 300 ms slower loses the traffic once measured.
    route(gw, "fastest", ["sleep-300", "t-fast"], strategy="least_latency")
    counts = served_by(gw, "fastest", 20)
    assert counts["t-fast"] >= 18, counts


def test_least_busy_prefers_idle_targets(gw):
    import concurrent.futures

    route(gw, "busy", ["sleep-600-a", "sleep-600-b"], strategy="least_busy")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(5):
            first = pool.submit(chat, gw, "busy")
            time.sleep(0.15)
            second = pool.submit(chat, gw, "busy")
            pair = {first.result().headers["x-switchboard-model"], second.result().headers["x-switchboard-model"]}
            # While one target has a request in flight, the next goes to the idle one.
            assert pair == {"sleep-600-a", "sleep-600-b"}, pair


def test_retry_then_success_with_routing_headers(gw):
    route(gw, "flaky", ["fail-500", "t-ok"], strategy="round_robin", retry={"max_attempts": 2, "backoff_ms": 10})
    for _ in range(4):
        response = chat(gw, "flaky")
        assert response.status_code == 200, response.text
        assert response.headers["x-switchboard-model"] == "t-ok"
        assert response.headers["x-switchboard-provider"] == "mock"
        assert response.headers["x-switchboard-attempts"] in ("1", "2")
        assert len(response.headers["x-request-id"]) == 36


def test_a_request_that_failed_everywhere_lists_every_attempt(gw):
    route(gw, "doomed-backup", ["fail-500-b"], retry={"max_attempts": 1})
    route(gw, "doomed", ["fail-500"], fallbacks=["doomed-backup"], retry={"max_attempts": 1})
    response = chat(gw, "doomed")
    assert response.status_code == 502, response.text
    attempts = response.json()["error"]["attempts"]
    assert [(a["model"], a["status"], a["reason"]) for a in attempts] == \
        [("fail-500", 502, "upstream_error"), ("fail-500-b", 502, "upstream_error")]
    assert all(a["provider"] == "mock" and a["duration_ms"] >= 0 for a in attempts)
    assert len(response.headers["x-request-id"]) == 36


def test_usage_records_list_the_attempts_that_failed(gw, grpc_stubs):
    """What an operator reads after the fact: each request's record lists the
    tries that failed before it was served (or every try, when none was)."""
    route(gw, "served-second", ["t-second"])
    route(gw, "tried-first", ["fail-503"], fallbacks=["served-second"], retry={"max_attempts": 1})
    route(gw, "lost-backup", ["fail-500-b"], retry={"max_attempts": 1})
    route(gw, "lost", ["fail-500"], fallbacks=["lost-backup"], retry={"max_attempts": 1})
    assert chat(gw, "tried-first").status_code == 200
    lost = chat(gw, "lost")
    assert lost.status_code == 502
    records = lambda model: gw.admin("GET", "/usage/records", params={"model": model},  # noqa: E731
                                     expect=200).json()["records"]
    wait_until(lambda: records("tried-first") and records("lost"), what="the records")
    served, = records("tried-first")
    assert (served["status"], served["upstream_model"]) == (200, "t-second")
    assert [(a["model"], a["status"], a["reason"]) for a in served["failed_attempts"]] == \
        [("fail-503", 503, "overloaded")], served
    failed, = records("lost")
    assert failed["status"] == 502
    # From the id a client reports to its record.
    by_id = gw.admin("GET", "/usage/records", params={"request_id": lost.headers["x-request-id"]}, expect=200)
    assert [r["id"] for r in by_id.json()["records"]] == [failed["id"]]
    assert failed["request_id"] == lost.headers["x-request-id"]
    assert [a["model"] for a in failed["failed_attempts"]] == ["fail-500", "fail-500-b"]
    assert all(a["provider"] == "mock" and a["duration_ms"] >= 0 for a in failed["failed_attempts"])
    assert gw.usage(model="tried-first")["retried"] == 1
    assert "limit" in gw.admin("GET", "/usage/records", params={"limit": 0}).json()["error"]["message"]

    import grpc
    pb, pb_grpc = grpc_stubs
    stub = pb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}"))
    auth = [("authorization", f"Bearer {gw.admin_token}")]
    listed = stub.ListUsageRecords(pb.UsageQuery(model="lost", limit=5), metadata=auth).records
    assert [a.model for a in listed[0].failed_attempts] == ["fail-500", "fail-500-b"]
    assert stub.GetUsage(pb.UsageQuery(model="tried-first"), metadata=auth).retried == 1


def test_fallbacks_and_special_fallbacks(gw):
    route(gw, "backup-model", ["t-backup"])
    route(gw, "large-context", ["t-large"])
    route(gw, "lenient", ["t-lenient"])
    route(gw, "primary", ["fail-503"], fallbacks=["backup-model"], retry={"max_attempts": 1})
    response = chat(gw, "primary")
    assert response.status_code == 200 and response.headers["x-switchboard-model"] == "t-backup"
    assert response.headers["x-switchboard-attempts"] == "2"
    route(gw, "small", ["fail-context"], context_fallback="large-context")
    response = chat(gw, "small")
    assert response.status_code == 200 and response.headers["x-switchboard-model"] == "t-large"
    route(gw, "strict", ["fail-filter"], content_fallback="lenient")
    response = chat(gw, "strict")
    assert response.status_code == 200 and response.headers["x-switchboard-model"] == "t-lenient"
    # Without a fallback, a non-retryable error is answered at once, not retried.
    route(gw, "plain-small", ["fail-context"], retry={"max_attempts": 3})
    response = chat(gw, "plain-small")
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    # Fallback routes must exist; a route that others fall back to cannot be deleted.
    assert gw.admin("POST", "/routes", {"model": "dangling", "targets": [{"provider": "mock", "model": "x"}],
                                        "fallbacks": ["nope"]}).status_code == 400
    assert gw.admin("DELETE", "/routes/backup-model").status_code == 409


def test_429_retry_after_is_honoured_and_passed_on(gw):
    route(gw, "limited", ["fail-429"], retry={"max_attempts": 2, "backoff_ms": 10}, timeouts={"total_ms": 2000})
    started = time.monotonic()
    response = chat(gw, "limited")
    # retry-after (7 s) is past the deadline: no wait, the provider's answer and delay are passed on.
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert time.monotonic() - started < 1.5
    # The target is set aside for its retry-after: the next request is refused at once.
    response = chat(gw, "limited")
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_healthy_target"
    assert 1 <= int(response.headers["retry-after"]) <= 8


def test_a_retry_after_sets_the_target_aside_for_exactly_that_long(gw):
    # One target; its provider answers one 429 that asks for `after` seconds.
    route(gw, "aside", ["t-aside"], retry={"max_attempts": 1})
    outage = {"model": "t-aside"}
    for after in (1, 2):
        httpx.put(gw.mock_url + "/_mock/outage", json={**outage, "failure": f"429-{after}"})
        try:
            response = chat(gw, "aside")
            assert response.status_code == 429 and response.headers["retry-after"] == str(after)
        finally:
            httpx.request("DELETE", gw.mock_url + "/_mock/outage", json=outage)
        set_aside = time.monotonic()
        response = chat(gw, "aside")
        assert response.status_code == 503 and response.json()["error"]["code"] == "no_healthy_target"
        assert 1 <= int(response.headers["retry-after"]) <= after
        if after == 2:
            # Past the breaker's cooldown (600 ms here), before the provider's time: still aside.
            time.sleep(max(0.0, set_aside + 0.9 - time.monotonic()))
            assert chat(gw, "aside").status_code == 503
        time.sleep(max(0.0, set_aside + after + 0.15 - time.monotonic()))
        response = chat(gw, "aside")
        assert response.status_code == 200, response.text


def test_no_retry_after_the_first_byte(gw):
    route(gw, "cut", ["fail-midstream", "t-whole"], strategy="round_robin", retry={"max_attempts": 3})
    client = gw.openai(gw.key)
    cut = 0
    for _ in range(2):
        try:
            text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model="cut", messages=[{"role": "user", "content": "x"}], stream=True) if c.choices)
            assert text == "Echo: x"
        except openai.APIError:
            cut += 1  # partial content, then the error event: not retried elsewhere
    assert cut == 1
    wait_until(lambda: gw.usage(model="cut")["requests"] == 2, what="usage of both streams")
    rows = gw.admin("GET", "/usage", params={"model": "cut", "group_by": "model"}, expect=200).json()["rows"]
    assert rows[0]["errors"] == 1


def test_circuit_opens_skips_half_opens_and_closes(gw):
    route(gw, "breaker", ["t-flaky", "t-steady"], strategy="round_robin", retry={"max_attempts": 2, "backoff_ms": 1})
    outage = {"model": "t-flaky", "failure": "500"}
    httpx.put(gw.mock_url + "/_mock/outage", json=outage)
    try:
        before = gw.mock_stats()["requests"]
        served = served_by(gw, "breaker", 12)
        assert served == {"t-steady": 12}, "every request still answered"
        tried = gw.mock_stats()["requests"] - before - 12
        assert tried == 3, f"the failing target was tried 3 times, then skipped: {tried}"
        before += 3
        time.sleep(0.7)  # the cooldown ends: one probe, which fails, and the cooldown doubles
        served_by(gw, "breaker", 4)
        assert gw.mock_stats()["requests"] - before - 16 == 1, "one probe, then skipped again"
    finally:
        httpx.request("DELETE", gw.mock_url + "/_mock/outage", json=outage)
    time.sleep(1.3)
    counts = served_by(gw, "breaker", 10)
    assert counts["t-flaky"] >= 4, f"closed again after a good probe: {counts}"


def test_timeouts_fire_on_time(gw):
    def elapsed(call):
        started = time.monotonic()
        response = call()
        return response, time.monotonic() - started

    route(gw, "slow-first", ["slowfirst-3000"], timeouts={"first_token_ms": 500}, retry={"max_attempts": 1})
    response, took = elapsed(lambda: chat(gw, "slow-first", stream=True))
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert 0.45 <= took <= 0.6, took
    route(gw, "slow-total", ["sleep-3000"], timeouts={"total_ms": 700}, retry={"max_attempts": 1})
    response, took = elapsed(lambda: chat(gw, "slow-total"))
    assert response.status_code == 504 and 0.63 <= took <= 0.8, took
    gw.admin("POST", "/routes", {"model": "idle", "targets": [{"provider": "paced", "model": "t"}],
                                 "timeouts": {"idle_ms": 300}}, expect=201)
    gw.wait_synced()
    with httpx.stream("POST", f"{gw.dp_url}/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {gw.key}"},
                      json={"model": "idle", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}) as s:
        assert s.status_code == 200
        started, events = None, []
        for line in s.iter_lines():
            if line.startswith("data:"):
                started = started or time.monotonic()
                events.append(line)
        took = time.monotonic() - started
    # The first event came after the 1 s gap; the next gap was cut at 300 ms.
    assert "upstream_timeout" in events[-1] and 0.27 <= took <= 0.4, (took, events)


def test_keepalives_while_the_first_token_is_slow(gw):
    route(gw, "thinking", ["slowfirst-3500"], timeouts={"first_token_ms": 6000})
    arrivals = []
    started = time.monotonic()
    with httpx.stream("POST", f"{gw.dp_url}/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {gw.key}"},
                      json={"model": "thinking", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as s:
        assert s.status_code == 200
        for line in s.iter_lines():
            if line:
                arrivals.append((round(time.monotonic() - started, 1), line[:20]))
    comments = [t for t, line in arrivals if line.startswith(":")]
    assert len(comments) >= 2 and comments[0] <= KEEPALIVE_MS / 1000 + 0.3, arrivals
    assert arrivals[-1][1] == "data: [DONE]" and arrivals[-1][0] >= 3.5, arrivals
    # The SDK ignores the comments.
    text = "".join(c.choices[0].delta.content or "" for c in gw.openai(gw.key).chat.completions.create(
        model="thinking", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
    assert text == "Echo: hi"


def test_sticky_ab_split_recorded_per_variant(gw):
    route(gw, "ab-b", ["t-b"])
    route(gw, "ab", ["t-a"], split=[{"model": "ab-b", "weight": 30}])
    keys = [gw.admin("POST", "/keys", {"name": f"ab-{i}"}, expect=201).json()["key"] for i in range(40)]
    gw.wait_synced()
    first = {}
    for key in keys:
        first[key] = chat(gw, "ab", key=key).headers["x-switchboard-model"]
    for key in keys[:15]:
        assert chat(gw, "ab", key=key).headers["x-switchboard-model"] == first[key], "one caller, one variant"
    to_b = sum(1 for m in first.values() if m == "t-b")
    assert 4 <= to_b <= 22, to_b
    wait_until(lambda: sum(r["requests"] for r in gw.admin("GET", "/usage", params={"model": "ab", "group_by": "variant"},
                                                            expect=200).json()["rows"]) == 55, what="variant usage")
    rows = {r["variant"]: r["requests"] for r in gw.admin(
        "GET", "/usage", params={"model": "ab", "group_by": "variant"}, expect=200).json()["rows"]}
    assert set(rows) == {"ab", "ab-b"} and rows["ab-b"] == sum(1 for k in keys[:15] if first[k] == "t-b") + to_b


def test_route_object_round_trips(gw):
    route(gw, "full-b", ["t-b"])
    body = {"model": "full", "aliases": ["full-alias"], "strategy": "priority",
            "targets": [{"provider": "mock", "model": "t-a", "weight": 2, "priority": 0, "rpm": 100, "tpm": 5000}],
            "fallbacks": ["full-b"], "retry": {"max_attempts": 3, "backoff_ms": 200},
            "timeouts": {"connect_ms": 1000, "first_token_ms": 2000, "idle_ms": 3000, "total_ms": 4000},
            "split": [{"model": "full-b", "weight": 10}]}
    created = gw.admin("POST", "/routes", body, expect=201).json()
    assert created == body
    gw.wait_synced()
    assert chat(gw, "full-alias").status_code == 200
    for bad, field in [({"strategy": "fastest"}, "strategy"), ({"retry": {"max_attempts": 0}}, "retry.max_attempts"),
                       ({"aliases": ["weighted"]}, "aliases"), ({"strategy": "cost"}, "strategy")]:
        response = gw.admin("POST", "/routes", {**body, "model": "bad", "aliases": [], **bad})
        assert response.status_code in (400, 409) and field in response.json()["error"]["message"], response.text


def test_active_health_checks_eject_before_clients_notice(gw, tmp_path):
    checked = Process("mock-provider", ["--kind", "openai_compatible"], tmp_path).start()
    gw.processes.append(checked)
    url = "http://" + checked.proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
    gw.admin("POST", "/providers", {"name": "checked", "kind": "openai_compatible", "base_url": url + "/v1",
                                    "api_key": "sk-mock-upstream",
                                    "settings": {"health_check_interval_ms": "100", "health_check_timeout_ms": "500"}},
             expect=201)
    gw.admin("POST", "/routes", {"model": "watched", "strategy": "round_robin",
                                 "targets": [{"provider": "checked", "model": "t-checked"}, {"provider": "mock", "model": "t-spare"}]},
             expect=201)
    gw.wait_synced()
    assert served_by(gw, "watched", 4) == {"t-checked": 2, "t-spare": 2}
    outage = {"model": "*", "failure": "500"}
    httpx.put(url + "/_mock/outage", json=outage)
    try:
        time.sleep(0.6)  # three failed probes eject it
        before = httpx.get(url + "/_mock/stats").json()["requests"]
        assert served_by(gw, "watched", 6) == {"t-spare": 6}
        assert httpx.get(url + "/_mock/stats").json()["requests"] == before, "no client request reached it"
    finally:
        httpx.request("DELETE", url + "/_mock/outage", json=outage)
    # The cooldown ends and a probe succeeds: traffic returns.
    wait_until(lambda: served_by(gw, "watched", 2).get("t-checked", 0) >= 1, timeout=5, what="target back")
    # Kinds without a cheap probe refuse the setting.
    response = gw.admin("POST", "/providers", {"name": "hy", "kind": "hunyuan", "base_url": "https://h.example",
                                               "secret_key": "s", "settings": {"api": "native", "secret_id": "AKID",
                                                                               "health_check_interval_ms": "1000"}})
    assert response.status_code == 400 and "health_check_interval_ms" in response.json()["error"]["message"]
