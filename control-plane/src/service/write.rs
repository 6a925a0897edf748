//! The one door to the store's writes: the caller's role is checked first,
//! the store is handed a [`Grant`], and what changed is recorded in the audit
//! log (as the admin API shows it, so never a secret) once it committed.

pub mod grant;

use super::Admin;
use crate::access::{Need, Principal};
use crate::audit::AuditContext;
use crate::error::Result;
use grant::Grant;
use serde::Serialize;
use shared::time::now_ms;

/// What a write made, with the audit entries that say so (at least one).
pub struct Audited<R> {
    value: R,
    entries: Vec<Entry>,
}

struct Entry {
    action: &'static str,
    resource: String,
    before: Option<String>,
    after: Option<String>,
}

impl<R> Audited<R> {
    /// `action` such as `provider.create`, `resource` such as `provider/openai`.
    pub fn new<T: Serialize>(
        value: R,
        action: &'static str,
        resource: String,
        before: Option<&T>,
        after: Option<&T>,
    ) -> Self {
        Audited {
            value,
            entries: vec![],
        }
        .and(action, resource, before, after)
    }

    /// A write of several resources (perhaps none): an entry for each
    /// `(resource, before, after)`.
    pub fn each<'t, T: Serialize + 't>(
        value: R,
        action: &'static str,
        changes: impl IntoIterator<Item = (String, Option<&'t T>, Option<&'t T>)>,
    ) -> Self {
        changes.into_iter().fold(
            Audited {
                value,
                entries: vec![],
            },
            |audited, (resource, before, after)| audited.and(action, resource, before, after),
        )
    }

    /// One more entry, for a write that changed several resources.
    fn and<T: Serialize>(
        mut self,
        action: &'static str,
        resource: String,
        before: Option<&T>,
        after: Option<&T>,
    ) -> Self {
        let json = |state: Option<&T>| state.and_then(|s| serde_json::to_string(s).ok());
        self.entries.push(Entry {
            action,
            resource,
            before: json(before),
            after: json(after),
        });
        self
    }
}

impl Admin {
    /// Runs `op` if the caller may do what `need` names, then records its
    /// entries. Data planes are told at once.
    pub(super) async fn write<R>(
        &self,
        need: Need<'_>,
        op: impl AsyncFnOnce(&Grant) -> Result<Audited<R>>,
    ) -> Result<R> {
        self.require(need)?;
        let Audited { value, entries } = op(&Grant::new()).await?;
        self.refresher.refresh_now();
        for entry in entries {
            self.record(entry).await;
        }
        Ok(value)
    }

    /// A write the control plane makes itself (seeded prices, users first
    /// seen in tokens), recorded under `actor`.
    pub(super) async fn system_write<R>(
        &self,
        actor: String,
        op: impl AsyncFnOnce(&Grant) -> Result<Audited<R>>,
    ) -> Result<R> {
        let context = AuditContext::new(Principal::system(actor), None);
        crate::audit::scope(context, self.write(Need::ConfigWrite, op)).await
    }

    /// The write is already committed: a failure to record it is logged
    /// loudly rather than undoing it.
    async fn record(&self, entry: Entry) {
        let context = crate::audit::current()
            .unwrap_or_else(|_| AuditContext::new(Principal::system("system".into()), None));
        let row = crate::store::NewAuditEntry {
            at_ms: now_ms(),
            actor: &context.principal.actor,
            action: entry.action,
            resource: &entry.resource,
            request_id: &context.request_id,
            before: entry.before,
            after: entry.after,
        };
        if let Err(error) = self.store.insert_audit(&row).await {
            error.log_if_internal();
            tracing::error!(action = entry.action, resource = %entry.resource, "an admin write could not be recorded in the audit log");
            metrics::counter!("switchboard_audit_failures_total").increment(1);
        }
    }
}
