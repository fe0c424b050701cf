//! Certificate serial numbers: one type, two spellings.
//!
//! Vault shows serials as lowercase colon-separated hex (`1a:2b:...`, the
//! `serial_number` response field) and stores certificates under the same hex
//! with dashes (`certs/1a-2b-...`). Both spellings parse. The bytes are the
//! minimal big-endian form of the positive integer, exactly what `big.Int.Bytes()`
//! gives Vault, so a serial read back from a certificate compares equal.

use super::error::{PkiError, Result};
use ring::rand::SecureRandom;
use std::fmt;

/// Longest serial we parse from text (RFC 5280 §4.1.2.2: at most 20 octets).
const MAX_LEN: usize = 20;
/// Longest serial we accept from a certificate (some CAs exceed RFC 5280).
const MAX_CERT_LEN: usize = 64;

/// A positive, non-zero certificate serial number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerialNumber(Vec<u8>);

impl SerialNumber {
    /// A random 159-bit serial (20 bytes, top bit clear), as Vault generates.
    pub fn random(rng: &dyn SecureRandom) -> Result<Self> {
        let mut b = [0u8; MAX_LEN];
        rng.fill(&mut b)
            .map_err(|_| PkiError::Crypto("random generator failed".into()))?;
        b[0] &= 0x7f;
        Self::from_bytes(&b).or_else(|_| {
            // All 159 bits zero: astronomically unlikely; any fixed non-zero value is fine.
            Ok(SerialNumber(vec![1]))
        })
    }

    /// A random serial from the system's secure generator.
    pub fn generate() -> Result<Self> {
        Self::random(&ring::rand::SystemRandom::new())
    }

    /// From big-endian unsigned bytes (as in a certificate); leading zeros are dropped.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let trimmed = &bytes[start..];
        if trimmed.is_empty() || trimmed.len() > MAX_CERT_LEN {
            return Err(PkiError::InvalidSerial(hex::encode(bytes)));
        }
        Ok(SerialNumber(trimmed.to_vec()))
    }

    /// Parse `1a:2b:...` or `1a-2b-...` (case-insensitive, two hex digits per byte).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || PkiError::InvalidSerial(s.to_string());
        let t = s.trim();
        let sep = if t.contains(':') { ':' } else { '-' };
        let mut bytes = Vec::with_capacity(MAX_LEN);
        for group in t.split(sep) {
            let g = group.as_bytes();
            if g.len() != 2 || !g.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad());
            }
            let v = u8::from_str_radix(group, 16).map_err(|_| bad())?;
            bytes.push(v);
        }
        let serial = Self::from_bytes(&bytes).map_err(|_| bad())?;
        if serial.0.len() > MAX_LEN {
            return Err(bad());
        }
        Ok(serial)
    }

    /// The big-endian bytes (no leading zeros).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Vault's canonical form: lowercase hex pairs joined by `:`.
    pub fn colon_hex(&self) -> String {
        self.joined(':')
    }

    /// The storage-key form: lowercase hex pairs joined by `-`.
    pub fn storage_key(&self) -> String {
        self.joined('-')
    }

    fn joined(&self, sep: char) -> String {
        let mut s = String::with_capacity(self.0.len() * 3);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(sep);
            }
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The rcgen form, for certificate and CRL parameters.
    pub(crate) fn to_rcgen(&self) -> rcgen::SerialNumber {
        // A leading 0x00 keeps the DER INTEGER positive whatever the top bit is.
        let mut v = Vec::with_capacity(self.0.len() + 1);
        if self.0.first().is_some_and(|b| b & 0x80 != 0) {
            v.push(0);
        }
        v.extend_from_slice(&self.0);
        rcgen::SerialNumber::from_slice(&v)
    }
}

impl fmt::Display for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.colon_hex())
    }
}

impl fmt::Debug for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SerialNumber({})", self.colon_hex())
    }
}

impl std::str::FromStr for SerialNumber {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        let got = SerialNumber::parse(input).ok().map(|s| s.colon_hex());
        assert_eq!(got.as_deref(), expected, "parse({input:?})");
    }

    #[test]
    fn parses_both_spellings_and_rejects_garbage() {
        check("1a:2b:3c", Some("1a:2b:3c"));
        check("1A-2B-3C", Some("1a:2b:3c"));
        check("00:01", Some("01"));
        check(" 7f ", Some("7f"));
        check("", None);
        check("00", None);
        check("1a:2b-3c", None);
        check("1:2b", None);
        check("1a::2b", None);
        check("zz:00", None);
        check("1a2b", None);
        check("1a:", None);
        check(&["ab"; 21].join(":"), None);
    }

    #[test]
    fn random_serials_round_trip_and_are_positive() {
        for _ in 0..50 {
            let s = SerialNumber::generate().unwrap();
            assert!(!s.as_bytes().is_empty() && s.as_bytes().len() <= 20);
            assert_ne!(s.as_bytes()[0], 0, "minimal form has no leading zero");
            if s.as_bytes().len() == 20 {
                assert!(s.as_bytes()[0] < 0x80, "top bit clear");
            }
            assert_eq!(SerialNumber::parse(&s.colon_hex()).unwrap(), s);
            assert_eq!(SerialNumber::parse(&s.storage_key()).unwrap(), s);
            assert_eq!(s.storage_key().replace('-', ":"), s.to_string());
        }
    }

    #[test]
    fn high_bit_serial_stays_positive_in_der() {
        let s = SerialNumber::from_bytes(&[0x80, 0x01]).unwrap();
        assert_eq!(s.to_rcgen().to_bytes(), vec![0x00, 0x80, 0x01]);
    }
}
