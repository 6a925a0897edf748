"""The data plane driven by the official openai SDK, configured over REST."""

import json
import subprocess

import httpx
import openai
import pytest

from conftest import MOCK_KEY, wait_until

pytestmark = pytest.mark.timeout(120)


def test_chat_streaming_embeddings_models_and_usage(gateway):
    key = gateway.setup_basic()
    client = gateway.openai(key)

    reply = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "say hello to the gateway"}]
    )
    assert reply.choices[0].message.content == "Echo: say hello to the gateway"
    assert reply.usage.prompt_tokens == 5 and reply.usage.completion_tokens == 6

    # Streaming without include_usage: no usage chunk reaches the client, yet usage is accounted.
    chunks = list(client.chat.completions.create(
        model="gpt-test", stream=True, messages=[{"role": "user", "content": "stream this please"}]
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream this please"
    assert all(c.choices for c in chunks), "a usage chunk the client did not ask for leaked"
    assert chunks[-1].choices[0].finish_reason == "stop"

    # Streaming with include_usage: the usage chunk is passed through.
    chunks = list(client.chat.completions.create(
        model="gpt-test", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count me"}],
    ))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 2 + 3

    embedded = client.embeddings.create(model="gpt-test", input=["one two", "three"])
    assert len(embedded.data) == 2 and embedded.usage.prompt_tokens == 3

    assert [m.id for m in client.models.list()] == ["gpt-test"]
    assert client.models.retrieve("gpt-test").id == "gpt-test"

    # The control plane's totals equal what the provider reported, once shipped.
    expected = {k: v for k, v in gateway.mock_stats().items()}
    wait_until(lambda: gateway.usage()["requests"] == expected["requests"], what="usage shipped")
    totals = gateway.usage()
    assert {k: totals[k] for k in expected} == expected
    assert gateway.usage(model="gpt-test")["requests"] == 4
    assert gateway.usage(model="other")["requests"] == 0
    key_id = gateway.admin("GET", "/keys", expect=200).json()[0]["id"]
    assert gateway.usage(key_id=key_id)["total_tokens"] == expected["total_tokens"]
    assert gateway.usage(since="2999-01-01T00:00:00Z")["requests"] == 0


def test_stream_chunks_are_relayed_as_they_arrive(gateway, tmp_path):
    """Chunks 10 ms apart upstream stay 10 ms apart at the client: none is held
    back (Nagle behind a delayed ACK adds up to 40 ms) or batched. Measured by
    the benchmark probe, a hyper client whose ACK timing exposes Nagle."""
    from conftest import BIN_DIR, Process

    paced = Process("mock-load", ["--listen", "127.0.0.1:0", "--chunks", "20", "--chunk-gap-ms", "10"], tmp_path).start()
    gateway.processes.append(paced)
    paced_url = "http://" + paced.proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
    key = gateway.setup_basic()
    gateway.admin("POST", "/providers", {"name": "paced", "kind": "openai_compatible",
                                          "base_url": paced_url + "/v1", "api_key": MOCK_KEY}, expect=201)
    gateway.admin("POST", "/routes", {"model": "paced", "targets": [{"provider": "paced", "model": "m"}]}, expect=201)
    gateway.wait_synced()
    probe = subprocess.run(
        [str(BIN_DIR / "bench-probe"), "stream", "--url", f"{gateway.dp_url}/v1", "--key", key, "--model", "paced",
         "--requests", "20", "--concurrency", "2"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    result = json.loads(probe.stdout)
    assert result["errors"] == 0
    assert result["frames_per_stream"] == 21, "20 chunks and [DONE], each its own write"
    assert result["gap_us"]["p50"] >= 8_000, f"chunks arrive together: {result}"
    assert result["gap_us"]["p99"] < 30_000, f"chunks held back: {result}"


def test_errors_in_openai_format(gateway):
    key = gateway.setup_basic()
    gateway.admin("POST", "/routes", {"model": "mock-429", "targets": [{"provider": "mock", "model": "fail-429"}]}, expect=201)
    gateway.admin("POST", "/routes", {"model": "mock-garbage", "targets": [{"provider": "mock", "model": "fail-garbage"}]}, expect=201)
    gateway.admin("POST", "/routes", {"model": "slow", "targets": [{"provider": "mock", "model": "sleep-3000"}]}, expect=201)
    gateway.admin("POST", "/routes", {"model": "broken", "targets": [{"provider": "mock", "model": "fail-midstream"}]}, expect=201)
    gateway.admin("POST", "/providers", {"name": "dead", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}, expect=201)
    gateway.admin("POST", "/routes", {"model": "dead", "targets": [{"provider": "dead", "model": "x"}]}, expect=201)
    narrow = gateway.admin("POST", "/keys", {"name": "narrow", "models": ["gpt-test"]}, expect=201).json()["key"]
    gateway.wait_synced()
    messages = [{"role": "user", "content": "hi"}]

    with pytest.raises(openai.AuthenticationError) as error:
        gateway.openai("sk-sb-not-a-real-key").chat.completions.create(model="gpt-test", messages=messages)
    assert error.value.code == "invalid_api_key"
    assert "sk-sb-not-a-real-key" not in str(error.value)
    # One character off a real key: the checksum fails, the key is refused.
    typo = narrow[:20] + ("A" if narrow[20] != "A" else "B") + narrow[21:]
    with pytest.raises(openai.AuthenticationError) as error:
        gateway.openai(typo).chat.completions.create(model="gpt-test", messages=messages)
    assert error.value.code == "invalid_api_key"

    with pytest.raises(openai.PermissionDeniedError) as error:
        gateway.openai(narrow).chat.completions.create(model="mock-429", messages=messages)
    assert error.value.code == "model_not_allowed"
    assert [m.id for m in gateway.openai(narrow).models.list()] == ["gpt-test"]

    client = gateway.openai(key)
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="no-such-model", messages=messages)
    assert error.value.code == "model_not_found" and error.value.param == "model"

    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="gpt-test", messages=[])
    assert error.value.param == "messages"

    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="mock-429", messages=messages)
    assert error.value.code == "rate_limit_exceeded"
    assert error.value.response.headers["retry-after"] == "7"

    with pytest.raises(openai.InternalServerError) as error:
        client.chat.completions.create(model="mock-garbage", messages=messages)
    assert error.value.status_code == 502 and "exploded" not in str(error.value)

    with pytest.raises(openai.InternalServerError) as error:
        client.chat.completions.create(model="dead", messages=messages)
    assert error.value.status_code == 502 and error.value.code == "upstream_unreachable"
    assert "127.0.0.1:9" not in str(error.value)

    with pytest.raises(openai.InternalServerError) as error:
        client.chat.completions.create(model="slow", messages=messages)
    assert error.value.status_code == 504 and error.value.code == "upstream_timeout"

    # A stream cut mid-way ends with an error event, which the SDK raises.
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="broken", stream=True, messages=messages))

    auth = {"authorization": f"Bearer {key}"}
    raw = httpx.post(f"{gateway.dp_url}/v1/chat/completions", content=b"{not json", headers=auth)
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    raw = httpx.post(f"{gateway.dp_url}/v1/chat/completions", content=b"x" * 70000, headers=auth)
    assert raw.status_code == 413 and raw.json()["error"]["code"] == "request_too_large"
    raw = httpx.post(f"{gateway.dp_url}/v1/chat/completions", json={"model": "gpt-test"})
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "invalid_api_key"
    raw = httpx.get(f"{gateway.dp_url}/v1/nothing-here", headers=auth)
    assert raw.status_code == 404 and "error" in raw.json()

    # The gateway is still healthy after all of that.
    assert client.chat.completions.create(model="gpt-test", messages=messages).choices[0].message.content


def test_revoked_key_is_refused_within_two_seconds(gateway):
    import time

    key = gateway.setup_basic()
    client = gateway.openai(key)
    messages = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="gpt-test", messages=messages)
    key_id = gateway.admin("GET", "/keys", expect=200).json()[0]["id"]
    revoked_at = time.monotonic()
    assert gateway.admin("DELETE", f"/keys/{key_id}", expect=200).json()["revoked"] is True

    def refused():
        try:
            client.chat.completions.create(model="gpt-test", messages=messages)
            return False
        except openai.AuthenticationError:
            return True

    wait_until(refused, timeout=2.0, interval=0.02, what="revoked key refused")
    assert time.monotonic() - revoked_at < 2.0


def test_expired_key_is_refused(gateway):
    import datetime
    import time

    gateway.setup_basic()
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)).isoformat()
    key = gateway.admin("POST", "/keys", {"name": "brief", "expires_at": soon}, expect=201).json()["key"]
    gateway.wait_synced()
    client = gateway.openai(key)
    client.models.list()
    time.sleep(2.2)
    with pytest.raises(openai.AuthenticationError) as error:
        client.models.list()
    assert error.value.code == "api_key_expired"


def test_provider_credential_never_stored_or_saved_in_plaintext(gateway):
    gateway.setup_basic()
    if gateway.kind == "sqlite":
        db_dir = gateway.tmp
        for path in db_dir.glob("control-plane.db*"):
            assert MOCK_KEY.encode() not in path.read_bytes(), path
    else:
        import psycopg

        with psycopg.connect(gateway.database_url) as conn:
            stored = conn.execute("SELECT api_key_encrypted FROM providers").fetchone()[0]
        assert stored and MOCK_KEY not in stored
    snapshot = (gateway.state_dir / "snapshot.bin").read_bytes()
    assert MOCK_KEY.encode() not in snapshot
    assert b"gpt-test" not in snapshot, "the on-disk snapshot must be encrypted as a whole"
    # Logs carry no secrets either.
    for process in gateway.processes:
        assert MOCK_KEY not in process.logs()
        assert gateway.admin_token not in process.logs()


def test_key_rotation_keeps_the_old_secret_for_its_grace_period(gateway):
    old = gateway.setup_basic()
    key_id = gateway.admin("GET", "/keys", expect=200).json()[0]["id"]
    messages = [{"role": "user", "content": "hi"}]

    def status(secret):
        return httpx.post(f"{gateway.dp_url}/v1/chat/completions", headers={"authorization": f"Bearer {secret}"},
                          json={"model": "gpt-test", "messages": messages}, timeout=10).status_code

    rotated = gateway.admin("POST", f"/keys/{key_id}/rotate", {"grace_seconds": 3}, expect=200).json()
    new = rotated["key"]
    assert new != old and rotated["id"] == key_id and rotated["previous_valid_until"]
    assert rotated["prefix"] == new[:12]
    gateway.wait_synced()
    assert (status(old), status(new)) == (200, 200), "both work during the grace period"
    wait_until(lambda: status(old) == 401, timeout=15, what="the old secret to end with its grace")
    assert status(new) == 200
    # Both secrets' usage belongs to the one key.
    served = gateway.mock_stats()["requests"]
    assert served >= 3
    wait_until(lambda: gateway.usage(key_id=key_id)["requests"] == served, what="usage of both secrets")

    # No grace: the previous secret ends at once.
    newest = gateway.admin("POST", f"/keys/{key_id}/rotate", {"grace_seconds": 0}, expect=200).json()["key"]
    gateway.wait_synced()
    assert (status(new), status(newest)) == (401, 200)

    assert gateway.admin("POST", f"/keys/{key_id}/rotate", {"grace_seconds": 10**9}, expect=400).json()["error"]["code"] == "invalid_argument"
    gateway.admin("POST", "/keys/nope/rotate", {}, expect=404)
    gateway.admin("DELETE", f"/keys/{key_id}", expect=200)
    assert gateway.admin("POST", f"/keys/{key_id}/rotate", {}, expect=409).json()["error"]["code"] == "conflict"


def test_hygiene_of_what_reaches_a_provider(gateway):
    key = gateway.setup_basic()
    # The client's credentials, cookies and hop-by-hop headers never travel upstream.
    response = httpx.post(f"{gateway.dp_url}/v1/chat/completions",
                          json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
                          headers={"authorization": f"Bearer {key}", "x-api-key": key, "cookie": "session=s3cret",
                                   "connection": "keep-alive, x-private", "x-private": "1", "proxy-authorization": "p"})
    assert response.status_code == 200
    seen = httpx.get(gateway.mock_url + "/_mock/last").json()["headers"]
    assert seen["authorization"] == f"Bearer {MOCK_KEY}"
    assert not {"x-api-key", "cookie", "x-private", "proxy-authorization"} & set(seen)
    assert key not in json.dumps(seen)
    # Oversized request heads are refused before any work.
    huge = httpx.post(f"{gateway.dp_url}/v1/chat/completions", json={"model": "gpt-test"},
                      headers={"authorization": f"Bearer {key}", "x-padding": "a" * 70_000})
    assert huge.status_code == 431 and huge.json()["error"]["code"] == "request_headers_too_large"
    # Provider base URLs may not point at cloud metadata or link-local addresses.
    for url in ("http://169.254.169.254/latest", "http://[fe80::1]/v1", "http://metadata.google.internal/v1"):
        refused = gateway.admin("POST", "/providers", {"name": "meta", "kind": "openai", "base_url": url})
        assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("base_url"), url


def test_every_request_is_counted_whatever_its_endpoint_and_answer(gateway):
    key = gateway.setup_basic()
    headers = {"authorization": f"Bearer {key}"}
    httpx.get(f"{gateway.dp_url}/v1/models", headers=headers)
    httpx.get(f"{gateway.dp_url}/v1/nowhere", headers=headers)
    httpx.get(f"{gateway.dp_url}/v1/chat/completions", headers=headers)
    metrics = httpx.get(f"{gateway.dp_url}/metrics").text
    for sample in ('switchboard_requests_total{endpoint="models",status="200"} 1',
                   'switchboard_requests_total{endpoint="unknown",status="404"} 1',
                   'switchboard_requests_total{endpoint="chat.completions",status="405"} 1'):
        assert sample in metrics, sample


def test_every_answer_carries_a_request_id(gateway):
    key = gateway.setup_basic()
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    url = f"{gateway.dp_url}/v1/chat/completions"
    answers = [
        httpx.post(url, json=body),  # 401
        httpx.post(url, json={**body, "model": "nope"}, headers={"authorization": f"Bearer {key}"}),  # 404
        httpx.get(f"{gateway.dp_url}/v1/nowhere"),  # 404
        httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"}),  # 200
        httpx.post(url, json={**body, "stream": True}, headers={"authorization": f"Bearer {key}"}),  # a stream
    ]
    assert [a.status_code for a in answers] == [401, 404, 404, 200, 200]
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(len(i) == 36 for i in ids) and len(set(ids)) == len(ids), ids
    # The client's own id, when usable, is the answer's; an unusable one is replaced.
    mine = httpx.post(url, json=body, headers={"authorization": f"Bearer {key}", "x-request-id": "trace-7f3a:9"})
    assert mine.headers["x-request-id"] == "trace-7f3a:9"
    spaced = httpx.post(url, json=body, headers={"x-request-id": "has spaces"})
    assert spaced.status_code == 401 and spaced.headers["x-request-id"] != "has spaces"
    # Either kind of id finds its request's usage record: the gateway's own (which is the record's id)
    # and the client's (which is not).
    for answer in (answers[3], mine):
        request_id = answer.headers["x-request-id"]
        found = wait_until(lambda: gateway.usage_records(request_id=request_id), what="record of " + request_id)
        assert [r["request_id"] for r in found] == [request_id]
        assert (found[0]["id"] == request_id) == (answer is not mine)
