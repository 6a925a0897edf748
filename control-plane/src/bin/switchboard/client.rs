//! The REST client: JSON in, JSON out, the API's errors as messages.

use anyhow::{bail, Context};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub struct Api {
    client: Client,
    base: String,
    token: String,
}

/// A path segment, percent-encoded (ids and names may hold anything).
pub fn segment(text: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("a constant URL");
    url.path_segments_mut()
        .expect("an http URL has segments")
        .push(text);
    url.path()[1..].to_owned()
}

impl Api {
    /// `url`: the control plane's HTTP address; `ca_cert`: a PEM file to trust.
    pub fn connect(url: &str, token: &str, ca_cert: Option<&Path>) -> anyhow::Result<Api> {
        let mut builder = Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("switchboard-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
            builder = builder.tls_certs_only([certificate]);
        }
        Ok(Api {
            client: builder.build()?,
            base: format!("{}/api/v1", url.trim_end_matches('/')),
            token: token.to_owned(),
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, path))
    }

    pub fn get_query(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, path).query(query))
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(Method::POST, path).json(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(Method::PUT, path).json(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(Method::PATCH, path).json(body))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::DELETE, path))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    fn send(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .send()
            .with_context(|| format!("cannot reach the control plane at {}", self.base))?;
        let status = response.status();
        let text = response.text()?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(body);
        }
        match body["error"]["message"].as_str() {
            Some(message) => bail!(
                "{message} ({}, HTTP {})",
                body["error"]["code"].as_str().unwrap_or("error"),
                status.as_u16()
            ),
            None => bail!("HTTP {status}: {body}"),
        }
    }
}
