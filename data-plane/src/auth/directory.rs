//! Who may call, as of one config version: API keys by hash, the users and
//! teams whose model lists narrow their keys and tokens, and the JWT issuers.
//! Built whole from a snapshot, or from the previous version and a delta:
//! its maps are copy-on-write, so a delta copies what it touches only.

use super::holder::Allowance;
use super::jwt::Issuers;
use crate::cow_map::CowMap;
use crate::error::{Entity, InvalidConfig};
use shared::ids::{KeyId, TeamId, UserId};
use shared::keys::KeyHash;
use shared::proto;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Public model names a key, user, team or token is limited to.
pub type ModelScope = Arc<HashSet<String>>;

/// An empty list means every model.
pub fn scope(models: Vec<String>) -> Option<ModelScope> {
    (!models.is_empty()).then(|| Arc::new(models.into_iter().collect()))
}

fn scope_list(scope: Option<&ModelScope>) -> Vec<String> {
    let mut models: Vec<String> = scope.map_or_else(Vec::new, |s| s.iter().cloned().collect());
    models.sort_unstable();
    models
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
    pub external_id: Option<String>,
    pub team_id: Option<TeamId>,
    pub models: Option<ModelScope>,
    pub allowance: Option<Arc<Allowance>>,
}

#[derive(Debug)]
pub struct TeamEntry {
    pub id: TeamId,
    pub name: String,
    pub models: Option<ModelScope>,
    pub allowance: Option<Arc<Allowance>>,
    pub guardrails: Option<Arc<crate::guardrails::Compiled>>,
}

/// What a delta changes in the directory (or, into an empty one, a snapshot
/// holds). Every entry listed for a key id replaces all the key's entries.
#[derive(Default)]
pub struct DirectoryChanges {
    pub keys: Vec<proto::SnapshotKey>,
    pub removed_keys: Vec<String>,
    pub users: Vec<proto::SnapshotUser>,
    pub removed_users: Vec<String>,
    pub teams: Vec<proto::SnapshotTeam>,
    pub removed_teams: Vec<String>,
    pub issuers: Vec<proto::SnapshotJwtIssuer>,
    pub removed_issuers: Vec<String>,
}

impl DirectoryChanges {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.removed_keys.is_empty()
            && self.users.is_empty()
            && self.removed_users.is_empty()
            && self.teams.is_empty()
            && self.removed_teams.is_empty()
            && self.issuers.is_empty()
            && self.removed_issuers.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Directory {
    keys: CowMap<KeyHash, Arc<KeyEntry>>,
    /// The hashes of each key: two while a rotated key's previous secret is
    /// in its grace period.
    key_hashes: CowMap<KeyId, Box<[KeyHash]>>,
    users: CowMap<UserId, Arc<UserEntry>>,
    users_by_external_id: CowMap<String, Arc<UserEntry>>,
    teams: CowMap<TeamId, Arc<TeamEntry>>,
    team_ids_by_name: CowMap<String, TeamId>,
    pub issuers: Arc<Issuers>,
    issuer_specs: Arc<BTreeMap<String, proto::SnapshotJwtIssuer>>,
}

impl Directory {
    /// Keys are most of a large snapshot: moved, not copied.
    pub fn build(changes: DirectoryChanges) -> Result<Self, InvalidConfig> {
        let mut directory = Directory::default();
        directory.change(changes, true)?;
        Ok(directory)
    }

    /// This directory with a delta's changes; `self` is left as it was.
    pub fn changed(&self, changes: DirectoryChanges) -> Result<Self, InvalidConfig> {
        let mut directory = self.clone();
        directory.change(changes, false)?;
        Ok(directory)
    }

    fn change(&mut self, changes: DirectoryChanges, fresh: bool) -> Result<(), InvalidConfig> {
        if fresh {
            self.keys.reserve(changes.keys.len());
            self.key_hashes.reserve(changes.keys.len());
        }
        for id in changes.removed_keys {
            self.remove_key(&KeyId::from(id));
        }
        // Into an empty directory nothing is replaced, and nothing need be tracked.
        let mut replaced: HashSet<String> = HashSet::new();
        for key in changes.keys {
            if !fresh && replaced.insert(key.id.clone()) {
                self.remove_key(&KeyId::from(key.id.clone()));
            }
            self.insert_key(key)?;
        }
        for id in changes.removed_users {
            self.remove_user(&UserId::from(id));
        }
        for user in changes.users {
            self.remove_user(&UserId::from(user.id.clone()));
            self.insert_user(user)?;
        }
        for id in changes.removed_teams {
            self.remove_team(&TeamId::from(id));
        }
        for team in changes.teams {
            self.remove_team(&TeamId::from(team.id.clone()));
            self.insert_team(team)?;
        }
        if !changes.issuers.is_empty() || !changes.removed_issuers.is_empty() {
            let mut specs = BTreeMap::clone(&self.issuer_specs);
            for name in &changes.removed_issuers {
                specs.remove(name);
            }
            for issuer in changes.issuers {
                specs.insert(issuer.name.clone(), issuer);
            }
            let list: Vec<_> = specs.values().cloned().collect();
            self.issuers = Arc::new(Issuers::build(&list)?);
            self.issuer_specs = Arc::new(specs);
        }
        Ok(())
    }

    fn insert_key(&mut self, k: proto::SnapshotKey) -> Result<(), InvalidConfig> {
        let present = |s: String| (!s.is_empty()).then_some(s);
        let hash = KeyHash::from_bytes(&k.key_hash)
            .ok_or_else(|| Entity::Key.invalid(&k.id, "hash is not 32 bytes"))?;
        let allowance = Allowance::of(k.limits.as_ref(), k.budget.as_ref())
            .map_err(|e| Entity::Key.invalid(&k.id, e))?;
        let id = KeyId::from(k.id);
        let hashes: Box<[KeyHash]> = match self.key_hashes.get(&id) {
            Some(known) => known.iter().copied().chain([hash]).collect(),
            None => Box::new([hash]),
        };
        self.key_hashes.insert(id.clone(), hashes);
        let entry = KeyEntry {
            allowance,
            user_id: present(k.user_id).map(UserId::from),
            team_id: present(k.team_id).map(TeamId::from),
            models: scope(k.models),
            id,
            expires_at_ms: (k.expires_at_ms > 0).then_some(k.expires_at_ms),
        };
        self.keys.insert(hash, Arc::new(entry));
        Ok(())
    }

    fn remove_key(&mut self, id: &KeyId) {
        if let Some(hashes) = self.key_hashes.remove(id) {
            for hash in hashes.iter() {
                self.keys.remove(hash);
            }
        }
    }

    fn insert_user(&mut self, u: proto::SnapshotUser) -> Result<(), InvalidConfig> {
        let present = |s: String| (!s.is_empty()).then_some(s);
        let allowance = Allowance::of(u.limits.as_ref(), u.budget.as_ref())
            .map_err(|e| Entity::User.invalid(&u.id, e))?;
        let entry = Arc::new(UserEntry {
            allowance,
            id: UserId::from(u.id),
            external_id: present(u.external_id),
            team_id: present(u.team_id).map(TeamId::from),
            models: scope(u.models),
        });
        if let Some(external_id) = &entry.external_id {
            self.users_by_external_id
                .insert(external_id.clone(), entry.clone());
        }
        self.users.insert(entry.id.clone(), entry);
        Ok(())
    }

    fn remove_user(&mut self, id: &UserId) {
        if let Some(user) = self.users.remove(id) {
            if let Some(external_id) = &user.external_id {
                self.users_by_external_id.remove(external_id.as_str());
            }
        }
    }

    fn insert_team(&mut self, t: proto::SnapshotTeam) -> Result<(), InvalidConfig> {
        let id = TeamId::from(t.id);
        let entry = TeamEntry {
            models: scope(t.models),
            allowance: Allowance::of(t.limits.as_ref(), t.budget.as_ref())
                .map_err(|e| Entity::Team.invalid(id.as_str(), e))?,
            guardrails: t
                .guardrails
                .as_ref()
                .map(crate::guardrails::Compiled::from_proto)
                .transpose()
                .map_err(|e| Entity::Team.invalid(id.as_str(), e))?
                .map(Arc::new),
            id: id.clone(),
            name: t.name,
        };
        self.team_ids_by_name.insert(entry.name.clone(), id.clone());
        self.teams.insert(id, Arc::new(entry));
        Ok(())
    }

    fn remove_team(&mut self, id: &TeamId) {
        if let Some(team) = self.teams.remove(id) {
            if self.team_ids_by_name.get(team.name.as_str()) == Some(id) {
                self.team_ids_by_name.remove(team.name.as_str());
            }
        }
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

    /// Back into snapshot form, for the copy on disk: what this data plane
    /// needs to serve again, as it serves it now.
    pub fn snapshot_keys(&self) -> impl Iterator<Item = proto::SnapshotKey> + '_ {
        self.keys.iter().map(|(hash, k)| {
            let (limits, budget) = allowance_proto(k.allowance.as_deref());
            proto::SnapshotKey {
                id: k.id.as_str().to_owned(),
                key_hash: hash.as_bytes().to_vec(),
                name: String::new(),
                user_id: k
                    .user_id
                    .as_ref()
                    .map_or_else(String::new, |u| u.as_str().to_owned()),
                team_id: k
                    .team_id
                    .as_ref()
                    .map_or_else(String::new, |t| t.as_str().to_owned()),
                models: scope_list(k.models.as_ref()),
                expires_at_ms: k.expires_at_ms.unwrap_or(0),
                limits,
                budget,
            }
        })
    }

    pub fn snapshot_users(&self) -> Vec<proto::SnapshotUser> {
        self.users
            .values()
            .map(|u| {
                let (limits, budget) = allowance_proto(u.allowance.as_deref());
                proto::SnapshotUser {
                    id: u.id.as_str().to_owned(),
                    external_id: u.external_id.clone().unwrap_or_default(),
                    team_id: u
                        .team_id
                        .as_ref()
                        .map_or_else(String::new, |t| t.as_str().to_owned()),
                    models: scope_list(u.models.as_ref()),
                    limits,
                    budget,
                }
            })
            .collect()
    }

    pub fn snapshot_teams(&self) -> Vec<proto::SnapshotTeam> {
        self.teams
            .values()
            .map(|t| {
                let (limits, budget) = allowance_proto(t.allowance.as_deref());
                proto::SnapshotTeam {
                    id: t.id.as_str().to_owned(),
                    name: t.name.clone(),
                    models: scope_list(t.models.as_ref()),
                    limits,
                    budget,
                    guardrails: t.guardrails.as_ref().map(|g| g.source.to_proto()),
                }
            })
            .collect()
    }

    pub fn snapshot_issuers(&self) -> Vec<proto::SnapshotJwtIssuer> {
        self.issuer_specs.values().cloned().collect()
    }
}

fn allowance_proto(
    allowance: Option<&Allowance>,
) -> (Option<proto::Limits>, Option<proto::SnapshotBudget>) {
    match allowance {
        None => (None, None),
        Some(a) => (Some(a.limits.to_proto()), a.budget.map(|b| b.to_snapshot())),
    }
}
