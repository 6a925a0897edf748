//! The HTTP client for what the control plane calls out to: identity
//! providers' key sets and the budget-alert webhook. HTTPS with the public
//! roots, or plain HTTP; HTTP/1.1.

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
