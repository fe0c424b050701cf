//! A PKI mount's CRL kept in one file on the node, for a service that checks
//! connections against it: etcd's `--client-crl-file` and `--peer-crl-file`
//! (a profile entry's `crl_file`).
//!
//! The CRL changes on its own schedule (a revocation, the server's rebuild
//! before nextUpdate), not with the certificates, so it is not part of the
//! atomic certificate set ([`crate::store::write_set`]): it is one file
//! replaced on its own ([`crate::store::write_public`]: temp file in the same
//! folder, fsync, rename; mode 0644), and only when its bytes changed.
//!
//! What is written is checked first: one CRL (DER, or one PEM `X509 CRL`
//! block), nothing after it, signed by a CA certificate of the role's
//! `ca_file` — the CA the node already trusts for that mount. Anything else is
//! refused and the file on disk stays as it was. It is written as DER, the
//! one form every etcd reads (3.4 parses DER or PEM, 3.6 DER only).
//!
//! It does not judge freshness beyond a warning: a CRL past its nextUpdate
//! still lists every revocation it knew, which beats no CRL at all, and etcd
//! itself never looks at the dates.

use crate::client::{Client, ClientError};
use crate::inspect;
use crate::profile::Request;
use crate::store::{self, StoreError};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// The largest CRL accepted (about 300,000 entries).
pub const MAX_BYTES: usize = 16 << 20;

/// What a verified CRL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// Revoked serials listed.
    pub revoked: usize,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: Option<i64>,
}

/// A CRL that parsed and verified: its DER and what it says.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The CRL, DER.
    pub der: Vec<u8>,
    /// Its contents.
    pub info: CrlInfo,
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The file now holds this CRL (it was missing or different).
    Written(CrlInfo),
    /// The file already held exactly this CRL: not touched.
    Unchanged(CrlInfo),
}

impl Installed {
    /// The CRL's contents either way.
    pub fn info(&self) -> &CrlInfo {
        match self {
            Self::Written(i) | Self::Unchanged(i) => i,
        }
    }
}

/// Why a CRL was not installed.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// The server refused or stayed unavailable.
    #[error("fetching {path}: {source}")]
    Request {
        /// The path asked.
        path: String,
        /// What the client saw.
        source: ClientError,
    },
    /// The answer is not one well-formed CRL.
    #[error("not a CRL: {0}")]
    Invalid(String),
    /// No CA certificate of the CA file signed it.
    #[error("not signed by the CA in {0}")]
    NotSigned(String),
    /// The CA file to verify against is missing or holds no certificate.
    #[error("CA file {0}")]
    Ca(String),
    /// Writing the file failed.
    #[error("writing the CRL: {0}")]
    Write(#[from] StoreError),
}

/// The DER of `bytes`: DER as is, or the one PEM `X509 CRL` block.
fn der_of(bytes: &[u8]) -> Result<Vec<u8>, CrlError> {
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    let mut blocks = inspect::pem_blocks(bytes, "X509 CRL");
    match (blocks.pop(), blocks.is_empty()) {
        (Some(der), true) => Ok(der),
        (Some(_), false) => Err(CrlError::Invalid("more than one CRL".into())),
        (None, _) if bytes.is_empty() => Err(CrlError::Invalid("an empty answer".into())),
        (None, _) => Err(CrlError::Invalid("neither DER nor a PEM X509 CRL".into())),
    }
}

/// Parse `bytes` (DER or PEM) as one CRL and check its signature against the
/// CA certificates of `ca_pem` (`ca_name` names that file in errors).
pub fn verify(bytes: &[u8], ca_pem: &[u8], ca_name: &str) -> Result<Verified, CrlError> {
    let der = der_of(bytes)?;
    let (rest, crl) =
        CertificateRevocationList::from_der(&der).map_err(|e| CrlError::Invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CrlError::Invalid(format!(
            "{} bytes after the CRL",
            rest.len()
        )));
    }
    let cas: Vec<Vec<u8>> = inspect::pem_blocks(ca_pem, "CERTIFICATE");
    if cas.is_empty() {
        return Err(CrlError::Ca(format!("{ca_name} holds no certificate")));
    }
    let signed = cas.iter().any(|ca| {
        X509Certificate::from_der(ca)
            .is_ok_and(|(_, ca)| ca.is_ca() && crl.verify_signature(ca.public_key()).is_ok())
    });
    if !signed {
        return Err(CrlError::NotSigned(ca_name.to_string()));
    }
    let info = CrlInfo {
        revoked: crl.iter_revoked_certificates().count(),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
    };
    Ok(Verified { der, info })
}

/// Verify `bytes` against the CA bundle `ca_pem` and make `path` hold it
/// (DER, 0644, atomically), unless it already holds exactly those bytes. A
/// CRL that fails to verify leaves `path` as it was.
pub fn install(
    path: &Path,
    bytes: &[u8],
    ca_pem: &[u8],
    ca_name: &str,
) -> Result<Installed, CrlError> {
    let v = verify(bytes, ca_pem, ca_name)?;
    if std::fs::read(path).is_ok_and(|old| old == v.der) {
        return Ok(Installed::Unchanged(v.info));
    }
    store::write_public(path, &v.der)?;
    Ok(Installed::Written(v.info))
}

/// One CRL file's refresh.
#[derive(Debug)]
pub struct Refreshed {
    /// The CRL file (in the output directory).
    pub file: String,
    /// Its mount.
    pub mount: String,
    /// A previous CRL file was there (and stays when the refresh fails).
    pub had_previous: bool,
    /// What happened.
    pub result: Result<Installed, CrlError>,
}

impl Refreshed {
    /// Failed with no CRL file left in place: the service checking it would
    /// refuse every connection (etcd does), so this is an error, not a warning.
    pub fn is_fatal(&self) -> bool {
        self.result.is_err() && !self.had_previous
    }
}

/// Fetch `<mount>/crl` for every request of the role that names a
/// `crl_file` (once per file), verify it against the request's CA file in
/// `out` and install it there. Failures are logged; a previous file stays.
pub async fn refresh(
    client: &Client,
    reqs: &[Request],
    out: &Path,
    deadline: Duration,
) -> Vec<Refreshed> {
    let mut done = BTreeSet::new();
    let mut all = Vec::new();
    for r in reqs {
        let (Some(file), Some(ca_file)) = (&r.crl_file, &r.ca_file) else {
            continue;
        };
        if !done.insert(file.clone()) {
            continue;
        }
        let path = out.join(file);
        let had_previous = path.exists();
        let result = refresh_one(
            client,
            &r.mount,
            &path,
            &out.join(ca_file),
            ca_file,
            deadline,
        )
        .await;
        match &result {
            Ok(Installed::Written(i)) => tracing::info!(
                file = %path.display(),
                mount = %r.mount,
                revoked = i.revoked,
                this_update = i.this_update,
                "wrote the CRL"
            ),
            Ok(Installed::Unchanged(_)) => {
                tracing::debug!(file = %path.display(), "the CRL is unchanged")
            }
            Err(e) if had_previous => tracing::warn!(
                file = %path.display(),
                mount = %r.mount,
                error = %e,
                "refusing the new CRL; keeping the previous file"
            ),
            Err(e) => tracing::error!(
                file = %path.display(),
                mount = %r.mount,
                error = %e,
                "no CRL written"
            ),
        }
        if let Ok(i) = &result
            && let Some(next) = i.info().next_update
            && next < crate::fetch::now()
        {
            tracing::warn!(
                file = %path.display(),
                next_update = next,
                "the server's CRL is past its nextUpdate"
            );
        }
        all.push(Refreshed {
            file: file.clone(),
            mount: r.mount.clone(),
            had_previous,
            result,
        });
    }
    all
}

async fn refresh_one(
    client: &Client,
    mount: &str,
    path: &Path,
    ca: &Path,
    ca_name: &str,
    deadline: Duration,
) -> Result<Installed, CrlError> {
    let crl_path = format!("{mount}/crl");
    let bytes = client
        .read_raw(&crl_path, MAX_BYTES, deadline)
        .await
        .map_err(|source| CrlError::Request {
            path: crl_path,
            source,
        })?;
    let ca_pem = std::fs::read(ca).map_err(|e| CrlError::Ca(format!("{}: {e}", ca.display())))?;
    install(path, &bytes, &ca_pem, ca_name)
}

#[cfg(test)]
mod tests;
