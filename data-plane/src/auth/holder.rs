//! Who a caller's limits belong to: its key, and its user and team when it
//! has them, each with what the snapshot allows it.

use shared::limits::{BudgetCeiling, HolderKind, Limits};
use shared::proto;
use std::sync::Arc;

/// A key's, user's or team's limits and budget, as the snapshot gives them.
#[derive(Debug, Default)]
pub struct Allowance {
    pub limits: Limits,
    pub budget: Option<BudgetCeiling>,
}

impl Allowance {
    /// `None` for a holder with nothing to enforce, which then costs nothing.
    pub fn of(
        limits: Option<&proto::Limits>,
        budget: Option<&proto::SnapshotBudget>,
    ) -> Result<Option<Arc<Self>>, String> {
        let allowance = Allowance {
            limits: Limits::from_proto(limits),
            budget: BudgetCeiling::from_snapshot(budget)?,
        };
        Ok((!allowance.limits.is_empty() || allowance.budget.is_some())
            .then(|| Arc::new(allowance)))
    }
}

/// A caller's key, user or team, with what it is held to.
#[derive(Clone, Debug)]
pub struct Holder {
    pub kind: HolderKind,
    pub id: String,
    pub allowance: Arc<Allowance>,
}
