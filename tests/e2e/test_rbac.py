"""Admin principals and their roles, walked over every REST route and every
gRPC method: `admin` reaches everything, `viewer` reads everything and writes
nothing, `team_admin` manages its own team's users, keys and usage and reads
the routes on offer. A denial is 403 `permission_denied` (gRPC
PERMISSION_DENIED); an allowed call must succeed, and an allowed write is in
the audit log under the caller's name and the request's id."""

import re
import secrets

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import MOCK_KEY, ROOT, wait_until

pytestmark = pytest.mark.timeout(180)

ROLES = ("viewer", "team_admin", "admin")
EVERYONE = set(ROLES)
READERS = {"viewer", "admin"}
TEAM = {"team_admin", "admin"}
ADMIN = {"admin"}


def fresh(prefix):
    return f"{prefix}-{secrets.token_hex(4)}"


class World:
    """Two teams with a user and a key each, a JWT issuer, and one admin principal per role."""

    def __init__(self, gateway):
        self.gw = gateway
        gateway.setup_basic()
        self.team_a = self.make("POST", "/teams", {"name": "team-a", "models": ["gpt-test"]})["id"]
        self.team_b = self.make("POST", "/teams", {"name": "team-b"})["id"]
        self.user_a = self.new_user(self.team_a)
        self.user_b = self.new_user(self.team_b)
        self.key_a = self.new_key(self.team_a)
        self.key_b = self.new_key(self.team_b, user_id=self.user_b)
        pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.issuer_body = {"issuer": "https://idp.example.test/", "audiences": ["sb"], "algorithms": ["ES256"],
                            "public_keys_pem": [pem]}
        self.make("POST", "/jwt-issuers", {"name": "idp", **self.issuer_body})
        self.tokens = {"admin": gateway.admin_token}
        self.admin_ids = {}
        for role in ("admin", "team_admin", "viewer"):
            body = {"name": f"{role} principal", "role": role}
            if role == "team_admin":
                body["team_id"] = self.team_a
            created = self.make("POST", "/admins", body)
            assert created["token"].startswith("sbadm_") and created["role"] == role
            self.admin_ids[role] = created["id"]
            if role != "admin":
                self.tokens[role] = created["token"]
        # The admin role is walked with an admin principal, not the bootstrap token.
        self.tokens["admin"] = self.make("POST", "/admins", {"name": "second admin", "role": "admin"})["token"]

    def make(self, method, path, body=None):
        response = self.gw.admin(method, path, body)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def new_user(self, team):
        return self.make("POST", "/users", {"name": fresh("user"), "team_id": team})["id"]

    def new_key(self, team, **extra):
        models = ["gpt-test"] if team == self.team_a else []
        return self.make("POST", "/keys", {"name": fresh("key"), "team_id": team, "models": models, **extra})["id"]

    def new_provider(self):
        name = fresh("prov")
        self.make("POST", "/providers", self.provider_body(name))
        return name

    def provider_body(self, name):
        return {"name": name, "kind": "openai_compatible", "base_url": self.gw.mock_url + "/v1", "api_key": MOCK_KEY}

    def new_route(self):
        model = fresh("route")
        self.make("POST", "/routes", self.route_body(model))
        return model

    def route_body(self, model):
        return {"model": model, "targets": [{"provider": "mock", "model": "m"}]}

    def new_issuer(self):
        name = fresh("idp")
        self.make("POST", "/jwt-issuers", {**self.issuer_body, "name": name, "issuer": f"https://{name}.test/"})
        return name


def rest_rows(w):
    """(method, documented path, allowed roles, a function giving a fresh (path, body) per attempt)."""
    return [
        ("GET", "/providers", READERS, lambda: ("/providers", None)),
        ("POST", "/providers", ADMIN, lambda: ("/providers", w.provider_body(fresh("prov")))),
        ("GET", "/providers/{name}", READERS, lambda: ("/providers/mock", None)),
        ("PUT", "/providers/{name}", ADMIN, lambda: (f"/providers/{(n := w.new_provider())}", w.provider_body(n))),
        ("DELETE", "/providers/{name}", ADMIN, lambda: (f"/providers/{w.new_provider()}", None)),
        ("GET", "/routes", EVERYONE, lambda: ("/routes", None)),
        ("POST", "/routes", ADMIN, lambda: ("/routes", w.route_body(fresh("route")))),
        ("GET", "/routes/{model}", EVERYONE, lambda: ("/routes/gpt-test", None)),
        ("PUT", "/routes/{model}", ADMIN, lambda: (f"/routes/{(m := w.new_route())}", w.route_body(m))),
        ("DELETE", "/routes/{model}", ADMIN, lambda: (f"/routes/{w.new_route()}", None)),
        ("GET", "/teams", EVERYONE, lambda: ("/teams", None)),
        ("POST", "/teams", ADMIN, lambda: ("/teams", {"name": fresh("team")})),
        ("GET", "/teams/{id}", EVERYONE, lambda: (f"/teams/{w.team_a}", None)),
        ("GET", "/teams/{id}", READERS, lambda: (f"/teams/{w.team_b}", None)),
        ("DELETE", "/teams/{id}", ADMIN, lambda: (f"/teams/{w.make('POST', '/teams', {'name': fresh('t')})['id']}", None)),
        ("GET", "/users", EVERYONE, lambda: ("/users", None)),
        ("POST", "/users", TEAM, lambda: ("/users", {"name": fresh("u"), "team_id": w.team_a})),
        ("POST", "/users", ADMIN, lambda: ("/users", {"name": fresh("u"), "team_id": w.team_b})),
        ("GET", "/users/{id}", EVERYONE, lambda: (f"/users/{w.user_a}", None)),
        ("GET", "/users/{id}", READERS, lambda: (f"/users/{w.user_b}", None)),
        ("DELETE", "/users/{id}", TEAM, lambda: (f"/users/{w.new_user(w.team_a)}", None)),
        ("DELETE", "/users/{id}", ADMIN, lambda: (f"/users/{w.new_user(w.team_b)}", None)),
        ("GET", "/keys", EVERYONE, lambda: ("/keys", None)),
        ("POST", "/keys", TEAM, lambda: ("/keys", {"name": fresh("k"), "team_id": w.team_a, "models": ["gpt-test"]})),
        ("POST", "/keys", TEAM, lambda: ("/keys", {"name": fresh("k"), "models": ["gpt-test"]})),
        ("POST", "/keys", ADMIN, lambda: ("/keys", {"name": fresh("k"), "team_id": w.team_b})),
        ("POST", "/keys", ADMIN, lambda: ("/keys", {"name": fresh("k"), "user_id": w.user_b})),
        ("GET", "/keys/{id}", EVERYONE, lambda: (f"/keys/{w.key_a}", None)),
        ("GET", "/keys/{id}", READERS, lambda: (f"/keys/{w.key_b}", None)),
        ("POST", "/keys/{id}/rotate", TEAM, lambda: (f"/keys/{w.new_key(w.team_a)}/rotate", {})),
        ("POST", "/keys/{id}/rotate", ADMIN, lambda: (f"/keys/{w.new_key(w.team_b)}/rotate", {})),
        ("DELETE", "/keys/{id}", TEAM, lambda: (f"/keys/{w.new_key(w.team_a)}", None)),
        ("DELETE", "/keys/{id}", ADMIN, lambda: (f"/keys/{w.new_key(w.team_b)}", None)),
        ("PATCH", "/teams/{id}", ADMIN, lambda: (f"/teams/{w.team_b}", {"limits": {"rpm": 1000}})),
        ("PATCH", "/users/{id}", TEAM, lambda: (f"/users/{w.user_a}", {"limits": {"rpm": 100}})),
        ("PATCH", "/users/{id}", ADMIN, lambda: (f"/users/{w.user_b}", {"limits": {"tpm": 100}})),
        ("PATCH", "/keys/{id}", TEAM, lambda: (f"/keys/{w.key_a}", {"limits": {"rpm": 10}})),
        ("PATCH", "/keys/{id}", ADMIN, lambda: (f"/keys/{w.key_b}", {"limits": {"max_requests": 10}})),
        ("GET", "/prices", EVERYONE, lambda: ("/prices", None)),
        ("PUT", "/prices/{model}", ADMIN, lambda: (f"/prices/{fresh('m')}",
                                                   {"input_per_million": "1.5", "output_per_million": "2"})),
        ("GET", "/usage", EVERYONE, lambda: ("/usage", None)),
        ("GET", "/usage", READERS, lambda: (f"/usage?team_id={w.team_b}", None)),
        ("GET", "/usage/records", EVERYONE, lambda: ("/usage/records", None)),
        ("GET", "/usage/records", READERS, lambda: (f"/usage/records?team_id={w.team_b}", None)),
        ("GET", "/dataplanes", READERS, lambda: ("/dataplanes", None)),
        ("GET", "/cluster", READERS, lambda: ("/cluster", None)),
        ("PATCH", "/providers/{name}", ADMIN, lambda: (f"/providers/{w.new_provider()}", {"settings": {}})),
        ("PATCH", "/routes/{model}", ADMIN, lambda: (f"/routes/{w.new_route()}", {"strategy": "priority"})),
        ("GET", "/settings", READERS, lambda: ("/settings", None)),
        ("PATCH", "/settings", ADMIN, lambda: ("/settings", {"spend_interval_ms": 400})),
        ("POST", "/cache/purge", ADMIN, lambda: ("/cache/purge", {"route": "gpt-test"})),
        ("GET", "/audit", READERS, lambda: ("/audit", None)),
        ("GET", "/whoami", EVERYONE, lambda: ("/whoami", None)),
        ("GET", "/jwt-issuers", READERS, lambda: ("/jwt-issuers", None)),
        ("POST", "/jwt-issuers", ADMIN, lambda: ("/jwt-issuers", {**w.issuer_body, "name": (n := fresh("idp")),
                                                                 "issuer": f"https://{n}.test/"})),
        ("GET", "/jwt-issuers/{name}", READERS, lambda: ("/jwt-issuers/idp", None)),
        ("PUT", "/jwt-issuers/{name}", ADMIN, lambda: (f"/jwt-issuers/{(n := w.new_issuer())}",
                                                       {**w.issuer_body, "issuer": f"https://{n}.test/"})),
        ("DELETE", "/jwt-issuers/{name}", ADMIN, lambda: (f"/jwt-issuers/{w.new_issuer()}", None)),
        ("GET", "/admins", READERS, lambda: ("/admins", None)),
        ("POST", "/admins", ADMIN, lambda: ("/admins", {"name": fresh("a"), "role": "viewer"})),
        ("GET", "/admins/{id}", READERS, lambda: (f"/admins/{w.admin_ids['viewer']}", None)),
        ("DELETE", "/admins/{id}", ADMIN, lambda: (f"/admins/{w.make('POST', '/admins', {'name': 'x', 'role': 'viewer'})['id']}", None)),
    ]


def documented_routes():
    """Every `METHOD /path` of the REST table in docs/api.md, paths as documented."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## Control plane REST")[1].split("## Control plane gRPC")[0]
    found = set()
    for cell in re.findall(r"^\| (`[^|]*)\|", section, re.M):
        for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?]*)", cell):
            found.add((method, path))
    return found


def openapi_routes(gateway):
    """Every operation of the OpenAPI document, paths relative to /api/v1."""
    doc = httpx.get(f"{gateway.admin_url}/openapi.json").json()
    return {(method.upper(), path.removeprefix("/api/v1")) for path, item in doc["paths"].items() for method in item}


def test_every_rest_route_for_every_role(gateway):
    w = World(gateway)
    rows = rest_rows(w)
    walked = {(m, p) for m, p, _, _ in rows}
    assert documented_routes() == walked, "the walk must cover every route docs/api.md lists"
    assert openapi_routes(gateway) == walked, "the walk must cover every operation of the OpenAPI document"
    actor_of = {role: f"admin/{w.admin_ids[role]}" for role in ("viewer", "team_admin")}
    for method, documented, allowed, make in rows:
        for role in ROLES:
            path, body = make()
            response = httpx.request(method, gateway.admin_url + path, json=body, timeout=10,
                                     headers={"authorization": f"Bearer {w.tokens[role]}"})
            where = f"{role} {method} {path}: {response.status_code} {response.text[:200]}"
            if role in allowed:
                assert response.status_code < 300, where
                if method != "GET":
                    # Every write is audited: by whom, and under the id its answer carried.
                    request_id = response.headers["x-request-id"]
                    rows_now = gateway.admin("GET", "/audit", params={"limit": 20}, expect=200).json()["rows"]
                    entry = next((r for r in rows_now if r["request_id"] == request_id), None)
                    assert entry is not None, f"{where}: not in the audit log"
                    if role in actor_of:
                        assert entry["actor"] == actor_of[role], where
            else:
                assert response.status_code == 403, where
                assert response.json()["error"]["code"] == "permission_denied", where


def test_team_admins_stay_in_their_team_and_cannot_escalate(gateway):
    w = World(gateway)
    ta = w.tokens["team_admin"]

    def as_ta(method, path, body=None, params=None):
        return httpx.request(method, gateway.admin_url + path, json=body, params=params, timeout=10,
                             headers={"authorization": f"Bearer {ta}"})

    # What a team admin lists is its team's only.
    assert [t["id"] for t in as_ta("GET", "/teams").json()] == [w.team_a]
    assert {u["team_id"] for u in as_ta("GET", "/users").json()} == {w.team_a}
    assert {k["team_id"] for k in as_ta("GET", "/keys").json()} == {w.team_a}
    # Its users and keys land in its team, whether it says so or not.
    user = as_ta("POST", "/users", {"name": "Tess"}).json()
    assert user["team_id"] == w.team_a
    # No key reaches beyond the team: not another model, not "every model", not another team's user.
    refusal = as_ta("POST", "/keys", {"name": "k", "models": ["gpt-other"]})
    assert refusal.status_code == 400 and "models[0]" in refusal.json()["error"]["message"]
    refusal = as_ta("POST", "/keys", {"name": "k"})
    assert refusal.status_code == 400 and "models" in refusal.json()["error"]["message"]
    assert as_ta("POST", "/keys", {"name": "k", "user_id": w.user_b, "models": ["gpt-test"]}).status_code == 403
    assert as_ta("POST", "/admins", {"name": "me too", "role": "admin"}).status_code == 403
    key = as_ta("POST", "/keys", {"name": "mine", "user_id": user["id"], "models": ["gpt-test"]})
    assert key.status_code == 201 and key.json()["team_id"] == w.team_a

    # The same holds for admins: a key never names models its team or user may not call.
    refusal = gateway.admin("POST", "/keys", {"name": "k", "team_id": w.team_a, "models": ["gpt-test", "x"]},
                            expect=400).json()
    assert "models[1]" in refusal["error"]["message"]

    # Its key works on the data plane; its usage view is its team's.
    gateway.wait_synced()
    client = gateway.openai(key.json()["key"])
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    other = gateway.admin("POST", "/keys", {"name": "outside"}, expect=201).json()["key"]
    gateway.wait_synced()
    gateway.openai(other).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    wait_until(lambda: gateway.usage()["requests"] == 2, what="usage shipped")
    assert as_ta("GET", "/usage").json()["requests"] == 1

    # Its writes are audited under its own name; deleting the principal ends its token at once.
    entry = gateway.admin("GET", "/audit", params={"resource": f"user/{user['id']}"}, expect=200).json()["rows"][0]
    assert entry["actor"] == f"admin/{w.admin_ids['team_admin']}"
    gateway.admin("DELETE", f"/admins/{w.admin_ids['team_admin']}", expect=204)
    assert as_ta("GET", "/users").status_code == 401
    assert ta not in gateway.admin("GET", "/audit", expect=200).text

    # A principal is checked when created.
    for body, field in (({"name": "x", "role": "root"}, "role"), ({"name": "x", "role": "team_admin"}, "team_id"),
                        ({"name": "x", "role": "viewer", "team_id": w.team_a}, "team_id")):
        response = gateway.admin("POST", "/admins", body)
        assert response.status_code in (400, 422) and field in response.text, response.text


GRPC_ROWS = {
    # method: (allowed roles, request factory given (pb, rpb, world))
    "CreateProvider": (ADMIN, lambda pb, rpb, w: pb.ProviderSpec(name="", kind="openai", base_url="http://x")),
    "ListProviders": (READERS, lambda pb, rpb, w: pb.ListProvidersRequest()),
    "GetProvider": (READERS, lambda pb, rpb, w: pb.GetProviderRequest(name="mock")),
    "UpdateProvider": (ADMIN, lambda pb, rpb, w: pb.ProviderSpec(name="ghost", kind="openai", base_url="http://x")),
    "DeleteProvider": (ADMIN, lambda pb, rpb, w: pb.DeleteProviderRequest(name="ghost")),
    "CreateRoute": (ADMIN, lambda pb, rpb, w: rpb.Route(model="")),
    "ListRoutes": (EVERYONE, lambda pb, rpb, w: pb.ListRoutesRequest()),
    "GetRoute": (EVERYONE, lambda pb, rpb, w: pb.GetRouteRequest(model="gpt-test")),
    "UpdateRoute": (ADMIN, lambda pb, rpb, w: rpb.Route(model="ghost")),
    "DeleteRoute": (ADMIN, lambda pb, rpb, w: pb.DeleteRouteRequest(model="ghost")),
    "CreateTeam": (ADMIN, lambda pb, rpb, w: pb.CreateTeamRequest(name="")),
    "ListTeams": (EVERYONE, lambda pb, rpb, w: pb.ListTeamsRequest()),
    "GetTeam": (READERS, lambda pb, rpb, w: pb.GetTeamRequest(id=w.team_b)),
    "DeleteTeam": (ADMIN, lambda pb, rpb, w: pb.DeleteTeamRequest(id="ghost")),
    "CreateUser": (ADMIN, lambda pb, rpb, w: pb.CreateUserRequest(name="", team_id=w.team_b)),
    "ListUsers": (EVERYONE, lambda pb, rpb, w: pb.ListUsersRequest()),
    "GetUser": (READERS, lambda pb, rpb, w: pb.GetUserRequest(id=w.user_b)),
    "DeleteUser": (ADMIN, lambda pb, rpb, w: pb.DeleteUserRequest(id=w.user_b)),
    "CreateJwtIssuer": (ADMIN, lambda pb, rpb, w: pb.JwtIssuerSpec(name="")),
    "ListJwtIssuers": (READERS, lambda pb, rpb, w: pb.ListJwtIssuersRequest()),
    "GetJwtIssuer": (READERS, lambda pb, rpb, w: pb.GetJwtIssuerRequest(name="idp")),
    "UpdateJwtIssuer": (ADMIN, lambda pb, rpb, w: pb.JwtIssuerSpec(name="ghost")),
    "DeleteJwtIssuer": (ADMIN, lambda pb, rpb, w: pb.DeleteJwtIssuerRequest(name="ghost")),
    "CreateKey": (ADMIN, lambda pb, rpb, w: pb.CreateKeyRequest(name="k", team_id=w.team_b)),
    "ListKeys": (EVERYONE, lambda pb, rpb, w: pb.ListKeysRequest()),
    "GetKey": (READERS, lambda pb, rpb, w: pb.GetKeyRequest(id=w.key_b)),
    "RevokeKey": (ADMIN, lambda pb, rpb, w: pb.RevokeKeyRequest(id=w.new_key(w.team_b))),
    "RotateKey": (ADMIN, lambda pb, rpb, w: pb.RotateKeyRequest(id=w.key_b)),
    "CreateAdmin": (ADMIN, lambda pb, rpb, w: pb.CreateAdminRequest(name="", role="viewer")),
    "ListAdmins": (READERS, lambda pb, rpb, w: pb.ListAdminsRequest()),
    "GetAdmin": (READERS, lambda pb, rpb, w: pb.GetAdminRequest(id=w.admin_ids["viewer"])),
    "DeleteAdmin": (ADMIN, lambda pb, rpb, w: pb.DeleteAdminRequest(id="ghost")),
    "UpdateTeam": (ADMIN, lambda pb, rpb, w: pb.UpdateLimitsRequest(id="ghost")),
    "UpdateUser": (TEAM, lambda pb, rpb, w: pb.UpdateLimitsRequest(id=w.user_a)),
    "UpdateKey": (TEAM, lambda pb, rpb, w: pb.UpdateLimitsRequest(id=w.key_a)),
    "PutPrice": (ADMIN, lambda pb, rpb, w: pb.PriceSpec(model="", input_per_million="1", output_per_million="1")),
    "ListPrices": (EVERYONE, lambda pb, rpb, w: pb.ListPricesRequest()),
    "GetUsage": (READERS, lambda pb, rpb, w: pb.UsageQuery(team_id=w.team_b)),
    "ListUsageRecords": (READERS, lambda pb, rpb, w: pb.UsageQuery(team_id=w.team_b)),
    "ListDataPlanes": (READERS, lambda pb, rpb, w: pb.ListDataPlanesRequest()),
    "GetCluster": (READERS, lambda pb, rpb, w: pb.GetClusterRequest()),
    "PatchProvider": (ADMIN, lambda pb, rpb, w: pb.PatchProviderRequest(provider=pb.ProviderSpec(name="ghost"))),
    "PatchRoute": (ADMIN, lambda pb, rpb, w: pb.PatchRouteRequest(route=rpb.Route(model="ghost"))),
    "GetSettings": (READERS, lambda pb, rpb, w: pb.GetSettingsRequest()),
    "UpdateSettings": (ADMIN, lambda pb, rpb, w: pb.UpdateSettingsRequest(spend_interval_ms=400)),
    "ListAudit": (READERS, lambda pb, rpb, w: pb.AuditQuery()),
    "PurgeCache": (ADMIN, lambda pb, rpb, w: pb.PurgeCacheRequest(everything=True)),
}


def test_every_grpc_method_for_every_role(gateway, grpc_stubs):
    """Each method with a well-formed request that is refused for roles that
    may not make it, before its content is validated; for roles that may, it
    is not refused for lack of rights (it may still be invalid or name nothing)."""
    pb, pb_grpc = grpc_stubs
    from switchboard.v1 import routing_pb2 as rpb

    w = World(gateway)
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["AdminService"].methods}
    assert methods == set(GRPC_ROWS), "the walk must cover every AdminService method"
    stub = pb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}"))
    for method, (allowed, make) in GRPC_ROWS.items():
        for role in ROLES:
            auth = [("authorization", f"Bearer {w.tokens[role]}")]
            try:
                getattr(stub, method)(make(pb, rpb, w), metadata=auth)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            where = f"{role} {method}: {code}"
            if role in allowed:
                assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), where
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, where
    with pytest.raises(grpc.RpcError) as error:
        stub.ListRoutes(pb.ListRoutesRequest(), metadata=[("authorization", "Bearer sbadm_not-a-real-token")])
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
