//! Prices, and the limits and budgets of keys, users and teams: what the
//! admin APIs accept, and what they show of spend.

use super::write::grant::Grant;
use super::Admin;
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::SpendRow;
use shared::limits::HolderKind;
use shared::money::{Currency, Micros, Price, Prices};
use shared::time::{ms_to_rfc3339, now_ms};
use std::collections::HashMap;

impl Admin {
    // ---- limits and budgets

    /// Limits and a budget for a holder within `ceilings` (its user's and
    /// team's): nobody hands out more than its holder has.
    pub(super) async fn check_allowance(
        &self,
        limits: &Limits,
        budget: Option<&Budget>,
        models: &[String],
        ceilings: &[(&str, &Limits, Option<&Budget>)],
    ) -> Result<()> {
        limits.validate().map_err(Error::invalid)?;
        if let Some(budget) = budget {
            budget.validate().map_err(Error::invalid)?;
        }
        for (holder, ceiling, ceiling_budget) in ceilings {
            if let Some((name, most)) = limits.exceeds(ceiling) {
                return Err(Error::invalid(format!(
                    "limits.{name}: the {holder} allows at most {most}"
                )));
            }
            if let (Some(mine), Some(theirs)) = (budget, ceiling_budget) {
                if mine.currency == theirs.currency
                    && mine.period == theirs.period
                    && mine.amount > theirs.amount
                {
                    return Err(Error::invalid(format!(
                        "budget.amount: the {holder}'s budget is {} {} {}",
                        theirs.amount, theirs.currency, theirs.period
                    )));
                }
            }
        }
        if let Some(budget) = budget {
            let book = self.price_book().await?;
            let routes = self.store.list_routes().await?;
            if let Some(problem) = book.unpriced(&routes, models, budget.currency, |_, _| true) {
                return Err(Error::invalid(format!("budget: {problem}")));
            }
        }
        Ok(())
    }

    async fn price_book(&self) -> Result<PriceBook> {
        Ok(PriceBook::new(self.store.list_prices().await?))
    }

    /// A route may not take traffic a budget counts unless its targets are
    /// priced; `others` are the other routes.
    pub(super) async fn check_route_priced(&self, route: &Route, others: &[Route]) -> Result<()> {
        let holders = self.store.holders().await?;
        if holders.iter().all(|h| h.budget.is_none()) {
            return Ok(());
        }
        let mut routes = others.to_vec();
        routes.push(route.clone());
        let book = self.price_book().await?;
        for holder in &holders {
            let Some(budget) = &holder.budget else {
                continue;
            };
            let in_route = |r: &Route, _: &RouteTarget| r.model == route.model;
            if let Some(problem) = book.unpriced(&routes, &holder.models, budget.currency, in_route)
            {
                return Err(Error::invalid(format!(
                    "targets: {} has a budget and can call this route, so {problem}",
                    holder.name()
                )));
            }
        }
        Ok(())
    }

    /// The `cost` strategy orders targets by price: each needs one, all in one currency.
    pub(super) async fn check_cost_strategy(&self, route: &Route) -> Result<()> {
        if route.strategy != shared::routing::Strategy::Cost {
            return Ok(());
        }
        let book = self.price_book().await?;
        let mut currencies = Vec::new();
        for (i, target) in route.targets.iter().enumerate() {
            let currency = book.currency(&target.provider, &target.model).ok_or_else(|| {
                Error::invalid(format!(
                    "targets[{i}]: strategy \"cost\" needs a price for {}/{}; set one with PUT /api/v1/prices/{}",
                    target.provider, target.model, target.model
                ))
            })?;
            if !currencies.contains(&currency) {
                currencies.push(currency);
            }
        }
        if currencies.len() > 1 {
            return Err(Error::invalid(
                "targets: strategy \"cost\" compares prices, which must all be in one currency",
            ));
        }
        Ok(())
    }

    /// A holder's limits, budget and (for teams and users) models.
    pub(super) async fn set_allowance(
        &self,
        grant: &Grant,
        (kind, id): (HolderKind, &str),
        limits: &Limits,
        budget: Option<&Budget>,
        models: Option<&[String]>,
    ) -> Result<()> {
        if !self
            .store
            .set_allowance(grant, kind, id, limits, budget, models)
            .await?
        {
            return Err(Error::NotFound(format!("{} {id:?}", kind.as_str())));
        }
        Ok(())
    }

    /// Fills in the views' spend, as last counted.
    pub(super) async fn show_spend<T: Holding>(&self, views: &mut [T]) -> Result<()> {
        let rows = match views {
            [one] => Vec::from_iter(self.store.spend_of(&T::KIND.holder(one.id())).await?),
            _ => self.store.spend_rows().await?,
        };
        let counted: HashMap<String, SpendRow> = rows
            .into_iter()
            .map(|row| (row.holder.clone(), row))
            .collect();
        let now = now_ms();
        for view in views {
            let row = counted.get(&T::KIND.holder(view.id()));
            let (limits, budget) = view.allowance();
            let spend = spend_view(limits, budget, row, now);
            view.set_spend(spend);
        }
        Ok(())
    }
}

/// A key, user or team as the admin API shows it: limits, budget and spend.
pub(super) trait Holding {
    const KIND: HolderKind;
    fn id(&self) -> &str;
    fn allowance(&self) -> (&Limits, Option<&Budget>);
    fn set_spend(&mut self, spend: Option<Spend>);
}

macro_rules! holding {
    ($view:ty, $kind:expr) => {
        impl Holding for $view {
            const KIND: HolderKind = $kind;
            fn id(&self) -> &str {
                self.id.as_str()
            }
            fn allowance(&self) -> (&Limits, Option<&Budget>) {
                (&self.limits, self.budget.as_ref())
            }
            fn set_spend(&mut self, spend: Option<Spend>) {
                self.spend = spend;
            }
        }
    };
}

holding!(Team, HolderKind::Team);
holding!(User, HolderKind::User);
holding!(ApiKey, HolderKind::Key);

/// The limits a key or user is held within: its user's and its team's.
pub(super) fn ceilings<'a>(
    user: Option<&'a User>,
    team: Option<&'a Team>,
) -> Vec<(&'static str, &'a Limits, Option<&'a Budget>)> {
    let mut ceilings = Vec::new();
    if let Some(user) = user {
        ceilings.push(("user", &user.limits, user.budget.as_ref()));
    }
    if let Some(team) = team {
        ceilings.push(("team", &team.limits, team.budget.as_ref()));
    }
    ceilings
}

/// What a holder's budget and quotas have used, as last counted at `now_ms`.
pub fn spend_view(
    limits: &Limits,
    budget: Option<&Budget>,
    row: Option<&SpendRow>,
    now_ms: i64,
) -> Option<Spend> {
    if budget.is_none() && !limits.has_quota() {
        return None;
    }
    let requests = row.map_or(0, |r| r.requests);
    let tokens = row.map_or(0, |r| r.tokens);
    let quota_used = limits.max_requests.is_some_and(|m| requests >= m as i64)
        || limits.max_tokens.is_some_and(|m| tokens >= m as i64);
    let Some(budget) = budget else {
        return Some(Spend {
            spent: Micros::ZERO,
            remaining: None,
            currency: Currency::default(),
            period_start: None,
            resets_at: None,
            requests,
            tokens,
            exhausted: quota_used,
        });
    };
    let period_start = budget.period.start(now_ms);
    // Counted in an earlier period: nothing spent in this one yet.
    let spent = row
        .filter(|r| r.period_start == period_start)
        .map_or(Micros::ZERO, |r| Micros(r.spent_micros));
    Some(Spend {
        spent,
        remaining: Some(Micros((budget.amount.0 - spent.0).max(0))),
        currency: budget.currency,
        period_start: (period_start > 0).then(|| ms_to_rfc3339(period_start)),
        resets_at: budget.period.end(now_ms).map(ms_to_rfc3339),
        requests,
        tokens,
        exhausted: quota_used || spent >= budget.amount,
    })
}

/// The prices, for checking what budgets and the cost strategy need of them.
pub(super) struct PriceBook(Prices);

impl PriceBook {
    pub(super) fn new(prices: Vec<PriceView>) -> Self {
        PriceBook(Prices::new(prices.into_iter().map(|p| {
            let price = Price {
                input: p.input_per_million,
                output: p.output_per_million,
                cached_input: p.cached_input_per_million,
                cache_write_input: p.cache_write_per_million,
                currency: p.currency,
            };
            ((p.provider.unwrap_or_default(), p.model), price)
        })))
    }

    fn currency(&self, provider: &str, model: &str) -> Option<Currency> {
        self.0.get(provider, model).map(|p| p.currency)
    }

    /// The first target a holder limited to `models` (empty: all) can reach
    /// without a price in `currency`, among the targets `relevant` keeps.
    pub(super) fn unpriced(
        &self,
        routes: &[Route],
        models: &[String],
        currency: Currency,
        relevant: impl Fn(&Route, &RouteTarget) -> bool,
    ) -> Option<String> {
        for route in reachable(routes, models) {
            for target in route.targets.iter().filter(|t| relevant(route, t)) {
                match self.currency(&target.provider, &target.model) {
                    Some(c) if c == currency => {}
                    Some(other) => {
                        return Some(format!(
                            "route {:?} target {}/{} is priced in {other}, not {currency}",
                            route.model, target.provider, target.model
                        ))
                    }
                    None => {
                        return Some(format!(
                        "route {:?} target {}/{} has no price; set one with PUT /api/v1/prices/{}",
                        route.model, target.provider, target.model, target.model
                    ))
                    }
                }
            }
        }
        None
    }
}

/// The routes a caller limited to `models` (empty: every route) can reach,
/// through fallbacks and variants too.
fn reachable<'r>(routes: &'r [Route], models: &[String]) -> Vec<&'r Route> {
    let names = |r: &Route| {
        std::iter::once(r.model.clone())
            .chain(r.aliases.clone())
            .collect::<Vec<_>>()
    };
    let mut found: Vec<&Route> = routes
        .iter()
        .filter(|r| models.is_empty() || names(r).iter().any(|n| models.contains(n)))
        .collect();
    let mut i = 0;
    while i < found.len() {
        for (_, next) in super::validate::route_references(found[i]) {
            if let Some(route) = routes.iter().find(|r| r.model == next) {
                if !found.iter().any(|f| f.model == route.model) {
                    found.push(route);
                }
            }
        }
        i += 1;
    }
    found
}
