//! Input checks; every message names the field at fault.

use crate::error::{Error, Result};
use crate::model::{JwtIssuerSpec, ProviderSpec, Route};
use shared::provider_kind::{ProviderApi, ProviderKind, HEALTH_CHECK_SETTINGS};

const MAX_NAME_LEN: usize = 128;
const MAX_WEIGHT: u32 = 1_000_000;

/// Names that appear in URLs and model fields: letters, digits and `._-:/@`.
pub fn identifier(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{field}: must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{field}: at most {MAX_NAME_LEN} characters"
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:/@".contains(c);
    if !value.chars().all(allowed) || value.starts_with('/') {
        return Err(Error::invalid(format!(
            "{field}: {value:?} may only contain letters, digits and . _ - : / @"
        )));
    }
    Ok(())
}

pub fn display_name(field: &str, value: &str) -> Result<()> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(format!("{field}: must not be empty")));
    }
    if value.chars().count() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{field}: at most {MAX_NAME_LEN} printable characters"
        )));
    }
    Ok(())
}

pub fn email(value: &str) -> Result<()> {
    let ok = value.len() <= 254
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !value.contains(char::is_whitespace)
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "email: {value:?} is not an email address"
        )))
    }
}

/// `has_secret_key`: whether the stored provider (on update) already has one.
pub fn provider(spec: &ProviderSpec, has_secret_key: bool, allow_link_local: bool) -> Result<()> {
    identifier("name", &spec.name)?;
    if spec.name.contains('/') {
        return Err(Error::invalid("name: a provider name may not contain '/'"));
    }
    outbound_url("base_url", &spec.base_url, allow_link_local)?;
    for (field, value) in [("api_key", &spec.api_key), ("secret_key", &spec.secret_key)] {
        if let Some(key) = value {
            if key.expose().is_empty() || key.expose().chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "{field}: must be non-empty printable text"
                )));
            }
        }
    }
    provider_settings(spec, has_secret_key)
}

/// Each kind names the settings it reads; anything else is a typo to report,
/// not a value to ignore.
fn provider_settings(spec: &ProviderSpec, has_secret_key: bool) -> Result<()> {
    let kind = spec.kind;
    let api = match spec.settings.get("api") {
        Some(api) if kind.has_two_apis() => api.parse::<ProviderApi>().map_err(Error::invalid)?,
        _ => ProviderApi::default(),
    };
    let wanted = kind.settings(api);
    let health = kind.has_health_probe(api);
    for (name, value) in &spec.settings {
        if health && HEALTH_CHECK_SETTINGS.contains(&name.as_str()) {
            if value.parse::<u32>().map_or(true, |ms| ms < 100) {
                return Err(Error::invalid(format!(
                    "settings.{name}: must be a number of milliseconds, at least 100"
                )));
            }
            continue;
        }
        if !wanted.allowed.contains(&name.as_str()) {
            let mut readable = wanted.allowed.to_vec();
            if health {
                readable.extend_from_slice(HEALTH_CHECK_SETTINGS);
            }
            let allowed = match readable.as_slice() {
                [] => "none".to_owned(),
                names => names.join(", "),
            };
            return Err(Error::invalid(format!(
                "settings.{name}: not a setting of kind {kind}{}; it reads: {allowed}",
                if kind.has_two_apis() {
                    " with this api"
                } else {
                    ""
                }
            )));
        }
    }
    for name in wanted.required {
        if spec.settings.get(*name).is_none_or(|v| v.trim().is_empty()) {
            return Err(Error::invalid(format!(
                "settings.{name}: required for kind {kind}"
            )));
        }
    }
    if let Some(tokens) = spec.settings.get("default_max_tokens") {
        if tokens.parse::<u32>().map_or(true, |n| n == 0) {
            return Err(Error::invalid(
                "settings.default_max_tokens: must be a positive integer",
            ));
        }
    }
    if wanted.needs_secret_key && spec.secret_key.is_none() && !has_secret_key {
        return Err(Error::invalid(format!(
            "secret_key: required for kind {kind} with api \"native\" ({})",
            match kind {
                ProviderKind::Qianfan => "the Secret Key; api_key is the API Key",
                _ => "the SecretKey; settings.secret_id is the SecretId",
            }
        )));
    }
    Ok(())
}

/// A URL the gateway will call, set by an admin: absolute http(s), no query,
/// and not a link-local or cloud metadata address unless allowed.
fn outbound_url(field: &str, url: &str, allow_link_local: bool) -> Result<axum::http::Uri> {
    let uri: axum::http::Uri = url
        .trim()
        .parse()
        .map_err(|_| Error::invalid(format!("{field}: {url:?} is not a URL")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(Error::invalid(format!(
            "{field}: {url:?} must be an absolute http:// or https:// URL"
        )));
    }
    if uri.query().is_some() {
        return Err(Error::invalid(format!(
            "{field}: must not contain a query string"
        )));
    }
    if !allow_link_local && uri.host().is_some_and(shared::net::is_forbidden_host) {
        return Err(Error::invalid(format!(
            "{field}: link-local and cloud metadata addresses are refused (the control plane's --allow-link-local-upstreams allows them)"
        )));
    }
    Ok(uri)
}

/// Public model names a key, user or team is limited to.
pub fn models(models: &[String]) -> Result<()> {
    for (i, model) in models.iter().enumerate() {
        if model.trim().is_empty() {
            return Err(Error::invalid(format!("models[{i}]: must not be empty")));
        }
    }
    Ok(())
}

pub fn external_id(value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
        return Err(Error::invalid("external_id: 1 to 255 printable characters"));
    }
    Ok(())
}

/// Everything but the key set's contents, which are checked when fetched.
pub fn jwt_issuer(spec: &JwtIssuerSpec, allow_link_local: bool) -> Result<()> {
    identifier("name", &spec.name)?;
    if spec.name.contains('/') {
        return Err(Error::invalid("name: an issuer name may not contain '/'"));
    }
    if spec.issuer.trim().is_empty() || spec.issuer.len() > 512 {
        return Err(Error::invalid(
            "issuer: the tokens' exact `iss`, 1 to 512 characters",
        ));
    }
    if spec.audiences.is_empty() || spec.audiences.iter().any(|a| a.trim().is_empty()) {
        return Err(Error::invalid(
            "audiences: at least one, none empty (a token's `aud` must name one)",
        ));
    }
    if spec.algorithms.is_empty() {
        return Err(Error::invalid(format!(
            "algorithms: at least one of {}",
            shared::jwt::ALLOWED_ALGORITHMS
        )));
    }
    for (i, algorithm) in spec.algorithms.iter().enumerate() {
        shared::jwt::parse_algorithm(algorithm)
            .map_err(|e| Error::invalid(format!("algorithms[{i}]: {e}")))?;
    }
    match (&spec.jwks_url, spec.public_keys_pem.is_empty()) {
        (Some(url), true) => {
            let uri = outbound_url("jwks_url", url, allow_link_local)?;
            // Keys over plain HTTP could be swapped on the way: only on loopback.
            let loopback = uri.host().is_some_and(is_loopback_host);
            if uri.scheme_str() != Some("https") && !loopback {
                return Err(Error::invalid(
                    "jwks_url: must be https:// (http:// only on a loopback address)",
                ));
            }
        }
        (None, false) => {
            for (i, pem) in spec.public_keys_pem.iter().enumerate() {
                shared::jwt::key_from_pem(pem)
                    .map_err(|e| Error::invalid(format!("public_keys_pem[{i}]: {e}")))?;
            }
        }
        _ => {
            return Err(Error::invalid(
                "jwks_url, public_keys_pem: exactly one of them is required",
            ))
        }
    }
    let claims = [
        ("claims.user", &spec.claims.user),
        ("claims.team", &spec.claims.team),
        ("claims.models", &spec.claims.models),
    ];
    for (field, claim) in claims {
        if let Some(claim) = claim {
            let ok = !claim.is_empty()
                && claim.len() <= MAX_NAME_LEN
                && claim.split('.').all(|part| !part.is_empty())
                && !claim.chars().any(char::is_control);
            if !ok {
                return Err(Error::invalid(format!(
                    "{field}: a claim name, or a dotted path such as \"org.team\""
                )));
            }
        }
    }
    if spec
        .leeway_seconds
        .is_some_and(|l| l > shared::jwt::MAX_LEEWAY_SECONDS)
    {
        return Err(Error::invalid(format!(
            "leeway_seconds: at most {}",
            shared::jwt::MAX_LEEWAY_SECONDS
        )));
    }
    Ok(())
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

const MAX_ATTEMPTS: u32 = 10;
const MAX_BACKOFF_MS: u32 = 60_000;
const MAX_TIMEOUT_MS: u32 = 3_600_000;

pub fn guardrails(guardrails: &shared::guardrails::Guardrails) -> Result<()> {
    guardrails
        .validate(|pattern| {
            regex::Regex::new(pattern)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .map_err(Error::invalid)?;
    for (i, plugin) in guardrails.plugins.iter().enumerate() {
        let module = plugin.module().map_err(Error::invalid)?;
        plugin_module(&module)
            .map_err(|e| Error::invalid(format!("guardrails.plugins[{i}].wasm_base64: {e}")))?;
    }
    Ok(())
}

/// A plugin's module as the ABI (docs/plugins.md) wants it: valid, importing
/// nothing, exporting `memory`, `sb_alloc` and at least one hook. Checked
/// here so that data planes are never sent one they would refuse.
fn plugin_module(module: &[u8]) -> std::result::Result<(), String> {
    use wasmparser::{ExternalKind, Parser, Payload, Validator};
    Validator::new()
        .validate_all(module)
        .map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ImportSection(imports) if imports.count() > 0 => {
                return Err("the module imports; plugins may import nothing".into())
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.map_err(|e| e.to_string())?;
                    exports.push((export.name.to_owned(), export.kind));
                }
            }
            _ => {}
        }
    }
    let has = |name: &str, kind: ExternalKind| exports.iter().any(|(n, k)| n == name && *k == kind);
    if !has("memory", ExternalKind::Memory) || !has("sb_alloc", ExternalKind::Func) {
        return Err("must export `memory` and `sb_alloc`".into());
    }
    let hooks = ["sb_on_request", "sb_on_response", "sb_on_chunk"];
    if !hooks.iter().any(|hook| has(hook, ExternalKind::Func)) {
        return Err("exports no hook (sb_on_request, sb_on_response, sb_on_chunk)".into());
    }
    Ok(())
}

pub fn route(route: &Route) -> Result<()> {
    identifier("model", &route.model)?;
    if route.targets.is_empty() {
        return Err(Error::invalid("targets: a route needs at least one target"));
    }
    for (i, target) in route.targets.iter().enumerate() {
        identifier(&format!("targets[{i}].provider"), &target.provider)?;
        if target.model.trim().is_empty() {
            return Err(Error::invalid(format!(
                "targets[{i}].model: must not be empty"
            )));
        }
        if target.weight == 0 || target.weight > MAX_WEIGHT {
            return Err(Error::invalid(format!(
                "targets[{i}].weight: must be between 1 and {MAX_WEIGHT}"
            )));
        }
        for (field, value) in [("rpm", target.rpm), ("tpm", target.tpm)] {
            if value == Some(0) {
                return Err(Error::invalid(format!(
                    "targets[{i}].{field}: must be positive (leave it out for no limit)"
                )));
            }
        }
    }
    for (i, alias) in route.aliases.iter().enumerate() {
        identifier(&format!("aliases[{i}]"), alias)?;
        if *alias == route.model || route.aliases[..i].contains(alias) {
            return Err(Error::invalid(format!(
                "aliases[{i}]: {alias:?} is named twice"
            )));
        }
    }
    if let Some(cache) = &route.cache {
        cache.validate().map_err(Error::invalid)?;
    }
    if let Some(g) = &route.guardrails {
        guardrails(g)?;
    }
    for (field, name) in route_references(route) {
        identifier(&field, &name)?;
        if name == route.model {
            return Err(Error::invalid(format!(
                "{field}: a route cannot send traffic to itself"
            )));
        }
    }
    for (i, variant) in route.split.iter().enumerate() {
        if variant.weight == 0 || variant.weight > MAX_WEIGHT {
            return Err(Error::invalid(format!(
                "split[{i}].weight: must be between 1 and {MAX_WEIGHT}"
            )));
        }
    }
    if let Some(retry) = route.retry {
        if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
            return Err(Error::invalid(format!(
                "retry.max_attempts: must be between 1 and {MAX_ATTEMPTS}"
            )));
        }
        if retry.backoff_ms > MAX_BACKOFF_MS {
            return Err(Error::invalid(format!(
                "retry.backoff_ms: must be at most {MAX_BACKOFF_MS}"
            )));
        }
    }
    if let Some(t) = route.timeouts {
        for (field, value) in [
            ("connect_ms", t.connect_ms),
            ("first_token_ms", t.first_token_ms),
            ("idle_ms", t.idle_ms),
            ("total_ms", t.total_ms),
        ] {
            if value > MAX_TIMEOUT_MS {
                return Err(Error::invalid(format!(
                    "timeouts.{field}: must be at most {MAX_TIMEOUT_MS}"
                )));
            }
        }
    }
    Ok(())
}

/// The other routes a route sends traffic to, each with the field naming it.
pub fn route_references(route: &Route) -> impl Iterator<Item = (String, String)> + '_ {
    let fallbacks = route
        .fallbacks
        .iter()
        .enumerate()
        .map(|(i, name)| (format!("fallbacks[{i}]"), name.clone()));
    let split = route
        .split
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("split[{i}].model"), v.model.clone()));
    let special = [
        ("context_fallback", &route.context_fallback),
        ("content_fallback", &route.content_fallback),
    ]
    .into_iter()
    .filter_map(|(field, name)| name.clone().map(|n| (field.to_owned(), n)));
    fallbacks.chain(split).chain(special)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RouteTarget;

    fn target(weight: u32) -> RouteTarget {
        RouteTarget {
            provider: "p".into(),
            model: "m".into(),
            weight,
            priority: 0,
            rpm: None,
            tpm: None,
        }
    }

    #[test]
    fn routes_need_targets_with_sane_weights() {
        let mut r: Route =
            serde_json::from_value(serde_json::json!({"model": "gpt-4o", "targets": []}))
                .expect("route");
        assert!(route(&r)
            .expect_err("invalid")
            .to_string()
            .starts_with("targets:"));
        r.targets = vec![target(0)];
        assert!(route(&r)
            .expect_err("invalid")
            .to_string()
            .starts_with("targets[0].weight"));
        r.targets = vec![target(3)];
        assert!(route(&r).is_ok());
    }

    fn spec(kind: ProviderKind, settings: &[(&str, &str)]) -> ProviderSpec {
        ProviderSpec {
            name: "p".into(),
            kind,
            base_url: "https://example.com".into(),
            api_key: None,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            secret_key: None,
        }
    }

    fn refusal(spec: &ProviderSpec) -> String {
        provider(spec, false, false)
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn provider_settings_are_named_per_kind() {
        assert!(refusal(&spec(ProviderKind::AzureOpenai, &[])).starts_with("settings.api_version"));
        assert!(provider(
            &spec(ProviderKind::AzureOpenai, &[("api_version", "2024-10-21")]),
            false,
            false
        )
        .is_ok());
        assert!(
            refusal(&spec(ProviderKind::Openai, &[("api_version", "x")]))
                .starts_with("settings.api_version: not a setting of kind openai")
        );
        assert!(
            refusal(&spec(ProviderKind::Ollama, &[("api", "grpc")])).starts_with("settings.api")
        );
        let hunyuan = spec(ProviderKind::Hunyuan, &[("api", "native")]);
        assert!(refusal(&hunyuan).starts_with("settings.secret_id"));
        let hunyuan = spec(
            ProviderKind::Hunyuan,
            &[("api", "native"), ("secret_id", "AKID")],
        );
        assert!(refusal(&hunyuan).starts_with("secret_key"));
        assert!(
            provider(&hunyuan, true, false).is_ok(),
            "an update keeps the stored secret"
        );
        assert!(
            refusal(&spec(ProviderKind::Qianfan, &[("api", "native")])).starts_with("secret_key")
        );
        assert!(refusal(&spec(
            ProviderKind::Anthropic,
            &[("default_max_tokens", "0")]
        ))
        .starts_with("settings.default_max_tokens"));
        let mut metadata = spec(ProviderKind::Openai, &[]);
        metadata.base_url = "http://169.254.169.254/latest".into();
        assert!(refusal(&metadata).starts_with("base_url: link-local"));
        assert!(
            provider(&metadata, false, true).is_ok(),
            "explicitly allowed"
        );
    }

    #[test]
    fn identifiers_and_urls() {
        assert!(identifier("model", "qwen/qwen2.5:7b").is_ok());
        assert!(identifier("model", "a b").is_err());
        assert!(identifier("model", "").is_err());
        assert!(outbound_url("base_url", "https://api.openai.com/v1", false).is_ok());
        assert!(outbound_url("base_url", "ftp://x", false).is_err());
        assert!(outbound_url("base_url", "not a url", false).is_err());
        assert!(email("a@b.io").is_ok());
        assert!(email("nope").is_err());
    }
}
