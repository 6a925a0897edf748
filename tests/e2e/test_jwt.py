"""JWT callers: an identity provider's tokens, verified by the data plane with
keys the control plane fetched from the provider's JWKS, mapped to users and
teams, and refused (401, in OpenAI's format, never echoing the token) when
anything about them is off."""

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import json_server, secret, wait_until

pytestmark = pytest.mark.timeout(120)

AUDIENCE = "switchboard"


class IdentityProvider:
    """Signing keys and a JWKS endpoint on loopback, as an IdP publishes them."""

    def __init__(self):
        self.iss = "https://idp.example.test/"
        self.keys = {}  # kid -> private key
        self.published = []  # kids served in the JWKS
        self.failing = False
        self.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()))
        self.server, url = json_server(self.key_set)
        self.url = url + "/.well-known/jwks.json"

    def key_set(self, _method, _body):
        if self.failing:
            return 500, None
        return 200, {"keys": [self.jwk(kid) for kid in self.published]}

    def add_key(self, kid, key):
        self.keys[kid] = key
        self.published.append(kid)

    def jwk(self, kid):
        key = self.keys[kid]
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "use": "sig"}

    def public_pem(self, kid):
        return self.keys[kid].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def token(self, sub="alice@idp", kid="rsa-1", key=None, headers=None, **claims):
        key = key or self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = int(time.time())
        payload = {"iss": self.iss, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return secret(jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, **(headers or {})}))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header, payload, signature=b""):
    """A token assembled by hand, for what no honest library would sign."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return secret(signing_input + "." + b64(signature))


@pytest.fixture
def idp():
    provider = IdentityProvider()
    yield provider
    provider.close()


def chat(gateway, token, model="gpt-test"):
    return httpx.post(f"{gateway.dp_url}/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {token}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def refused(gateway, token, why):
    response = chat(gateway, token)
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_token" and why in error["message"], error
    assert token not in response.text and token.split(".")[1] not in response.text


def test_tokens_are_verified_mapped_to_users_and_teams_and_accounted(gateway, idp):
    gateway.setup_basic()
    gateway.admin("POST", "/routes", {"model": "gpt-other", "targets": [{"provider": "mock", "model": "m"}]},
                  expect=201)
    team = gateway.admin("POST", "/teams", {"name": "blue", "models": ["gpt-test"]}, expect=201).json()
    alice = gateway.admin("POST", "/users", {"name": "Alice", "external_id": "alice@idp", "team_id": team["id"]},
                          expect=201).json()
    assert alice["external_id"] == "alice@idp" and alice["models"] == []
    issuer = gateway.admin("POST", "/jwt-issuers", {
        "name": "idp", "issuer": idp.iss, "audiences": [AUDIENCE], "algorithms": ["RS256", "ES256"],
        "jwks_url": idp.url, "claims": {"team": "org.team", "models": "llm_models"},
    }, expect=201).json()
    assert issuer["key_ids"] == ["rsa-1", "ec-1"] and issuer["claims"]["user"] == "sub"
    assert issuer["jwks_fetched_at"] and issuer["jwks_error"] is None and issuer["leeway_seconds"] == 30
    gateway.wait_synced()

    # The official SDK with a token as its API key; the team's model list applies.
    client = gateway.openai(idp.token())
    reply = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content == "Echo: hello"
    assert [m.id for m in client.models.list()] == ["gpt-test"]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-other", messages=[{"role": "user", "content": "x"}])
    assert chat(gateway, idp.token(kid="ec-1")).status_code == 200
    # A models claim narrows further: the team allows gpt-test, the token only gpt-other.
    assert chat(gateway, idp.token(llm_models=["gpt-other"])).status_code == 403
    # A known user keeps the team the admins gave it, whatever the token claims.
    assert chat(gateway, idp.token(org={"team": "nonexistent"})).status_code == 401

    wait_until(lambda: gateway.usage(user_id=alice["id"])["requests"] == 2, what="token usage shipped")
    rows = gateway.usage(group_by="user,team")["rows"]
    assert {"user_id": alice["id"], "team_id": team["id"]}.items() <= rows[0].items()

    # Everything that must be refused, refused in general terms.
    now = int(time.time())
    refused(gateway, idp.token(exp=now - 120), "expired")
    refused(gateway, idp.token(nbf=now + 120), "not valid yet")
    refused(gateway, idp.token(aud="someone-else"), "audience")
    refused(gateway, idp.token(iss="https://evil.example/"), "issuer is not trusted")
    refused(gateway, idp.token(exp=None), "lacks a required claim")
    refused(gateway, idp.token(sub="mallory@idp"), "no user is registered")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(gateway, idp.token(kid="rsa-1", key=stranger), "signature does not verify")
    refused(gateway, idp.token(kid="nobody", key=stranger), "not one of its issuer's keys")
    good = idp.token()
    header, payload, signature = good.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["sub"] = "root"
    refused(gateway, secret(f"{header}.{b64(json.dumps(tampered).encode())}.{signature}"), "signature")
    claims = {"iss": idp.iss, "aud": AUDIENCE, "sub": "alice@idp", "exp": now + 300}
    refused(gateway, forged({"alg": "none", "kid": "rsa-1"}, claims), "malformed")
    # The classic confusion: HMAC keyed with the issuer's public key.
    pem = idp.public_pem("rsa-1").encode()
    signing_input = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()) + "." + b64(json.dumps(claims).encode())
    hs = secret(signing_input + "." + b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()))
    refused(gateway, hs, "algorithm is not allowed")
    # ES256 with an RSA key's kid: the key does not fit the algorithm.
    refused(gateway, idp.token(kid="rsa-1", key=idp.keys["ec-1"]), "not one of its issuer's keys")

    # With auto-created users, a new subject is admitted and becomes a user of its token's team.
    update = {**{k: issuer[k] for k in ("issuer", "audiences", "algorithms", "jwks_url", "claims")},
              "auto_create_users": True}
    assert gateway.admin("PUT", "/jwt-issuers/idp", update, expect=200).json()["auto_create_users"] is True
    gateway.wait_synced()
    refused(gateway, idp.token(sub="carol@idp", org={"team": "green"}), "team this gateway does not know")
    assert chat(gateway, idp.token(sub="bob@idp", org={"team": "blue"})).status_code == 200

    def bob():
        return next((u for u in gateway.admin("GET", "/users", expect=200).json() if u["external_id"] == "bob@idp"), None)

    wait_until(lambda: bob() is not None, what="auto-created user")
    assert bob()["team_id"] == team["id"] and bob()["name"] == "bob@idp"
    wait_until(lambda: gateway.usage(user_id=bob()["id"])["requests"] == 1, what="bob's usage")
    audit = gateway.admin("GET", "/audit", params={"resource": f"user/{bob()['id']}"}, expect=200).json()["rows"]
    assert [(e["action"], e["actor"]) for e in audit] == [("user.create", "jwt_issuer/idp")]
    # Seen again (and on the user's own snapshot entry now): still one user.
    gateway.wait_synced()
    assert chat(gateway, idp.token(sub="bob@idp")).status_code == 200
    wait_until(lambda: gateway.usage(user_id=bob()["id"])["requests"] == 2, what="bob's second request")
    assert sum(u["external_id"] == "bob@idp" for u in gateway.admin("GET", "/users", expect=200).json()) == 1

    gateway.admin("DELETE", "/jwt-issuers/idp", expect=204)
    gateway.wait_synced()
    refused(gateway, idp.token(), "issuer is not trusted")


def test_key_sets_are_refreshed_and_survive_an_unreachable_provider(gateway, idp):
    gateway.cp.stop()
    gateway.cp = gateway.start_control_plane(extra=("--jwks-refresh-ms", "300"))
    gateway.setup_basic()
    gateway.admin("POST", "/users", {"name": "Alice", "external_id": "alice@idp"}, expect=201)
    gateway.admin("POST", "/jwt-issuers", {"name": "idp", "issuer": idp.iss, "audiences": [AUDIENCE],
                                            "algorithms": ["RS256"], "jwks_url": idp.url}, expect=201)
    gateway.wait_synced()
    assert chat(gateway, idp.token()).status_code == 200

    # The provider rotates: a new key is published, then the old one withdrawn.
    idp.add_key("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    wait_until(lambda: chat(gateway, idp.token(kid="rsa-2")).status_code == 200, what="new key in use")
    idp.published.remove("rsa-1")
    wait_until(lambda: chat(gateway, idp.token(kid="rsa-1")).status_code == 401, what="old key withdrawn")
    assert gateway.admin("GET", "/jwt-issuers/idp", expect=200).json()["key_ids"] == ["ec-1", "rsa-2"]

    # The provider fails: the keys fetched before stay in use, and the failure is shown.
    idp.failing = True
    wait_until(lambda: gateway.admin("GET", "/jwt-issuers/idp", expect=200).json()["jwks_error"] == "it answered HTTP 500",
               what="refresh failure recorded")
    assert chat(gateway, idp.token(kid="rsa-2")).status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{gateway.cp_http_port}/metrics").text
    assert "switchboard_jwks_fetch_failures_total" in metrics


def test_issuers_are_checked_when_written(gateway, idp):
    base = {"name": "idp", "issuer": idp.iss, "audiences": [AUDIENCE], "algorithms": ["RS256"]}

    def refusal(body, status=400):
        return gateway.admin("POST", "/jwt-issuers", body, expect=status).json()["error"]["message"]

    assert "jwks_url, public_keys_pem" in refusal(base)
    assert "jwks_url, public_keys_pem" in refusal({**base, "jwks_url": idp.url, "public_keys_pem": [idp.public_pem("rsa-1")]})
    assert "HS256" in refusal({**base, "algorithms": ["HS256"], "jwks_url": idp.url})
    assert "algorithms[0]" in refusal({**base, "algorithms": ["none"], "jwks_url": idp.url})
    assert "audiences" in refusal({**base, "audiences": [], "jwks_url": idp.url})
    assert "https" in refusal({**base, "jwks_url": "http://idp.example.test/jwks.json"})
    assert "link-local" in refusal({**base, "jwks_url": "https://169.254.169.254/jwks"})
    assert "cannot fetch a key set" in refusal({**base, "jwks_url": "http://127.0.0.1:9/jwks"})
    assert "public_keys_pem[0]" in refusal({**base, "public_keys_pem": ["not a key"]})
    assert "leeway_seconds" in refusal({**base, "jwks_url": idp.url, "leeway_seconds": 3600})
    assert "claims.team" in refusal({**base, "jwks_url": idp.url, "claims": {"team": "org..team"}})
    assert "unknown field" in refusal({**base, "jwks_url": idp.url, "secret": "x"})

    # PEM keys work alike, and a second issuer may not reuse the first one's iss.
    gateway.setup_basic()
    gateway.admin("POST", "/users", {"name": "Alice", "external_id": "alice@idp"}, expect=201)
    created = gateway.admin("POST", "/jwt-issuers", {**base, "public_keys_pem": [idp.public_pem("rsa-1")]},
                            expect=201).json()
    assert created["jwks_url"] is None and created["key_ids"] == []
    assert "already exists" in refusal({**base, "name": "idp2", "public_keys_pem": [idp.public_pem("rsa-1")]}, 409)
    gateway.wait_synced()
    assert chat(gateway, idp.token()).status_code == 200
    assert chat(gateway, idp.token(kid="ec-1")).status_code == 401
    assert gateway.admin("GET", "/jwt-issuers", expect=200).json()[0]["name"] == "idp"


def test_issuers_over_grpc(gateway, grpc_stubs, idp):
    import grpc

    pb, pb_grpc = grpc_stubs
    admin = pb_grpc.AdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}"))
    auth = [("authorization", f"Bearer {gateway.admin_token}")]
    spec = pb.JwtIssuerSpec(name="idp", issuer=idp.iss, audiences=[AUDIENCE], algorithms=["ES256"],
                            jwks_url=idp.url, claims=pb.JwtClaims(team="team"), auto_create_users=True)
    created = admin.CreateJwtIssuer(spec, metadata=auth)
    assert (list(created.key_ids), created.claims.user, created.leeway_seconds) == (["rsa-1", "ec-1"], "sub", 30)
    with pytest.raises(grpc.RpcError) as error:
        admin.CreateJwtIssuer(pb.JwtIssuerSpec(name="bad", issuer="x", audiences=["a"], algorithms=["HS512"],
                                               jwks_url=idp.url), metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "algorithms[0]" in error.value.details()
    spec.leeway_seconds = 5
    assert admin.UpdateJwtIssuer(spec, metadata=auth).leeway_seconds == 5
    assert [i.name for i in admin.ListJwtIssuers(pb.ListJwtIssuersRequest(), metadata=auth).issuers] == ["idp"]
    team = admin.CreateTeam(pb.CreateTeamRequest(name="red", models=["gpt-test"]), metadata=auth)
    user = admin.CreateUser(pb.CreateUserRequest(name="Dan", external_id="dan@idp", models=["gpt-test"]), metadata=auth)
    assert (list(team.models), user.external_id) == (["gpt-test"], "dan@idp")
    assert admin.DeleteJwtIssuer(pb.DeleteJwtIssuerRequest(name="idp"), metadata=auth).deleted
    with pytest.raises(grpc.RpcError) as error:
        admin.GetJwtIssuer(pb.GetJwtIssuerRequest(name="idp"), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
