//! JWT issuer keys and algorithms, read alike by the control plane (to refuse
//! a bad issuer when it is written) and the data plane (to verify tokens).

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::str::FromStr;

/// Algorithms a gateway accepts: asymmetric only, so a token can never be
/// signed with a public key used as an HMAC secret.
pub const ALLOWED_ALGORITHMS: &str =
    "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Leeway on `exp` and `nbf` when an issuer names none, and the most it may name.
pub const DEFAULT_LEEWAY_SECONDS: u32 = 30;
pub const MAX_LEEWAY_SECONDS: u32 = 300;

/// The default claim naming a token's user.
pub const DEFAULT_USER_CLAIM: &str = "sub";

pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let refused = || format!("{name:?} is not accepted; use one of {ALLOWED_ALGORITHMS}");
    let algorithm = Algorithm::from_str(name).map_err(|_| refused())?;
    if algorithm.family() == AlgorithmFamily::Hmac {
        return Err(refused());
    }
    Ok(algorithm)
}

/// One key an issuer signs with.
pub struct VerifyingKey {
    /// The JWK's `kid`; keys given as PEM have none.
    pub kid: Option<String>,
    /// The JWK's `alg`, when it pins one.
    pub algorithm: Option<Algorithm>,
    pub family: AlgorithmFamily,
    pub key: DecodingKey,
}

impl VerifyingKey {
    /// Whether this key may check a signature made with `algorithm`.
    pub fn fits(&self, algorithm: Algorithm) -> bool {
        self.family == algorithm.family() && self.algorithm.is_none_or(|a| a == algorithm)
    }
}

/// The signing keys of a JSON Web Key Set. Keys that cannot sign (encryption
/// keys, symmetric keys, unknown types) are left out, as every JWKS client
/// does, and counted in the second value.
pub fn keys_from_jwks(json: &str) -> Result<(Vec<VerifyingKey>, usize), String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let set: RawSet = serde_json::from_str(json)
        .map_err(|e| format!("not a JSON Web Key Set ({{\"keys\": [..]}}): {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    let mut skipped = 0;
    for raw in set.keys {
        match serde_json::from_value::<Jwk>(raw)
            .ok()
            .and_then(signing_key)
        {
            Some(key) => keys.push(key),
            None => skipped += 1,
        }
    }
    Ok((keys, skipped))
}

fn signing_key(jwk: Jwk) -> Option<VerifyingKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    if matches!(
        jwk.algorithm,
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
    ) {
        return None;
    }
    let algorithm = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::try_from(alg).ok()?),
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let family = key.family();
    if algorithm.is_some_and(|a| a.family() != family) {
        return None;
    }
    Some(VerifyingKey {
        kid: jwk.common.key_id,
        algorithm,
        family,
        key,
    })
}

/// A public key in PEM (SubjectPublicKeyInfo or PKCS#1): RSA, EC or Ed25519.
pub fn key_from_pem(pem: &str) -> Result<VerifyingKey, String> {
    let bytes = pem.as_bytes();
    let key = DecodingKey::from_rsa_pem(bytes)
        .or_else(|_| DecodingKey::from_ec_pem(bytes))
        .or_else(|_| DecodingKey::from_ed_pem(bytes))
        .map_err(|_| "not a PEM-encoded RSA, EC or Ed25519 public key".to_owned())?;
    Ok(VerifyingKey {
        kid: None,
        algorithm: None,
        family: key.family(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        assert_eq!(parse_algorithm("RS256"), Ok(Algorithm::RS256));
        assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
        for refused in ["HS256", "none", "None", "", "rs256"] {
            assert!(parse_algorithm(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_key_set_keeps_only_signing_keys() {
        let set = r#"{"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "kid": "pinned", "alg": "RS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird"}
        ]}"#;
        let (keys, skipped) = keys_from_jwks(set).expect("a key set");
        assert_eq!(skipped, 4);
        assert_eq!(keys[0].kid.as_deref(), Some("ec1"));
        assert!(keys[0].fits(Algorithm::ES256));
        assert!(!keys[0].fits(Algorithm::RS256));
        assert!(keys_from_jwks("[]").is_err());
    }

    #[test]
    fn pem_keys_of_each_family_are_read() {
        assert!(
            key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
        );
        assert!(key_from_pem("hello").is_err());
    }
}
