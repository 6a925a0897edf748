//! Partial updates: an edit of the resource as the admin API shows it (a
//! JSON merge patch from REST, the fields of a field mask from gRPC), then
//! the same validation and audit as a whole update.

use super::Admin;
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::{Provider, ProviderSpec, Route};
use serde_json::{Map, Value};

/// An edit of a resource's JSON form.
pub type Edit = Box<dyn FnOnce(&mut Map<String, Value>) -> Result<()> + Send>;

/// RFC 7396: objects merge member by member, `null` removes, anything else replaces.
pub fn merge_patch(patch: Value) -> Edit {
    Box::new(move |target| match patch {
        Value::Object(members) => {
            merge_members(target, members);
            Ok(())
        }
        _ => Err(Error::invalid("expected a JSON object")),
    })
}

fn merge_members(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (name, value) in patch {
        match value {
            Value::Null => {
                target.remove(&name);
            }
            Value::Object(members) => {
                let entry = target
                    .entry(name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(inner) = entry {
                    merge_members(inner, members);
                }
            }
            other => {
                target.insert(name, other);
            }
        }
    }
}

/// The named top-level fields of `source` replace the target's (absent in
/// `source`: removed); a name the resource does not have is refused.
pub fn replace_fields(
    source: Map<String, Value>,
    paths: Vec<String>,
    known: &'static [&'static str],
) -> Edit {
    Box::new(move |target| {
        for path in paths {
            if !known.contains(&path.as_str()) {
                return Err(Error::invalid(format!(
                    "update_mask: {path:?} is not a field that can be updated; one of {known:?}"
                )));
            }
            match source.get(&path) {
                Some(value) => target.insert(path, value.clone()),
                None => target.remove(&path),
            };
        }
        Ok(())
    })
}

fn object(value: Value) -> Result<Map<String, Value>> {
    match value {
        Value::Object(members) => Ok(members),
        _ => Err(Error::Internal("a resource is not a JSON object".into())),
    }
}

fn parse<T: serde::de::DeserializeOwned>(members: Map<String, Value>) -> Result<T> {
    serde_json::from_value(Value::Object(members)).map_err(|e| Error::invalid(e.to_string()))
}

impl Admin {
    /// Credentials absent from the edit stay as stored.
    pub async fn patch_provider(&self, name: &str, edit: Edit) -> Result<Provider> {
        self.require(Need::ConfigWrite)?;
        let current = self.get_provider(name).await?;
        let mut spec = object(serde_json::json!({
            "name": current.name,
            "kind": current.kind,
            "base_url": current.base_url,
            "settings": current.settings,
        }))?;
        edit(&mut spec)?;
        let spec: ProviderSpec = parse(spec)?;
        self.update_provider(name, spec).await
    }

    pub async fn patch_route(&self, model: &str, edit: Edit) -> Result<Route> {
        self.require(Need::ConfigWrite)?;
        let current = self.get_route(model).await?;
        let mut route =
            object(serde_json::to_value(&current).map_err(|e| Error::Internal(e.to_string()))?)?;
        edit(&mut route)?;
        let route: Route = parse(route)?;
        self.update_route(model, route).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_merges_objects_removes_nulls_and_replaces_the_rest() {
        let mut target = object(serde_json::json!({
            "base_url": "http://a", "settings": {"x": "1", "y": "2"}, "kind": "openai"
        }))
        .expect("object");
        merge_patch(serde_json::json!({"base_url": "http://b", "settings": {"y": null, "z": "3"}}))(
            &mut target,
        )
        .expect("applies");
        assert_eq!(
            Value::Object(target),
            serde_json::json!({"base_url": "http://b", "settings": {"x": "1", "z": "3"}, "kind": "openai"})
        );
        let mut target = Map::new();
        assert!(merge_patch(serde_json::json!([1]))(&mut target).is_err());
    }

    #[test]
    fn field_masks_replace_named_fields_and_refuse_unknown_ones() {
        let source = object(serde_json::json!({"strategy": "priority"})).expect("object");
        let mut target =
            object(serde_json::json!({"strategy": "weighted", "retry": {"max_attempts": 2}}))
                .expect("object");
        replace_fields(
            source.clone(),
            vec!["strategy".into(), "retry".into()],
            &["strategy", "retry"],
        )(&mut target)
        .expect("applies");
        assert_eq!(
            Value::Object(target),
            serde_json::json!({"strategy": "priority"})
        );
        let error = replace_fields(source, vec!["nope".into()], &["strategy"])(&mut Map::new())
            .expect_err("unknown path");
        assert!(error.to_string().contains("update_mask"));
    }
}
