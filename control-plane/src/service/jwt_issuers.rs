//! JWT issuers: written by admins, their key sets fetched here, and the users
//! first seen as token subjects created from usage reports.

use super::write::Audited;
use super::{non_empty, validate, Admin};
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::{JwtIssuer, JwtIssuerSpec, Limits, User};
use crate::store::{string_list_json, JwtIssuerRow};
use shared::ids::{TeamId, UserId};
use shared::time::{ms_to_rfc3339, now_ms};
use shared::usage::UsageRecord;
use std::collections::BTreeMap;

impl Admin {
    pub async fn create_jwt_issuer(&self, spec: JwtIssuerSpec) -> Result<JwtIssuer> {
        self.write(Need::ConfigWrite, async |grant| {
            let row = self.issuer_row(spec, None).await?;
            self.store.insert_jwt_issuer(grant, &row).await?;
            let created = issuer_view(row);
            let resource = format!("jwt_issuer/{}", created.name);
            Ok(Audited::new(
                created.clone(),
                "jwt_issuer.create",
                resource,
                None,
                Some(&created),
            ))
        })
        .await
    }

    pub async fn update_jwt_issuer(
        &self,
        name: &str,
        mut spec: JwtIssuerSpec,
    ) -> Result<JwtIssuer> {
        self.write(Need::ConfigWrite, async |grant| {
            spec.name = super::path_name(name, &spec.name, "name")?;
            let before = self
                .store
                .get_jwt_issuer(name)
                .await?
                .ok_or_else(|| Error::NotFound(format!("JWT issuer {name:?}")))?;
            let created_at = before.created_at;
            let row = self.issuer_row(spec, Some(created_at)).await?;
            if !self.store.update_jwt_issuer(grant, &row).await? {
                return Err(Error::NotFound(format!("JWT issuer {name:?}")));
            }
            let (before, after) = (issuer_view(before), issuer_view(row));
            let resource = format!("jwt_issuer/{name}");
            Ok(Audited::new(
                after.clone(),
                "jwt_issuer.update",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }

    pub async fn list_jwt_issuers(&self) -> Result<Vec<JwtIssuer>> {
        self.require(Need::ConfigRead)?;
        let rows = self.store.list_jwt_issuers().await?;
        Ok(rows.into_iter().map(issuer_view).collect())
    }

    pub async fn get_jwt_issuer(&self, name: &str) -> Result<JwtIssuer> {
        self.require(Need::ConfigRead)?;
        self.store
            .get_jwt_issuer(name)
            .await?
            .map(issuer_view)
            .ok_or_else(|| Error::NotFound(format!("JWT issuer {name:?}")))
    }

    pub async fn delete_jwt_issuer(&self, name: &str) -> Result<()> {
        self.write(Need::ConfigWrite, async |grant| {
            let before = self.get_jwt_issuer(name).await?;
            if !self.store.delete_jwt_issuer(grant, name).await? {
                return Err(Error::NotFound(format!("JWT issuer {name:?}")));
            }
            let resource = format!("jwt_issuer/{name}");
            Ok(Audited::new(
                (),
                "jwt_issuer.delete",
                resource,
                Some(&before),
                None,
            ))
        })
        .await
    }

    /// Validates, and fetches the key set now: an issuer whose keys cannot be
    /// fetched is refused rather than stored to fail every token later.
    async fn issuer_row(
        &self,
        spec: JwtIssuerSpec,
        created_at: Option<i64>,
    ) -> Result<JwtIssuerRow> {
        validate::jwt_issuer(&spec, self.allow_link_local_upstreams)?;
        let now = now_ms();
        let jwks_url = non_empty(spec.jwks_url).map(|u| u.trim().to_owned());
        let jwks =
            match &jwks_url {
                Some(url) => Some(self.jwks.fetch(url).await.map_err(|e| {
                    Error::invalid(format!("jwks_url: cannot fetch a key set: {e}"))
                })?),
                None => None,
            };
        Ok(JwtIssuerRow {
            name: spec.name,
            issuer: spec.issuer.trim().to_owned(),
            audiences: string_list_json(&spec.audiences),
            algorithms: string_list_json(&spec.algorithms),
            jwks_fetched_at: jwks.as_ref().map(|_| now),
            jwks,
            jwks_url,
            public_keys_pem: string_list_json(&spec.public_keys_pem),
            claims: serde_json::to_string(&spec.claims)
                .map_err(|e| Error::Internal(format!("claims: {e}")))?,
            auto_create_users: i64::from(spec.auto_create_users),
            leeway_seconds: i64::from(
                spec.leeway_seconds
                    .unwrap_or(shared::jwt::DEFAULT_LEEWAY_SECONDS),
            ),
            jwks_error: None,
            created_at: created_at.unwrap_or(now),
            updated_at: now,
        })
    }

    /// Creates the users that token callers of auto-creating issuers were the
    /// first to name, with the team their token gave, before their usage is
    /// stored. Each is created once, however many reports name it.
    pub async fn create_token_users(&self, records: &[UsageRecord]) -> Result<()> {
        // Each subject once per batch, with the team of its first record.
        let mut wanted: BTreeMap<&str, BTreeMap<&str, Option<&TeamId>>> = BTreeMap::new();
        for record in records {
            if let Some(jwt) = &record.jwt {
                wanted
                    .entry(jwt.issuer.as_str())
                    .or_default()
                    .entry(jwt.subject.as_str())
                    .or_insert(record.team_id.as_ref());
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let issuers = self.store.list_jwt_issuers().await?;
        for (issuer, subjects) in wanted {
            if !issuers
                .iter()
                .any(|i| i.name == issuer && i.auto_create_users != 0)
            {
                continue;
            }
            let now = now_ms();
            let mut users: Vec<User> = Vec::new();
            for (subject, team_id) in subjects {
                let id = UserId::for_external_id(subject);
                if validate::external_id(subject).is_err()
                    || self.store.get_user(id.as_str()).await?.is_some()
                {
                    continue;
                }
                users.push(User {
                    id,
                    name: subject.to_owned(),
                    email: None,
                    team_id: team_id.cloned(),
                    external_id: Some(subject.to_owned()),
                    models: Vec::new(),
                    created_at: ms_to_rfc3339(now),
                    limits: Limits::default(),
                    budget: None,
                    spend: None,
                });
            }
            if users.is_empty() {
                continue;
            }
            // Another control plane may have created some meanwhile: only ours are recorded.
            let actor = format!("jwt_issuer/{issuer}");
            self.system_write(actor, async |grant| {
                let created = self
                    .store
                    .insert_users_if_absent(grant, &users, now)
                    .await?;
                let entries = created
                    .into_iter()
                    .map(|user| (format!("user/{}", user.id), None, Some(user)));
                Ok(Audited::each((), "user.create", entries))
            })
            .await?;
        }
        Ok(())
    }
}

fn issuer_view(row: JwtIssuerRow) -> JwtIssuer {
    let mut claims = row.claims();
    claims
        .user
        .get_or_insert_with(|| shared::jwt::DEFAULT_USER_CLAIM.to_owned());
    let key_ids = row
        .jwks
        .as_deref()
        .and_then(|jwks| shared::jwt::keys_from_jwks(jwks).ok())
        .map(|(keys, _)| keys.into_iter().filter_map(|k| k.kid).collect())
        .unwrap_or_default();
    JwtIssuer {
        audiences: row.audiences(),
        algorithms: row.algorithms(),
        public_keys_pem: row.public_keys_pem(),
        name: row.name,
        issuer: row.issuer,
        jwks_url: row.jwks_url,
        claims,
        auto_create_users: row.auto_create_users != 0,
        leeway_seconds: u32::try_from(row.leeway_seconds).unwrap_or(0),
        key_ids,
        jwks_fetched_at: row.jwks_fetched_at.map(ms_to_rfc3339),
        jwks_error: row.jwks_error,
        created_at: ms_to_rfc3339(row.created_at),
        updated_at: ms_to_rfc3339(row.updated_at),
    }
}
