//! Step 5 of the request path: speaking to the provider. One adapter per
//! wire format, chosen by the provider's kind.

mod client;
mod openai;

pub use client::{UpstreamClient, UpstreamResponse};

use crate::error::GatewayError;
use crate::runtime::Provider;
use crate::usage::Endpoint;
use shared::provider_kind::ProviderKind;
use std::time::Duration;

/// The provider could not be reached, or broke off mid-answer. The error is
/// the transport's own (the URL is operator config, with no credential), so
/// it is logged; the client is told only which provider failed.
pub fn unreachable(provider: &str, error: &dyn std::fmt::Display) -> GatewayError {
    tracing::warn!(provider, %error, "upstream unreachable or broke off");
    GatewayError::UpstreamUnreachable(provider.to_owned())
}

/// Sends an OpenAI-format request body; answers with the upstream's response
/// if it succeeded, or the upstream's error mapped to the gateway's.
pub async fn send(
    http: &UpstreamClient,
    provider: &Provider,
    endpoint: Endpoint,
    body: bytes::Bytes,
    first_byte_timeout: Duration,
) -> Result<UpstreamResponse, GatewayError> {
    match provider.kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
            openai::send(http, provider, endpoint, body, first_byte_timeout).await
        }
    }
}
