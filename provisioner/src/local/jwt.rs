//! The local target's JWT issuer: an ES256 key of its own whose public half
//! keys `auth/jwt`, and one short-lived login JWT per node.

use super::*;

/// The `iss` of the JWTs the local target mints (the profile's `jwt_issuer`).
pub const JWT_ISSUER: &str = "https://jwt.local.kube-aws-pki";
/// How long a minted login JWT is valid (seconds).
pub const JWT_LIFETIME: i64 = 300;

/// The `aud` of the local target's JWTs (the profile's `jwt_audience`).
pub fn jwt_audience(cluster: &str) -> String {
    format!("kube-aws-pki:{cluster}")
}

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1,
/// BIT STRING of 66 bytes), followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

pub(super) fn pem(label: &str, der: &[u8]) -> String {
    let b = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(super) fn unpem(text: &str, label: &str) -> anyhow::Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, r)| r.split_once(&end))
        .map(|(b, _)| b)
        .with_context(|| format!("not a PEM {label}"))?;
    let b64: String = body.split_whitespace().collect();
    Ok(B64.decode(b64)?)
}

/// The local target's JWT signing key: an ES256 (P-256) key kept in
/// `dir/signing.key` (PKCS#8 PEM, 0600), made on first use; its public key
/// is written to `dir/signing.pub`.
pub struct JwtSigner {
    key: ring::signature::EcdsaKeyPair,
    /// The public key, SubjectPublicKeyInfo PEM.
    pub public_pem: String,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner").finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Load the key from `dir`, or create it there.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        mkdir_private(dir)?;
        let key_file = dir.join("signing.key");
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = if key_file.exists() {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&key_file)
                    .with_context(|| format!("reading {}", key_file.display()))?,
            );
            zeroize::Zeroizing::new(
                unpem(&text, "PRIVATE KEY").with_context(|| format!("{}", key_file.display()))?,
            )
        } else {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| anyhow::anyhow!("generating the JWT signing key failed"))?;
            let der = zeroize::Zeroizing::new(doc.as_ref().to_vec());
            let text = zeroize::Zeroizing::new(pem("PRIVATE KEY", &der));
            write_private(&key_file, text.as_bytes())?;
            der
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| anyhow::anyhow!("{}: not a P-256 PKCS#8 key", key_file.display()))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let public_pem = pem("PUBLIC KEY", &spki);
        write_private(&dir.join("signing.pub"), public_pem.as_bytes())?;
        Ok(Self { key, public_pem })
    }

    /// A compact ES256 JWT over `claims`.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let input = format!(
            "{}.{}",
            B64URL.encode(json!({"alg": "ES256", "typ": "JWT"}).to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing a JWT failed"))?;
        Ok(format!("{input}.{}", B64URL.encode(sig.as_ref())))
    }

    /// The login JWT of `node` in `cluster`, valid from `now` for [`JWT_LIFETIME`].
    pub fn node_jwt(&self, cluster: &str, node: &LocalNode, now: i64) -> anyhow::Result<String> {
        self.sign(&json!({
            "iss": JWT_ISSUER,
            "aud": jwt_audience(cluster),
            "sub": node.name,
            "node_name": node.name,
            "kube-aws-pki/role": node.role,
            "iat": now,
            "nbf": now - 5,
            "exp": now + JWT_LIFETIME,
        }))
    }
}
