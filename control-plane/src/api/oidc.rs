//! Console sign-in through the identity provider: OpenID Connect, the
//! authorization code flow with PKCE. The admin's role comes from a claim of
//! the ID token; the browser gets a console session of its own, never the
//! provider's tokens. The flow's state rides in an encrypted cookie, so any
//! replica can finish a sign-in another began.

use crate::access::{Principal, Role};
use crate::config::OidcSettings;
use crate::error::{Error, Result};
use crate::outbound::Outbound;
use crate::service::Admin;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::crypto::Cipher;
use shared::time::now_ms;
use std::sync::Arc;
use std::time::Duration;

const COOKIE: &str = "switchboard_oidc";
/// How long a browser may take at the identity provider.
const FLOW_MS: i64 = 10 * 60 * 1000;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER_BYTES: usize = 1 << 20;

pub struct Oidc {
    settings: OidcSettings,
    admin: Admin,
    cipher: Arc<Cipher>,
    client: Outbound<Full<Bytes>>,
    jwks: crate::jwks::JwksFetcher,
    discovery: tokio::sync::OnceCell<Discovery>,
}

#[derive(Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// A sign-in between its start and the provider's answer.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    verifier: String,
    nonce: String,
    expires_at: i64,
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Oidc {
    pub fn new(settings: OidcSettings, admin: Admin, cipher: Arc<Cipher>) -> Self {
        Oidc {
            settings,
            admin,
            cipher,
            client: crate::outbound::client(),
            jwks: crate::jwks::JwksFetcher::default(),
            discovery: tokio::sync::OnceCell::new(),
        }
    }

    async fn discovery(&self) -> Result<&Discovery> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.settings.issuer.trim_end_matches('/')
                );
                let answer = self.call(hyper::Method::GET, &url, Bytes::new()).await?;
                serde_json::from_slice(&answer).map_err(|e| {
                    Error::Internal(format!("the identity provider's discovery document: {e}"))
                })
            })
            .await
    }

    async fn call(&self, method: hyper::Method, url: &str, form: Bytes) -> Result<Bytes> {
        let mut request = hyper::Request::builder().method(method).uri(url);
        if !form.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request
            .header(header::ACCEPT, "application/json")
            .body(Full::new(form))
            .map_err(|e| Error::Internal(format!("{url}: {e}")))?;
        crate::outbound::fetch(&self.client, request, CALL_TIMEOUT, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Error::Internal(format!("the identity provider at {url}: {e}")))
    }

    /// Sends the browser to the provider, with a fresh state, nonce and PKCE verifier.
    async fn start(&self) -> Result<Response> {
        let discovery = self.discovery().await?;
        let pending = Pending {
            state: shared::keys::random_token(),
            verifier: shared::keys::random_token(),
            nonce: shared::keys::random_token(),
            expires_at: now_ms() + FLOW_MS,
        };
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(pending.verifier.as_bytes()));
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", self.settings.client_id.as_str()),
            ("redirect_uri", self.settings.redirect_url.as_str()),
            ("scope", self.settings.scopes.as_str()),
            ("state", pending.state.as_str()),
            ("nonce", pending.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .map_err(|e| Error::Internal(e.to_string()))?;
        let sealed = self.cipher.encrypt_to_string(
            &serde_json::to_string(&pending).map_err(|e| Error::Internal(e.to_string()))?,
        );
        let separator = if discovery.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut response = Redirect::to(&format!(
            "{}{separator}{query}",
            discovery.authorization_endpoint
        ))
        .into_response();
        let cookie = format!(
            "{COOKIE}={sealed}; Path=/ui/oidc; Max-Age={}; HttpOnly; SameSite=Lax{}",
            FLOW_MS / 1000,
            self.secure()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        Ok(response)
    }

    fn secure(&self) -> &'static str {
        if self.settings.redirect_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        }
    }

    /// The provider's answer: the code is exchanged, the ID token checked,
    /// and the claims become a console session.
    async fn finish(&self, headers: &HeaderMap, callback: Callback) -> Result<String> {
        if let Some(error) = callback.error {
            let detail = callback.error_description.unwrap_or_default();
            return Err(Error::PermissionDenied(format!(
                "the identity provider refused the sign-in: {error} {detail}"
            )));
        }
        let pending = self.pending(headers)?;
        let (Some(code), Some(state)) = (callback.code, callback.state) else {
            return Err(Error::invalid("the identity provider's answer has no code"));
        };
        if state != pending.state {
            return Err(Error::invalid(
                "the sign-in's state does not match: start again",
            ));
        }
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", self.settings.redirect_url.as_str()),
            ("client_id", self.settings.client_id.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if let Some(secret) = &self.settings.client_secret {
            form.push(("client_secret", secret.as_str()));
        }
        let form =
            serde_urlencoded::to_string(&form).map_err(|e| Error::Internal(e.to_string()))?;
        let answer = self
            .call(
                hyper::Method::POST,
                &discovery.token_endpoint,
                Bytes::from(form),
            )
            .await?;
        #[derive(Deserialize)]
        struct Tokens {
            id_token: String,
        }
        let tokens: Tokens = serde_json::from_slice(&answer).map_err(|_| {
            Error::Internal("the identity provider's token answer has no id_token".into())
        })?;
        let claims = self
            .verify(discovery, &tokens.id_token, &pending.nonce)
            .await?;
        let principal = self.principal(&claims).await?;
        self.admin
            .open_session(principal, self.settings.session_hours)
            .await
    }

    fn pending(&self, headers: &HeaderMap) -> Result<Pending> {
        let sealed = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                pair.trim()
                    .strip_prefix(&format!("{COOKIE}="))
                    .map(str::to_owned)
            })
            .ok_or_else(|| Error::invalid("no sign-in in progress in this browser: start again"))?;
        let pending: Pending = self
            .cipher
            .decrypt_string(&sealed)
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .ok_or_else(|| {
                Error::invalid("the sign-in's cookie is not one of ours: start again")
            })?;
        if pending.expires_at < now_ms() {
            return Err(Error::invalid("the sign-in took too long: start again"));
        }
        Ok(pending)
    }

    async fn verify(
        &self,
        discovery: &Discovery,
        id_token: &str,
        nonce: &str,
    ) -> Result<serde_json::Value> {
        let invalid =
            |why: String| Error::PermissionDenied(format!("the ID token is not valid: {why}"));
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| invalid(e.to_string()))?;
        let jwks = self
            .jwks
            .fetch(&discovery.jwks_uri)
            .await
            .map_err(|e| Error::Internal(format!("the identity provider's key set: {e}")))?;
        let (keys, _) = shared::jwt::keys_from_jwks(&jwks).map_err(invalid)?;
        let key = keys
            .iter()
            .find(|k| k.fits(header.alg) && (header.kid.is_none() || k.kid == header.kid))
            .ok_or_else(|| invalid("no key of the provider's key set signed it".into()))?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_issuer(&[&discovery.issuer]);
        validation.set_audience(&[&self.settings.client_id]);
        validation.leeway = 60;
        let claims = jsonwebtoken::decode::<serde_json::Value>(id_token, &key.key, &validation)
            .map_err(|e| invalid(e.to_string()))?
            .claims;
        if claims["nonce"].as_str() != Some(nonce) {
            return Err(invalid("its nonce is not this sign-in's".into()));
        }
        Ok(claims)
    }

    /// The role claim (a role, or a list of them: the strongest counts); a
    /// team admin's team from the team claim (its id or name).
    async fn principal(&self, claims: &serde_json::Value) -> Result<Principal> {
        let subject = claims["sub"]
            .as_str()
            .ok_or_else(|| Error::PermissionDenied("the ID token has no subject".into()))?;
        let named = &claims[&self.settings.role_claim];
        let roles: Vec<Role> = match named {
            serde_json::Value::String(role) => Role::parse(role).into_iter().collect(),
            serde_json::Value::Array(list) => list
                .iter()
                .filter_map(|r| r.as_str().and_then(Role::parse))
                .collect(),
            _ => vec![],
        };
        let role = [Role::Admin, Role::TeamAdmin, Role::Viewer]
            .into_iter()
            .find(|r| roles.contains(r))
            .ok_or_else(|| {
                Error::PermissionDenied(format!(
                    "the identity provider gives you no console role: claim {:?} must be admin, team_admin or viewer",
                    self.settings.role_claim
                ))
            })?;
        let team_id = match role {
            Role::TeamAdmin => {
                let wanted = claims[&self.settings.team_claim].as_str().ok_or_else(|| {
                    Error::PermissionDenied(format!(
                        "a team_admin needs its team in claim {:?}",
                        self.settings.team_claim
                    ))
                })?;
                let teams = self.admin.store().list_teams().await?;
                let team = teams
                    .iter()
                    .find(|t| t.id.as_str() == wanted)
                    .or_else(|| teams.iter().find(|t| t.name == wanted))
                    .ok_or_else(|| {
                        Error::PermissionDenied(format!("team {wanted:?} does not exist"))
                    })?;
                Some(team.id.clone())
            }
            _ => None,
        };
        Ok(Principal {
            actor: format!("oidc/{subject}"),
            role,
            team_id,
        })
    }
}

/// `/ui/oidc/*`. Without `--oidc-issuer` only `config` answers (disabled).
pub fn routes<S: Clone + Send + Sync + 'static>(oidc: Option<Arc<Oidc>>) -> Router<S> {
    Router::new()
        .route("/ui/oidc/config", get(config))
        .route("/ui/oidc/login", get(login))
        .route("/ui/oidc/callback", get(callback))
        .with_state(oidc)
}

async fn config(State(oidc): State<Option<Arc<Oidc>>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "enabled": oidc.is_some() }))
}

async fn login(State(oidc): State<Option<Arc<Oidc>>>) -> Response {
    let Some(oidc) = oidc else {
        return Error::NotFound("sign-in through an identity provider".into()).into_response();
    };
    match oidc.start().await {
        Ok(response) => response,
        Err(error) => back_to_console(&error),
    }
}

async fn callback(
    State(oidc): State<Option<Arc<Oidc>>>,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> Response {
    let Some(oidc) = oidc else {
        return Error::NotFound("sign-in through an identity provider".into()).into_response();
    };
    let mut response = match oidc.finish(&headers, answer).await {
        // A fragment never reaches a server: the token stays in the browser.
        Ok(token) => Redirect::to(&format!("/ui/#session={token}")).into_response(),
        Err(error) => back_to_console(&error),
    };
    let expired = format!(
        "{COOKIE}=; Path=/ui/oidc; Max-Age=0; HttpOnly; SameSite=Lax{}",
        oidc.secure()
    );
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The console's sign-in page, saying what went wrong.
fn back_to_console(error: &Error) -> Response {
    error.log_if_internal();
    let message = serde_urlencoded::to_string([("error", error.to_string())]).unwrap_or_default();
    Redirect::to(&format!("/ui/#{message}")).into_response()
}
