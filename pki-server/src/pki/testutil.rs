//! Shared fixtures for the `pki` unit tests: a fixed clock, CAs, and
//! independent verifiers (x509-parser signature checks and `openssl verify`).

use super::*;
use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};

/// 2023-11-14T22:13:20Z.
pub const NOW: i64 = 1_700_000_000;

pub fn clock() -> FixedClock {
    FixedClock::at_unix(NOW)
}

pub fn urls() -> UrlsConfig {
    UrlsConfig {
        issuing_certificates: vec!["http://pki.example/v1/pki/ca".into()],
        crl_distribution_points: vec!["http://pki.example/v1/pki/crl".into()],
        ocsp_servers: vec![],
    }
}

pub fn ctx<'a>(clock: &'a FixedClock, urls: &'a UrlsConfig) -> MountContext<'a> {
    MountContext {
        ttl: MountTtl::default(),
        urls,
        clock,
    }
}

/// One RSA-2048 key for every RSA test (key generation is the slow part).
pub fn rsa_key() -> PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(KeyType::Rsa(RsaBits::B2048)).unwrap())
        .clone()
}

pub fn key(kt: KeyType) -> PrivateKey {
    match kt {
        KeyType::Rsa(RsaBits::B2048) => rsa_key(),
        _ => PrivateKey::generate(kt).unwrap(),
    }
}

/// A root "Test Root" valid for 10 years from [`NOW`].
pub fn root_with(kt: KeyType, tweak: impl FnOnce(&mut CaRequest)) -> Issuer {
    let c = clock();
    let u = urls();
    let mut req = CaRequest {
        common_name: "Test Root".into(),
        ttl: Some(Duration::from_secs(10 * 365 * 86_400)),
        ..CaRequest::default()
    };
    tweak(&mut req);
    let serial = SerialNumber::generate().unwrap();
    generate_root(&ctx(&c, &u), &req, key(kt), &serial)
        .unwrap()
        .issuer
}

pub fn root() -> Issuer {
    root_with(KeyType::Ec(EcCurve::P256), |_| {})
}

pub fn parse_cert(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

/// x509-parser's ring-backed check that `child` is signed by `parent`.
pub fn assert_signed_by(child: &[u8], parent: &[u8]) {
    let p = parse_cert(parent);
    parse_cert(child)
        .verify_signature(Some(p.public_key()))
        .expect("signature verifies against the issuer");
}

fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// `openssl verify -CAfile root [-untrusted chain] leaf` at [`NOW`].
pub fn openssl_verify(leaf_pem: &str, root_pem: &str, untrusted: &[&str], purpose: Option<&str>) {
    let leaf = write_temp(leaf_pem);
    let root = write_temp(root_pem);
    let chain = write_temp(&untrusted.join("\n"));
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-attime", &NOW.to_string(), "-CAfile"])
        .arg(root.path());
    if !untrusted.is_empty() {
        cmd.arg("-untrusted").arg(chain.path());
    }
    if let Some(p) = purpose {
        cmd.args(["-purpose", p]);
    }
    let out = cmd.arg(leaf.path()).output().expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
