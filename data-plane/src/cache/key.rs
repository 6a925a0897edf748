//! A cached answer's key: a SHA-256 of what changes the answer (the route,
//! the endpoint, every parameter of the request in a canonical form) and of
//! whose it is (the tenant the route's scope names) and the purge
//! generations that apply. Requests that differ only in how their JSON is
//! written (key order, spacing) or in whether they stream share a key.

use crate::auth::Caller;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::cache::{CachePurges, CacheScope};
use shared::usage::Endpoint;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Fields that change how an answer is delivered, not what it says.
const DELIVERY_FIELDS: [&str; 3] = ["model", "stream", "stream_options"];

pub struct KeyParts<'a> {
    pub route: &'a str,
    pub endpoint: Endpoint,
    pub scope: CacheScope,
    pub caller: &'a Caller,
    pub purges: &'a CachePurges,
    pub request: &'a Value,
}

pub fn key(parts: &KeyParts) -> CacheKey {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(b"switchboard-cache-v1");
    field(parts.route.as_bytes());
    field(parts.endpoint.as_str().as_bytes());
    field(tenant(parts.scope, parts.caller).as_bytes());
    // A team purge reaches its callers' answers in team and key scope.
    let team = match parts.scope {
        CacheScope::Global => 0,
        _ => parts
            .caller
            .team_id
            .as_ref()
            .map_or(0, |team| parts.purges.team(team.as_str())),
    };
    for generation in [
        parts.purges.everything,
        parts.purges.route(parts.route),
        team,
    ] {
        field(&generation.to_le_bytes());
    }
    let mut canonical = Vec::with_capacity(1024);
    if let Value::Object(fields) = parts.request {
        let mut names: Vec<&String> = fields
            .keys()
            .filter(|name| !DELIVERY_FIELDS.contains(&name.as_str()))
            .collect();
        names.sort();
        for name in names {
            write_canonical(&Value::String(name.clone()), &mut canonical);
            write_canonical(&fields[name], &mut canonical);
        }
    }
    field(&canonical);
    CacheKey(hash.finalize().into())
}

/// Whose answers these are, by the route's scope: the team (or, for a
/// caller without one, the caller), the caller, or everyone.
fn tenant(scope: CacheScope, caller: &Caller) -> String {
    let own = || match (&caller.key_id, &caller.jwt) {
        (Some(key), _) => format!("key:{}", key.as_str()),
        (None, Some(jwt)) => format!("jwt:{}\u{0}{}", jwt.issuer, jwt.subject),
        (None, None) => "anonymous".to_owned(),
    };
    match scope {
        CacheScope::Global => "global".to_owned(),
        CacheScope::Key => own(),
        CacheScope::Team => caller
            .team_id
            .as_ref()
            .map_or_else(own, |team| format!("team:{}", team.as_str())),
    }
}

/// JSON with object keys sorted at every level, whatever order they came in.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(fields) => {
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            out.push(b'{');
            for (i, name) in names.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String(name.clone()), out);
                out.push(b':');
                write_canonical(&fields[name], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        // Scalars print one way each.
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller(key: &str, team: Option<&str>) -> Caller {
        let mut caller = Caller::default();
        caller.key_id = Some(key.to_owned().into());
        caller.team_id = team.map(|t| t.to_owned().into());
        caller
    }

    fn key_of(
        caller: &Caller,
        scope: CacheScope,
        purges: &CachePurges,
        request: Value,
    ) -> CacheKey {
        key(&KeyParts {
            route: "m",
            endpoint: Endpoint::ChatCompletions,
            scope,
            caller,
            purges,
            request: &request,
        })
    }

    #[test]
    fn keys_ignore_json_layout_and_delivery_but_not_parameters_tenants_or_purges() {
        let purges = CachePurges::default();
        let alice = caller("k1", Some("t1"));
        let request = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0});
        let same = key_of(&alice, CacheScope::Team, &purges, request.clone());
        let reordered = serde_json::from_str(
            r#"{"temperature":0,"stream":true,"messages":[{"content":"hi","role":"user"}],"model":"alias"}"#,
        )
        .expect("json");
        assert_eq!(same, key_of(&alice, CacheScope::Team, &purges, reordered));
        let mut hotter = request.clone();
        hotter["temperature"] = json!(0.5);
        assert_ne!(same, key_of(&alice, CacheScope::Team, &purges, hotter));

        let teammate = caller("k2", Some("t1"));
        let stranger = caller("k3", Some("t2"));
        assert_eq!(
            same,
            key_of(&teammate, CacheScope::Team, &purges, request.clone())
        );
        assert_ne!(
            same,
            key_of(&stranger, CacheScope::Team, &purges, request.clone())
        );
        assert_ne!(
            key_of(&alice, CacheScope::Key, &purges, request.clone()),
            key_of(&teammate, CacheScope::Key, &purges, request.clone())
        );
        assert_eq!(
            key_of(&alice, CacheScope::Global, &purges, request.clone()),
            key_of(&stranger, CacheScope::Global, &purges, request.clone())
        );

        let mut purged = CachePurges::default();
        purged.teams.insert("t1".into(), 1);
        assert_ne!(
            same,
            key_of(&alice, CacheScope::Team, &purged, request.clone())
        );
        assert_eq!(
            key_of(&stranger, CacheScope::Team, &purges, request.clone()),
            key_of(&stranger, CacheScope::Team, &purged, request.clone())
        );
        purged.routes.insert("m".into(), 1);
        assert_ne!(
            key_of(&stranger, CacheScope::Team, &purges, request.clone()),
            key_of(&stranger, CacheScope::Team, &purged, request)
        );
    }
}
