//! `fetch-ca`: the certificate authority that node-client trusts for
//! pki-server, copied from S3 with the node's own AWS identity.
//!
//! pki-server publishes its listener CA with `pki-server publish-ca`; every
//! other node fetches it here, before any token or login is sent to
//! pki-server. One SigV4-signed GetObject ([`crate::aws::s3`]): no container
//! image, no registry, nothing at boot that a third party controls.
//!
//! What is written is checked first: the object must be one or more PEM
//! `CERTIFICATE` blocks and nothing else (blank lines aside), each a CA
//! certificate (basicConstraints CA:TRUE), at most [`MAX_BYTES`] bytes.
//! Anything else is refused and nothing is written. The file is replaced
//! atomically with mode 0644 (a CA certificate is public), and only when its
//! contents change.
//!
//! A missing object (404: pki-server has not published yet), a 5xx, throttling
//! or no answer is retried with capped backoff until the deadline; S3's
//! refusal (403, another 4xx) is final.

use crate::aws::Aws;
use crate::aws::s3::{GetError, Location};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use policies::ca_bundle::{MAX_BYTES, check as check_ca_bundle};

/// What `fetch-ca` does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The object.
    pub from: Location,
    /// The file to write.
    pub out: PathBuf,
    /// How long to keep retrying a missing or unavailable object.
    pub wait: Duration,
    /// When the object stays unavailable: keep a valid CA bundle already at
    /// `out` and succeed (a refusal or an invalid object still fails).
    pub keep_existing: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `out` was written with this many CA certificates.
    Written(usize),
    /// `out` already held the same bytes.
    Unchanged(usize),
    /// The object stayed unavailable; `out` (this many certificates) was kept.
    KeptExisting(usize, String),
}

/// Why `fetch-ca` failed. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum FetchCaError {
    /// Local: no region, no credentials, a bad endpoint.
    #[error("{0}")]
    Config(String),
    /// S3 refused the request (final).
    #[error("{0}")]
    Refused(String),
    /// The object is not a CA certificate bundle (final).
    #[error("{location} is not a PEM CA certificate bundle: {why}")]
    NotCa {
        /// The object.
        location: String,
        /// What is wrong with it.
        why: String,
    },
    /// The object stayed missing or unavailable until the deadline.
    #[error("{0}")]
    Unavailable(String),
    /// Writing the file failed.
    #[error("{0}")]
    Write(String),
}

/// Fetch, check and write, retrying a missing or unavailable object until
/// `o.wait` has passed.
pub async fn run(aws: &Aws, o: &Options) -> Result<Outcome, FetchCaError> {
    let deadline = Instant::now() + o.wait;
    let mut tries = 0u32;
    loop {
        let why = match aws.get_object(&o.from).await {
            Ok(bytes) => return install(o, &bytes),
            Err(GetError::Config(m)) => return Err(FetchCaError::Config(m)),
            Err(e @ GetError::Refused { .. }) => return Err(FetchCaError::Refused(e.to_string())),
            Err(e @ GetError::Missing(_)) => e.to_string(),
            Err(GetError::Unavailable(m)) => m,
        };
        let now = Instant::now();
        if now >= deadline {
            if o.keep_existing
                && let Some(n) = existing(&o.out)
            {
                return Ok(Outcome::KeptExisting(n, why));
            }
            return Err(FetchCaError::Unavailable(format!(
                "gave up after {}s: {why}",
                o.wait.as_secs()
            )));
        }
        tries = tries.saturating_add(1);
        tracing::info!(from = %o.from, waiting_for = %why, "waiting for the CA");
        let ms = crate::schedule::backoff_ms(tries, 1_000, 15_000, crate::schedule::rand_unit())
            .max(500);
        let left = deadline.saturating_duration_since(now);
        tokio::time::sleep(Duration::from_millis(ms).min(left)).await;
    }
}

/// Check `bytes` and write them to `o.out` unless it holds them already.
pub fn install(o: &Options, bytes: &[u8]) -> Result<Outcome, FetchCaError> {
    let n = check_ca_bundle(bytes).map_err(|why| FetchCaError::NotCa {
        location: o.from.to_string(),
        why,
    })?;
    if std::fs::read(&o.out).is_ok_and(|cur| cur == bytes) {
        return Ok(Outcome::Unchanged(n));
    }
    crate::store::write_public(&o.out, bytes).map_err(|e| FetchCaError::Write(e.to_string()))?;
    tracing::info!(from = %o.from, out = %o.out.display(), certificates = n, "wrote the CA");
    Ok(Outcome::Written(n))
}

/// How many CA certificates a valid bundle at `path` holds.
fn existing(path: &Path) -> Option<usize> {
    std::fs::read(path)
        .ok()
        .and_then(|b| check_ca_bundle(&b).ok())
}

#[cfg(test)]
mod tests;
