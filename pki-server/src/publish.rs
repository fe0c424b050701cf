//! `publish-ca`: the listener CA certificate, put where the nodes fetch it
//! (`node-client fetch-ca`) before they send pki-server a token or a login.
//!
//! Only a PEM CA certificate bundle ever leaves: one or more `CERTIFICATE`
//! blocks and nothing else (blank lines aside), each with basicConstraints
//! CA:TRUE. A file that mentions a private key is refused before anything is
//! read from or written to S3. The object is written with PutObject
//! (`application/x-pem-file`) only when it does not already hold the same
//! bytes, so a restart adds no object version.
//!
//! S3 client, credentials, region and endpoint (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_S3`) are the storage backend's ([`crate::storage::s3_client`]).

use anyhow::{Context, bail};
use std::path::Path;
use std::time::{Duration, Instant};

pub use policies::ca_bundle::MAX_BYTES;
/// The object's content type.
pub const CONTENT_TYPE: &str = "application/x-pem-file";

pub use policies::s3::Location;

/// What `publish` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The object was written; this many certificates.
    Written(usize),
    /// The object already held the same bytes.
    Unchanged(usize),
}

pub use policies::ca_bundle::check as check_ca_bundle;

/// Wait up to `wait` for `cert` to exist (the server makes it on first
/// start), then read and check it: the bytes to publish.
pub async fn read_ca(cert: &Path, wait: Duration) -> anyhow::Result<(Vec<u8>, usize)> {
    let deadline = Instant::now() + wait;
    let bytes = loop {
        match std::fs::read(cert) {
            Ok(b) if !b.is_empty() => break b,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", cert.display())),
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not appear within {}s",
                cert.display(),
                wait.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let n = check_ca_bundle(&bytes).map_err(|why| {
        anyhow::anyhow!(
            "{} is not a PEM CA certificate bundle: {why}; nothing was published",
            cert.display()
        )
    })?;
    Ok((bytes, n))
}

/// Put `bytes` (checked by [`check_ca_bundle`]) at `to` unless the object
/// already holds them.
pub async fn publish(
    s3: &aws_sdk_s3::Client,
    to: &Location,
    bytes: &[u8],
) -> anyhow::Result<Published> {
    let n = check_ca_bundle(bytes)
        .map_err(|why| anyhow::anyhow!("not a PEM CA certificate bundle: {why}"))?;
    match s3.get_object().bucket(&to.bucket).key(&to.key).send().await {
        Ok(out) => {
            let cur = out
                .body
                .collect()
                .await
                .with_context(|| format!("reading {to}"))?
                .into_bytes();
            if cur.as_ref() == bytes {
                return Ok(Published::Unchanged(n));
            }
        }
        Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {}
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            if !matches!(status, Some(403 | 404)) {
                bail!("reading {to}: {}", sdk_error(&e));
            }
            // 403: not published yet to a role without s3:ListBucket (S3
            // answers 403, not 404), or a role that may put but not read:
            // compare nothing, put.
            tracing::info!(object = %to, status = ?status, "cannot read the published CA; writing it");
        }
    }
    s3.put_object()
        .bucket(&to.bucket)
        .key(&to.key)
        .content_type(CONTENT_TYPE)
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .body(bytes.to_vec().into())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("writing {to}: {}", sdk_error(&e)))?;
    Ok(Published::Written(n))
}

/// An SDK error as `code: message` (S3 error texts carry no secret).
fn sdk_error<E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String {
    match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("unknown"),
            se.message().unwrap_or("")
        ),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_listener_ca_is_publishable_and_its_chain_and_keys_are_not() {
        let d = tempfile::tempdir().unwrap();
        crate::tls::ensure_dir(d.path(), "127.0.0.1:8200".parse().unwrap(), &[]).unwrap();
        let read = |n: &str| std::fs::read(d.path().join(n)).unwrap();
        assert_eq!(check_ca_bundle(&read(crate::tls::CA_FILE)), Ok(1));
        // cert.pem is the leaf then the CA: the leaf is no CA.
        assert!(check_ca_bundle(&read("cert.pem")).is_err());
        for key in ["ca-key.pem", "key.pem"] {
            assert!(
                check_ca_bundle(&read(key))
                    .unwrap_err()
                    .contains("private key")
            );
        }
    }

    #[tokio::test]
    async fn a_missing_certificate_file_times_out() {
        let d = tempfile::tempdir().unwrap();
        let e = read_ca(&d.path().join("ca.pem"), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did not appear"), "{e}");
    }
}
