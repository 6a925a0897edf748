//! The HTTP client for what the control plane calls out to: identity
//! providers (key sets, console sign-in) and the budget-alert webhook. HTTPS
//! with the public roots, or plain HTTP; HTTP/1.1.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub type Outbound<B> = Client<HttpsConnector<HttpConnector>, B>;

pub fn client<B>() -> Outbound<B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

/// Sends `request` and reads a successful answer's body, at most `max_bytes`,
/// all within `timeout`. The error says what went wrong, for a log or an
/// admin's message ("cannot reach it: connection refused").
pub async fn fetch<B>(
    client: &Outbound<B>,
    request: hyper::Request<B>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Bytes, String>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let answered = tokio::time::timeout(timeout, async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach it: {}", shared::net::innermost_cause(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("it answered HTTP {}", status.as_u16()));
        }
        Ok(Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|_| format!("its answer is cut off or over {max_bytes} bytes"))?
            .to_bytes())
    })
    .await;
    answered.map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}
