//! Token counts: what providers report and what is priced and limited.

/// Token counts as the provider reported them. (De)serialises as OpenAI's
/// `usage` object, details included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(from = "OpenAiUsage", into = "OpenAiUsage")]
pub struct TokenUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Of the prompt tokens, how many were read from the provider's cache.
    pub cached_tokens: i64,
    /// Of the prompt tokens, how many were written to the provider's cache
    /// (Anthropic prices them apart; OpenAI's usage has no field for them).
    pub cache_write_tokens: i64,
    /// Of the completion tokens, how many were spent reasoning.
    pub reasoning_tokens: i64,
}

/// Chat completions' names; the Responses API's (`input_tokens`, ...) are read too.
#[derive(Default, serde::Deserialize, serde::Serialize)]
struct OpenAiUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: i64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: i64,
    #[serde(default)]
    total_tokens: i64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "input_tokens_details"
    )]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "output_tokens_details"
    )]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Default, serde::Deserialize, serde::Serialize)]
struct PromptDetails {
    #[serde(default, deserialize_with = "zero_if_null")]
    cached_tokens: i64,
}

#[derive(Default, serde::Deserialize, serde::Serialize)]
struct CompletionDetails {
    #[serde(default, deserialize_with = "zero_if_null")]
    reasoning_tokens: i64,
}

fn zero_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    <Option<i64> as serde::Deserialize>::deserialize(d).map(Option::unwrap_or_default)
}

impl From<OpenAiUsage> for TokenUsage {
    fn from(u: OpenAiUsage) -> Self {
        TokenUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            cache_write_tokens: 0,
            reasoning_tokens: u
                .completion_tokens_details
                .map_or(0, |d| d.reasoning_tokens),
        }
    }
}

impl From<TokenUsage> for OpenAiUsage {
    fn from(u: TokenUsage) -> Self {
        OpenAiUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            prompt_tokens_details: (u.cached_tokens > 0).then_some(PromptDetails {
                cached_tokens: u.cached_tokens,
            }),
            completion_tokens_details: (u.reasoning_tokens > 0).then_some(CompletionDetails {
                reasoning_tokens: u.reasoning_tokens,
            }),
        }
    }
}

impl TokenUsage {
    /// Counts from providers that report no total.
    pub fn new(prompt_tokens: i64, completion_tokens: i64) -> Self {
        TokenUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            ..TokenUsage::default()
        }
    }
}
