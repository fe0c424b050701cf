//! Compact JWS verification on ring, for `auth/jwt` logins.
//!
//! Only asymmetric algorithms on an explicit allow-list (ES256, ES384, EdDSA,
//! RS256) are accepted, each only with a key of its own type: `none` and the
//! HMAC family are refused before any key is looked at, so a public key can
//! never be used as an HMAC secret. No `crit` header extensions are understood,
//! so a token that carries one is refused (RFC 7515 §4.1.11).
//!
//! This module checks the signature only; the claims (exp, nbf, aud, iss, ...)
//! are checked by [`super::jwt`]. It does not fetch keys (no JWKS URL, no OIDC
//! discovery): keys come from the mount's configuration.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{Map, Value};

/// Longest JWT accepted (Kubernetes service-account tokens are ~1 KiB).
pub const MAX_JWT_BYTES: usize = 16 * 1024;

/// Algorithms this server verifies.
pub const SUPPORTED_ALGS: &[&str] = &["ES256", "ES384", "EdDSA", "RS256"];

/// The type of a verification key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    P256,
    /// ECDSA on P-384.
    P384,
    /// Ed25519.
    Ed25519,
    /// RSA (2048 to 8192 bits).
    Rsa,
}

/// A public key parsed from PEM, ready for ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyKind,
    /// The SubjectPublicKey bits: an EC point, 32 Ed25519 bytes, or a PKCS#1 RSAPublicKey.
    raw: Vec<u8>,
}

/// Why a JWS was refused. Messages never include the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    /// Not three base64url parts, or the header or payload is not JSON.
    #[error("error parsing token: {0}")]
    Malformed(&'static str),
    /// `alg` is not on the allow-list (or is `none`, or HS*).
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    /// A `crit` header we do not understand.
    #[error("unsupported critical header parameters")]
    Critical,
    /// No configured key verified the signature.
    #[error("failed to verify id token signature")]
    Signature,
}

/// Why a configured key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not PEM, or no PUBLIC KEY / CERTIFICATE block.
    #[error("error parsing public key: {0}")]
    Parse(String),
    /// A key type we do not verify with.
    #[error("unsupported public key type: {0}")]
    Unsupported(String),
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

impl PublicKey {
    /// Every key in a PEM text (`PUBLIC KEY` blocks, or the key of a `CERTIFICATE`).
    pub fn from_pem(pem: &str) -> Result<Vec<Self>, KeyError> {
        use rustls_pemfile::Item;
        let mut out = Vec::new();
        let mut reader = std::io::BufReader::new(pem.as_bytes());
        for item in rustls_pemfile::read_all(&mut reader) {
            match item.map_err(|e| KeyError::Parse(format!("{e:?}")))? {
                Item::SubjectPublicKeyInfo(spki) => out.push(Self::from_spki(spki.as_ref())?),
                Item::X509Certificate(der) => {
                    use x509_parser::prelude::FromDer;
                    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
                        .map_err(|_| KeyError::Parse("bad certificate".into()))?;
                    out.push(Self::from_spki(cert.public_key().raw)?);
                }
                _ => return Err(KeyError::Parse("expected a PUBLIC KEY block".into())),
            }
        }
        if out.is_empty() {
            return Err(KeyError::Parse("no PEM block found".into()));
        }
        Ok(out)
    }

    /// A key from a DER SubjectPublicKeyInfo.
    pub fn from_spki(der: &[u8]) -> Result<Self, KeyError> {
        use x509_parser::prelude::FromDer;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|_| KeyError::Parse("bad SubjectPublicKeyInfo".into()))?;
        let alg = spki.algorithm.algorithm.to_id_string();
        let kind = match alg.as_str() {
            OID_RSA => KeyKind::Rsa,
            OID_ED25519 => KeyKind::Ed25519,
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    OID_P256 => KeyKind::P256,
                    OID_P384 => KeyKind::P384,
                    c => return Err(KeyError::Unsupported(format!("EC curve {c}"))),
                }
            }
            a => return Err(KeyError::Unsupported(a.to_string())),
        };
        Ok(Self {
            kind,
            raw: spki.subject_public_key.data.to_vec(),
        })
    }

    /// The ring algorithm for `alg` with this key, if the key may verify it.
    fn algorithm(&self, alg: &str) -> Option<&'static dyn VerificationAlgorithm> {
        match (alg, self.kind) {
            ("ES256", KeyKind::P256) => Some(&signature::ECDSA_P256_SHA256_FIXED),
            ("ES384", KeyKind::P384) => Some(&signature::ECDSA_P384_SHA384_FIXED),
            ("EdDSA", KeyKind::Ed25519) => Some(&signature::ED25519),
            ("RS256", KeyKind::Rsa) => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            _ => None,
        }
    }

    /// The key's type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }
}

/// A verified token: its header and claims.
#[derive(Debug)]
pub struct Verified {
    /// The protected header.
    pub header: Map<String, Value>,
    /// The claims.
    pub claims: Map<String, Value>,
}

fn json_part(part: &str, what: &'static str) -> Result<Map<String, Value>, JwsError> {
    let bytes = B64URL
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwsError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwsError::Malformed(what)),
    }
}

/// Verify a compact JWS against `keys`, allowing only algorithms in `allowed`
/// (intersected with [`SUPPORTED_ALGS`]; empty = all supported).
pub fn verify(token: &str, keys: &[PublicKey], allowed: &[String]) -> Result<Verified, JwsError> {
    if token.len() > MAX_JWT_BYTES {
        return Err(JwsError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("expected three parts"));
    };
    let header = json_part(h, "bad header")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwsError::Malformed("no alg"))?
        .to_string();
    let permitted =
        SUPPORTED_ALGS.contains(&alg.as_str()) && (allowed.is_empty() || allowed.contains(&alg));
    if !permitted {
        return Err(JwsError::Algorithm(alg));
    }
    if header.contains_key("crit") {
        return Err(JwsError::Critical);
    }
    let sig = B64URL
        .decode(s)
        .map_err(|_| JwsError::Malformed("bad signature encoding"))?;
    // The signing input is the two encoded parts exactly as sent.
    let input_len = h.len() + 1 + p.len();
    let input = token
        .get(..input_len)
        .ok_or(JwsError::Malformed("bad parts"))?;
    let ok = keys.iter().any(|k| {
        k.algorithm(&alg).is_some_and(|a| {
            UnparsedPublicKey::new(a, &k.raw)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        })
    });
    if !ok {
        return Err(JwsError::Signature);
    }
    let claims = json_part(p, "bad payload")?;
    Ok(Verified { header, claims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn b64(v: &Value) -> String {
        B64URL.encode(v.to_string())
    }

    struct Es256 {
        key: signature::EcdsaKeyPair,
        public: PublicKey,
        pem: String,
    }

    fn es256() -> Es256 {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let key = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let rk = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let pem = rk.public_key_pem();
        let public = PublicKey::from_pem(&pem).unwrap().remove(0);
        assert_eq!(public.raw, key.public_key().as_ref());
        Es256 { key, public, pem }
    }

    fn sign(k: &Es256, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let rng = ring::rand::SystemRandom::new();
        let sig = k.key.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", B64URL.encode(sig.as_ref()))
    }

    #[test]
    fn a_good_signature_verifies_and_a_changed_payload_does_not() {
        let k = es256();
        let t = sign(
            &k,
            &serde_json::json!({"alg":"ES256"}),
            &serde_json::json!({"sub":"a"}),
        );
        let v = verify(&t, std::slice::from_ref(&k.public), &[]).unwrap();
        assert_eq!(v.claims["sub"], "a");
        let mut parts: Vec<&str> = t.split('.').collect();
        let other = b64(&serde_json::json!({"sub":"b"}));
        parts[1] = &other;
        assert_eq!(
            verify(&parts.join("."), std::slice::from_ref(&k.public), &[]).unwrap_err(),
            JwsError::Signature
        );
        // Another key does not verify it either.
        let k2 = es256();
        assert_eq!(
            verify(&t, &[k2.public], &[]).unwrap_err(),
            JwsError::Signature
        );
        // An allow-list without ES256 refuses it.
        assert!(matches!(
            verify(&t, &[k.public], &["RS256".into()]),
            Err(JwsError::Algorithm(_))
        ));
        assert!(k.pem.contains("PUBLIC KEY"));
    }

    #[test]
    fn none_and_hmac_with_the_public_key_are_refused() {
        let k = es256();
        let claims = serde_json::json!({"sub":"a"});
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg":"none"})),
            b64(&claims)
        );
        assert_eq!(
            verify(&none, std::slice::from_ref(&k.public), &[]).unwrap_err(),
            JwsError::Algorithm("none".into())
        );
        // HS256 keyed with the PEM text of the public key (the classic confusion).
        let input = format!(
            "{}.{}",
            b64(&serde_json::json!({"alg":"HS256"})),
            b64(&claims)
        );
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.pem.as_bytes()),
            input.as_bytes(),
        );
        let hs = format!("{input}.{}", B64URL.encode(mac.as_ref()));
        assert_eq!(
            verify(&hs, std::slice::from_ref(&k.public), &["HS256".into()]).unwrap_err(),
            JwsError::Algorithm("HS256".into())
        );
        // ES384 claimed for a P-256 key: no key of that type, so no verification.
        let t = sign(&k, &serde_json::json!({"alg":"ES384"}), &claims);
        assert_eq!(
            verify(&t, std::slice::from_ref(&k.public), &[]).unwrap_err(),
            JwsError::Signature
        );
        // crit is refused.
        let t = sign(
            &k,
            &serde_json::json!({"alg":"ES256","crit":["x"]}),
            &claims,
        );
        assert_eq!(
            verify(&t, &[k.public], &[]).unwrap_err(),
            JwsError::Critical
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let k = es256();
        for t in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30.e30",
            "bnVsbA.e30.AA",
        ] {
            assert!(
                verify(t, std::slice::from_ref(&k.public), &[]).is_err(),
                "{t}"
            );
        }
        assert!(PublicKey::from_pem("not pem").is_err());
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
    }
}
