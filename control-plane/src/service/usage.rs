//! Usage and cost, totalled or grouped, and the records themselves; and
//! the audit log. Reads only: a team admin's are its team's.

use super::{non_empty, Admin};
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::UsageQuery;
use shared::ids::TeamId;
use shared::time::rfc3339_to_ms;

impl Admin {
    pub async fn usage(&self, filter: UsageFilter) -> Result<UsageAnswer> {
        let groups = UsageGroup::parse_list(filter.group_by.as_deref().unwrap_or_default())
            .map_err(Error::invalid)?;
        let query = self.usage_query(filter)?;
        if groups.is_empty() {
            return Ok(UsageAnswer::Totals(self.store.usage_totals(&query).await?));
        }
        let rows = self.store.usage_report(&query, &groups).await?;
        Ok(UsageAnswer::Report { rows })
    }

    /// The newest records matching the filter (its grouping aside): at most
    /// `limit` (100 unless asked), never more than 1,000.
    pub async fn usage_records(&self, filter: UsageFilter) -> Result<UsageRecords> {
        let limit = filter.limit.unwrap_or(100);
        const MAX_LISTED: u32 = 1_000;
        if !(1..=MAX_LISTED).contains(&limit) {
            return Err(Error::invalid(format!("limit: expected 1 to {MAX_LISTED}")));
        }
        let query = self.usage_query(filter)?;
        let records = self.store.usage_records(&query, limit).await?;
        Ok(UsageRecords { records })
    }

    /// A usage filter checked and in stored terms; a team admin's is its team's.
    fn usage_query(&self, mut filter: UsageFilter) -> Result<UsageQuery> {
        let who = crate::audit::principal()?;
        if non_empty(filter.team_id.as_ref()).is_none() {
            filter.team_id = who.team_scope().map(|t| t.as_str().to_owned());
        }
        let team = non_empty(filter.team_id.clone()).map(TeamId::from);
        who.require(Need::TeamRead(team.as_ref()))?;
        let time = |field: &str, value: Option<String>| -> Result<Option<i64>> {
            match value.filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(text) => rfc3339_to_ms(&text)
                    .map(Some)
                    .ok_or_else(|| Error::invalid(format!("{field}: expected an RFC 3339 time"))),
            }
        };
        Ok(UsageQuery {
            since_ms: time("since", filter.since)?,
            until_ms: time("until", filter.until)?,
            key_id: filter.key_id.filter(|v| !v.is_empty()),
            user_id: filter.user_id.filter(|v| !v.is_empty()),
            team_id: filter.team_id.filter(|v| !v.is_empty()),
            model: filter.model.filter(|v| !v.is_empty()),
            provider: filter.provider.filter(|v| !v.is_empty()),
            variant: filter.variant.filter(|v| !v.is_empty()),
            estimated: filter.estimated,
            request_id: filter.request_id.filter(|v| !v.is_empty()),
            trace_id: filter.trace_id.filter(|v| !v.is_empty()),
        })
    }

    pub async fn audit_log(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        self.require(Need::ConfigRead)?;
        let since = match filter.since.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(
                rfc3339_to_ms(text)
                    .ok_or_else(|| Error::invalid("since: expected an RFC 3339 time"))?,
            ),
        };
        let limit = filter.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit: must be between 1 and 1000"));
        }
        self.store.list_audit(&filter, since, limit).await
    }
}
