"""Quotas and cost control (docs/quotas.md), driven as users meet them: the
official openai SDK against the data plane, the admin API over REST and
gRPC, real processes, a real database, and a Redis server of the test's own
for limits shared by several data planes."""

import concurrent.futures
import json
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone

import httpx
import openai
import pytest

from conftest import MOCK_KEY, Gateway, Process, free_port, json_server, seconds_until_counted, wait_until
from test_jwt import AUDIENCE, idp  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(240)


def put_price(gw, model, input_price, output_price, expect=200, **extra):
    return gw.admin("PUT", f"/prices/{model}", {"input_per_million": input_price,
                                                "output_per_million": output_price, **extra}, expect=expect)


def route(gw, model, upstream, **extra):
    gw.admin("POST", "/routes", {"model": model, "targets": [{"provider": "mock", "model": upstream}], **extra},
             expect=201)


def new_key(gw, **body):
    return gw.admin("POST", "/keys", {"name": "k", **body}, expect=201).json()


def chat(gw, key, model, text="a b c", url=None, **extra):
    return httpx.post(f"{url or gw.dp_url}/v1/chat/completions", timeout=20,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": text}], **extra})


def error_of(response):
    return response.json()["error"]


def test_prices_and_the_cost_of_every_request(gateway, grpc_stubs):
    pb, pb_grpc = grpc_stubs
    gateway.setup_basic()
    prices = gateway.admin("GET", "/prices", expect=200).json()
    # The bundled defaults are loaded: a model of each family, CNY for the Chinese providers.
    by_model = {p["model"]: p for p in prices}
    assert by_model["gpt-4o-mini"]["input_per_million"] == "0.15"
    assert by_model["qwen-plus"]["currency"] == "CNY"

    # 3 words in ("a b c"), 4 out ("Echo: a b c") at $0.15 / $0.60 per million:
    # 2.85 micro-dollars, counted as 3 (rounded up, per request).
    put_price(gateway, "up-exact", "0.15", "0.60")
    route(gateway, "exact", "up-exact")
    for bad, field in (({"input_per_million": "0.0000001", "output_per_million": "1"}, "input_per_million"),
                       ({"input_per_million": 1.5, "output_per_million": "1"}, "decimal string"),
                       ({"input_per_million": "1", "output_per_million": "1", "currency": "EUR"}, "currency"),
                       ({"input_per_million": "-1", "output_per_million": "1"}, "negative")):
        refusal = gateway.admin("PUT", "/prices/up-exact", bad)
        assert refusal.status_code in (400, 422) and field in refusal.text, refusal.text
    key = new_key(gateway)
    gateway.wait_synced()
    client = gateway.openai(key["key"])
    for _ in range(7):
        answer = client.chat.completions.create(model="exact", messages=[{"role": "user", "content": "a b c"}])
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 4)
    # One provider's model priced apart: 3 x 1 + 4 x 2 = 11 micro-dollars a request.
    put_price(gateway, "up-exact", "1", "2", provider="mock")
    gateway.wait_synced()
    for _ in range(3):
        client.chat.completions.create(model="exact", messages=[{"role": "user", "content": "a b c"}])
    wait_until(lambda: gateway.usage(key_id=key["id"])["requests"] == 10, what="usage recorded")
    totals = gateway.usage(key_id=key["id"])
    assert totals["costs"] == {"USD": "0.000054"}  # 7 x 3 + 3 x 11, exactly
    assert 0 <= totals["latency_ms_p50"] <= totals["latency_ms_p99"]

    rows = gateway.usage(group_by="key,model", key_id=key["id"])["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["key_id"], row["model"], row["requests"], row["cost"], row["currency"]) == \
        (key["id"], "exact", 10, "0.000054", "USD")
    assert row["latency_ms_p99"] >= row["latency_ms_p50"] >= 0

    # The cost strategy sends traffic to the cheapest target: each of these costs 3 x 1 + 4 x 1.
    put_price(gateway, "up-dear", "10", "10")
    put_price(gateway, "up-cheap", "1", "1")
    cheapest = {"model": "cheapest", "strategy": "cost", "targets": [
        {"provider": "mock", "model": "up-dear"}, {"provider": "mock", "model": "up-unpriced"}]}
    assert "up-unpriced" in gateway.admin("POST", "/routes", cheapest, expect=400).text
    cheapest["targets"][1]["model"] = "up-cheap"
    gateway.admin("POST", "/routes", cheapest, expect=201)
    gateway.wait_synced()
    for _ in range(4):
        client.chat.completions.create(model="cheapest", messages=[{"role": "user", "content": "a b c"}])
    wait_until(lambda: gateway.usage(model="cheapest")["requests"] == 4, what="usage recorded")
    assert gateway.usage(model="cheapest")["costs"] == {"USD": "0.000028"}

    # The same over gRPC: prices, and usage with cost and latency.
    import grpc
    stub = pb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}"))
    auth = [("authorization", f"Bearer {gateway.admin_token}")]
    put = stub.PutPrice(pb.PriceSpec(model="up-grpc", input_per_million="0.5", output_per_million="1.25",
                                     currency="CNY"), metadata=auth)
    assert (put.model, put.cached_input_per_million, put.currency) == ("up-grpc", "0.50", "CNY")
    listed = {(p.model, p.provider) for p in stub.ListPrices(pb.ListPricesRequest(), metadata=auth).prices}
    assert {("up-grpc", ""), ("up-exact", ""), ("up-exact", "mock")} <= listed
    with pytest.raises(grpc.RpcError) as refused:
        stub.PutPrice(pb.PriceSpec(model="up-grpc", input_per_million="x", output_per_million="1"), metadata=auth)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input_per_million" in refused.value.details()
    usage = stub.GetUsage(pb.UsageQuery(key_id=key["id"], group_by="model"), metadata=auth)
    assert [(r.group["model"], r.totals.cost, r.totals.currency) for r in usage.rows] == \
        [("cheapest", "0.000028", "USD"), ("exact", "0.000054", "USD")]
    assert stub.GetUsage(pb.UsageQuery(key_id=key["id"]), metadata=auth).costs == {"USD": "0.000082"}
    # Limits and budgets over gRPC, at creation and on update.
    from switchboard.v1 import limits_pb2 as lpb
    created = stub.CreateKey(pb.CreateKeyRequest(name="g", models=["exact"], limits=lpb.Limits(rpm=5, max_tokens=900),
                                                 budget=lpb.Budget(amount="2.5", period="weekly")), metadata=auth).key
    assert (created.limits.rpm, created.limits.max_tokens, created.budget.amount, created.budget.currency,
            created.budget.alert_threshold, created.spend.remaining) == (5, 900, "2.50", "USD", 0.8, "2.50")
    updated = stub.UpdateKey(pb.UpdateLimitsRequest(id=created.id, limits=lpb.Limits(tpd=1000), clear_budget=True),
                             metadata=auth)
    assert (updated.limits.rpm, updated.limits.tpd, updated.HasField("budget")) == (0, 1000, False)
    with pytest.raises(grpc.RpcError) as refused:
        stub.UpdateKey(pb.UpdateLimitsRequest(id=created.id, budget=lpb.Budget(amount="1", period="yearly")),
                       metadata=auth)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "budget.period" in refused.value.details()


def test_rate_limits_answer_429_as_openai_does(gateway, idp):
    gateway.setup_basic()
    route(gateway, "gpt-two", "gpt-4o-mini")
    route(gateway, "capped", "gpt-4o-mini", limits={"rpm": 2})
    team = gateway.admin("POST", "/teams", {"name": "small", "limits": {"rpm": 2}}, expect=201).json()
    # Nobody gives a key more than its team has; zero is not "unlimited".
    refusal = gateway.admin("POST", "/keys", {"name": "k", "team_id": team["id"], "limits": {"rpm": 20}}, expect=400)
    assert "limits.rpm: the team allows at most 2" in refusal.text
    assert "limits.tpm" in gateway.admin("POST", "/keys", {"name": "k", "limits": {"tpm": 0}}, expect=400).text

    by_key = new_key(gateway, limits={"rpm": 3})
    by_tokens = new_key(gateway, limits={"tpm": 50})
    per_model = new_key(gateway, limits={"models": {"gpt-test": {"rpm": 1}}})
    team_keys = [new_key(gateway, team_id=team["id"]) for _ in range(2)]
    quota = new_key(gateway, limits={"max_requests": 2})
    user = gateway.admin("POST", "/users", {"name": "Alice", "external_id": "alice@idp", "limits": {"rpm": 1}},
                         expect=201).json()
    gateway.admin("POST", "/jwt-issuers", {"name": "idp", "issuer": idp.iss, "audiences": [AUDIENCE],
                                           "algorithms": ["RS256"], "public_keys_pem": [idp.public_pem("rsa-1")]},
                  expect=201)
    gateway.wait_synced()

    # A key's requests per minute, with OpenAI's headers on every answer.
    client = gateway.openai(by_key["key"])
    for remaining in (2, 1, 0):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    error = limited.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert f"key {by_key['id']}" in error.message and "requests per minute" in error.message
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"

    # Tokens per minute reserve the prompt estimate plus max_tokens, settled to the real count after.
    ok = chat(gateway, by_tokens["key"], "gpt-test", max_tokens=40)
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-tokens"] == "50"
    refused = chat(gateway, by_tokens["key"], "gpt-test", max_tokens=40)
    assert refused.status_code == 429 and error_of(refused)["type"] == "tokens", refused.text
    too_big = chat(gateway, by_tokens["key"], "gpt-test", max_tokens=500)
    assert too_big.status_code == 429 and "more than its limit of 50" in error_of(too_big)["message"]

    # A key's limit on one model leaves the others alone.
    assert chat(gateway, per_model["key"], "gpt-test").status_code == 200
    assert "on model gpt-test" in error_of(chat(gateway, per_model["key"], "gpt-test"))["message"]
    assert chat(gateway, per_model["key"], "gpt-two").status_code == 200

    # A team's limit holds over all its keys; a model's over every caller.
    assert [chat(gateway, k["key"], "gpt-test").status_code for k in team_keys] == [200, 200]
    refused = chat(gateway, team_keys[0]["key"], "gpt-test")
    assert refused.status_code == 429 and f"team {team['id']}" in error_of(refused)["message"]
    assert [chat(gateway, k["key"], "capped").status_code for k in (per_model, quota)] == [200, 200]
    assert "model capped" in error_of(chat(gateway, by_tokens["key"], "capped"))["message"]

    # A JWT caller meets its user's limits as a key would.
    token = idp.token(sub="alice@idp")
    assert chat(gateway, token, "gpt-test").status_code == 200
    refused = chat(gateway, token, "gpt-test")
    assert refused.status_code == 429 and f"user {user['id']}" in error_of(refused)["message"]

    # A quota ends at zero: 429 insufficient_quota, as OpenAI answers a spent balance.
    assert chat(gateway, quota["key"], "gpt-test").status_code == 200  # 2 of 2 with "capped" above
    refused = chat(gateway, quota["key"], "gpt-test")
    assert refused.status_code == 429 and error_of(refused)["code"] == "insufficient_quota"
    assert "request quota" in error_of(refused)["message"]
    # The control plane counts it from usage records, shows it, and ships it in
    # snapshots: a restarted data plane (counters empty) still refuses the key.
    wait_until(lambda: gateway.admin("GET", f"/keys/{quota['id']}").json()["spend"]["exhausted"],
               what="quota counted")
    spend = gateway.admin("GET", f"/keys/{quota['id']}", expect=200).json()["spend"]
    assert (spend["requests"], spend["exhausted"]) == (2, True)
    gateway.wait_synced()
    # The count reaches the data plane within a revision poll (200 ms) and its
    # disk copy with the next save (at most every 500 ms). The restarted data
    # plane serves from that copy until its stream delivers counters, so the
    # copy must hold the count before the kill.
    time.sleep(1.5)
    gateway.dp.kill()
    gateway.start_data_plane()
    assert error_of(chat(gateway, quota["key"], "gpt-test"))["code"] == "insufficient_quota"
    # Raising the quota lets it call again.
    gateway.admin("PATCH", f"/keys/{quota['id']}", {"limits": {"max_requests": 3}}, expect=200)
    gateway.wait_synced()
    assert chat(gateway, quota["key"], "gpt-test").status_code == 200


class Webhook:
    """Receives budget alerts on loopback."""

    def __init__(self):
        self.alerts = []
        self.server, url = json_server(lambda _method, alert: (204, self.alerts.append(alert)))
        self.url = url + "/alerts"

    def of(self, holder):
        return [a for a in self.alerts if a["holder"] == holder]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def test_a_spend_count_reaches_the_data_plane_at_once_not_at_the_poll(gateway):
    """The leader's count wakes the counter feed that streams it to data planes; the poll, the
    fallback, is set too slow here for this to pass on it."""
    gateway.cp.stop()
    gateway.cp = gateway.start_control_plane(extra=("--config-poll-ms", "30000"))
    gateway.setup_basic()
    key = new_key(gateway, budget={"amount": "1000", "currency": "USD", "period": "monthly"})["key"]
    gateway.wait_synced()
    took = seconds_until_counted([gateway.dp_url], lambda: chat(gateway, key, "gpt-test").raise_for_status())
    assert took < 3, took


def test_budgets_are_ceilings_under_concurrency_and_alert_once(gateway, webhook):
    gateway.cp.stop()
    gateway.cp = gateway.start_control_plane(extra=("--spend-interval-ms", "200",
                                                    "--budget-alert-webhook", webhook.url))
    gateway.setup_basic()
    # A dollar per answer token: "a b sleep-300" is answered "Echo: a b sleep-300", 4 tokens, $4.
    put_price(gateway, "up-budget", "0", "1000000")
    route(gateway, "budget", "up-budget")
    route(gateway, "unpriced", "up-nowhere")

    # A budget needs prices on every route its holder can reach.
    refusal = gateway.admin("POST", "/keys", {"name": "k", "models": ["unpriced"],
                                              "budget": {"amount": "10"}}, expect=400)
    assert 'route "unpriced" target mock/up-nowhere has no price' in error_of(refusal)["message"]
    assert "unpriced" in gateway.admin("POST", "/keys", {"name": "k", "budget": {"amount": "10"}}, expect=400).text
    budget = {"amount": "10", "period": "daily", "alert_threshold": 0.5}
    exact = new_key(gateway, models=["budget"], budget=budget)
    loose = new_key(gateway, models=["budget"], budget=budget)
    small = new_key(gateway, models=["budget"], budget={"amount": "4.00"})
    assert exact["budget"] == {**budget, "amount": "10.00", "currency": "USD"}
    assert exact["spend"]["remaining"] == "10.00"
    # ...and keeps them: no repricing in another currency, no unpriced target added.
    assert "USD" in put_price(gateway, "up-budget", "0", "7", currency="CNY", expect=400).text
    assert "up-nowhere" in gateway.admin("PUT", "/routes/budget", {"targets": [
        {"provider": "mock", "model": "up-budget"}, {"provider": "mock", "model": "up-nowhere"}]}, expect=400).text
    assert "budget.amount" in gateway.admin("POST", "/keys", {"name": "k", "budget": {"amount": "0"}}).text
    gateway.wait_synced()

    def burst(key, max_tokens):
        def one(_):
            return chat(gateway, key, "budget", text="a b sleep-300", max_tokens=max_tokens)
        with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
            return list(pool.map(one, range(100)))

    # Reservations exact ($4 for max_tokens 4): a $10 budget admits exactly 2 of 100.
    answers = burst(exact["key"], 4)
    assert sum(r.status_code == 200 for r in answers) == 2
    refused = [r for r in answers if r.status_code != 200]
    assert all(r.status_code == 429 and error_of(r)["code"] == "insufficient_quota" for r in refused), \
        {(r.status_code, r.text[:300]) for r in refused}
    message = error_of(refused[0])["message"]
    assert f"exceeds what remains of the budget of key {exact['id']} (2.00 USD of 10.00 USD)" in message, message
    # Reserving more than is used ($5 for $4): never more than one request over.
    assert sum(r.status_code == 200 for r in burst(loose["key"], 5)) <= 3

    wait_until(lambda: gateway.usage(key_id=exact["id"]).get("costs") == {"USD": "8.00"}, what="cost recorded")
    assert float(gateway.usage(key_id=loose["id"])["costs"]["USD"]) <= 10 + 4
    wait_until(lambda: gateway.admin("GET", f"/keys/{exact['id']}").json()["spend"]["spent"] == "8.00",
               what="spend counted")
    spend = gateway.admin("GET", f"/keys/{exact['id']}", expect=200).json()["spend"]
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    assert (spend["remaining"], spend["currency"], spend["exhausted"]) == ("2.00", "USD", False)
    assert spend["period_start"] == today.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert spend["resets_at"] == (today + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    # One request exhausts the small budget: the next is refused, and the
    # control plane alerts: once per period and kind, however often it counts.
    assert chat(gateway, small["key"], "budget", text="a b c", max_tokens=4).status_code == 200
    assert error_of(chat(gateway, small["key"], "budget", max_tokens=4))["code"] == "insufficient_quota"
    wait_until(lambda: {a["type"] for a in webhook.of(f"key/{small['id']}")} == {"budget.threshold",
                                                                                  "budget.exhausted"},
               what="alerts for the small budget")
    wait_until(lambda: len(webhook.of(f"key/{exact['id']}")) == 1, what="threshold alert")
    time.sleep(1.0)  # five more counts
    alert = webhook.of(f"key/{exact['id']}")
    assert len(alert) == 1 and len(webhook.of(f"key/{small['id']}")) == 2
    assert {k: alert[0][k] for k in ("type", "spent", "amount", "currency", "period")} == \
        {"type": "budget.threshold", "spent": "8.00", "amount": "10.00", "currency": "USD", "period": "daily"}
    audit = gateway.admin("GET", "/audit", params={"resource": f"key/{exact['id']}"}, expect=200).json()["rows"]
    recorded = [row for row in audit if row["action"] == "budget.threshold"]
    assert len(recorded) == 1 and recorded[0]["actor"] == "system" and recorded[0]["after"]["webhook"] == "delivered"

    # A larger budget (PATCH) lets the key spend again.
    gateway.admin("PATCH", f"/keys/{small['id']}", {"budget": {"amount": "8"}}, expect=200)
    gateway.wait_synced()
    assert chat(gateway, small["key"], "budget", max_tokens=4).status_code == 200
    assert gateway.admin("PATCH", f"/keys/{small['id']}", {"budget": None}, expect=200).json()["budget"] is None


def test_missing_usage_is_estimated_by_tokenizer(gateway, tmp_path):
    gemini = Process("mock-provider", ["--kind", "gemini"], tmp_path).start()
    gateway.processes.append(gemini)
    gemini_url = "http://" + gemini.proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
    gateway.setup_basic()
    gateway.admin("POST", "/providers", {"name": "gemini", "kind": "gemini", "base_url": gemini_url + "/v1beta",
                                         "api_key": MOCK_KEY}, expect=201)
    gateway.admin("POST", "/routes", {"model": "embed", "targets": [{"provider": "gemini", "model": "up-embed"}]},
                  expect=201)
    route(gateway, "cut", "fail-midstream")
    key = new_key(gateway)
    gateway.wait_synced()
    client = gateway.openai(key["key"])
    # Gemini reports no usage for embeddings: the input is counted.
    embedded = client.embeddings.create(model="embed", input=["the quick brown fox", "jumps"])
    assert embedded.usage.prompt_tokens >= 5
    # A stream cut before its usage chunk: what was sent is counted.
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="cut", messages=[{"role": "user", "content": "one two three"}],
                                                stream=True):
            pass
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "a b"}])
    wait_until(lambda: gateway.usage(key_id=key["id"])["requests"] == 3, what="usage recorded")
    estimated = gateway.usage(key_id=key["id"], estimated="true", group_by="model")["rows"]
    assert {r["model"] for r in estimated} == {"embed", "cut"}
    assert all(r["prompt_tokens"] > 0 and r["estimated"] == r["requests"] for r in estimated)
    reported = gateway.usage(key_id=key["id"], estimated="false")
    assert (reported["requests"], reported["prompt_tokens"], reported["estimated"]) == (1, 2, 0)


def oha(url, key, requests):
    """Sends `requests` as fast as oha can; answers the count per status."""
    body = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    out = subprocess.run(["oha", "-n", str(requests), "-c", "25", "--no-tui", "--output-format", "json",
                          "-m", "POST", "-H", f"authorization: Bearer {key}", "-T", "application/json",
                          "-d", body, url + "/v1/chat/completions"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return {int(k): v for k, v in json.loads(out)["statusCodeDistribution"].items()}


def test_limits_hold_across_data_planes_sharing_redis(tmp_path, redis):
    assert shutil.which("oha"), "oha is installed by `make test-deps`"
    gw = Gateway(tmp_path, f"sqlite://{tmp_path}/control-plane.db")
    try:
        gw.dp = gw.start_data_plane(extra=("--redis-url", redis.url))
        gw.setup_basic()
        shared = new_key(gw, limits={"rpm": 100})["key"]
        rates_only = new_key(gw, limits={"rpm": 50})["key"]
        quota = new_key(gw, limits={"max_requests": 100})["key"]
        gw.wait_synced()
        others = []
        for i, closed in enumerate((False, True)):
            port = free_port()
            extra = ("--rate-limits-on-redis-error", "closed") if closed else ()
            dp = Process("data-plane", ["--listen", f"127.0.0.1:{port}", "--control-plane",
                                        f"http://127.0.0.1:{gw.grpc_port}", "--cluster-token", gw.cluster_token,
                                        "--state-dir", tmp_path / f"dp{i}", "--usage-flush-ms", "100",
                                        "--redis-url", redis.url, *extra], tmp_path).start()
            gw.processes.append(dp)
            others.append(f"http://127.0.0.1:{port}")
        version = gw.current_version()
        for url in others:
            wait_until(lambda: httpx.get(url + "/readyz").text.endswith(f"{version})"), what="data plane synced")
        urls = [gw.dp_url, *others]

        # 1,000 requests at once over three data planes: the key's 100 per minute hold for all of them.
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            started = time.monotonic()
            counts = list(pool.map(lambda pair: oha(pair[0], shared, pair[1]), zip(urls, (334, 333, 333))))
            elapsed = time.monotonic() - started
        admitted = sum(c.get(200, 0) for c in counts)
        refused = sum(c.get(429, 0) for c in counts)
        print(f"shared limit: {counts} in {elapsed:.2f} s")
        assert 100 <= admitted <= 102, (counts, elapsed)
        assert admitted + refused == 1000, counts
        assert all(c.get(200, 0) > 0 for c in counts), "every data plane admitted some"

        # Redis gone: rate limits fail open (counted in process) unless set closed;
        # quotas and budgets fail closed by default.
        redis.stop()
        assert chat(gw, rates_only, "gpt-test").status_code == 200
        closed = chat(gw, rates_only, "gpt-test", url=others[1])
        assert closed.status_code == 503 and error_of(closed)["code"] == "limits_unavailable"
        refused = chat(gw, quota, "gpt-test")
        assert refused.status_code == 503 and error_of(refused)["code"] == "limits_unavailable"
        metrics = httpx.get(gw.dp_url + "/metrics").text
        assert 'switchboard_limits_redis_errors_total{mode="open"}' in metrics
        assert 'switchboard_limits_redis_errors_total{mode="closed"}' in metrics
    finally:
        gw.close()


def test_settlements_in_redis_are_sent_together_and_exact(tmp_path, redis):
    """Each request reserves its worst case in Redis and settles to what it used. Requests served
    together settle in one script call, and the counter still ends at exactly what they all used.
    Each serving thread talks to Redis on a connection of its own."""
    gw = Gateway(tmp_path, f"sqlite://{tmp_path}/control-plane.db")
    try:
        gw.dp = gw.start_data_plane(extra=("--redis-url", redis.url, "--workers", "2"))
        gw.setup_basic()
        key = new_key(gw, limits={"max_tokens": 100_000_000})
        gw.wait_synced()
        counter = f"switchboard:quota:key:{key['id']}:max_tokens"
        first = chat(gw, key["key"], "gpt-test", text="hi")
        assert first.status_code == 200, first.text
        per_request = first.json()["usage"]["total_tokens"]
        # Settled: from the worst case (4,096 answer tokens reserved) down to what it used.
        wait_until(lambda: redis.command("GET", counter) == str(per_request), what="first request settled")

        scripts_before = redis.script_calls()
        assert oha(gw.dp_url, key["key"], 1000) == {200: 1000}
        wait_until(lambda: redis.command("GET", counter) == str(1001 * per_request), timeout=10,
                   what=f"1,000 requests settled to {1000 * per_request} more tokens")
        scripts = redis.script_calls() - scripts_before
        # 1,000 admissions; a settlement call per request would make 2,000.
        print(f"script calls for 1,000 requests: {scripts}")
        assert 1000 < scripts < 1500, scripts
        # The background thread's, and one per serving thread (this test's own is not counted).
        clients = int(redis.command("INFO", "clients").split("connected_clients:")[1].split()[0]) - 1
        assert clients >= 3, clients

        # A Redis that lost its scripts (restarted, flushed) is given them again.
        assert redis.command("SCRIPT", "FLUSH") == "OK"
        again = chat(gw, key["key"], "gpt-test", text="hi")
        assert again.status_code == 200, again.text
        wait_until(lambda: redis.command("GET", counter) == str(1002 * per_request), what="settled after the flush")
    finally:
        gw.close()


def test_a_budget_spent_through_one_data_plane_holds_on_another_within_a_second(tmp_path):
    """No Redis: each data plane counts what it serves, and learns what the
    others served from the control plane's counters (never from config: the
    version does not move)."""
    gw = Gateway(tmp_path, f"sqlite://{tmp_path}/control-plane.db")
    try:
        gw.setup_basic()
        # 1 dollar per thousand tokens: a request (1 prompt and 2 answer tokens) costs 0.003.
        put_price(gw, "gpt-4o-mini", "1000", "1000")
        key = new_key(gw, budget={"amount": "0.03", "period": "daily"})["key"]
        port = free_port()
        other = Process("data-plane", ["--listen", f"127.0.0.1:{port}", "--control-plane",
                                       f"http://127.0.0.1:{gw.grpc_port}", "--cluster-token", gw.cluster_token,
                                       "--state-dir", tmp_path / "other", "--usage-flush-ms", "100"],
                        tmp_path).start()
        gw.processes.append(other)
        other_url = f"http://127.0.0.1:{port}"
        gw.wait_synced()
        wait_until(lambda: httpx.get(other_url + "/readyz").text.endswith(f"{gw.current_version()})"),
                   what="second data plane synced")
        version = gw.current_version()

        served = 0
        while True:
            answer = chat(gw, key, "gpt-test", "a", max_tokens=2)
            if answer.status_code == 429:
                exhausted_at = time.monotonic()
                assert error_of(answer)["code"] == "insufficient_quota"
                break
            assert answer.status_code == 200, answer.text
            served += 1
            assert served < 20, "the budget never ran out"

        def refused_there():
            return chat(gw, key, "gpt-test", "a", url=other_url, max_tokens=2).status_code == 429

        wait_until(refused_there, timeout=5, interval=0.02, what="the other data plane refuses the spent budget")
        took = time.monotonic() - exhausted_at
        print(f"budget spent through one data plane after {served} requests; refused by the other {took * 1000:.0f} ms later")
        assert took < 1.0
        assert gw.current_version() == version, "counters never move the config version"
    finally:
        gw.close()


def test_cluster_settings_live_in_the_database_and_reach_data_planes(gateway, grpc_stubs):
    pb, pb_grpc = grpc_stubs
    key = gateway.setup_basic()
    assert gateway.admin("GET", "/settings", expect=200).json()["global_limits"] == {}
    settings = gateway.admin("PATCH", "/settings", {"global_limits": {"rpm": 2}}, expect=200).json()
    assert settings["global_limits"] == {"rpm": 2} and settings["spend_interval_ms"] == 250
    assert "spend_interval_ms" in gateway.admin("PATCH", "/settings", {"spend_interval_ms": 5}, expect=400).text
    gateway.wait_synced()
    assert [chat(gateway, key, "gpt-test").status_code for _ in range(3)] == [200, 200, 429]
    refused = chat(gateway, key, "gpt-test")
    assert "the cluster" in error_of(refused)["message"]
    import grpc
    from switchboard.v1 import limits_pb2

    stub = pb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}"))
    auth = [("authorization", f"Bearer {gateway.admin_token}")]
    assert stub.GetSettings(pb.GetSettingsRequest(), metadata=auth).global_limits.rpm == 2
    cleared = stub.UpdateSettings(pb.UpdateSettingsRequest(global_limits=limits_pb2.RateLimits()), metadata=auth)
    assert cleared.global_limits.rpm == 0
    entry = gateway.admin("GET", "/audit", params={"resource": "settings/cluster"}, expect=200).json()["rows"][0]
    assert entry["action"] == "settings.update" and entry["before"]["global_limits"] == {"rpm": 2}
    gateway.wait_synced()
    assert chat(gateway, key, "gpt-test").status_code == 200


def abandon(gateway, key, times, max_tokens):
    """Requests to a slow answer whose client gives up after 0.3 s."""
    for i in range(times):
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{gateway.dp_url}/v1/chat/completions", timeout=0.3,
                       headers={"authorization": f"Bearer {key}"},
                       json={"model": "gpt-test", "max_tokens": max_tokens,
                             "messages": [{"role": "user", "content": f"sleep-1500 abandoned {i}"}]})


def test_abandoned_requests_are_recorded_once_and_give_their_reservations_back(gateway):
    """The request guard: a client that gives up leaves a 499 record and no
    reservation behind, so a token quota is not eaten by answers nobody read."""
    gateway.setup_basic()
    key = new_key(gateway, limits={"max_tokens": 1000})
    abandon(gateway, key["key"], 5, max_tokens=300)
    # Three of these at once would need 900 of the 1,000 tokens were anything still reserved.
    answer = chat(gateway, key["key"], "gpt-test", "still admitted", max_tokens=300)
    assert answer.status_code == 200, answer.text

    def recorded():
        usage = gateway.usage(key_id=key["id"])
        return usage["requests"] == 6 and usage["errors"] == 5
    wait_until(recorded, what="one record per abandoned request")
    rows = gateway.usage(key_id=key["id"], group_by="model")["rows"]
    assert rows[0]["estimated"] == 5, "the abandoned prompts counted by tokenizer"


def test_a_request_without_max_tokens_is_capped_to_what_remains(gateway):
    """Not refused for a length it never asked: sent with max_tokens capped to
    what the quota or budget has room for, and told so."""
    gateway.setup_basic()
    last_sent = lambda: httpx.get(gateway.mock_url + "/_mock/last").json()["body"]  # noqa: E731
    quota = new_key(gateway, limits={"max_tokens": 1000})
    gateway.wait_synced()
    answer = chat(gateway, quota["key"], "gpt-test", "how long may my answer be")
    assert answer.status_code == 200, answer.text
    cap = int(answer.headers["x-switchboard-max-tokens-capped"])
    assert 950 < cap < 1000 and last_sent()["max_tokens"] == cap
    # A request that sets its own is not touched.
    answer = chat(gateway, quota["key"], "gpt-test", "mine", max_tokens=50)
    assert "x-switchboard-max-tokens-capped" not in answer.headers and last_sent()["max_tokens"] == 50

    # A budget: the answer that fits at the route's dearest price ($1 per thousand tokens).
    put_price(gateway, "gpt-4o-mini", "1000", "1000")
    budget = new_key(gateway, budget={"amount": "0.20", "period": "daily"})
    gateway.wait_synced()
    answer = chat(gateway, budget["key"], "gpt-test", "and mine")
    assert answer.status_code == 200, answer.text
    cap = int(answer.headers["x-switchboard-max-tokens-capped"])
    assert 150 < cap < 200 and last_sent()["max_tokens"] == cap

    # Room for fewer than 16 answer tokens: refused, saying what is true.
    small = new_key(gateway, limits={"max_tokens": 20})
    gateway.wait_synced()
    refused = chat(gateway, small["key"], "gpt-test", "a b c d e f g h")
    assert refused.status_code == 429 and error_of(refused)["code"] == "insufficient_quota"
    message = error_of(refused)["message"]
    assert f"worst case exceeds what remains of the token quota of key {small['id']}" in message, message
    assert "too little is left for an answer" in message, message


def test_refusals_are_counted_per_caller_and_kind_not_recorded(gateway):
    """A flood of refused requests costs counters, not rows: the usage API
    sums them per error code, for a key or for everyone."""
    gateway.setup_basic()
    key = new_key(gateway, limits={"rpm": 1})
    gateway.wait_synced()
    answers = [chat(gateway, key["key"], "gpt-test").status_code for _ in range(4)]
    assert answers == [200, 429, 429, 429]
    nobody = [chat(gateway, "sk-sb-" + "x" * 40, "gpt-test").status_code for _ in range(2)]
    assert nobody == [401, 401]

    wait_until(lambda: gateway.usage(key_id=key["id"]).get("refusals") == {"rate_limit_exceeded": 3},
               what="the key's refusals counted")
    usage = gateway.usage(key_id=key["id"])
    assert usage["requests"] == 1, "refusals are not records"
    wait_until(lambda: gateway.usage().get("refusals", {}).get("invalid_api_key", 0) >= 2,
               what="unidentified callers' refusals counted")
    # They concern callers, not models: a model's usage shows none.
    assert "refusals" not in gateway.usage(model="gpt-test")


def test_streams_cut_by_their_clients_are_recorded_with_what_was_streamed(gateway, tmp_path):
    gateway.setup_basic()
    paced = Process("mock-provider", ["--kind", "openai_compatible", "--chunk-gap-ms", "200",
                                      "--api-key", MOCK_KEY], tmp_path).start()
    gateway.processes.append(paced)
    paced_url = "http://" + paced.proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
    gateway.admin("POST", "/providers", {"name": "paced", "kind": "openai_compatible",
                                         "base_url": paced_url + "/v1", "api_key": MOCK_KEY}, expect=201)
    route(gateway, "paced", "gpt-4o-mini", targets=[{"provider": "paced", "model": "gpt-4o-mini"}])
    key = new_key(gateway, limits={"max_tokens": 1000})
    gateway.wait_synced()
    client = openai.OpenAI(base_url=f"{gateway.dp_url}/v1", api_key=key["key"], max_retries=0, timeout=20)
    for i in range(3):
        stream = client.chat.completions.create(
            model="paced", stream=True, max_tokens=300,
            messages=[{"role": "user", "content": f"a long and slowly streamed answer number {i}"}])
        for n, _ in enumerate(stream):
            if n == 2:
                break
        stream.close()
    assert chat(gateway, key["key"], "gpt-test", "still admitted", max_tokens=300).status_code == 200

    def recorded():
        usage = gateway.usage(key_id=key["id"], model="paced")
        return usage["requests"] == 3 and usage["errors"] == 3
    wait_until(recorded, what="the cut streams recorded")
    usage = gateway.usage(key_id=key["id"], model="paced")
    assert usage["completion_tokens"] > 0, "what was streamed before the cut counts"


def test_a_budget_is_whole_again_after_many_abandoned_requests(gateway):
    gateway.setup_basic()
    # 1 dollar per thousand tokens: a worst case of ~100 tokens (0.10) fits the budget of 0.20 once.
    put_price(gateway, "gpt-4o-mini", "1000", "1000")
    key = new_key(gateway, budget={"amount": "0.20", "period": "daily"})
    abandon(gateway, key["key"], 6, max_tokens=90)
    # Each abandoned request cost its prompt (about 10 tokens, 0.01); nothing stays reserved.
    answer = chat(gateway, key["key"], "gpt-test", "fits", max_tokens=90)
    assert answer.status_code == 200, answer.text
