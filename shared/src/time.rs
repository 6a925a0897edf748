//! Timestamps: stored as Unix milliseconds, shown as RFC 3339.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, read straight from the system clock
/// (chrono's `Utc::now` converts through a calendar date: several times
/// per request, it was 1% of the data plane's instructions).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

pub fn ms_to_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub fn rfc3339_to_ms(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = 1_727_000_000_123;
        assert_eq!(rfc3339_to_ms(&ms_to_rfc3339(ms)), Some(ms));
        assert_eq!(rfc3339_to_ms("2024-13-01"), None);
    }
}
