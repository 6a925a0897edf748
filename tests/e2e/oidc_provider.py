"""A small OpenID Connect provider on loopback, for the console's sign-in
test: discovery, an authorization endpoint that signs in whoever `user` says
(no login page), a token endpoint that checks the PKCE verifier, and a JWKS.
ID tokens are RS256, with the claims `user` gives."""

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class Provider:
    def __init__(self, client_id):
        self.client_id = client_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.user = {"sub": "alice"}
        self.codes = {}
        self.exchanges = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()

    def jwks(self):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": "idp-1", "use": "sig", "alg": "RS256"}]}

    def id_token(self, nonce):
        now = int(time.time())
        claims = {"iss": self.url, "aud": self.client_id, "iat": now, "exp": now + 300, "nonce": nonce, **self.user}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "idp-1"})

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body=None, headers=()):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    return self.answer(200, {"issuer": provider.url, "authorization_endpoint": provider.url + "/authorize",
                                             "token_endpoint": provider.url + "/token",
                                             "jwks_uri": provider.url + "/jwks"})
                if url.path == "/jwks":
                    return self.answer(200, provider.jwks())
                if url.path == "/authorize":
                    assert query["client_id"] == provider.client_id and query["response_type"] == "code"
                    assert query["code_challenge_method"] == "S256"
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = query
                    back = query["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": query["state"]})
                    return self.answer(302, headers=[("location", back)])
                self.answer(404, {"error": "not_found"})

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                asked = provider.codes.pop(form.get("code"), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                provider.exchanges.append(form)
                if (asked is None or form.get("grant_type") != "authorization_code"
                        or form.get("redirect_uri") != asked["redirect_uri"] or challenge != asked["code_challenge"]):
                    return self.answer(400, {"error": "invalid_grant"})
                self.answer(200, {"access_token": "at-" + secrets.token_hex(8), "token_type": "Bearer",
                                  "id_token": provider.id_token(asked["nonce"])})

        return Handler
