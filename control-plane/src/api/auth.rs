//! Bearer-token checks for the admin APIs and the cluster API.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Holds only the SHA-256 of a token; compares in constant time.
#[derive(Clone)]
pub struct BearerToken([u8; 32]);

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn from_hash(hash: [u8; 32]) -> Self {
        Self(hash)
    }

    pub fn hash(&self) -> [u8; 32] {
        self.0
    }

    /// Checks an `authorization` header value of the form `Bearer <token>`.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        presented.ct_eq(&self.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_right_bearer() {
        let token = BearerToken::new("s3cret");
        assert!(token.accepts(Some("Bearer s3cret")));
        assert!(!token.accepts(Some("Bearer s3cret2")));
        assert!(!token.accepts(Some("s3cret")));
        assert!(!token.accepts(None));
    }
}
