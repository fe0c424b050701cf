//! Listener TLS: rustls on ring, TLS 1.2 and 1.3 only.
//!
//! With `--tls-dir DIR` the server makes, on first start, a listener CA
//! (`ca.pem`, `ca-key.pem`) and a certificate for the listen address, `localhost`
//! and the host name (`cert.pem`, `key.pem`), and keeps them: clients pin
//! `ca.pem`. Keys are written 0600, atomically. The leaf is re-made only when it
//! is missing or expires within 30 days.

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The files of a TLS directory.
pub const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

fn random_serial() -> anyhow::Result<rcgen::SerialNumber> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow::anyhow!("random generator failed"))?;
    b[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&b))
}

/// Write `data` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("path has no parent")?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)?;
    let mut f = tmp.as_file();
    f.write_all(data)?;
    f.sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.parse::<IpAddr>().is_err())
}

fn sans_for(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !listen.ip().is_unspecified() {
        sans.push(listen.ip().to_string());
    }
    sans.extend(host_name());
    sans.extend(extra.iter().cloned());
    sans.dedup();
    sans
}

fn make_ca() -> anyhow::Result<(String, KeyPair)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "pki-server listener CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(3650);
    p.serial_number = Some(random_serial()?);
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), key))
}

fn make_leaf(ca_pem: &str, ca_key: &KeyPair, sans: &[String]) -> anyhow::Result<(String, String)> {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "pki-server");
    p.distinguished_name = dn;
    p.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
        })
        .collect::<anyhow::Result<_>>()?;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(365);
    p.serial_number = Some(random_serial()?);
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn leaf_is_current(cert_pem: &[u8], sans: &[String]) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(cert_pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let soon = OffsetDateTime::now_utc() + Duration::days(30);
    if cert.validity().not_after.to_datetime() < soon {
        return false;
    }
    let have: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                    16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => return false,
    };
    sans.iter().all(|s| have.contains(s))
}

/// Load (or on first start create) the listener CA and certificate in `dir`.
pub fn ensure_dir(dir: &Path, listen: SocketAddr, extra_sans: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_path = dir.join(CA_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let (ca_pem, ca_key) = if ca_path.exists() && ca_key_path.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)
            .context("reading listener CA key")?;
        (std::fs::read_to_string(&ca_path)?, key)
    } else {
        let (pem, key) = make_ca()?;
        write_atomic(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&ca_path, pem.as_bytes(), 0o644)?;
        tracing::info!(path = %ca_path.display(), "created listener CA");
        (pem, key)
    };
    let sans = sans_for(listen, extra_sans);
    let cert_path = dir.join(CERT_FILE);
    let current = std::fs::read(&cert_path)
        .map(|c| leaf_is_current(&c, &sans))
        .unwrap_or(false);
    if !current || !dir.join(KEY_FILE).exists() {
        let (cert, key) = make_leaf(&ca_pem, &ca_key, &sans)?;
        write_atomic(&dir.join(KEY_FILE), key.as_bytes(), 0o600)?;
        write_atomic(&cert_path, format!("{cert}{ca_pem}").as_bytes(), 0o644)?;
        tracing::info!(sans = ?sans, "issued listener certificate");
    }
    Ok(())
}

/// The rustls config from a PEM chain and key (TLS 1.2 and 1.3, h2 and http/1.1).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if chain.is_empty() {
        bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading key {}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The listener config for a TLS directory (creating it if needed).
pub fn from_dir(
    dir: &Path,
    listen: SocketAddr,
    extra_sans: &[String],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    ensure_dir(dir, listen, extra_sans)?;
    server_config(&dir.join(CERT_FILE), &dir.join(KEY_FILE))
}

/// Loopback check for plain-HTTP dev mode.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback() || addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tls_dir_is_created_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:8200".parse().unwrap();
        from_dir(d.path(), listen, &[]).unwrap();
        let ca1 = std::fs::read(d.path().join(CA_FILE)).unwrap();
        let key1 = std::fs::read(d.path().join(KEY_FILE)).unwrap();
        from_dir(d.path(), listen, &[]).unwrap();
        assert_eq!(ca1, std::fs::read(d.path().join(CA_FILE)).unwrap());
        assert_eq!(key1, std::fs::read(d.path().join(KEY_FILE)).unwrap());
        for f in [KEY_FILE, CA_KEY_FILE] {
            let m = std::fs::metadata(d.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600, "{f}");
        }
        // A new SAN re-issues the leaf, keeping the CA.
        from_dir(d.path(), listen, &["pki.internal".into()]).unwrap();
        assert_eq!(ca1, std::fs::read(d.path().join(CA_FILE)).unwrap());
        assert_ne!(key1, std::fs::read(d.path().join(KEY_FILE)).unwrap());
    }
}
