//! The context of an admin request: who is calling, under which request id.
//! Set once per request by the REST and gRPC layers (task-local, so the
//! service's methods need no extra parameters), read by access checks and
//! when a write is recorded in the audit log.

use crate::access::Principal;
use crate::error::{Error, Result};
use std::future::Future;

tokio::task_local! {
    static CONTEXT: AuditContext;
}

#[derive(Clone, Debug)]
pub struct AuditContext {
    pub principal: Principal,
    pub request_id: String,
}

impl AuditContext {
    /// The caller's request id when it sent a usable one, else a new one.
    pub fn new(principal: Principal, request_id: Option<&str>) -> Self {
        let request_id = request_id
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        AuditContext {
            principal,
            request_id,
        }
    }
}

pub async fn scope<F: Future>(context: AuditContext, work: F) -> F::Output {
    CONTEXT.scope(context, work).await
}

/// The current request's context. Outside an admin request there is none:
/// access checks then fail closed.
pub fn current() -> Result<AuditContext> {
    CONTEXT
        .try_with(Clone::clone)
        .map_err(|_| Error::Unauthenticated)
}

/// The calling principal.
pub fn principal() -> Result<Principal> {
    CONTEXT
        .try_with(|c| c.principal.clone())
        .map_err(|_| Error::Unauthenticated)
}
