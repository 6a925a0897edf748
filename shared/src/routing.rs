//! How a route picks among its targets.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Smooth weighted round robin.
    #[default]
    Weighted,
    RoundRobin,
    Random,
    /// Lowest moving average of latency (time to first token for streams).
    LeastLatency,
    /// Fewest requests in flight.
    LeastBusy,
    /// Cheapest healthy target by the pricing table.
    Cost,
    /// Lowest tier first; the next only when a tier is unhealthy or saturated.
    Priority,
}

impl Strategy {
    pub const ALL: &'static [Strategy] = &[
        Strategy::Weighted,
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastLatency,
        Strategy::LeastBusy,
        Strategy::Cost,
        Strategy::Priority,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weighted => "weighted",
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastLatency => "least_latency",
            Strategy::LeastBusy => "least_busy",
            Strategy::Cost => "cost",
            Strategy::Priority => "priority",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = String;

    /// The empty string is the default, as proto3 sends an unset field.
    fn from_str(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Strategy::default());
        }
        Self::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                format!("strategy: {text:?} is not a strategy; expected one of: weighted, round_robin, random, least_latency, least_busy, cost, priority")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_strategy_and_defaults_to_weighted() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(*s));
        }
        assert_eq!("".parse::<Strategy>(), Ok(Strategy::Weighted));
        assert!("fastest".parse::<Strategy>().is_err());
    }
}
