//! Requests refused before admission (a bad key, a limit, a bad request):
//! counted per caller, kind and minute, and shipped with the usage records,
//! so that a flood of refusals costs a counter each, not a stored record.

use parking_lot::Mutex;
use shared::ids::{KeyId, TeamId, UserId};
use shared::proto;
use std::collections::HashMap;

/// Who was refused: nobody known (auth failed), or a caller's key and holders.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct Refused {
    pub key_id: Option<KeyId>,
    pub user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
}

#[derive(Hash, PartialEq, Eq)]
struct Count {
    who: Refused,
    kind: &'static str,
    minute_ms: i64,
}

/// Distinct counts held between two journal ticks (50 ms): beyond these, a
/// caller's refusals are counted as nobody's, so that memory and batches
/// stay bounded whatever a flood of refusals looks like.
pub const MAX_COUNTS: usize = 1_000;

#[derive(Default)]
pub struct Refusals(Mutex<HashMap<Count, u64>>);

impl Refusals {
    pub fn count(&self, who: Refused, kind: &'static str) {
        let minute_ms = shared::time::now_ms() / 60_000 * 60_000;
        let mut counts = self.0.lock();
        let who = if counts.len() < MAX_COUNTS {
            who
        } else {
            Refused::default()
        };
        *counts
            .entry(Count {
                who,
                kind,
                minute_ms,
            })
            .or_default() += 1;
    }

    /// The counts so far, each with the id that makes its delivery idempotent.
    pub fn take(&self) -> Vec<proto::RefusalCount> {
        let counts = std::mem::take(&mut *self.0.lock());
        let text = |id: Option<&str>| id.unwrap_or_default().to_owned();
        counts
            .into_iter()
            .map(|(c, count)| proto::RefusalCount {
                id: uuid::Uuid::now_v7().to_string(),
                key_id: text(c.who.key_id.as_ref().map(KeyId::as_str)),
                user_id: text(c.who.user_id.as_ref().map(UserId::as_str)),
                team_id: text(c.who.team_id.as_ref().map(TeamId::as_str)),
                kind: c.kind.to_owned(),
                minute_ms: c.minute_ms,
                count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_caller_and_kind_and_empties_when_taken() {
        let refusals = Refusals::default();
        let key = Refused {
            key_id: Some(KeyId::from("k".to_owned())),
            ..Refused::default()
        };
        for _ in 0..3 {
            refusals.count(key.clone(), "rate_limit_exceeded");
        }
        refusals.count(Refused::default(), "invalid_api_key");
        let mut taken = refusals.take();
        taken.sort_by_key(|c| c.count);
        let seen: Vec<_> = taken
            .iter()
            .map(|c| (c.key_id.as_str(), c.kind.as_str(), c.count))
            .collect();
        assert_eq!(
            seen,
            [("", "invalid_api_key", 1), ("k", "rate_limit_exceeded", 3)]
        );
        assert_ne!(taken[0].id, taken[1].id);
        assert!(refusals.take().is_empty());
    }
}
