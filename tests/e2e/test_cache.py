"""The response cache through the running gateway, driven by the `openai`
SDK: a miss then a hit (same answer, marked in the header and the usage
record), a streamed hit replayed, Cache-Control, tenant isolation, TTL,
purges (REST and gRPC, audited), what a hit counts against limits, and one
Redis shared by two data planes."""

import time
import uuid
from decimal import Decimal

import grpc
import httpx
import openai
import pytest

from conftest import Gateway, Process, free_port, wait_until

pytestmark = pytest.mark.timeout(240)

ASK = [{"role": "user", "content": "tell me something cached"}]


def route(gw, model, **cache):
    gw.admin("POST", "/routes", {"model": model, "targets": [{"provider": "mock", "model": "up-" + model}],
                                 "cache": {"ttl_seconds": 60, **cache}}, expect=201)
    gw.admin("PUT", f"/prices/up-{model}", {"input_per_million": "2", "output_per_million": "8"}, expect=200)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    gateway = Gateway(tmp, f"sqlite://{tmp}/control-plane.db")
    try:
        gateway.setup_basic()
        route(gateway, "cached")
        route(gateway, "sampled", nondeterministic=True)
        route(gateway, "per-key", scope="key")
        route(gateway, "short", ttl_seconds=1)
        route(gateway, "billed", bill_hits=True)
        gateway.team_a = gateway.admin("POST", "/teams", {"name": "cache-a"}, expect=201).json()["id"]
        gateway.team_b = gateway.admin("POST", "/teams", {"name": "cache-b"}, expect=201).json()["id"]
        gateway.key_a = gateway.admin("POST", "/keys", {"name": "a", "team_id": gateway.team_a}, expect=201).json()["key"]
        gateway.key_a2 = gateway.admin("POST", "/keys", {"name": "a2", "team_id": gateway.team_a},
                                       expect=201).json()["key"]
        gateway.key_b = gateway.admin("POST", "/keys", {"name": "b", "team_id": gateway.team_b}, expect=201).json()["key"]
        gateway.wait_synced()
        yield gateway
    finally:
        gateway.close()


def ask(gw, key, model="cached", headers=None, **kwargs):
    """A chat call: (the SDK's answer, the cache header, the x-request-id)."""
    kwargs.setdefault("temperature", 0)
    raw = gw.openai(key).chat.completions.with_raw_response.create(
        model=model, messages=kwargs.pop("messages", ASK), extra_headers=headers or {}, **kwargs)
    return raw.parse(), raw.headers.get("x-switchboard-cache"), raw.headers["x-request-id"]


def record(gw, request_id):
    return wait_until(lambda: next(iter(gw.usage_records(request_id=request_id)), None),
                      what="usage record of " + request_id)


def fresh():
    return [{"role": "user", "content": "a question never asked before " + uuid.uuid4().hex}]


def test_a_miss_then_a_hit_with_the_hit_recorded_and_free(gw):
    messages = fresh()
    before = gw.mock_stats()["requests"]
    first, header, first_id = ask(gw, gw.key_a, messages=messages)
    assert header == "miss"
    second, header, second_id = ask(gw, gw.key_a, messages=messages)
    assert header == "hit"
    assert second.model_dump() == first.model_dump()
    assert gw.mock_stats()["requests"] == before + 1, "the hit never reached the provider"

    miss, hit = record(gw, first_id), record(gw, second_id)
    assert (miss["cache_hit"], hit["cache_hit"]) == (False, True)
    assert (hit["prompt_tokens"], hit["completion_tokens"]) == (miss["prompt_tokens"], miss["completion_tokens"])
    assert hit["provider"] == "mock" and hit["upstream_model"] == "up-cached"
    assert Decimal(miss["cost"]) > 0 and Decimal(hit["cost"]) == 0
    assert hit["cost_saved"] == miss["cost"]
    totals = gw.usage(model="cached")
    assert totals["cache_hits"] >= 1

    metrics = httpx.get(gw.dp_url + "/metrics").text
    assert 'switchboard_cache_requests_total{result="hit"}' in metrics
    assert "switchboard_cache_stored_bytes_total" in metrics


def test_a_streamed_answer_is_stored_and_replayed_as_a_stream(gw):
    messages = fresh()
    client = gw.openai(gw.key_a)

    def streamed():
        raw = client.chat.completions.with_raw_response.create(
            model="cached", messages=messages, temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, chunks, raw.headers["x-switchboard-cache"]

    text, chunks, header = streamed()
    assert header == "miss" and text.startswith("Echo: ")
    again, replayed, header = streamed()
    assert header == "hit" and again == text
    assert [c.choices[0].finish_reason for c in replayed if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert replayed[-1].choices == [] and replayed[-1].usage.total_tokens == chunks[-1].usage.total_tokens
    # One entry serves both forms.
    whole, header, _ = ask(gw, gw.key_a, messages=messages)
    assert header == "hit" and whole.choices[0].message.content == text


def test_cache_control_and_sampling_decide_what_is_read_and_stored(gw):
    messages = fresh()
    assert ask(gw, gw.key_a, messages=messages, headers={"Cache-Control": "no-store"})[1] == "bypass"
    assert ask(gw, gw.key_a, messages=messages)[1] == "miss", "no-store stored nothing"
    assert ask(gw, gw.key_a, messages=messages, headers={"Cache-Control": "no-cache"})[1] == "miss"
    assert ask(gw, gw.key_a, messages=messages)[1] == "hit"
    # Unset temperature samples (providers read it as 1): not cached unless the route says so.
    for _ in range(2):
        assert ask(gw, gw.key_a, messages=messages, temperature=openai.NOT_GIVEN)[1] == "bypass"
    assert ask(gw, gw.key_a, "sampled", messages=messages, temperature=0.7)[1] == "miss"
    assert ask(gw, gw.key_a, "sampled", messages=messages, temperature=0.7)[1] == "hit"
    # Routes without a cache say nothing.
    assert ask(gw, gw.key_a, "gpt-test", messages=messages)[1] is None


def test_one_tenant_never_reads_anothers_answers(gw):
    messages = fresh()
    assert ask(gw, gw.key_a, messages=messages)[1] == "miss"
    assert ask(gw, gw.key_a2, messages=messages)[1] == "hit", "a team shares its answers"
    assert ask(gw, gw.key_b, messages=messages)[1] == "miss", "another team does not see them"
    assert ask(gw, gw.key_a, "per-key", messages=messages)[1] == "miss"
    assert ask(gw, gw.key_a2, "per-key", messages=messages)[1] == "miss", "key scope: not even the team"
    assert ask(gw, gw.key_a, "per-key", messages=messages)[1] == "hit"


def test_entries_expire_after_their_ttl(gw):
    messages = fresh()
    assert ask(gw, gw.key_a, "short", messages=messages)[1] == "miss"
    assert ask(gw, gw.key_a, "short", messages=messages)[1] == "hit"
    time.sleep(1.2)
    assert ask(gw, gw.key_a, "short", messages=messages)[1] == "miss"


def test_purges_by_route_team_and_everything_are_audited(gw, grpc_stubs):
    pb, pb_grpc = grpc_stubs
    messages = fresh()
    for key in (gw.key_a, gw.key_b):
        assert ask(gw, key, messages=messages)[1] == "miss"
        assert ask(gw, key, messages=messages)[1] == "hit"
    purged = gw.admin("POST", "/cache/purge", {"team_id": gw.team_a}, expect=200)
    assert purged.json()["teams"][gw.team_a] >= 1
    gw.wait_synced()
    assert ask(gw, gw.key_a, messages=messages)[1] == "miss", "team a's answers are gone"
    assert ask(gw, gw.key_b, messages=messages)[1] == "hit", "team b's stay"

    gw.admin("POST", "/cache/purge", {"route": "cached"}, expect=200)
    gw.wait_synced()
    assert ask(gw, gw.key_b, messages=messages)[1] == "miss"

    stub = pb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}"))
    answer = stub.PurgeCache(pb.PurgeCacheRequest(everything=True),
                             metadata=[("authorization", f"Bearer {gw.admin_token}")])
    assert answer.everything >= 1
    gw.wait_synced()
    assert ask(gw, gw.key_b, messages=messages)[1] == "miss"

    actions = [(r["action"], r["resource"]) for r in gw.admin("GET", "/audit", expect=200).json()["rows"]]
    for resource in (f"cache/teams/{gw.team_a}", "cache/routes/cached", "cache"):
        assert ("cache.purge", resource) in actions
    refused = gw.admin("POST", "/cache/purge", {"route": "cached", "everything": True}, expect=400)
    assert "exactly one" in refused.json()["error"]["message"]
    gw.admin("POST", "/cache/purge", {"route": "nope"}, expect=404)
    with pytest.raises(grpc.RpcError) as bad:
        stub.PurgeCache(pb.PurgeCacheRequest(), metadata=[("authorization", f"Bearer {gw.admin_token}")])
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_hit_counts_as_a_request_and_its_cost_only_when_the_route_bills_hits(gw):
    limited = gw.admin("POST", "/keys", {"name": "rpm", "limits": {"rpm": 2}}, expect=201).json()["key"]
    gw.wait_synced()
    messages = fresh()
    assert ask(gw, limited, messages=messages)[1] == "miss"
    assert ask(gw, limited, messages=messages)[1] == "hit"
    with pytest.raises(openai.RateLimitError):
        ask(gw, limited, messages=messages)

    _, header, miss_id = ask(gw, gw.key_a, "billed", messages=messages)
    _, header, hit_id = ask(gw, gw.key_a, "billed", messages=messages)
    assert header == "hit"
    miss, hit = record(gw, miss_id), record(gw, hit_id)
    assert hit["cache_hit"] and hit["cost"] == miss["cost"] == hit["cost_saved"]


def test_embeddings_are_cached(gw):
    client = gw.openai(gw.key_a)
    text = "embed me " + uuid.uuid4().hex
    first = client.embeddings.with_raw_response.create(model="cached", input=text)
    second = client.embeddings.with_raw_response.create(model="cached", input=text)
    assert (first.headers["x-switchboard-cache"], second.headers["x-switchboard-cache"]) == ("miss", "hit")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding


def test_redis_is_one_cache_for_every_data_plane(tmp_path, redis):
    gw = Gateway(tmp_path, f"sqlite://{tmp_path}/control-plane.db")
    try:
        flags = ("--redis-url", redis.url, "--cache-backend", "redis")
        gw.start_data_plane(extra=flags)
        key = gw.setup_basic()
        route(gw, "cached")
        gw.wait_synced()
        port = free_port()
        second = Process("data-plane", [
            "--listen", f"127.0.0.1:{port}", "--control-plane", f"http://127.0.0.1:{gw.grpc_port}",
            "--cluster-token", gw.cluster_token, "--state-dir", tmp_path / "dp2-state", *flags], tmp_path).start()
        gw.processes.append(second)
        other = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(other + "/readyz").text.endswith(f"{gw.current_version()})"),
                   what="second data plane synced")

        messages = fresh()
        assert ask(gw, key, messages=messages)[1] == "miss"

        def from_other():
            raw = openai.OpenAI(base_url=other + "/v1", api_key=key, max_retries=0).chat.completions \
                .with_raw_response.create(model="cached", messages=messages, temperature=0)
            return raw.headers["x-switchboard-cache"]

        # The first data plane stores in the background: the second sees it shortly.
        wait_until(lambda: from_other() == "hit", what="the other data plane's hit")
        stored = [k for k in redis_keys(redis) if k.startswith(b"switchboard:cache:")]
        assert stored, "entries live in Redis"
    finally:
        gw.close()


def redis_keys(redis):
    import socket

    with socket.create_connection(("127.0.0.1", redis.port), timeout=2) as sock:
        sock.sendall(b"*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n")
        time.sleep(0.1)
        reply = sock.recv(1 << 16)
    return [line for line in reply.split(b"\r\n") if line and line[:1] not in (b"*", b"$")]
