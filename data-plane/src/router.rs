//! Step 4 of the request path: which upstream serves the request.

use crate::error::GatewayError;
use crate::runtime::{KeyEntry, Runtime, Target};
use rand::Rng;

pub fn select<'r>(
    runtime: &'r Runtime,
    key: &KeyEntry,
    model: &str,
) -> Result<&'r Target, GatewayError> {
    let route = runtime
        .route(model)
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_owned()))?;
    if !key.allows(model) {
        return Err(GatewayError::ModelNotAllowed(model.to_owned()));
    }
    let ticket = rand::thread_rng().gen_range(0..route.total_weight().max(1));
    Ok(route.pick(ticket))
}
