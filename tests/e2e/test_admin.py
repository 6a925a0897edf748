"""The admin API over gRPC (generated stubs, server reflection) and REST, with its errors."""

import json
import time

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from conftest import MOCK_KEY, Process, free_port, wait_until

pytestmark = pytest.mark.timeout(120)


def test_grpc_admin_with_reflection(gateway, grpc_stubs):
    pb, pb_grpc = grpc_stubs
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")

    # What `grpcurl list` and `describe` use: server reflection.
    reflection = ProtoReflectionDescriptorDatabase(channel)
    services = set(reflection.get_services())
    assert {"switchboard.v1.AdminService", "switchboard.v1.ClusterService"} <= services
    method = reflection.FindFileContainingSymbol("switchboard.v1.AdminService")
    assert any(s.name == "AdminService" for s in method.service)

    admin = pb_grpc.AdminServiceStub(channel)
    auth = [("authorization", f"Bearer {gateway.admin_token}")]

    with pytest.raises(grpc.RpcError) as error:
        admin.ListProviders(pb.ListProvidersRequest())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED

    provider = admin.CreateProvider(pb.ProviderSpec(name="mock", kind="openai_compatible",
                                                    base_url=gateway.mock_url + "/v1", api_key=MOCK_KEY), metadata=auth)
    assert provider.has_api_key and provider.kind == "openai_compatible"
    with pytest.raises(grpc.RpcError) as error:
        admin.CreateProvider(pb.ProviderSpec(name="mock", kind="openai", base_url="http://x"), metadata=auth)
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as error:
        admin.CreateProvider(pb.ProviderSpec(name="bad", kind="nope", base_url="http://x"), metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "kind" in error.value.details()

    from switchboard.v1 import routing_pb2 as rpb

    route = admin.CreateRoute(rpb.Route(model="grpc-model", strategy="least_busy", aliases=["grpc-alias"],
                                        retry=rpb.RetryPolicy(max_attempts=3, backoff_ms=50),
                                        targets=[rpb.RouteTarget(provider="mock", model="gpt-4o-mini", priority=1)]),
                              metadata=auth)
    assert (route.strategy, list(route.aliases), route.retry.max_attempts) == ("least_busy", ["grpc-alias"], 3)
    with pytest.raises(grpc.RpcError) as error:
        admin.CreateRoute(rpb.Route(model="x", targets=[rpb.RouteTarget(provider="ghost", model="m")]), metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "targets[0].provider" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        admin.CreateRoute(rpb.Route(model="y", strategy="fastest", targets=[rpb.RouteTarget(provider="mock", model="m")]),
                          metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "strategy" in error.value.details()

    team = admin.CreateTeam(pb.CreateTeamRequest(name="research"), metadata=auth)
    user = admin.CreateUser(pb.CreateUserRequest(name="Ada", email="ada@example.com", team_id=team.id), metadata=auth)
    created = admin.CreateKey(pb.CreateKeyRequest(name="grpc-key", user_id=user.id, models=["grpc-model"]), metadata=auth)
    assert created.secret.startswith("sk-sb-") and created.key.team_id == team.id
    assert all(not k.prefix or created.secret.startswith(k.prefix) for k in admin.ListKeys(pb.ListKeysRequest(), metadata=auth).keys)

    gateway.wait_synced()
    reply = gateway.openai(created.secret).chat.completions.create(
        model="grpc-model", messages=[{"role": "user", "content": "over grpc"}])
    assert reply.choices[0].message.content == "Echo: over grpc"

    wait_until(lambda: admin.GetUsage(pb.UsageQuery(user_id=user.id), metadata=auth).requests == 1, what="usage")
    totals = admin.GetUsage(pb.UsageQuery(team_id=team.id), metadata=auth)
    assert (totals.prompt_tokens, totals.completion_tokens) == (2, 3)

    planes = admin.ListDataPlanes(pb.ListDataPlanesRequest(), metadata=auth)
    assert len(planes.data_planes) == 1 and planes.data_planes[0].applied_version == planes.current_version

    rotated = admin.RotateKey(pb.RotateKeyRequest(id=created.key.id, grace_seconds=60), metadata=auth)
    assert rotated.secret != created.secret and rotated.key.id == created.key.id
    assert rotated.key.previous_valid_until and rotated.key.prefix == rotated.secret[:12]

    revoked = admin.RevokeKey(pb.RevokeKeyRequest(id=created.key.id), metadata=auth)
    assert revoked.revoked
    with pytest.raises(grpc.RpcError) as error:
        admin.RotateKey(pb.RotateKeyRequest(id=created.key.id), metadata=auth)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as error:
        admin.DeleteTeam(pb.DeleteTeamRequest(id=team.id), metadata=auth)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as error:
        admin.GetRoute(pb.GetRouteRequest(model="nope"), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND

    # The cluster service refuses callers without the cluster token.
    from switchboard.v1 import cluster_pb2, cluster_pb2_grpc

    cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        cluster.ReportUsage(cluster_pb2.UsageBatch(dataplane_id="x"), metadata=auth)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_usage_ingestion_is_idempotent(gateway, grpc_stubs):
    from switchboard.v1 import cluster_pb2, cluster_pb2_grpc
    import uuid

    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
    auth = [("authorization", f"Bearer {gateway.cluster_token}")]
    records = [cluster_pb2.UsageRecord(id=str(uuid.uuid4()), key_id="k", model="m", prompt_tokens=3,
                                       completion_tokens=4, total_tokens=7, cached_tokens=2, reasoning_tokens=1,
                                       cache_write_tokens=1, status=200, streamed=True, ttft_ms=10 * i) for i in range(3)]
    batch = cluster_pb2.UsageBatch(dataplane_id="test", records=records)
    first = cluster.ReportUsage(batch, metadata=auth)
    again = cluster.ReportUsage(batch, metadata=auth)
    assert (first.accepted, first.duplicates) == (3, 0)
    assert (again.accepted, again.duplicates) == (0, 3)
    assert gateway.usage(key_id="k") == {"requests": 3, "prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
                                         "cached_tokens": 6, "cache_write_tokens": 3, "cache_hits": 0, "reasoning_tokens": 3, "errors": 0, "estimated": 0, "retried": 0,
                                         "costs": {"USD": "0.00"}, "latency_ms_p50": 0, "latency_ms_p99": 0,
                                         "ttft_ms_p50": 10, "ttft_ms_p99": 20}
    # A batch larger than one INSERT statement (500 rows), with one duplicate in its last chunk.
    large = [cluster_pb2.UsageRecord(id=str(uuid.uuid4()), key_id="big", model="m", prompt_tokens=1,
                                     completion_tokens=2, total_tokens=3, status=200) for _ in range(1200)]
    large.append(records[0])
    answer = cluster.ReportUsage(cluster_pb2.UsageBatch(dataplane_id="test", records=large), metadata=auth)
    assert (answer.accepted, answer.duplicates) == (1200, 1)
    assert gateway.usage(key_id="big") == {"requests": 1200, "prompt_tokens": 1200, "completion_tokens": 2400,
                                           "total_tokens": 3600, "cached_tokens": 0, "cache_write_tokens": 0, "cache_hits": 0,
                                           "reasoning_tokens": 0, "errors": 0,
                                           "estimated": 0, "retried": 0, "costs": {"USD": "0.00"},
                                           "latency_ms_p50": 0, "latency_ms_p99": 0,
                                           "ttft_ms_p50": None, "ttft_ms_p99": None}
    # Refusal counts are idempotent too; one that is not a count is refused.
    minute = int(time.time()) // 60 * 60_000
    refused = cluster_pb2.RefusalCount(id=str(uuid.uuid4()), key_id="big", kind="rate_limit_exceeded",
                                       minute_ms=minute, count=4)
    for _ in range(2):
        cluster.ReportUsage(cluster_pb2.UsageBatch(dataplane_id="test", refusals=[refused]), metadata=auth)
    assert gateway.usage(key_id="big")["refusals"] == {"rate_limit_exceeded": 4}
    with pytest.raises(grpc.RpcError) as error:
        bad = cluster_pb2.RefusalCount(id=str(uuid.uuid4()), kind="Not A Code", minute_ms=minute, count=1)
        cluster.ReportUsage(cluster_pb2.UsageBatch(dataplane_id="t", refusals=[bad]), metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "kind" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        cluster.ReportUsage(cluster_pb2.UsageBatch(dataplane_id="t", records=[cluster_pb2.UsageRecord(id="nope")]),
                            metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rest_admin_contract_and_errors(gateway):
    a = gateway.admin
    assert a("GET", "/providers", token="wrong-token-xxxxxxxx", expect=401).json()["error"]["code"] == "unauthenticated"
    created = a("POST", "/providers", {"name": "p1", "kind": "openai", "base_url": "https://api.openai.com/v1/",
                                       "api_key": "sk-secret-value"}, expect=201).json()
    assert created == {**created, "name": "p1", "kind": "openai", "base_url": "https://api.openai.com/v1", "has_api_key": True}
    assert "sk-secret-value" not in str(a("GET", "/providers", expect=200).json())
    assert a("POST", "/providers", {"name": "p1", "kind": "openai", "base_url": "http://x"}, expect=409).json()["error"]["code"] == "already_exists"
    assert "kind" in a("POST", "/providers", {"name": "p2", "kind": "nope", "base_url": "http://x"}, expect=400).json()["error"]["message"]
    assert "base_url" in a("POST", "/providers", {"name": "p2", "kind": "openai", "base_url": "ftp://x"}, expect=400).json()["error"]["message"]
    a("POST", "/providers", {"name": "p2", "kind": "openai", "base_url": "http://x", "extra": 1}, expect=400)
    updated = a("PUT", "/providers/p1", {"kind": "openai_compatible", "base_url": "http://127.0.0.1:1/v1"}, expect=200).json()
    assert updated["kind"] == "openai_compatible" and updated["has_api_key"], "an update without api_key keeps it"
    a("GET", "/providers/missing", expect=404)

    a("POST", "/routes", {"model": "m1", "targets": [{"provider": "p1", "model": "up", "weight": 3}]}, expect=201)
    assert a("GET", "/routes/m1", expect=200).json()["targets"][0]["weight"] == 3
    a("POST", "/routes", {"model": "m2", "targets": []}, expect=400)
    a("PUT", "/routes/m1", {"targets": [{"provider": "p1", "model": "up2"}]}, expect=200)
    assert a("GET", "/routes", expect=200).json()[0]["targets"][0]["model"] == "up2"
    assert a("DELETE", "/providers/p1", expect=409).json()["error"]["code"] == "conflict"
    a("DELETE", "/routes/m1", expect=204)
    a("DELETE", "/providers/p1", expect=204)

    team = a("POST", "/teams", {"name": "t"}, expect=201).json()
    a("POST", "/teams", {"name": "t"}, expect=409)
    user = a("POST", "/users", {"name": "u", "team_id": team["id"]}, expect=201).json()
    a("POST", "/users", {"name": "u", "team_id": "missing"}, expect=400)
    a("POST", "/users", {"name": "u", "email": "not-an-email"}, expect=400)
    key = a("POST", "/keys", {"name": "k", "user_id": user["id"]}, expect=201).json()
    assert key["team_id"] == team["id"] and key["key"].startswith("sk-sb-")
    # The documented shape: prefix, 43 random characters, CRC-32 of them (base64url), so scanners can check it.
    import base64
    import zlib

    random, checksum = key["key"][6:49], key["key"][49:]
    assert len(key["key"]) == 55
    assert base64.urlsafe_b64encode(zlib.crc32(random.encode()).to_bytes(4, "big")).rstrip(b"=").decode() == checksum
    listed = a("GET", "/keys", expect=200).json()
    assert "key" not in listed[0] and listed[0]["prefix"] == key["prefix"]
    a("POST", "/keys", {"name": "k", "expires_at": "yesterday"}, expect=400)
    a("POST", "/keys", {"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, expect=400)
    a("DELETE", f"/users/{user['id']}", expect=409)
    assert a("DELETE", f"/keys/{key['id']}", expect=200).json()["revoked"] is True
    a("DELETE", "/keys/missing", expect=404)
    a("GET", "/usage", params={"since": "last tuesday"}, expect=400)
    a("GET", "/nothing", expect=404)


def test_replicas_on_one_postgres_report_the_same_version(pg_gateway):
    gateway = pg_gateway
    port = free_port()
    replica = Process("control-plane", [
        "--database-url", gateway.database_url, "--grpc-addr", f"127.0.0.1:{free_port()}",
        "--http-addr", f"127.0.0.1:{port}", "--admin-token", gateway.admin_token,
        "--cluster-token", gateway.cluster_token, "--secret-key", gateway.secret_key, "--config-poll-ms", "200",
    ], gateway.tmp).start()
    gateway.processes.append(replica)
    import httpx

    headers = {"authorization": f"Bearer {gateway.admin_token}"}
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, what="replica ready")
    gateway.setup_basic()
    version = gateway.current_version()
    replica_version = httpx.get(f"http://127.0.0.1:{port}/api/v1/dataplanes", headers=headers).json()["current_version"]
    assert replica_version == version
    # The replica serves the provider created through the first one, credential decrypted alike.
    listed = httpx.get(f"http://127.0.0.1:{port}/api/v1/providers", headers=headers).json()
    assert [p["name"] for p in listed] == ["mock"]


def test_secret_key_rotation_reseals_credentials_without_downtime(gateway):
    import secrets as py_secrets

    from conftest import secret

    key = gateway.setup_basic()
    client = gateway.openai(key)
    ask = lambda: client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert ask().choices[0].message.content == "Echo: hi"
    old, new = gateway.secret_key, secret(py_secrets.token_hex(32))

    # The new key, with the old one still readable: credentials are re-sealed at start.
    gateway.cp.stop()
    assert ask().choices[0].message.content == "Echo: hi", "data planes serve while the control plane restarts"
    gateway.secret_key = new
    gateway.cp = gateway.start_control_plane(extra=("--previous-secret-keys", old))
    gateway.admin("POST", "/routes", {"model": "after-rotation", "targets": [{"provider": "mock", "model": "m"}]},
                  expect=201)
    gateway.wait_synced()
    assert "re-sealed" in gateway.cp.logs()

    # The old key can go: everything is sealed with the new one.
    gateway.cp.stop()
    gateway.cp = gateway.start_control_plane()
    gateway.admin("POST", "/routes", {"model": "new-key-only", "targets": [{"provider": "mock", "model": "m"}]},
                  expect=201)
    gateway.wait_synced()
    assert ask().choices[0].message.content == "Echo: hi"
    assert gateway.openai(key).chat.completions.create(
        model="new-key-only", messages=[{"role": "user", "content": "x"}]).choices[0].message.content == "Echo: x"

    # With only the old key, the credentials can no longer be opened: the control plane refuses to start.
    gateway.cp.stop()
    gateway.secret_key = old
    stale = Process("control-plane", ["--database-url", gateway.database_url, "--grpc-addr", "127.0.0.1:0",
                                      "--http-addr", "127.0.0.1:0", "--admin-token", gateway.admin_token,
                                      "--cluster-token", gateway.cluster_token, "--secret-key", old], gateway.tmp).start()
    assert stale.proc.wait(20) != 0
    assert "cannot be decrypted" in stale.logs()


def test_every_admin_write_is_audited(gateway, grpc_stubs):
    pb, pb_grpc = grpc_stubs
    admin = gateway.admin
    created = admin("POST", "/providers", {"name": "audited", "kind": "openai", "base_url": "https://a.example/v1",
                                           "api_key": "sk-provider-canary-1"}, expect=201)
    request_id = created.headers["x-request-id"]
    admin("PUT", "/providers/audited", {"kind": "openai", "base_url": "https://b.example/v1",
                                        "api_key": "sk-provider-canary-2"}, expect=200)
    admin("POST", "/routes", {"model": "audited-route", "targets": [{"provider": "audited", "model": "m"}]}, expect=201)
    key = admin("POST", "/keys", {"name": "audited-key"}, expect=201).json()
    admin("POST", f"/keys/{key['id']}/rotate", {"grace_seconds": 0}, expect=200)
    admin("DELETE", f"/keys/{key['id']}", expect=200)
    admin("DELETE", "/routes/audited-route", expect=204)
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    stub = pb_grpc.AdminServiceStub(channel)
    auth = [("authorization", f"Bearer {gateway.admin_token}"), ("x-request-id", "grpc-request-7")]
    team = stub.CreateTeam(pb.CreateTeamRequest(name="audited-team"), metadata=auth)

    entries = admin("GET", "/audit", expect=200).json()["rows"]
    assert [e["action"] for e in entries[:8]] == ["team.create", "route.delete", "key.revoke", "key.rotate",
                                                 "key.create", "route.create", "provider.update", "provider.create"]
    seeded = [e for e in entries if e["action"] == "price.seed"]
    assert [(e["actor"], e["resource"]) for e in seeded] == [("control-plane", "prices")], "bundled prices, once"
    assert all(e["actor"] == "admin" for e in entries if e not in seeded)
    by_action = {e["action"]: e for e in entries}
    assert by_action["provider.create"]["request_id"] == request_id
    assert by_action["team.create"]["request_id"] == "grpc-request-7"
    assert by_action["team.create"]["resource"] == f"team/{team.id}"
    update = by_action["provider.update"]
    assert (update["before"]["base_url"], update["after"]["base_url"]) == ("https://a.example/v1", "https://b.example/v1")
    assert by_action["route.delete"]["after"] is None and by_action["route.delete"]["before"]["model"] == "audited-route"
    assert by_action["key.revoke"]["after"]["revoked"] is True
    text = json.dumps(entries)
    assert "sk-provider-canary" not in text and key["key"] not in text, "no secret in the audit log"
    only = admin("GET", "/audit", params={"resource": "provider/audited"}, expect=200).json()["rows"]
    assert [e["action"] for e in only] == ["provider.update", "provider.create"]
    listed = stub.ListAudit(pb.AuditQuery(resource="provider/audited"), metadata=auth)
    assert [e.action for e in listed.entries] == ["provider.update", "provider.create"]
    assert json.loads(listed.entries[0].after)["base_url"] == "https://b.example/v1"
    assert admin("GET", "/audit", params={"limit": 0}).status_code == 400


def test_patch_changes_only_what_it_names_over_rest_and_grpc(gateway, grpc_stubs):
    pb, pb_grpc = grpc_stubs
    from google.protobuf import field_mask_pb2
    from switchboard.v1 import routing_pb2 as rpb

    key = gateway.setup_basic()
    admin = gateway.admin
    patched = admin("PATCH", "/providers/mock", {"settings": {"health_check_interval_ms": "60000"}}, expect=200).json()
    assert (patched["base_url"], patched["has_api_key"], patched["settings"]) == \
        (gateway.mock_url + "/v1", True, {"health_check_interval_ms": "60000"}), "the rest, credential included, stays"
    assert admin("PATCH", "/providers/mock", {"settings": {"health_check_interval_ms": None}}, expect=200).json()["settings"] == {}
    refused = admin("PATCH", "/providers/mock", {"base_url": 7}, expect=400).json()["error"]["message"]
    assert "invalid type" in refused
    assert "unknown field" in admin("PATCH", "/providers/mock", {"colour": "red"}, expect=400).text
    admin("PATCH", "/providers/ghost", {"base_url": "http://x"}, expect=404)

    route = admin("PATCH", "/routes/gpt-test", {"strategy": "round_robin", "retry": {"max_attempts": 3}},
                  expect=200).json()
    assert (route["strategy"], route["retry"]["max_attempts"], route["targets"][0]["provider"]) == \
        ("round_robin", 3, "mock")
    assert "retry" not in admin("PATCH", "/routes/gpt-test", {"retry": None}, expect=200).json()
    gateway.wait_synced()
    assert gateway.openai(key).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "still served"}]).choices[0].message.content

    stub = pb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}"))
    auth = [("authorization", f"Bearer {gateway.admin_token}")]
    provider = stub.PatchProvider(pb.PatchProviderRequest(
        provider=pb.ProviderSpec(name="mock", settings={"health_check_interval_ms": "30000"}),
        update_mask=field_mask_pb2.FieldMask(paths=["settings"])), metadata=auth)
    assert (dict(provider.settings), provider.base_url, provider.has_api_key) == \
        ({"health_check_interval_ms": "30000"}, gateway.mock_url + "/v1", True)
    route = stub.PatchRoute(pb.PatchRouteRequest(
        route=rpb.Route(model="gpt-test", strategy="priority"),
        update_mask=field_mask_pb2.FieldMask(paths=["strategy"])), metadata=auth)
    assert (route.strategy, route.targets[0].model) == ("priority", "gpt-4o-mini")
    with pytest.raises(grpc.RpcError) as error:
        stub.PatchRoute(pb.PatchRouteRequest(route=rpb.Route(model="gpt-test"),
                                             update_mask=field_mask_pb2.FieldMask(paths=["colour"])), metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in error.value.details()

    actions = [e["action"] for e in admin("GET", "/audit", params={"resource": "provider/mock"}, expect=200).json()["rows"]]
    assert actions[:3] == ["provider.update"] * 3, "a PATCH is audited as an update"


def test_the_control_plane_root_says_where_things_are(gateway):
    import httpx

    root = httpx.get(gateway.admin_url.removesuffix("/api/v1") + "/").json()
    assert root["admin_api"].startswith("/api/v1") and root["health"] == "/healthz"
