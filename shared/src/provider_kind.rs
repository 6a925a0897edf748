//! The closed set of provider kinds Switchboard can talk to, and which of a
//! kind's APIs a provider uses.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// api.openai.com; `base_url` includes `/v1`.
    Openai,
    /// `https://{resource}.openai.azure.com`; deployment and api-version in settings.
    AzureOpenai,
    /// api.anthropic.com, Messages API; `base_url` has no version path.
    Anthropic,
    /// Generative Language API; `base_url` includes the version (`/v1beta`).
    Gemini,
    /// Baidu ERNIE: v2 (OpenAI-compatible) or v1 (native, access-token flow).
    Qianfan,
    /// Alibaba Qwen: compatible mode or the native text-generation API.
    Dashscope,
    /// Tencent: OpenAI-compatible endpoint or the native TC3-signed API.
    Hunyuan,
    /// ByteDance Doubao on Volcengine Ark (OpenAI-compatible).
    Ark,
    Deepseek,
    /// Ollama: OpenAI-compatible `/v1` or native `/api/chat` NDJSON.
    Ollama,
    Vllm,
    /// Any other server speaking OpenAI's chat completions API.
    OpenaiCompatible,
}

impl ProviderKind {
    pub const ALL: &'static [ProviderKind] = &[
        ProviderKind::Openai,
        ProviderKind::AzureOpenai,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Qianfan,
        ProviderKind::Dashscope,
        ProviderKind::Hunyuan,
        ProviderKind::Ark,
        ProviderKind::Deepseek,
        ProviderKind::Ollama,
        ProviderKind::Vllm,
        ProviderKind::OpenaiCompatible,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::AzureOpenai => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Qianfan => "qianfan",
            ProviderKind::Dashscope => "dashscope",
            ProviderKind::Hunyuan => "hunyuan",
            ProviderKind::Ark => "ark",
            ProviderKind::Deepseek => "deepseek",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Vllm => "vllm",
            ProviderKind::OpenaiCompatible => "openai_compatible",
        }
    }

    /// `gen_ai.system` of OpenTelemetry's GenAI conventions: their
    /// well-known value where there is one, else the kind's name.
    pub fn gen_ai_system(self) -> &'static str {
        match self {
            ProviderKind::AzureOpenai => "az.ai.openai",
            ProviderKind::Gemini => "gcp.gemini",
            other => other.as_str(),
        }
    }

    /// OpenAI's `/v1/completions` and `/v1/responses` are passed through to
    /// these only: the others' compatible APIs lack them or differ.
    pub fn serves_completions_and_responses(self) -> bool {
        matches!(
            self,
            ProviderKind::Openai | ProviderKind::AzureOpenai | ProviderKind::OpenaiCompatible
        )
    }

    /// Whether a cheap request (a model list) can probe the API's health;
    /// Baidu v1, DashScope native and Tencent native have none.
    pub fn has_health_probe(self, api: ProviderApi) -> bool {
        !(api == ProviderApi::Native
            && matches!(
                self,
                ProviderKind::Qianfan | ProviderKind::Dashscope | ProviderKind::Hunyuan
            ))
    }

    /// DeepSeek and Anthropic have no embeddings API.
    pub fn offers_embeddings(self) -> bool {
        !matches!(self, ProviderKind::Deepseek | ProviderKind::Anthropic)
    }

    /// Kinds with a native API besides an OpenAI-compatible one: the
    /// provider's `api` setting chooses.
    pub fn has_two_apis(self) -> bool {
        matches!(
            self,
            ProviderKind::Qianfan
                | ProviderKind::Dashscope
                | ProviderKind::Hunyuan
                | ProviderKind::Ollama
        )
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown provider kind {0:?}; expected one of: openai, azure_openai, anthropic, gemini, qianfan, dashscope, hunyuan, ark, deepseek, ollama, vllm, openai_compatible")]
pub struct UnknownProviderKind(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProviderKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownProviderKind(text.to_owned()))
    }
}

/// Settings every kind with a health probe reads: active health checks.
pub const HEALTH_CHECK_SETTINGS: &[&str] = &["health_check_interval_ms", "health_check_timeout_ms"];

/// Which API of a two-API kind a provider speaks (`settings.api`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProviderApi {
    /// The OpenAI-compatible API; the default.
    #[default]
    Openai,
    Native,
}

impl FromStr for ProviderApi {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "openai" => Ok(ProviderApi::Openai),
            "native" => Ok(ProviderApi::Native),
            other => Err(format!(
                "settings.api: {other:?} is not an API; expected \"openai\" or \"native\""
            )),
        }
    }
}

/// The settings each kind reads, and which of them must be present. One
/// table for the control plane's validation and the data plane's reading.
pub struct SettingsSpec {
    pub allowed: &'static [&'static str],
    pub required: &'static [&'static str],
    /// Whether the provider needs `secret_key` besides (or instead of) `api_key`.
    pub needs_secret_key: bool,
}

impl ProviderKind {
    pub fn settings(self, api: ProviderApi) -> SettingsSpec {
        const NONE: &[&str] = &[];
        match (self, api) {
            (ProviderKind::AzureOpenai, _) => SettingsSpec {
                allowed: &["api_version", "deployment"],
                required: &["api_version"],
                needs_secret_key: false,
            },
            (ProviderKind::Anthropic, _) => SettingsSpec {
                allowed: &["anthropic_version", "default_max_tokens"],
                required: NONE,
                needs_secret_key: false,
            },
            (ProviderKind::Qianfan, ProviderApi::Native) => SettingsSpec {
                allowed: &["api"],
                required: NONE,
                needs_secret_key: true,
            },
            (ProviderKind::Hunyuan, ProviderApi::Native) => SettingsSpec {
                allowed: &["api", "secret_id", "region"],
                required: &["secret_id"],
                needs_secret_key: true,
            },
            (kind, _) if kind.has_two_apis() => SettingsSpec {
                allowed: &["api"],
                required: NONE,
                needs_secret_key: false,
            },
            _ => SettingsSpec {
                allowed: NONE,
                required: NONE,
                needs_secret_key: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_by_its_name() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>().ok(), Some(*kind));
        }
        assert!("anthropicc".parse::<ProviderKind>().is_err());
    }

    #[test]
    fn native_apis_name_their_extra_settings() {
        let hunyuan = ProviderKind::Hunyuan.settings(ProviderApi::Native);
        assert!(hunyuan.required.contains(&"secret_id") && hunyuan.needs_secret_key);
        assert!(
            !ProviderKind::Hunyuan
                .settings(ProviderApi::Openai)
                .needs_secret_key
        );
        assert_eq!(
            ProviderKind::AzureOpenai
                .settings(ProviderApi::Openai)
                .required,
            &["api_version"]
        );
        assert!("nat".parse::<ProviderApi>().is_err());
    }
}
