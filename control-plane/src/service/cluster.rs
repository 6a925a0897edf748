//! The cluster view and the cluster's settings.

use super::Admin;
use crate::access::Need;
use crate::cluster::registry::liveness_cutoff;
use crate::error::Result;
use crate::model::{Cluster, ClusterLeader, ControlPlane};
use crate::settings::{ClusterSettings, SettingsUpdate};
use shared::time::ms_to_rfc3339;

impl Admin {
    pub async fn cluster(&self) -> Result<Cluster> {
        let planes = self.dataplanes().await?;
        let leadership = self.store.leadership().await?;
        let replicas = self.store.control_planes(liveness_cutoff()).await?;
        // A leader that stopped or died without handing over is no leader.
        let leader = replicas
            .iter()
            .any(|r| !leadership.holder.is_empty() && r.id == leadership.holder)
            .then(|| ClusterLeader {
                id: leadership.holder.clone(),
                since: ms_to_rfc3339(leadership.since),
            });
        let leading = leader.as_ref().map(|l| l.id.clone());
        Ok(Cluster {
            config_version: planes.current_version,
            leader,
            control_planes: replicas
                .into_iter()
                .map(|r| ControlPlane {
                    is_leader: leading.as_deref() == Some(r.id.as_str()),
                    id: r.id,
                    address: r.address,
                    last_seen: ms_to_rfc3339(r.last_seen),
                    started_at: ms_to_rfc3339(r.started_at),
                })
                .collect(),
            data_planes: planes.data_planes,
        })
    }

    pub async fn settings(&self) -> Result<ClusterSettings> {
        self.require(Need::ConfigRead)?;
        self.store.settings().await
    }

    pub async fn update_settings(&self, update: SettingsUpdate) -> Result<ClusterSettings> {
        self.require(Need::ConfigWrite)?;
        let before = self.store.settings().await?;
        let after = before.updated(update);
        after.validate()?;
        if after != before {
            self.store.put_settings(&after).await?;
            self.refresher.refresh_now();
        }
        self.audit(
            "settings.update",
            "settings/cluster".into(),
            Some(&before),
            Some(&after),
        )
        .await;
        Ok(after)
    }
}
