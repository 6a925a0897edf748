//! Bearer tokens that are JWTs, verified against the snapshot's issuers with
//! the keys the control plane fetched: nothing is fetched on the request path.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use shared::jwt::VerifyingKey;
use shared::proto;
use std::collections::HashMap;
use std::fmt;

pub use crate::error::TokenRejection;
use crate::error::{Entity, InvalidConfig};

/// A claim name, or a dotted path into nested objects.
#[derive(Debug)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    fn parse(name: &str) -> Option<Self> {
        (!name.is_empty()).then(|| ClaimPath(name.split('.').map(str::to_owned).collect()))
    }

    pub fn find<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        self.0
            .iter()
            .try_fold(claims, |value, part| value.get(part.as_str()))
    }
}

pub struct Issuer {
    /// The name the admin gave it, for usage records.
    pub name: String,
    iss: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    keys: Vec<VerifyingKey>,
    pub user_claim: ClaimPath,
    pub team_claim: Option<ClaimPath>,
    pub models_claim: Option<ClaimPath>,
    pub auto_create_users: bool,
    leeway_seconds: u64,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    fn build(i: &proto::SnapshotJwtIssuer) -> Result<Self, String> {
        let algorithms = i
            .algorithms
            .iter()
            .map(|a| shared::jwt::parse_algorithm(a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = Vec::new();
        if !i.jwks.is_empty() {
            let (from_set, skipped) = shared::jwt::keys_from_jwks(&i.jwks)?;
            if skipped > 0 {
                tracing::debug!(issuer = %i.name, skipped, "JWKS keys that cannot sign were left out");
            }
            keys.extend(from_set);
        }
        for pem in &i.public_keys_pem {
            keys.push(shared::jwt::key_from_pem(pem)?);
        }
        if i.audiences.is_empty() || algorithms.is_empty() {
            return Err("an issuer needs audiences and algorithms".into());
        }
        Ok(Issuer {
            name: i.name.clone(),
            iss: i.issuer.clone(),
            audiences: i.audiences.clone(),
            algorithms,
            keys,
            user_claim: ClaimPath::parse(&i.user_claim)
                .or_else(|| ClaimPath::parse(shared::jwt::DEFAULT_USER_CLAIM))
                .ok_or("no user claim")?,
            team_claim: ClaimPath::parse(&i.team_claim),
            models_claim: ClaimPath::parse(&i.models_claim),
            auto_create_users: i.auto_create_users,
            leeway_seconds: u64::from(i.leeway_seconds),
        })
    }

    /// The keys that may have signed a token: those with its `kid`, else
    /// those without one (PEM keys); never another issuer's.
    fn candidates(&self, kid: Option<&str>, algorithm: Algorithm) -> Vec<&VerifyingKey> {
        let fitting = || self.keys.iter().filter(move |k| k.fits(algorithm));
        let Some(kid) = kid else {
            return fitting().collect();
        };
        let named: Vec<_> = fitting()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .collect();
        if named.is_empty() {
            fitting().filter(|k| k.kid.is_none()).collect()
        } else {
            named
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.iss]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_seconds;
        validation
    }
}

/// The snapshot's issuers, by their `iss`.
#[derive(Debug, Default)]
pub struct Issuers(HashMap<String, Issuer>);

impl Issuers {
    pub fn build(issuers: &[proto::SnapshotJwtIssuer]) -> Result<Self, InvalidConfig> {
        let mut by_iss = HashMap::with_capacity(issuers.len());
        for i in issuers {
            let issuer = Issuer::build(i).map_err(|e| Entity::JwtIssuer.invalid(&i.name, e))?;
            by_iss.insert(i.issuer.clone(), issuer);
        }
        Ok(Issuers(by_iss))
    }

    /// The issuer that signed `token` and the token's claims, once its
    /// signature, algorithm, issuer, audience and times all check out.
    pub fn verify(&self, token: &str) -> Result<(&Issuer, Value), TokenRejection> {
        #[derive(serde::Deserialize)]
        struct Unverified {
            iss: Option<String>,
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        // Only to choose the issuer; nothing else is read before the signature checks out.
        let claimed: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| TokenRejection::Malformed)?;
        let issuer = claimed
            .iss
            .and_then(|iss| self.0.get(&iss))
            .ok_or(TokenRejection::UntrustedIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(TokenRejection::AlgorithmNotAllowed);
        }
        let candidates = issuer.candidates(header.kid.as_deref(), header.alg);
        if candidates.is_empty() {
            return Err(TokenRejection::UnknownKey);
        }
        let validation = issuer.validation(header.alg);
        let mut rejection = TokenRejection::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return Ok((issuer, data.claims)),
                Err(error) => rejection = rejection_of(error.kind()),
            }
            // Only a wrong key is worth trying the next one for.
            if rejection != TokenRejection::BadSignature {
                break;
            }
        }
        Err(rejection)
    }
}

fn rejection_of(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidSignature => TokenRejection::BadSignature,
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
        ErrorKind::InvalidIssuer => TokenRejection::UntrustedIssuer,
        ErrorKind::InvalidAlgorithm => TokenRejection::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(_) => TokenRejection::MissingClaim,
        _ => TokenRejection::Malformed,
    }
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts).
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.starts_with("eyJ") && credential.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_paths_walk_nested_objects() {
        let claims = json!({"sub": "u1", "org": {"team": "blue"}});
        let path = |s: &str| ClaimPath::parse(s).expect("a path");
        assert_eq!(path("sub").find(&claims), Some(&json!("u1")));
        assert_eq!(path("org.team").find(&claims), Some(&json!("blue")));
        assert_eq!(path("org.none").find(&claims), None);
        assert!(ClaimPath::parse("").is_none());
    }

    #[test]
    fn only_jwt_shaped_credentials_are_treated_as_tokens() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("sk-sb-abc"));
        assert!(!looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0"));
    }

    #[test]
    fn unknown_issuers_and_garbage_are_refused_without_detail() {
        let issuers = Issuers::default();
        assert_eq!(
            issuers.verify("nonsense").err(),
            Some(TokenRejection::Malformed)
        );
        // {"alg":"none"} is no algorithm at all.
        let none = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.";
        assert_eq!(issuers.verify(none).err(), Some(TokenRejection::Malformed));
        // {"alg":"RS256"} from an issuer nobody configured.
        let stranger = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln";
        assert_eq!(
            issuers.verify(stranger).err(),
            Some(TokenRejection::UntrustedIssuer)
        );
    }
}
