//! Step 2 of the request path: who is calling. Checked against the snapshot only.

use crate::error::GatewayError;
use crate::runtime::{KeyEntry, Runtime};
use axum::http::{header, HeaderMap};
use shared::keys::KeyHash;
use shared::time::now_ms;
use std::sync::Arc;

pub fn authenticate(runtime: &Runtime, headers: &HeaderMap) -> Result<Arc<KeyEntry>, GatewayError> {
    let secret = bearer(headers).ok_or(GatewayError::MissingKey)?;
    // A typo, a truncated paste or a foreign token: refused without a lookup.
    if !shared::keys::is_well_formed(secret) {
        return Err(GatewayError::InvalidKey);
    }
    // Hash lookup: the stored side is a SHA-256, so timing reveals nothing of a secret.
    let key = runtime
        .key(&KeyHash::of(secret))
        .ok_or(GatewayError::InvalidKey)?;
    if key.expires_at_ms.is_some_and(|at| at <= now_ms()) {
        return Err(GatewayError::ExpiredKey);
    }
    Ok(key.clone())
}

/// OpenAI SDKs send `Authorization: Bearer`; Anthropic-style clients send `x-api-key`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let from_authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    from_authorization
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}
