//! Encryption of secrets at rest (provider credentials in the database, the
//! data plane's snapshot on disk) with AES-256-GCM.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("a secret key must be 64 hexadecimal characters (32 bytes)")]
    BadKey,
    #[error("ciphertext is malformed or was encrypted with another key")]
    Decrypt,
}

/// A 256-bit key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(text.trim()).map_err(|_| CryptoError::BadKey)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| CryptoError::BadKey)
    }

    pub fn generate() -> Self {
        Self(Aes256Gcm::generate_key(OsRng).into())
    }

    /// A key for one purpose derived from a shared secret (e.g. the cluster
    /// token), so the same secret never keys two things.
    pub fn derive(secret: &str, purpose: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"switchboard-key-derivation\0");
        hasher.update(purpose.as_bytes());
        hasher.update(b"\0");
        hasher.update(secret.as_bytes());
        Self(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// Encrypts with one key and decrypts with it or, while a key is being
/// rotated, with the previous ones; output is nonce || ciphertext.
#[derive(Clone)]
pub struct Cipher {
    primary: Aes256Gcm,
    previous: Vec<Aes256Gcm>,
}

fn aes(key: &SecretKey) -> Aes256Gcm {
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(key.0))
}

impl Cipher {
    pub fn new(key: &SecretKey) -> Self {
        Self {
            primary: aes(key),
            previous: Vec::new(),
        }
    }

    /// Also decrypts what `previous` keys sealed.
    pub fn with_previous(key: &SecretKey, previous: &[SecretKey]) -> Self {
        Self {
            primary: aes(key),
            previous: previous.iter().map(aes).collect(),
        }
    }

    /// Whether `encoded` (from `encrypt_to_string`) was sealed with the primary key.
    pub fn is_current(&self, encoded: &str) -> bool {
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .is_some_and(|data| open(&self.primary, &data).is_ok())
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encryption with a valid key and a fresh nonce cannot fail for inputs
        // below AES-GCM's 64 GiB limit.
        out.extend(self.primary.encrypt(&nonce, plaintext).unwrap_or_default());
        out
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        std::iter::once(&self.primary)
            .chain(&self.previous)
            .find_map(|key| open(key, data).ok())
            .ok_or(CryptoError::Decrypt)
    }

    /// For text columns: base64 of `encrypt`.
    pub fn encrypt_to_string(&self, plaintext: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.encrypt(plaintext.as_bytes()))
    }

    pub fn decrypt_string(&self, encoded: &str) -> Result<String, CryptoError> {
        let data = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(self.decrypt(&data)?).map_err(|_| CryptoError::Decrypt)
    }
}

fn open(key: &Aes256Gcm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (nonce, ciphertext) = data
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(CryptoError::Decrypt)?;
    key.decrypt(&Nonce::from(*nonce), ciphertext)
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_reads_the_previous_key_and_writes_the_new() {
        let (old, new) = (SecretKey::generate(), SecretKey::generate());
        let sealed = Cipher::new(&old).encrypt_to_string("sk-upstream");
        let rotating = Cipher::with_previous(&new, &[old]);
        assert_eq!(
            rotating.decrypt_string(&sealed).as_deref(),
            Ok("sk-upstream")
        );
        assert!(!rotating.is_current(&sealed));
        let resealed = rotating.encrypt_to_string("sk-upstream");
        assert!(rotating.is_current(&resealed));
        assert_eq!(
            Cipher::new(&new).decrypt_string(&resealed).as_deref(),
            Ok("sk-upstream")
        );
    }

    #[test]
    fn round_trip_and_wrong_key() {
        let cipher = Cipher::new(&SecretKey::generate());
        let sealed = cipher.encrypt_to_string("sk-upstream");
        assert!(!sealed.contains("sk-upstream"));
        assert_eq!(cipher.decrypt_string(&sealed).as_deref(), Ok("sk-upstream"));
        let other = Cipher::new(&SecretKey::generate());
        assert_eq!(other.decrypt_string(&sealed), Err(CryptoError::Decrypt));
        assert_eq!(cipher.decrypt(b"short"), Err(CryptoError::Decrypt));
    }

    #[test]
    fn key_parsing() {
        let key = SecretKey::generate();
        assert!(SecretKey::from_hex(&key.to_hex()).is_ok());
        assert_eq!(SecretKey::from_hex("abcd").err(), Some(CryptoError::BadKey));
        assert_eq!(
            SecretKey::from_hex(&"g".repeat(64)).err(),
            Some(CryptoError::BadKey)
        );
        assert!(!format!("{key:?}").contains(&key.to_hex()));
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let a = SecretKey::derive("token", "snapshot");
        let b = SecretKey::derive("token", "usage");
        assert_ne!(a.to_hex(), b.to_hex());
        assert_eq!(a.to_hex(), SecretKey::derive("token", "snapshot").to_hex());
    }
}
