//! Who may call, as of one snapshot: API keys by hash, the users and teams
//! whose model lists narrow their keys and tokens, and the JWT issuers.

use super::jwt::Issuers;
use crate::limits::Allowance;
use shared::ids::{KeyId, TeamId, UserId};
use shared::keys::KeyHash;
use shared::proto;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Public model names a key, user, team or token is limited to.
pub type ModelScope = Arc<HashSet<String>>;

/// An empty list means every model.
pub fn scope(models: Vec<String>) -> Option<ModelScope> {
    (!models.is_empty()).then(|| Arc::new(models.into_iter().collect()))
}

#[derive(Debug)]
pub struct KeyEntry {
    pub id: KeyId,
    pub user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
    pub models: Option<ModelScope>,
    pub expires_at_ms: Option<i64>,
    pub allowance: Option<Arc<Allowance>>,
}

#[derive(Debug)]
pub struct UserEntry {
    pub id: UserId,
    pub team_id: Option<TeamId>,
    pub models: Option<ModelScope>,
    pub allowance: Option<Arc<Allowance>>,
}

#[derive(Debug)]
pub struct TeamEntry {
    pub id: TeamId,
    pub models: Option<ModelScope>,
    pub allowance: Option<Arc<Allowance>>,
}

#[derive(Debug, Default)]
pub struct Directory {
    keys: HashMap<KeyHash, Arc<KeyEntry>>,
    users: HashMap<UserId, Arc<UserEntry>>,
    users_by_external_id: HashMap<String, Arc<UserEntry>>,
    teams: HashMap<TeamId, Arc<TeamEntry>>,
    team_ids_by_name: HashMap<String, TeamId>,
    pub issuers: Issuers,
}

impl Directory {
    /// Keys are most of a large snapshot: moved, not copied.
    pub fn build(
        keys: Vec<proto::SnapshotKey>,
        users: Vec<proto::SnapshotUser>,
        teams: Vec<proto::SnapshotTeam>,
        issuers: &[proto::SnapshotJwtIssuer],
    ) -> Result<Self, String> {
        let present = |s: String| (!s.is_empty()).then_some(s);
        let mut directory = Directory {
            issuers: Issuers::build(issuers)?,
            ..Directory::default()
        };
        directory.keys.reserve(keys.len());
        for k in keys {
            let hash = KeyHash::from_bytes(&k.key_hash)
                .ok_or_else(|| format!("key {:?}: hash is not 32 bytes", k.id))?;
            let allowance = Allowance::of(k.limits.as_ref(), k.budget.as_ref())
                .map_err(|e| format!("key {:?}: {e}", k.id))?;
            let entry = KeyEntry {
                allowance,
                user_id: present(k.user_id).map(UserId::from),
                team_id: present(k.team_id).map(TeamId::from),
                models: scope(k.models),
                id: KeyId::from(k.id),
                expires_at_ms: (k.expires_at_ms > 0).then_some(k.expires_at_ms),
            };
            directory.keys.insert(hash, Arc::new(entry));
        }
        for u in users {
            let external_id = present(u.external_id);
            let allowance = Allowance::of(u.limits.as_ref(), u.budget.as_ref())
                .map_err(|e| format!("user {:?}: {e}", u.id))?;
            let entry = Arc::new(UserEntry {
                allowance,
                id: UserId::from(u.id),
                team_id: present(u.team_id).map(TeamId::from),
                models: scope(u.models),
            });
            if let Some(external_id) = external_id {
                directory
                    .users_by_external_id
                    .insert(external_id, entry.clone());
            }
            directory.users.insert(entry.id.clone(), entry);
        }
        for t in teams {
            let id = TeamId::from(t.id);
            directory.team_ids_by_name.insert(t.name, id.clone());
            let entry = TeamEntry {
                id: id.clone(),
                models: scope(t.models),
                allowance: Allowance::of(t.limits.as_ref(), t.budget.as_ref())
                    .map_err(|e| format!("team {id:?}: {e}"))?,
            };
            directory.teams.insert(id, Arc::new(entry));
        }
        Ok(directory)
    }

    pub fn key(&self, hash: &KeyHash) -> Option<&Arc<KeyEntry>> {
        self.keys.get(hash)
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Users the snapshot leaves out have no model list of their own.
    pub fn user(&self, id: &UserId) -> Option<&Arc<UserEntry>> {
        self.users.get(id)
    }

    pub fn user_by_external_id(&self, external_id: &str) -> Option<&Arc<UserEntry>> {
        self.users_by_external_id.get(external_id)
    }

    pub fn team(&self, id: &TeamId) -> Option<&Arc<TeamEntry>> {
        self.teams.get(id)
    }

    /// A team named in a token, by id or by name.
    pub fn team_named(&self, id_or_name: &str) -> Option<&Arc<TeamEntry>> {
        self.teams
            .get(&TeamId::from(id_or_name.to_owned()))
            .or_else(|| self.teams.get(self.team_ids_by_name.get(id_or_name)?))
    }
}
