//! Money as integer micro-units, prices per million tokens, and the cost of
//! a request. Integers end to end: no floating-point drift in any sum.

use crate::proto;
use crate::tokens::TokenUsage;
use foldhash::{HashMap, HashMapExt};
use rust_decimal::Decimal;
use std::fmt;
use std::str::FromStr;

/// An amount in millionths of its currency's unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "12.50"))]
pub struct Micros(pub i64);

/// Decimal places an amount or price may have.
const SCALE: u32 = 6;

impl Micros {
    pub const ZERO: Micros = Micros(0);

    /// A non-negative decimal string ("12.50") with at most six decimal places;
    /// the error names `field`.
    pub fn parse(text: &str, field: &str) -> Result<Self, String> {
        Self::parse_value(text).map_err(|e| format!("{field}: {e}"))
    }

    fn parse_value(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("expected a decimal string with at most {SCALE} decimal places, such as \"12.50\"; got {text:?}")
        };
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.len() > 40 || trimmed.contains(['e', 'E']) {
            return Err(bad());
        }
        let value = Decimal::from_str_exact(trimmed).map_err(|_| bad())?;
        if value.is_sign_negative() {
            return Err("must not be negative".into());
        }
        if value.normalize().scale() > SCALE {
            return Err(bad());
        }
        (value * Decimal::from(1_000_000))
            .normalize()
            .try_into()
            .map(Micros)
            .map_err(|_| format!("{text:?} is too large"))
    }

    pub fn saturating_add(self, other: Micros) -> Micros {
        Micros(self.0.saturating_add(other.0))
    }
}

/// As a decimal string without trailing zeros beyond two places: "12.50", "0.0025".
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut value = Decimal::new(self.0, SCALE).normalize();
        if value.scale() < 2 {
            value.rescale(2);
        }
        write!(f, "{value}")
    }
}

impl serde::Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Money is read only from strings: a JSON number may already have lost digits.
impl<'de> serde::Deserialize<'de> for Micros {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d).map_err(|_| {
            serde::de::Error::custom("money is a decimal string, such as \"12.50\"")
        })?;
        Micros::parse_value(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    #[default]
    Usd,
    /// For the Chinese providers, which price in yuan.
    Cny,
}

impl Currency {
    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Usd => "USD",
            Currency::Cny => "CNY",
        }
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "" | "USD" => Ok(Currency::Usd),
            "CNY" => Ok(Currency::Cny),
            other => Err(format!(
                "currency: {other:?} is not supported; expected USD or CNY"
            )),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Prices per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub input: Micros,
    pub output: Micros,
    pub cached_input: Micros,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_input: Micros,
    pub currency: Currency,
}

impl Price {
    /// What `tokens` cost, rounded up to the micro-unit: a request is never
    /// counted as cheaper than it was.
    pub fn cost(&self, tokens: &TokenUsage) -> Micros {
        let prompt = tokens.prompt_tokens.max(0);
        let cached = tokens.cached_tokens.clamp(0, prompt);
        let written = tokens.cache_write_tokens.clamp(0, prompt - cached);
        let uncached = prompt - cached - written;
        let per_million = i128::from(uncached) * i128::from(self.input.0)
            + i128::from(cached) * i128::from(self.cached_input.0)
            + i128::from(written) * i128::from(self.cache_write_input.0)
            + i128::from(tokens.completion_tokens.max(0)) * i128::from(self.output.0);
        let micros = (per_million + 999_999) / 1_000_000;
        Micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// The most `prompt` tokens in and `completion` tokens out can cost.
    pub fn worst_case(&self, prompt: i64, completion: i64) -> Micros {
        let input = Micros(
            self.input
                .0
                .max(self.cached_input.0)
                .max(self.cache_write_input.0),
        );
        Price { input, ..*self }.cost(&TokenUsage::new(prompt, completion))
    }

    pub fn from_proto(p: &proto::SnapshotPrice) -> Result<Self, String> {
        Ok(Price {
            input: Micros(p.input_micros),
            output: Micros(p.output_micros),
            cached_input: Micros(p.cached_input_micros),
            cache_write_input: Micros(p.cache_write_input_micros),
            currency: p.currency.parse()?,
        })
    }
}

/// A price list: by (provider, upstream model), provider "" pricing the
/// model for every provider without a price of its own. Kept by model, then
/// provider, so a lookup (twice per request) borrows its keys instead of
/// building a pair of owned strings.
#[derive(Debug, Default)]
pub struct Prices(HashMap<String, HashMap<String, Price>>);

impl Prices {
    pub fn new(prices: impl IntoIterator<Item = ((String, String), Price)>) -> Self {
        let mut by_model: HashMap<String, HashMap<String, Price>> = HashMap::new();
        for ((provider, model), price) in prices {
            by_model.entry(model).or_default().insert(provider, price);
        }
        Prices(by_model)
    }

    /// A provider's own price for the model, else the model's.
    pub fn get(&self, provider: &str, model: &str) -> Option<&Price> {
        let by_provider = self.0.get(model)?;
        by_provider.get(provider).or_else(|| by_provider.get(""))
    }

    pub fn from_proto(prices: &[proto::SnapshotPrice]) -> Result<Self, String> {
        prices
            .iter()
            .map(|p| {
                let price =
                    Price::from_proto(p).map_err(|e| format!("price of {:?}: {e}", p.model))?;
                Ok(((p.provider.clone(), p.model.clone()), price))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Prices::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_decimal_strings_exactly() {
        assert_eq!(Micros::parse("12.50", "amount"), Ok(Micros(12_500_000)));
        assert_eq!(Micros::parse("0.000001", "amount"), Ok(Micros(1)));
        assert_eq!(Micros::parse("3", "amount"), Ok(Micros(3_000_000)));
        assert_eq!(Micros(12_500_000).to_string(), "12.50");
        assert_eq!(Micros(2_500).to_string(), "0.0025");
        assert_eq!(Micros(0).to_string(), "0.00");
        for bad in [
            "0.0000001",
            "-1",
            "1e3",
            "",
            "abc",
            "1,5",
            "99999999999999999999",
        ] {
            let error = Micros::parse(bad, "budget.amount").expect_err(bad);
            assert!(error.starts_with("budget.amount:"), "{error}");
        }
    }

    #[test]
    fn a_providers_own_price_comes_before_the_models() {
        let price = |input| Price {
            input: Micros(input),
            output: Micros(0),
            cached_input: Micros(0),
            cache_write_input: Micros(0),
            currency: Currency::Usd,
        };
        let prices = Prices::new([
            (("".to_owned(), "gpt-4o".to_owned()), price(1)),
            (("azure".to_owned(), "gpt-4o".to_owned()), price(2)),
            (("azure".to_owned(), "o1".to_owned()), price(3)),
        ]);
        let input = |provider, model| prices.get(provider, model).map(|p| p.input.0);
        assert_eq!(input("azure", "gpt-4o"), Some(2));
        assert_eq!(input("openai", "gpt-4o"), Some(1));
        assert_eq!(input("azure", "o1"), Some(3));
        assert_eq!(input("openai", "o1"), None);
        assert_eq!(input("azure", "unknown"), None);
    }

    #[test]
    fn costs_are_exact_and_round_up_to_the_micro_unit() {
        let price = Price {
            input: Micros(2_500_000),
            output: Micros(10_000_000),
            cached_input: Micros(1_250_000),
            cache_write_input: Micros(3_125_000),
            currency: Currency::Usd,
        };
        // 1,000 in at $2.50/M and 500 out at $10/M: $0.0025 + $0.005.
        assert_eq!(price.cost(&TokenUsage::new(1_000, 500)), Micros(7_500));
        let cached = TokenUsage {
            cached_tokens: 400,
            ..TokenUsage::new(1_000, 0)
        };
        assert_eq!(price.cost(&cached), Micros(1_500 + 500));
        // Anthropic's prompt: 100 written to the cache, 300 read from it, 600 plain.
        let anthropic = TokenUsage {
            cached_tokens: 300,
            cache_write_tokens: 100,
            ..TokenUsage::new(1_000, 0)
        };
        assert_eq!(price.cost(&anthropic), Micros(1_500 + 375 + 313));
        // 7 tokens at $0.15/M is 1.05 micro-dollars: counted as 2.
        let cheap = Price {
            input: Micros(150_000),
            ..price
        };
        assert_eq!(cheap.cost(&TokenUsage::new(7, 0)), Micros(2));
        // A million requests of one token each sum exactly.
        let one = price.cost(&TokenUsage::new(0, 1));
        assert_eq!(Micros(one.0 * 1_000_000), Micros(10_000_000));
        assert_eq!(price.cost(&TokenUsage::default()), Micros::ZERO);
    }
}
