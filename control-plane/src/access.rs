//! Who is calling the admin APIs, and what each role may do. Checked in the
//! admin service, which both REST and gRPC call, so the two cannot differ.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use shared::ids::TeamId;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Its own team's users, keys and usage; reads the routes on offer.
    TeamAdmin,
    /// Reads everything, writes nothing.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::TeamAdmin => "team_admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Role::Admin, Role::TeamAdmin, Role::Viewer]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller of the admin APIs.
#[derive(Clone, Debug)]
pub struct Principal {
    /// As the audit log names it: `admin` for the bootstrap token,
    /// `admin/<id>` for admin principals.
    pub actor: String,
    pub role: Role,
    /// A team admin's team.
    pub team_id: Option<TeamId>,
}

/// What an operation needs.
#[derive(Clone, Copy, Debug)]
pub enum Need<'a> {
    /// Configuration every team shares: providers, routes, teams, JWT issuers, admins.
    ConfigWrite,
    ConfigRead,
    /// The models on offer (routes): every role.
    Catalog,
    /// A team's users, keys and usage; `None` is "no team" (admins only).
    TeamWrite(Option<&'a TeamId>),
    TeamRead(Option<&'a TeamId>),
}

impl Principal {
    /// The `--admin-token`: the first admin.
    pub fn bootstrap() -> Self {
        Principal {
            actor: "admin".into(),
            role: Role::Admin,
            team_id: None,
        }
    }

    /// The control plane's own writes (users first seen in tokens), for the audit log.
    pub fn system(actor: String) -> Self {
        Principal {
            actor,
            role: Role::Admin,
            team_id: None,
        }
    }

    pub fn require(&self, need: Need<'_>) -> Result<()> {
        let allowed = match (self.role, need) {
            (Role::Admin, _) | (_, Need::Catalog) => true,
            (Role::Viewer, Need::ConfigRead | Need::TeamRead(_)) => true,
            (Role::TeamAdmin, Need::TeamRead(team) | Need::TeamWrite(team)) => {
                team.is_some() && team == self.team_id.as_ref()
            }
            _ => false,
        };
        if allowed {
            return Ok(());
        }
        Err(Error::PermissionDenied(match (self.role, need) {
            (Role::TeamAdmin, Need::TeamRead(_) | Need::TeamWrite(_)) => {
                "a team_admin manages only its own team's users, keys and usage".into()
            }
            (role, Need::ConfigRead) => format!("role {role} may not read this configuration"),
            (role, _) => format!("role {role} may not make this change"),
        }))
    }

    /// Whether a record of `team` is this principal's to see in a list.
    pub fn sees(&self, team: Option<&TeamId>) -> bool {
        self.team_scope().is_none_or(|own| team == Some(own))
    }

    /// The team a team admin is confined to; `None` for roles that see every team.
    pub fn team_scope(&self) -> Option<&TeamId> {
        match self.role {
            Role::TeamAdmin => self.team_id.as_ref(),
            Role::Admin | Role::Viewer => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(id: &str) -> TeamId {
        TeamId::from(id.to_owned())
    }

    #[test]
    fn each_role_reaches_what_it_should() {
        let (a, b) = (team("a"), team("b"));
        let team_admin = Principal {
            actor: "admin/t".into(),
            role: Role::TeamAdmin,
            team_id: Some(a.clone()),
        };
        let viewer = Principal {
            role: Role::Viewer,
            ..team_admin.clone()
        };
        let admin = Principal::bootstrap();
        for need in [
            Need::ConfigWrite,
            Need::ConfigRead,
            Need::TeamWrite(None),
            Need::TeamWrite(Some(&b)),
        ] {
            assert!(admin.require(need).is_ok());
            assert!(team_admin.require(need).is_err(), "{need:?}");
        }
        assert!(team_admin.require(Need::TeamWrite(Some(&a))).is_ok());
        assert!(team_admin.require(Need::TeamRead(Some(&a))).is_ok());
        assert!(team_admin.require(Need::Catalog).is_ok());
        assert!(viewer.require(Need::ConfigRead).is_ok());
        assert!(viewer.require(Need::TeamRead(Some(&b))).is_ok());
        assert!(viewer.require(Need::TeamWrite(Some(&a))).is_err());
        assert!(viewer.require(Need::ConfigWrite).is_err());
        assert_eq!(Role::parse("team_admin"), Some(Role::TeamAdmin));
        assert_eq!(Role::parse("root"), None);
    }
}
