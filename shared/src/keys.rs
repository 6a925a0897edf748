//! API key secrets: generation, shape checks and hashing. Only the hash is
//! ever stored.
//!
//! A key is `sk-sb-`, 32 random bytes (43 base64url characters), then a
//! CRC-32 of those 43 characters (6 base64url characters). The prefix makes
//! leaked keys easy to scan for; the checksum lets a typo, a truncated paste
//! or a foreign token be refused without a lookup, and lets scanners tell a
//! real key from a look-alike.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// Every Switchboard API key starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "sk-sb-";

/// 32 bytes in unpadded base64url.
const RANDOM_LEN: usize = 43;
/// 4 bytes in unpadded base64url.
const CHECKSUM_LEN: usize = 6;

/// How many characters of a secret are kept to recognise the key in listings.
const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 6;

/// Written into an array, not a `String`: every request's key is checked.
fn checksum(random: &str) -> [u8; CHECKSUM_LEN] {
    let mut sum = [0; CHECKSUM_LEN];
    // 4 bytes are always 6 characters: the slice fits.
    let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(crc32fast::hash(random.as_bytes()).to_be_bytes(), &mut sum);
    sum
}

/// Whether `candidate` is shaped like a Switchboard key and its checksum holds.
/// Nothing secret is learnt from this check: it looks only at the candidate.
pub fn is_well_formed(candidate: &str) -> bool {
    let Some(rest) = candidate.strip_prefix(KEY_PREFIX) else {
        return false;
    };
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return false;
    }
    let (random, sum) = rest.split_at(RANDOM_LEN);
    checksum(random) == sum.as_bytes()
}

/// 256 bits from the OS's CSPRNG in unpadded base64url (43 characters):
/// the random part of API keys and admin tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A freshly generated API key secret. Shown to the user once, never stored.
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// 256 bits from the OS's CSPRNG, and their checksum.
    pub fn generate() -> Self {
        let random = random_token();
        let sum = checksum(&random);
        // base64url characters are ASCII.
        let sum = std::str::from_utf8(&sum).unwrap_or_default();
        Self(format!("{KEY_PREFIX}{random}{sum}"))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The non-secret leading characters shown in key listings.
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(DISPLAY_PREFIX_LEN).collect()
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(***)")
    }
}

/// SHA-256 of a key secret. A fast hash is right here: the secret has 256 bits
/// of entropy, so there is nothing for a slow password hash to protect.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Self::from_bytes(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}..)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_prefixed() {
        let (a, b) = (ApiKeySecret::generate(), ApiKeySecret::generate());
        assert!(a.expose().starts_with(KEY_PREFIX));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), KEY_PREFIX.len() + 43 + 6);
        assert_eq!(a.hash(), KeyHash::of(a.expose()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn only_keys_with_a_valid_checksum_are_well_formed() {
        let key = ApiKeySecret::generate();
        let key = key.expose();
        assert!(is_well_formed(key));
        let mut typo = key.to_owned().into_bytes();
        typo[20] = if typo[20] == b'A' { b'B' } else { b'A' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert!(!is_well_formed(&typo));
        assert!(!is_well_formed(&key[..key.len() - 1]));
        assert!(!is_well_formed(&key.replace("sk-sb-", "sk-xx-")));
        assert!(!is_well_formed("sk-sb-short"));
        // Multi-byte characters must not break the length arithmetic.
        assert!(!is_well_formed(&format!("sk-sb-{}a", "é".repeat(24))));
        assert!(!is_well_formed(""));
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let hash = KeyHash::of("sk-sb-example");
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(KeyHash::from_hex("zz"), None);
    }
}
