//! S3 GetObject over [`super::Aws`]: the object URL and the meaning of an
//! answer. Nothing else of S3.
//!
//! Addressing: with an endpoint from the environment (`AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL`: moto, MinIO, a VPC endpoint) the path style
//! `<endpoint>/<bucket>/<key>`; on AWS's regional endpoint the virtual-hosted
//! style `https://<bucket>.s3.<region>.amazonaws.com/<key>` unless the bucket
//! name has a dot (TLS wildcards cover one label), then the path style.

use super::{Aws, AwsError, Flavour, Request, xml};

pub use policies::s3::Location;

/// The object's URL under `endpoint` (ending in `/`); `path_style` as
/// the module docs say.
pub fn url(location: &Location, endpoint: &str, path_style: bool) -> String {
    let key = super::encode(&location.key, true);
    if path_style {
        return format!("{endpoint}{}/{key}", location.bucket);
    }
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}.{rest}{key}", location.bucket),
        None => format!("{endpoint}{}/{key}", location.bucket),
    }
}

/// Why a GetObject gave no object.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Local: no region, no credentials, a bad endpoint.
    #[error("{0}")]
    Config(String),
    /// 404: no such object (or bucket) yet.
    #[error("{0} does not exist (yet)")]
    Missing(String),
    /// S3 refused (403, another 4xx, a redirect): final.
    #[error("S3 refused GetObject {location} ({status}): {code}: {message}")]
    Refused {
        /// The object.
        location: String,
        /// HTTP status.
        status: u16,
        /// S3's error code.
        code: String,
        /// S3's error message.
        message: String,
    },
    /// No answer, 5xx, throttling, a skewed clock, expired credentials:
    /// worth retrying.
    #[error("{0}")]
    Unavailable(String),
}

impl From<AwsError> for GetError {
    fn from(e: AwsError) -> Self {
        match e {
            AwsError::Config(m) => Self::Config(m),
            AwsError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

/// S3 error codes on a 4xx that a later try may not get.
const TRANSIENT_CODES: [&str; 6] = [
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
];

/// What an answer to GetObject means: the body, or why not.
pub fn answer(location: &Location, status: u16, body: Vec<u8>) -> Result<Vec<u8>, GetError> {
    if status == 200 {
        return Ok(body);
    }
    let (code, message) = xml::parse(&String::from_utf8_lossy(&body))
        .ok()
        .map(|e| {
            (
                e.text_at(&["Code"]).unwrap_or("").to_string(),
                e.text_at(&["Message"]).unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default();
    let location = location.to_string();
    match status {
        404 => Err(GetError::Missing(location)),
        // 307: S3's temporary redirect while a new bucket's DNS settles.
        s if s >= 500 || s == 429 || s == 307 || TRANSIENT_CODES.contains(&code.as_str()) => Err(
            GetError::Unavailable(format!("GetObject {location}: {s} {code} {message}")),
        ),
        s => Err(GetError::Refused {
            location,
            status: s,
            code,
            message,
        }),
    }
}

impl Aws {
    /// The S3 endpoint and whether to address it path-style.
    pub fn s3_endpoint(&self, bucket: &str) -> Result<(String, bool), AwsError> {
        let custom = std::env::var("AWS_ENDPOINT_URL_S3")
            .ok()
            .filter(|v| !v.is_empty())
            .is_some()
            || self.sdk_endpoint().is_some();
        let e = self.endpoint("AWS_ENDPOINT_URL_S3", "s3")?;
        Ok((e, custom || bucket.contains('.')))
    }

    /// One signed GetObject.
    pub async fn get_object(&self, location: &Location) -> Result<Vec<u8>, GetError> {
        let (endpoint, path_style) = self.s3_endpoint(&location.bucket)?;
        let object_url = url(location, &endpoint, path_style);
        let req = Request {
            method: "GET",
            url: &object_url,
            headers: vec![],
            body: b"",
        };
        let r = self.send("GetObject", "s3", Flavour::S3, &req).await?;
        answer(location, r.status, r.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_path_style_on_custom_endpoints_and_virtual_hosted_on_aws() {
        let l = Location::parse("s3://demo-config/ca/a+b.pem").unwrap();
        assert_eq!(
            url(&l, "http://127.0.0.1:5000/", true),
            "http://127.0.0.1:5000/demo-config/ca/a%2Bb.pem"
        );
        assert_eq!(
            url(&l, "https://s3.eu-west-1.amazonaws.com/", false),
            "https://demo-config.s3.eu-west-1.amazonaws.com/ca/a%2Bb.pem"
        );
    }

    #[test]
    fn answers_mean_object_missing_refused_or_unavailable() {
        let l = Location::parse("s3://demo-config/ca/pki-server-ca.pem").unwrap();
        let err = |code: &str| {
            format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
                .into_bytes()
        };
        assert_eq!(answer(&l, 200, b"x".to_vec()).unwrap(), b"x");
        assert!(matches!(
            answer(&l, 404, err("NoSuchKey")),
            Err(GetError::Missing(_))
        ));
        assert!(matches!(
            answer(&l, 403, err("AccessDenied")),
            Err(GetError::Refused { status: 403, ref code, .. }) if code == "AccessDenied"
        ));
        assert!(matches!(
            answer(&l, 301, err("PermanentRedirect")),
            Err(GetError::Refused { status: 301, .. })
        ));
        for (status, code) in [
            (500, "InternalError"),
            (503, "SlowDown"),
            (403, "RequestTimeTooSkewed"),
            (400, "ExpiredToken"),
            (502, ""),
        ] {
            assert!(
                matches!(answer(&l, status, err(code)), Err(GetError::Unavailable(_))),
                "{status} {code}"
            );
        }
        assert!(matches!(
            answer(&l, 400, b"not xml".to_vec()),
            Err(GetError::Refused { status: 400, .. })
        ));
    }
}
