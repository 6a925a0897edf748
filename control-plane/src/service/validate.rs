//! Input checks; every message names the field at fault.

use crate::error::{Error, Result};
use crate::model::{ProviderSpec, Route};

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

pub fn provider(spec: &ProviderSpec) -> Result<()> {
    identifier("name", &spec.name)?;
    if spec.name.contains('/') {
        return Err(Error::invalid("name: a provider name may not contain '/'"));
    }
    base_url(&spec.base_url)?;
    if let Some(key) = &spec.api_key {
        if key.expose().is_empty() || key.expose().chars().any(char::is_control) {
            return Err(Error::invalid("api_key: must be non-empty printable text"));
        }
    }
    Ok(())
}

fn base_url(url: &str) -> Result<()> {
    let uri: axum::http::Uri = url
        .trim()
        .parse()
        .map_err(|_| Error::invalid(format!("base_url: {url:?} is not a URL")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(Error::invalid(format!(
            "base_url: {url:?} must be an absolute http:// or https:// URL"
        )));
    }
    if uri.query().is_some() {
        return Err(Error::invalid("base_url: must not contain a query string"));
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
    }
    Ok(())
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
        }
    }

    #[test]
    fn routes_need_targets_with_sane_weights() {
        let mut r = Route {
            model: "gpt-4o".into(),
            targets: vec![],
        };
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

    #[test]
    fn identifiers_and_urls() {
        assert!(identifier("model", "qwen/qwen2.5:7b").is_ok());
        assert!(identifier("model", "a b").is_err());
        assert!(identifier("model", "").is_err());
        assert!(base_url("https://api.openai.com/v1").is_ok());
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("not a url").is_err());
        assert!(email("a@b.io").is_ok());
        assert!(email("nope").is_err());
    }
}
