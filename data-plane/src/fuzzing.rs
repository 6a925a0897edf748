//! Entry points for the fuzz targets (`data-plane/fuzz`): each feeds bytes to
//! one parser the way the request path does. Built only with the `fuzzing`
//! feature; a panic anywhere below is a finding.

use crate::auth::jwt::Issuers;
use crate::chat::framing::{FrameDecoder, Framing};
use crate::chat::ChatRequest;
use crate::providers::{self, Adapter};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use shared::proto;
use shared::usage::Endpoint;
use std::sync::OnceLock;

/// An OpenAI-format body, as each endpoint reads it, and as a chat request
/// translated for every provider.
pub fn openai_request(data: &[u8]) {
    for endpoint in [
        Endpoint::ChatCompletions,
        Endpoint::Embeddings,
        Endpoint::Completions,
        Endpoint::Responses,
    ] {
        let _ = crate::ingress::fuzz_parse(endpoint, Bytes::copy_from_slice(data));
    }
    if let Ok(chat) = ChatRequest::parse(data) {
        translate(&chat);
    }
}

/// An Anthropic Messages body, read and turned into a chat request.
pub fn anthropic_request(data: &[u8]) {
    if let Ok(chat) = crate::ingress::fuzz_messages(data) {
        translate(&chat);
    }
}

fn translate(chat: &ChatRequest) {
    for adapter in adapters() {
        let _ = adapter.chat_request("m", chat);
    }
}

/// A byte stream cut into SSE events or NDJSON lines, in two pieces split
/// where the first byte says (a frame may straddle reads); and the text a
/// passed-through stream keeps, read from the same bytes.
pub fn frames(data: &[u8]) {
    crate::limits::estimate::StreamedText::default().push_events(data);
    let split = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    for framing in [Framing::Sse, Framing::Ndjson] {
        let mut decoder = FrameDecoder::new(framing);
        let mut out = Vec::new();
        decoder.push(&data[..split], &mut out);
        decoder.push(&data[split..], &mut out);
        decoder.finish(&mut out);
    }
}

/// One provider's answers: the first byte picks the provider; the rest is a
/// chat answer, an embeddings answer, an error body, and a stream.
pub fn provider_response(data: &[u8]) {
    let Some((pick, body)) = data.split_first() else {
        return;
    };
    let all = adapters();
    let adapter = &all[usize::from(*pick) % all.len()];
    let _ = adapter.chat_response("m", body);
    let _ = adapter.embeddings_response(body);
    let _ = adapter.error(StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
    let mut decoder = adapter.stream_decoder("m");
    let mut frames = Vec::new();
    let mut framer = FrameDecoder::new(decoder.framing());
    framer.push(body, &mut frames);
    framer.finish(&mut frames);
    let mut chunks = Vec::new();
    for frame in frames {
        if decoder.decode(frame, &mut chunks).is_err() {
            break;
        }
    }
    let _ = (decoder.usage(), decoder.finished());
}

/// A bearer credential checked as a JWT against an issuer with keys, and as an API key.
pub fn credential(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = issuers().verify(&text);
    let _ = crate::auth::jwt::looks_like_jwt(&text);
    let _ = shared::keys::is_well_formed(&text);
    let _ = shared::keys::KeyHash::from_hex(&text);
    let _ = shared::jwt::keys_from_jwks(&text);
    let _ = shared::jwt::key_from_pem(&text);
}

/// One adapter per provider kind and API, as snapshots configure them.
fn adapters() -> &'static [Box<dyn Adapter>] {
    static ADAPTERS: OnceLock<Vec<Box<dyn Adapter>>> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        let configs: &[(&str, &[(&str, &str)])] = &[
            ("openai", &[]),
            ("azure_openai", &[("api_version", "2024-10-21")]),
            ("anthropic", &[]),
            ("gemini", &[]),
            ("qianfan", &[]),
            ("qianfan", &[("api", "native")]),
            ("dashscope", &[]),
            ("dashscope", &[("api", "native")]),
            ("hunyuan", &[("secret_id", "id")]),
            ("hunyuan", &[("secret_id", "id"), ("api", "native")]),
            ("ark", &[]),
            ("deepseek", &[]),
            ("ollama", &[]),
            ("ollama", &[("api", "native")]),
            ("vllm", &[]),
            ("openai_compatible", &[]),
        ];
        configs
            .iter()
            .filter_map(|(kind, settings)| {
                let provider = proto::SnapshotProvider {
                    name: (*kind).into(),
                    kind: (*kind).into(),
                    base_url: "http://127.0.0.1:1/v1".into(),
                    api_key: "k".into(),
                    secret_key: "s".into(),
                    settings: settings
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                };
                providers::adapter(&provider).ok()
            })
            .collect()
    })
}

fn issuers() -> &'static Issuers {
    static ISSUERS: OnceLock<Issuers> = OnceLock::new();
    ISSUERS.get_or_init(|| {
        let issuer = proto::SnapshotJwtIssuer {
            name: "idp".into(),
            issuer: "https://idp.example/".into(),
            audiences: vec!["sb".into()],
            algorithms: vec!["ES256".into(), "RS256".into()],
            jwks: r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#
                .into(),
            ..Default::default()
        };
        Issuers::build(&[issuer]).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    /// Every entry point runs on a few inputs (the fuzz targets run them on many).
    #[test]
    fn entry_points_take_anything() {
        let samples: [&[u8]; 5] = [
            b"",
            b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":5}",
            b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n",
            b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLyJ9.c2ln",
            &[0xff, 0xfe, 0x00, b'{', b'['],
        ];
        assert_eq!(super::adapters().len(), 16);
        for sample in samples {
            super::openai_request(sample);
            super::anthropic_request(sample);
            super::frames(sample);
            super::credential(sample);
            for pick in 0..16u8 {
                super::provider_response(&[&[pick], sample].concat());
            }
        }
    }
}
