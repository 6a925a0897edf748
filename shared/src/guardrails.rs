//! A route's guardrails, as admins write them and data planes apply them
//! (docs/guardrails.md): personal data masked or refused, words and
//! patterns refused, a ceiling on the prompt, and a team's own moderation
//! service asked before and after the provider.

use crate::proto;
use serde::{Deserialize, Serialize};

/// Kinds of personal data the PII guardrail finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    /// International or national phone numbers (7 to 15 digits).
    Phone,
    /// Payment card numbers (13 to 19 digits) that pass the Luhn check.
    Card,
    /// US social security numbers and Chinese resident identity numbers
    /// (with their check digit).
    NationalId,
}

impl PiiKind {
    pub const ALL: [PiiKind; 4] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Card,
        PiiKind::NationalId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::NationalId => "national_id",
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "guardrails.pii.kinds: {text:?} is not one of email, phone, card, national_id"
                )
            })
    }
}

/// What the PII guardrail does with what it finds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// Replaced by a placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[NATIONAL_ID]`)
    /// before the request goes on.
    #[default]
    Mask,
    /// The request is refused (400), naming the kind found.
    Refuse,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PiiGuard {
    /// Default: every kind.
    #[serde(default = "all_kinds")]
    pub kinds: Vec<PiiKind>,
    #[serde(default)]
    pub action: PiiAction,
}

fn all_kinds() -> Vec<PiiKind> {
    PiiKind::ALL.to_vec()
}

/// Requests whose prompt holds one of these are refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DenyList {
    /// Whole words or phrases, matched without regard to case.
    #[serde(default)]
    pub words: Vec<String>,
    /// Regular expressions (Rust `regex` syntax).
    #[serde(default)]
    pub patterns: Vec<String>,
}

/// An external moderation service: asked with the request before the
/// provider, and (`post`) with a whole answer before the client gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GuardrailWebhook {
    /// `http://` or `https://`.
    pub url: String,
    /// Default 1000 ms, at most 30 s.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// When the service cannot answer in time: pass the request (`true`) or
    /// refuse it with 503 (`false`, the default).
    #[serde(default)]
    pub fail_open: bool,
    /// Also ask about whole answers (not streamed ones).
    #[serde(default)]
    pub post: bool,
}

fn default_timeout_ms() -> u32 {
    1_000
}

/// An operator's WebAssembly module on the guardrails' hook points
/// (docs/plugins.md): run in a sandbox with no imports (no files, network
/// or host calls), a fuel budget per call and a memory ceiling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// Names it in metrics and errors: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// The module (binary WebAssembly), base64.
    pub wasm_base64: String,
    /// When it traps, runs out of fuel or memory, or answers nonsense: the
    /// hook is skipped (`true`) or the request fails with 500 (`false`).
    #[serde(default)]
    pub fail_open: bool,
    /// Fuel per call (about one unit per instruction); default 10,000,000.
    #[serde(default = "default_fuel")]
    pub fuel: u64,
    /// Its memory's ceiling; default 16 MiB, at most 256 MiB.
    #[serde(default = "default_plugin_memory")]
    pub max_memory_bytes: u64,
}

fn default_fuel() -> u64 {
    10_000_000
}

fn default_plugin_memory() -> u64 {
    16 << 20
}

const MAX_MODULE_BYTES: usize = 8 << 20;
/// The most memory any plugin may have (its `max_memory_bytes`).
pub const PLUGIN_MEMORY_CEILING: u64 = 256 << 20;

impl Plugin {
    /// The module's bytes.
    pub fn module(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(self.wasm_base64.trim())
            .map_err(|e| format!("wasm_base64: not base64 ({e})"))
    }

    fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !name_ok {
            return Err("name: 1 to 64 letters, digits, '.', '_' or '-'".into());
        }
        let module = self.module()?;
        if module.len() > MAX_MODULE_BYTES {
            return Err(format!("wasm_base64: at most {MAX_MODULE_BYTES} bytes"));
        }
        if !(1_000..=10_000_000_000).contains(&self.fuel) {
            return Err("fuel: between 1000 and 10000000000".into());
        }
        if !((64 << 10)..=PLUGIN_MEMORY_CEILING).contains(&self.max_memory_bytes) {
            return Err(format!(
                "max_memory_bytes: between 65536 and {PLUGIN_MEMORY_CEILING}"
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<PiiGuard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<DenyList>,
    /// Requests whose prompt is estimated at more tokens are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<GuardrailWebhook>,
    /// Run in order, after the built-in checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
}

const MAX_DENIED: usize = 1_000;
const MAX_WEBHOOK_TIMEOUT_MS: u32 = 30_000;

impl Guardrails {
    /// Checks every field; patterns are compiled by `compile` (regex is the
    /// data plane's, and the control plane's when it validates). Plugin
    /// modules are checked by their compilers.
    pub fn validate(&self, compile: impl Fn(&str) -> Result<(), String>) -> Result<(), String> {
        for (i, plugin) in self.plugins.iter().enumerate() {
            plugin
                .validate()
                .map_err(|e| format!("guardrails.plugins[{i}].{e}"))?;
            if self.plugins[..i].iter().any(|p| p.name == plugin.name) {
                return Err(format!("guardrails.plugins[{i}].name: named twice"));
            }
        }
        if let Some(pii) = &self.pii {
            if pii.kinds.is_empty() {
                return Err("guardrails.pii.kinds: name at least one kind".into());
            }
        }
        if let Some(deny) = &self.deny {
            if deny.words.len() + deny.patterns.len() > MAX_DENIED {
                return Err(format!(
                    "guardrails.deny: at most {MAX_DENIED} words and patterns"
                ));
            }
            for (i, word) in deny.words.iter().enumerate() {
                if word.trim().is_empty() {
                    return Err(format!("guardrails.deny.words[{i}]: must not be empty"));
                }
            }
            for (i, pattern) in deny.patterns.iter().enumerate() {
                compile(pattern).map_err(|e| format!("guardrails.deny.patterns[{i}]: {e}"))?;
            }
        }
        if self.max_prompt_tokens == Some(0) {
            return Err("guardrails.max_prompt_tokens: must be positive".into());
        }
        if let Some(webhook) = &self.webhook {
            if !(webhook.url.starts_with("http://") || webhook.url.starts_with("https://")) {
                return Err("guardrails.webhook.url: an http:// or https:// URL".into());
            }
            if !(1..=MAX_WEBHOOK_TIMEOUT_MS).contains(&webhook.timeout_ms) {
                return Err(format!(
                    "guardrails.webhook.timeout_ms: between 1 and {MAX_WEBHOOK_TIMEOUT_MS}"
                ));
            }
        }
        Ok(())
    }

    pub fn from_proto(p: &proto::Guardrails) -> Result<Self, String> {
        let pii = p
            .pii
            .as_ref()
            .map(|pii| {
                Ok::<_, String>(PiiGuard {
                    kinds: if pii.kinds.is_empty() {
                        all_kinds()
                    } else {
                        pii.kinds
                            .iter()
                            .map(|k| PiiKind::parse(k))
                            .collect::<Result<_, _>>()?
                    },
                    action: match pii.action.as_str() {
                        "" | "mask" => PiiAction::Mask,
                        "refuse" => PiiAction::Refuse,
                        other => {
                            return Err(format!(
                                "guardrails.pii.action: {other:?} is not mask or refuse"
                            ))
                        }
                    },
                })
            })
            .transpose()?;
        Ok(Guardrails {
            pii,
            deny: p.deny.as_ref().map(|d| DenyList {
                words: d.words.clone(),
                patterns: d.patterns.clone(),
            }),
            max_prompt_tokens: (p.max_prompt_tokens > 0).then_some(p.max_prompt_tokens),
            webhook: p.webhook.as_ref().map(|w| GuardrailWebhook {
                url: w.url.clone(),
                timeout_ms: if w.timeout_ms == 0 {
                    default_timeout_ms()
                } else {
                    w.timeout_ms
                },
                fail_open: w.fail_open,
                post: w.post,
            }),
            plugins: p
                .plugins
                .iter()
                .map(|p| {
                    use base64::Engine;
                    Plugin {
                        name: p.name.clone(),
                        wasm_base64: base64::engine::general_purpose::STANDARD.encode(&p.wasm),
                        fail_open: p.fail_open,
                        fuel: if p.fuel == 0 { default_fuel() } else { p.fuel },
                        max_memory_bytes: if p.max_memory_bytes == 0 {
                            default_plugin_memory()
                        } else {
                            p.max_memory_bytes
                        },
                    }
                })
                .collect(),
        })
    }

    pub fn to_proto(&self) -> proto::Guardrails {
        proto::Guardrails {
            pii: self.pii.as_ref().map(|pii| proto::PiiGuard {
                kinds: pii.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
                action: match pii.action {
                    PiiAction::Mask => "mask",
                    PiiAction::Refuse => "refuse",
                }
                .to_owned(),
            }),
            deny: self.deny.as_ref().map(|d| proto::DenyList {
                words: d.words.clone(),
                patterns: d.patterns.clone(),
            }),
            max_prompt_tokens: self.max_prompt_tokens.unwrap_or(0),
            webhook: self.webhook.as_ref().map(|w| proto::GuardrailWebhook {
                url: w.url.clone(),
                timeout_ms: w.timeout_ms,
                fail_open: w.fail_open,
                post: w.post,
            }),
            plugins: self
                .plugins
                .iter()
                .map(|p| proto::GuardrailPlugin {
                    name: p.name.clone(),
                    // Checked on write: a module that does not decode is never stored.
                    wasm: p.module().unwrap_or_default(),
                    fail_open: p.fail_open,
                    fuel: p.fuel,
                    max_memory_bytes: p.max_memory_bytes,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_proto_form_and_names_bad_fields() {
        let guardrails: Guardrails = serde_json::from_str(
            r#"{"pii": {"action": "refuse"}, "deny": {"words": ["secret"]}, "max_prompt_tokens": 100,
                "webhook": {"url": "http://127.0.0.1:9/check", "post": true}}"#,
        )
        .expect("valid");
        assert_eq!(guardrails.pii.as_ref().map(|p| p.kinds.len()), Some(4));
        assert_eq!(
            Guardrails::from_proto(&guardrails.to_proto()),
            Ok(guardrails.clone())
        );
        let bad = Guardrails {
            max_prompt_tokens: Some(0),
            ..guardrails.clone()
        };
        let error = bad.validate(|_| Ok(())).expect_err("zero");
        assert!(error.starts_with("guardrails.max_prompt_tokens"), "{error}");
        let patterned = Guardrails {
            deny: Some(DenyList {
                words: Vec::new(),
                patterns: vec!["(unclosed".into()],
            }),
            ..guardrails
        };
        let error = patterned
            .validate(|_| Err("unclosed group".into()))
            .expect_err("a bad pattern");
        assert_eq!(error, "guardrails.deny.patterns[0]: unclosed group");
    }
}
