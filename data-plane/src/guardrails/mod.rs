//! A route's guardrails, after limits and before the cache and the
//! provider: the prompt's size, denied words and patterns, personal data
//! (masked, or the request refused), and the route's moderation service,
//! asked about the request and (when it says so) about a whole answer.
//!
//! The prompt is what a model reads: every string of the request's
//! messages, system prompt, input or prompt, except ids, roles, names and
//! image data.

mod pii;
mod plugin;
mod webhook;

pub use webhook::Stage;

use plugin::{Hook, Outcome, Plugin};

use crate::error::GatewayError;
use crate::providers::UpstreamClient;
use regex::{Regex, RegexSet};
use serde_json::Value;
use shared::guardrails::{GuardrailWebhook, Guardrails, PiiAction, PiiGuard};

/// How a streamed answer is checked: each event as it passes, and the
/// whole answer at its end (the stream held back until then).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamChecks {
    pub per_event: bool,
    pub at_end: bool,
}

/// A route's or team's guardrails with their patterns compiled, once per
/// config version.
#[derive(Debug)]
pub struct Compiled {
    /// As configured, for the copy of the config on disk.
    pub source: Guardrails,
    pii: Option<PiiGuard>,
    denied_words: Option<Regex>,
    denied_patterns: Option<RegexSet>,
    max_prompt_tokens: Option<u32>,
    pub webhook: Option<GuardrailWebhook>,
    plugins: Vec<Plugin>,
}

impl Compiled {
    pub fn compile(guardrails: Guardrails) -> Result<Self, String> {
        guardrails.validate(|pattern| Regex::new(pattern).map(drop).map_err(|e| e.to_string()))?;
        let source = guardrails.clone();
        let deny = guardrails.deny.unwrap_or_default();
        let denied_words = (!deny.words.is_empty())
            .then(|| {
                let words: Vec<String> =
                    deny.words.iter().map(|w| regex::escape(w.trim())).collect();
                Regex::new(&format!(r"(?i)\b(?:{})\b", words.join("|")))
            })
            .transpose()
            .map_err(|e| format!("guardrails.deny.words: {e}"))?;
        let denied_patterns = (!deny.patterns.is_empty())
            .then(|| RegexSet::new(&deny.patterns))
            .transpose()
            .map_err(|e| format!("guardrails.deny.patterns: {e}"))?;
        let plugins = guardrails
            .plugins
            .iter()
            .map(Plugin::compile)
            .collect::<Result<_, _>>()?;
        Ok(Compiled {
            plugins,
            source,
            pii: guardrails.pii,
            denied_words,
            denied_patterns,
            max_prompt_tokens: guardrails.max_prompt_tokens,
            webhook: guardrails.webhook,
        })
    }

    pub fn from_proto(guardrails: &shared::proto::Guardrails) -> Result<Self, String> {
        Guardrails::from_proto(guardrails).and_then(Self::compile)
    }

    /// Checks a request body (a JSON object): the built-in checks, then the
    /// plugins' request hooks in order. Answers the body to send in its
    /// place when one was rewritten; `None` to send it as it came.
    pub fn inspect(&self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let masked = self.built_in(body)?;
        self.hooked(Hook::Request, |p| p.on_request, body, masked)
    }

    /// Whether answers are checked: by a plugin or the moderation service.
    pub fn checks_answers(&self) -> bool {
        self.webhook.as_ref().is_some_and(|hook| hook.post)
            || self.plugins.iter().any(|p| p.on_response || p.on_chunk)
    }

    /// How a streamed answer is checked.
    pub fn stream_checks(&self) -> StreamChecks {
        StreamChecks {
            per_event: self.plugins.iter().any(|p| p.on_chunk),
            at_end: self.webhook.as_ref().is_some_and(|hook| hook.post)
                || self.plugins.iter().any(|p| p.on_response && !p.on_chunk),
        }
    }

    /// A whole answer through the plugins' response hooks (for a streamed
    /// answer, those of plugins that do not see it event by event);
    /// `None`: as it came.
    pub fn inspect_answer(
        &self,
        answer: &[u8],
        streamed: bool,
    ) -> Result<Option<Vec<u8>>, GatewayError> {
        let sees = |p: &Plugin| p.on_response && !(streamed && p.on_chunk);
        self.hooked(Hook::Response, sees, answer, None)
    }

    /// One event's data of a streamed answer through the plugins' chunk hooks.
    pub fn inspect_event(&self, data: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        self.hooked(Hook::Chunk, |p| p.on_chunk, data, None)
    }

    fn hooked(
        &self,
        hook: Hook,
        sees: impl Fn(&Plugin) -> bool,
        original: &[u8],
        mut rewritten: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, GatewayError> {
        for plugin in self.plugins.iter().filter(|p| sees(p)) {
            let current = rewritten.as_deref().unwrap_or(original);
            match plugin.run(hook, current)? {
                Outcome::Continue => {}
                Outcome::Replace(body) => rewritten = Some(body),
                Outcome::Reject(message) => return Err(refused("plugin", message)),
            }
        }
        Ok(rewritten)
    }

    fn built_in(&self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let mut request: Value = serde_json::from_slice(body)
            .map_err(|_| GatewayError::bad_request("The request body is not valid JSON.", None))?;
        if let Some(max) = self.max_prompt_tokens {
            let tokens = crate::limits::estimate::prompt_tokens(&request);
            if tokens > i64::from(max) {
                return Err(refused(
                    "max_prompt_tokens",
                    format!(
                        "The prompt is about {tokens} tokens; this route accepts at most {max}."
                    ),
                ));
            }
        }
        let mut denied = false;
        let mut found_pii = None;
        prompt_strings(&mut request, &mut |text| {
            denied |= self.denied_words.as_ref().is_some_and(|r| r.is_match(text))
                || self
                    .denied_patterns
                    .as_ref()
                    .is_some_and(|r| r.is_match(text));
            if let (Some(pii), None) = (&self.pii, found_pii) {
                found_pii = pii::find(text, &pii.kinds);
            }
        });
        if denied {
            return Err(refused(
                "deny",
                "The request was refused by this route's guardrails: it contains a denied term."
                    .into(),
            ));
        }
        let (Some(pii), Some(kind)) = (&self.pii, found_pii) else {
            return Ok(None);
        };
        if pii.action == PiiAction::Refuse {
            return Err(refused(
                "pii",
                format!(
                    "The request was refused by this route's guardrails: it contains personal data ({}).",
                    kind.as_str()
                ),
            ));
        }
        prompt_strings(&mut request, &mut |text| {
            if let std::borrow::Cow::Owned(masked) = pii::mask(text, &pii.kinds) {
                *text = masked;
            }
        });
        counted("pii", "mask");
        serde_json::to_vec(&request)
            .map(Some)
            .map_err(|_| GatewayError::bad_request("The request could not be rewritten.", None))
    }

    /// Asks the route's moderation service, if it has one (for an answer,
    /// only if it asked to see answers).
    pub async fn moderate(
        &self,
        http: &UpstreamClient,
        stage: Stage<'_>,
    ) -> Result<(), GatewayError> {
        match &self.webhook {
            Some(hook) if hook.post || matches!(stage, Stage::Request { .. }) => {
                webhook::ask(http, hook, stage).await
            }
            _ => Ok(()),
        }
    }
}

fn counted(guardrail: &'static str, action: &'static str) {
    metrics::counter!("switchboard_guardrail_actions_total", "guardrail" => guardrail, "action" => action)
        .increment(1);
}

fn refused(guardrail: &'static str, message: String) -> GatewayError {
    counted(guardrail, "refuse");
    GatewayError::GuardrailRefused(message)
}

/// Fields of a request whose strings a model reads.
const PROMPT_FIELDS: [&str; 6] = [
    "messages",
    "system",
    "input",
    "prompt",
    "instructions",
    "contents",
];
/// Fields inside them that are not prompt text.
const NOT_TEXT: [&str; 14] = [
    "role",
    "type",
    "name",
    "id",
    "tool_call_id",
    "tool_use_id",
    "image_url",
    "source",
    "url",
    "data",
    "media_type",
    "cache_control",
    "signature",
    "detail",
];

fn prompt_strings(request: &mut Value, visit: &mut impl FnMut(&mut String)) {
    if let Value::Object(fields) = request {
        for (name, value) in fields.iter_mut() {
            if PROMPT_FIELDS.contains(&name.as_str()) {
                strings(value, visit);
            }
        }
    }
}

fn strings(value: &mut Value, visit: &mut impl FnMut(&mut String)) {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter_mut().for_each(|item| strings(item, visit)),
        Value::Object(fields) => {
            for (name, value) in fields.iter_mut() {
                if !NOT_TEXT.contains(&name.as_str()) {
                    strings(value, visit);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guardrails(json: Value) -> Compiled {
        Compiled::compile(serde_json::from_value(json).expect("guardrails")).expect("compiles")
    }

    fn inspect(g: &Compiled, request: Value) -> Result<Option<Value>, GatewayError> {
        g.inspect(&serde_json::to_vec(&request).expect("json"))
            .map(|b| b.map(|b| serde_json::from_slice(&b).expect("json")))
    }

    #[test]
    fn masks_personal_data_in_prompt_text_only() {
        let g = guardrails(json!({"pii": {"kinds": ["email"]}}));
        let request = json!({"model": "m", "user": "ada@example.com", "messages": [
            {"role": "user", "name": "ada@example.com", "content": [{"type": "text", "text": "I am ada@example.com"}]}]});
        let masked = inspect(&g, request).expect("passes").expect("rewritten");
        assert_eq!(masked["messages"][0]["content"][0]["text"], "I am [EMAIL]");
        assert_eq!(masked["messages"][0]["name"], "ada@example.com");
        assert_eq!(masked["user"], "ada@example.com");
        let clean = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
        assert!(inspect(&g, clean).expect("passes").is_none());
    }

    #[test]
    fn refuses_denied_terms_personal_data_and_long_prompts() {
        let g = guardrails(
            json!({"deny": {"words": ["Project X"], "patterns": ["(?i)drop\\s+table"]},
            "pii": {"action": "refuse", "kinds": ["card"]}, "max_prompt_tokens": 50}),
        );
        let ask =
            |text: &str| inspect(&g, json!({"messages": [{"role": "user", "content": text}]}));
        assert!(ask("what about project x?").is_err());
        assert!(ask("please DROP  TABLE users").is_err());
        assert!(ask("project xylophone")
            .expect("a word, not a prefix")
            .is_none());
        let error = ask("my card is 4111-1111-1111-1111").expect_err("card");
        assert!(error.to_string().contains("(card)"), "{error}");
        assert!(ask(&"word ".repeat(200)).is_err());
        assert!(ask("fine").expect("passes").is_none());
    }
}
