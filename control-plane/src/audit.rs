//! The audit log's context: who is writing, under which request. Set once
//! per admin request by the REST and gRPC layers (task-local, so the
//! service's write methods need no extra parameters) and read when a write
//! is recorded.

use std::future::Future;

tokio::task_local! {
    static CONTEXT: AuditContext;
}

#[derive(Clone, Debug)]
pub struct AuditContext {
    pub actor: String,
    pub request_id: String,
}

impl AuditContext {
    /// The caller's request id when it sent a usable one, else a new one.
    pub fn new(actor: &str, request_id: Option<&str>) -> Self {
        let request_id = request_id
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        AuditContext {
            actor: actor.to_owned(),
            request_id,
        }
    }
}

pub async fn scope<F: Future>(context: AuditContext, work: F) -> F::Output {
    CONTEXT.scope(context, work).await
}

/// The current request's context; writes outside a request (none today) are the system's.
pub fn current() -> AuditContext {
    CONTEXT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| AuditContext::new("system", None))
}
