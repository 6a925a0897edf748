//! Step 5 of the request path: speaking to the provider. One adapter per
//! wire format, chosen by the provider's kind.

mod openai;

pub use openai::transport_error;

use crate::error::GatewayError;
use crate::runtime::Provider;
use crate::usage::Endpoint;
use shared::provider_kind::ProviderKind;
use std::time::Duration;

/// A successful upstream answer whose body has not been read yet.
pub type UpstreamResponse = reqwest::Response;

/// Sends an OpenAI-format request body; answers with the upstream's response
/// if it succeeded, or the upstream's error mapped to the gateway's.
pub async fn send(
    http: &reqwest::Client,
    provider: &Provider,
    endpoint: Endpoint,
    body: Vec<u8>,
    first_byte_timeout: Duration,
) -> Result<UpstreamResponse, GatewayError> {
    match provider.kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
            openai::send(http, provider, endpoint, body, first_byte_timeout).await
        }
    }
}
