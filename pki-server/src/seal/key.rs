//! A 256-bit AES-GCM key and the sealed-value format.
//!
//! Sealed value: `term (4 bytes BE) | 0x02 | nonce (12) | ciphertext | tag (16)`,
//! Vault's barrier layout, with the storage path as associated data so a value
//! moved to another path fails to open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use zeroize::Zeroizing;

const VERSION_PATH_AAD: u8 = 0x02;
const HEADER: usize = 4 + 1 + NONCE_LEN;

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Wrong key, wrong path, or tampered ciphertext.
    #[error("failed to decrypt value at {0:?}: wrong key, wrong path or tampered data")]
    Open(String),
    /// The value is not in the sealed format.
    #[error("value at {0:?} is not a sealed value")]
    Format(String),
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
    /// A key of the wrong length.
    #[error("invalid key length")]
    KeyLength,
}

/// 32 bytes of key material, zeroized on drop, never printed.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut k[..])
            .map_err(|_| CryptoError::Random)?;
        Ok(Key(k))
    }

    /// A key from exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = b.try_into().map_err(|_| CryptoError::KeyLength)?;
        Ok(Key(Zeroizing::new(arr)))
    }

    /// The raw bytes (for splitting and wrapping only).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn aead(&self) -> Result<LessSafeKey, CryptoError> {
        UnboundKey::new(&AES_256_GCM, &self.0[..])
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::KeyLength)
    }

    /// Seal `plaintext` for storage at `path` under key term `term`.
    pub fn seal(&self, term: u32, path: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CryptoError::Random)?;
        let mut out = Vec::with_capacity(HEADER + plaintext.len() + 16);
        out.extend_from_slice(&term.to_be_bytes());
        out.push(VERSION_PATH_AAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .aead()?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(path.as_bytes()),
                &mut out[HEADER..],
            )
            .map_err(|_| CryptoError::Open(path.to_string()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Open a value sealed by [`Key::seal`] for the same `path`.
    pub fn open(&self, path: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < HEADER + 16 || sealed[4] != VERSION_PATH_AAD {
            return Err(CryptoError::Format(path.to_string()));
        }
        let nonce: [u8; NONCE_LEN] = sealed[5..HEADER]
            .try_into()
            .map_err(|_| CryptoError::Format(path.to_string()))?;
        let mut buf = Zeroizing::new(sealed[HEADER..].to_vec());
        let len = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(path.as_bytes()),
                &mut buf[..],
            )
            .map_err(|_| CryptoError::Open(path.to_string()))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The key term a sealed value names, if it is in the sealed format.
pub fn term_of(sealed: &[u8]) -> Option<u32> {
    (sealed.len() >= HEADER + 16 && sealed[4] == VERSION_PATH_AAD)
        .then(|| u32::from_be_bytes([sealed[0], sealed[1], sealed[2], sealed[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_path_binding() {
        let k = Key::generate().unwrap();
        let s = k.seal(7, "a/b", b"secret").unwrap();
        assert_eq!(term_of(&s), Some(7));
        assert_eq!(&k.open("a/b", &s).unwrap()[..], b"secret");
        assert!(matches!(k.open("a/c", &s), Err(CryptoError::Open(_))));
        let mut t = s.clone();
        let n = t.len() - 1;
        t[n] ^= 1;
        assert!(k.open("a/b", &t).is_err());
        assert!(Key::generate().unwrap().open("a/b", &s).is_err());
        assert!(matches!(
            k.open("a/b", b"short"),
            Err(CryptoError::Format(_))
        ));
        assert!(!s.windows(6).any(|w| w == b"secret"));
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    }

    #[test]
    fn nonces_differ() {
        let k = Key::generate().unwrap();
        assert_ne!(k.seal(1, "p", b"x").unwrap(), k.seal(1, "p", b"x").unwrap());
    }
}
