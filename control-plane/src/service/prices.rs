//! Prices per million tokens of upstream models: what every request costs,
//! and what budgets count.

use super::quotas::PriceBook;
use super::write::Audited;
use super::{non_empty, Admin};
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::{PriceSpec, PriceView, Route, RouteTarget};
use shared::time::now_ms;

/// Prices shipped with the control plane, loaded where none is set
/// (`--no-default-prices` turns this off). List prices as published by the
/// providers; operators should check them against their own contracts.
const DEFAULT_PRICES: &str = include_str!("../../prices/default.json");

impl Admin {
    pub async fn put_price(&self, spec: PriceSpec) -> Result<PriceView> {
        self.write(Need::ConfigWrite, async |grant| {
            let price = price_of(spec)?;
            let before = self
                .find_price(&price.model, price.provider.as_deref())
                .await?;
            self.check_repricing(&price).await?;
            self.store
                .put_prices(grant, std::slice::from_ref(&price), now_ms(), false)
                .await?;
            let after = self
                .find_price(&price.model, price.provider.as_deref())
                .await?
                .ok_or_else(|| Error::Internal("a price just written is missing".into()))?;
            let resource = price_resource(&after);
            Ok(Audited::new(
                after.clone(),
                "price.put",
                resource,
                before.as_ref(),
                Some(&after),
            ))
        })
        .await
    }

    pub async fn list_prices(&self) -> Result<Vec<PriceView>> {
        self.require(Need::Catalog)?;
        self.store.list_prices().await
    }

    async fn find_price(&self, model: &str, provider: Option<&str>) -> Result<Option<PriceView>> {
        Ok(self
            .store
            .list_prices()
            .await?
            .into_iter()
            .find(|p| p.model == model && p.provider.as_deref() == provider))
    }

    /// The bundled prices, for models without one; answers how many were new.
    pub async fn load_default_prices(&self) -> Result<usize> {
        let specs: Vec<PriceSpec> = serde_json::from_str(DEFAULT_PRICES)
            .map_err(|e| Error::Internal(format!("bundled prices: {e}")))?;
        let known = self.store.list_prices().await?;
        // One config version for all of them.
        let mut fresh = Vec::new();
        for spec in specs {
            let price = price_of(spec)?;
            if known
                .iter()
                .any(|p| p.model == price.model && p.provider == price.provider)
            {
                continue;
            }
            fresh.push(price);
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        self.system_write("control-plane".into(), async |grant| {
            let added = self.store.put_prices(grant, &fresh, now_ms(), true).await?;
            let resource = "prices".to_owned();
            Ok(Audited::new(
                added,
                "price.seed",
                resource,
                None,
                Some(&fresh),
            ))
        })
        .await
    }

    /// A price may not move a budgeted route's model out of its budget's currency.
    async fn check_repricing(&self, price: &PriceView) -> Result<()> {
        let holders = self.store.holders().await?;
        let routes = self.store.list_routes().await?;
        let mut prices: Vec<PriceView> = self
            .store
            .list_prices()
            .await?
            .into_iter()
            .filter(|p| !(p.model == price.model && p.provider == price.provider))
            .collect();
        prices.push(price.clone());
        let book = PriceBook::new(prices);
        for holder in &holders {
            let Some(budget) = &holder.budget else {
                continue;
            };
            let repriced = |_: &Route, t: &RouteTarget| t.model == price.model;
            if let Some(problem) = book.unpriced(&routes, &holder.models, budget.currency, repriced)
            {
                return Err(Error::invalid(format!(
                    "currency: {} has a budget in {}, and {problem}",
                    holder.name(),
                    budget.currency
                )));
            }
        }
        Ok(())
    }
}

fn price_of(spec: PriceSpec) -> Result<PriceView> {
    // Upstream names are the providers' own (deployments, tags): any printable text.
    let name = |field: &str, value: &str| {
        if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "{field}: 1 to 256 printable characters"
            )));
        }
        Ok(())
    };
    name("model", &spec.model)?;
    let provider = non_empty(spec.provider);
    if let Some(provider) = &provider {
        super::validate::identifier("provider", provider)?;
    }
    Ok(PriceView {
        model: spec.model,
        provider,
        cached_input_per_million: spec
            .cached_input_per_million
            .unwrap_or(spec.input_per_million),
        cache_write_per_million: spec
            .cache_write_per_million
            .unwrap_or(spec.input_per_million),
        input_per_million: spec.input_per_million,
        output_per_million: spec.output_per_million,
        currency: spec.currency,
        updated_at: String::new(),
    })
}

fn price_resource(price: &PriceView) -> String {
    match &price.provider {
        Some(provider) => format!("price/{}@{provider}", price.model),
        None => format!("price/{}", price.model),
    }
}
