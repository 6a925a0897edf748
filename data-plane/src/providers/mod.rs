//! Step 5 of the request path: speaking to the provider. One adapter per
//! wire format, chosen by the provider's kind.

mod client;
mod openai;

pub use client::{UpstreamClient, UpstreamResponse};
pub use openai::body_error;

use crate::error::GatewayError;
use crate::runtime::Provider;
use crate::usage::Endpoint;
use shared::provider_kind::ProviderKind;
use std::time::Duration;

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
