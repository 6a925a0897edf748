//! What the control plane last counted for budgets and quotas (from every
//! data plane's usage): floors under this data plane's own counters, so
//! spend through other data planes counts here too. Updated from the
//! counters messages of the config stream, never with the config itself.

use crate::cow_map::CowMap;
use arc_swap::ArcSwap;
use shared::proto;
use std::sync::Arc;

/// One holder's counts, as the request path reads them (nothing to allocate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub period_start_ms: i64,
    pub spent_micros: i64,
    pub requests: i64,
    pub tokens: i64,
}

#[derive(Default)]
pub struct ControlPlaneCounts {
    by_holder: ArcSwap<CowMap<String, proto::SpendState>>,
}

impl ControlPlaneCounts {
    /// By holder name ("key/<id>", ...).
    pub fn get(&self, holder: &str) -> Option<Counted> {
        self.by_holder.load().get(holder).map(|s| Counted {
            period_start_ms: s.period_start_ms,
            spent_micros: s.spent_micros,
            requests: s.requests,
            tokens: s.tokens,
        })
    }

    /// A complete set replaces every count; otherwise the holders listed change.
    pub fn apply(&self, counters: proto::Counters) {
        let listed = counters.spend.into_iter().map(|s| (s.holder.clone(), s));
        let next = if counters.complete {
            listed.collect()
        } else {
            let mut next = CowMap::clone(&self.by_holder.load());
            for (holder, state) in listed {
                next.insert(holder, state);
            }
            next
        };
        self.by_holder.store(Arc::new(next));
    }

    pub fn all(&self) -> Vec<proto::SpendState> {
        self.by_holder.load().values().cloned().collect()
    }
}
