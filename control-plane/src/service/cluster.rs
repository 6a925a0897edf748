//! The cluster view, the data planes, and the cluster's settings.

use super::write::Audited;
use super::Admin;
use crate::access::Need;
use crate::cluster::registry::liveness_cutoff;
use crate::error::Result;
use crate::model::{Cluster, ClusterLeader, ControlPlane, DataPlane, DataPlanes};
use crate::settings::{ClusterSettings, SettingsUpdate};
use shared::time::{ms_to_rfc3339, now_ms};

/// How long a data plane may stay silent and still count as connected.
const DATAPLANE_LIVENESS_MS: i64 = 45_000;

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
        self.write(Need::ConfigWrite, async |grant| {
            let before = self.store.settings().await?;
            let after = before.updated(update);
            after.validate()?;
            if after != before {
                self.store.put_settings(grant, &after).await?;
            }
            let resource = "settings/cluster".to_owned();
            Ok(Audited::new(
                after.clone(),
                "settings.update",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }

    pub async fn dataplanes(&self) -> Result<DataPlanes> {
        self.require(Need::ConfigRead)?;
        let now = now_ms();
        let data_planes = self
            .store
            .list_dataplanes()
            .await?
            .into_iter()
            .map(|row| DataPlane {
                connected: row.disconnected_at.is_none()
                    && now - row.last_seen < DATAPLANE_LIVENESS_MS,
                id: row.id,
                hostname: row.hostname,
                software_version: row.software_version,
                applied_version: row.applied_version,
                last_error: row.last_error,
                last_seen: ms_to_rfc3339(row.last_seen),
                control_plane: row.control_plane,
                // Written by this control plane: a list it cannot read is shown as none.
                open_breakers: serde_json::from_str(&row.open_breakers).unwrap_or_default(),
            })
            .collect();
        Ok(DataPlanes {
            current_version: self.store.config_version().await?,
            data_planes,
        })
    }
}
