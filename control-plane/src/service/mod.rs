//! The admin operations, shared by the REST and gRPC surfaces: one module
//! per resource. Every write goes through `write`: the caller's role is
//! checked, the store is handed the grant its writes ask for, and the change
//! is recorded in the audit log; data planes are told at once.

mod admins;
mod cache;
mod cluster;
mod jwt_issuers;
mod keys;
mod patch;
mod prices;
mod providers;
mod quotas;
mod routes;
mod teams;
mod usage;
mod users;
mod validate;
pub mod write;

pub use cache::PurgeCache;
pub use patch::{merge_patch, replace_fields, Edit};
pub use quotas::spend_view;

use crate::access::{Need, Principal};
use crate::error::{Error, Result};
use crate::model::Whoami;
use crate::snapshot::Refresher;
use crate::store::Store;
use shared::crypto::Cipher;
use std::sync::Arc;

#[derive(Clone)]
pub struct Admin {
    store: Store,
    cipher: Arc<Cipher>,
    refresher: Refresher,
    jwks: crate::jwks::JwksFetcher,
    allow_link_local_upstreams: bool,
}

impl Admin {
    pub fn new(store: Store, cipher: Arc<Cipher>, refresher: Refresher) -> Self {
        Self {
            store,
            cipher,
            refresher,
            jwks: crate::jwks::JwksFetcher::default(),
            allow_link_local_upstreams: false,
        }
    }

    /// Whether provider base URLs may name link-local or metadata addresses.
    pub fn allowing_link_local_upstreams(mut self, allow: bool) -> Self {
        self.allow_link_local_upstreams = allow;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The caller, as its token made it known.
    pub fn whoami(&self) -> Result<Whoami> {
        let who = crate::audit::principal()?;
        Ok(Whoami {
            actor: who.actor,
            role: who.role,
            team_id: who.team_id,
        })
    }

    /// The caller of a listing of teams' records, which it filters with `sees`.
    fn team_lister(&self) -> Result<Principal> {
        let who = crate::audit::principal()?;
        who.require(Need::TeamRead(who.team_scope()))?;
        Ok(who)
    }

    /// The calling principal, once it is allowed what `need` names.
    fn require(&self, need: Need<'_>) -> Result<Principal> {
        let principal = crate::audit::principal()?;
        principal.require(need)?;
        Ok(principal)
    }
}

/// On PUT the path names the resource; a body may repeat the name but not contradict it.
fn path_name(path: &str, body: &str, field: &str) -> Result<String> {
    if body.is_empty() || body == path {
        Ok(path.to_owned())
    } else {
        Err(Error::invalid(format!(
            "{field}: {body:?} in the body differs from {path:?} in the path; renaming is not supported"
        )))
    }
}

fn non_empty<T: AsRef<str>>(value: Option<T>) -> Option<T> {
    value.filter(|v| !v.as_ref().is_empty())
}
