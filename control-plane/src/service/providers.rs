//! Providers: where traffic goes, with credentials encrypted at rest and
//! never shown again.

use super::write::Audited;
use super::{path_name, validate, Admin};
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::{Provider, ProviderSpec};
use crate::store::ProviderRow;
use shared::time::{ms_to_rfc3339, now_ms};

impl Admin {
    pub async fn create_provider(&self, spec: ProviderSpec) -> Result<Provider> {
        self.write(Need::ConfigWrite, async |grant| {
            validate::provider(&spec, false, self.allow_link_local_upstreams)?;
            self.store
                .insert_provider(grant, &self.stored_provider(&spec)?)
                .await?;
            let created = self.get_provider(&spec.name).await?;
            let resource = format!("provider/{}", created.name);
            Ok(Audited::new(
                created.clone(),
                "provider.create",
                resource,
                None,
                Some(&created),
            ))
        })
        .await
    }

    /// Absent credentials keep the stored ones.
    pub async fn update_provider(&self, name: &str, mut spec: ProviderSpec) -> Result<Provider> {
        self.write(Need::ConfigWrite, async |grant| {
            spec.name = path_name(name, &spec.name, "name")?;
            let before = self.get_provider(name).await?;
            validate::provider(
                &spec,
                before.has_secret_key,
                self.allow_link_local_upstreams,
            )?;
            if !self
                .store
                .update_provider(grant, &self.stored_provider(&spec)?)
                .await?
            {
                return Err(Error::NotFound(format!("provider {name:?}")));
            }
            let after = self.get_provider(name).await?;
            let resource = format!("provider/{name}");
            Ok(Audited::new(
                after.clone(),
                "provider.update",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }

    pub async fn delete_provider(&self, name: &str) -> Result<()> {
        self.write(Need::ConfigWrite, async |grant| {
            let before = self.get_provider(name).await?;
            if !self.store.delete_provider(grant, name).await? {
                return Err(Error::NotFound(format!("provider {name:?}")));
            }
            let resource = format!("provider/{name}");
            Ok(Audited::new(
                (),
                "provider.delete",
                resource,
                Some(&before),
                None,
            ))
        })
        .await
    }

    pub async fn get_provider(&self, name: &str) -> Result<Provider> {
        self.require(Need::ConfigRead)?;
        let row = self.store.get_provider(name).await?;
        row.map(provider_view)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("provider {name:?}")))
    }

    pub async fn list_providers(&self) -> Result<Vec<Provider>> {
        self.require(Need::ConfigRead)?;
        self.store
            .list_providers()
            .await?
            .into_iter()
            .map(provider_view)
            .collect()
    }

    fn stored_provider(&self, spec: &ProviderSpec) -> Result<ProviderRow> {
        let now = now_ms();
        let encrypted = |credential: &Option<crate::model::Credential>| {
            credential
                .as_ref()
                .map(|k| self.cipher.encrypt_to_string(k.expose()))
        };
        Ok(ProviderRow {
            name: spec.name.clone(),
            kind: spec.kind.as_str().to_owned(),
            base_url: spec.base_url.trim().trim_end_matches('/').to_owned(),
            api_key_encrypted: encrypted(&spec.api_key),
            secret_key_encrypted: encrypted(&spec.secret_key),
            settings: serde_json::to_string(&spec.settings)
                .map_err(|e| Error::Internal(e.to_string()))?,
            created_at: now,
            updated_at: now,
        })
    }
}

fn provider_view(row: ProviderRow) -> Result<Provider> {
    Ok(Provider {
        kind: row
            .kind
            .parse()
            .map_err(|e| Error::Internal(format!("stored provider {:?}: {e}", row.name)))?,
        settings: serde_json::from_str(&row.settings).unwrap_or_default(),
        has_api_key: row.api_key_encrypted.is_some(),
        has_secret_key: row.secret_key_encrypted.is_some(),
        name: row.name,
        base_url: row.base_url,
        created_at: ms_to_rfc3339(row.created_at),
        updated_at: ms_to_rfc3339(row.updated_at),
    })
}
