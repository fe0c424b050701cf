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
use x509_parser::prelude::*;

/// The largest bundle published.
pub const MAX_BYTES: usize = 1 << 20;
/// The object's content type.
pub const CONTENT_TYPE: &str = "application/x-pem-file";

/// `s3://BUCKET/KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl Location {
    /// Parse `s3://BUCKET/KEY` (a non-empty bucket and key).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (bucket, key) = s
            .strip_prefix("s3://")
            .and_then(|r| r.split_once('/'))
            .with_context(|| format!("{s:?} is not s3://BUCKET/KEY"))?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        anyhow::ensure!(bucket_ok, "{s:?}: {bucket:?} is not a valid bucket name");
        anyhow::ensure!(
            !key.is_empty() && key.len() <= 1024 && key.bytes().all(|b| b.is_ascii_graphic()),
            "{s:?}: the key must be non-empty printable ASCII"
        );
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

/// What `publish` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The object was written; this many certificates.
    Written(usize),
    /// The object already held the same bytes.
    Unchanged(usize),
}

/// Check that `bytes` are PEM `CERTIFICATE` blocks only, each a CA
/// certificate; how many. The same rules as node-client's `fetch-ca`.
pub fn check_ca_bundle(bytes: &[u8]) -> Result<usize, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_string())?;
    if text.contains("PRIVATE KEY") {
        return Err("it holds a private key".into());
    }
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut n = 0usize;
    let mut block: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        match block.as_mut() {
            None if line.is_empty() => {}
            None if line == BEGIN => block = Some(String::new()),
            None if line.starts_with("-----BEGIN ") => {
                return Err(format!("line {}: {line} is not a certificate", i + 1));
            }
            None => return Err(format!("line {}: text outside a certificate", i + 1)),
            Some(b64) if line == END => {
                n += 1;
                let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &b64)
                    .map_err(|_| format!("certificate {n}: bad base64"))?;
                check_ca_der(&der).map_err(|e| format!("certificate {n}: {e}"))?;
                block = None;
            }
            Some(_) if line.starts_with("-----") => {
                return Err(format!("line {}: {line} inside a certificate", i + 1));
            }
            Some(b64) => b64.push_str(line),
        }
    }
    if block.is_some() {
        return Err("a certificate is not terminated".into());
    }
    if n == 0 {
        return Err("no certificate".into());
    }
    Ok(n)
}

fn check_ca_der(der: &[u8]) -> Result<(), String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|_| "not an X.509 certificate".to_string())?;
    if !rest.is_empty() {
        return Err("bytes after the certificate".into());
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Ok(()),
        Ok(_) => Err(format!(
            "{} is not a CA (no basicConstraints CA:TRUE)",
            cert.subject()
        )),
        Err(_) => Err("invalid basicConstraints".into()),
    }
}

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
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn cert(ca: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["pki.example".to_string()]).unwrap();
        p.is_ca = if ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::NoCa
        };
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    /// `check_ca_bundle(input)`: Ok(count) or an error containing `expected`.
    fn check(input: &str, expected: Result<usize, &str>) {
        match (check_ca_bundle(input.as_bytes()), expected) {
            (Ok(n), Ok(m)) => assert_eq!(n, m, "{input}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{e:?} lacks {want:?}"),
            (got, want) => panic!("{got:?} != {want:?} for\n{input}"),
        }
    }

    #[test]
    fn only_pem_ca_certificates_are_published() {
        let (ca, ca_key) = cert(true);
        let (leaf, _) = cert(false);
        check(&ca, Ok(1));
        check(&format!("{ca}\n{ca}"), Ok(2));
        check("", Err("no certificate"));
        check(&leaf, Err("is not a CA"));
        check(&format!("{ca}{leaf}"), Err("certificate 2"));
        check(&format!("{ca}{ca_key}"), Err("private key"));
        check(&ca_key, Err("private key"));
        check(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            Err("private key"),
        );
        check(&format!("junk\n{ca}"), Err("text outside"));
        check(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            Err("is not a certificate"),
        );
        check(
            &ca.replace("-----END CERTIFICATE-----\n", ""),
            Err("not terminated"),
        );
    }

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

    #[test]
    fn locations_parse() {
        let l = Location::parse("s3://demo-config/ca/pki-server-ca.pem").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.key.as_str()),
            ("demo-config", "ca/pki-server-ca.pem")
        );
        for bad in [
            "demo/ca.pem",
            "s3://demo",
            "s3://demo/",
            "s3://Demo/x",
            "s3://d/x",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
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
