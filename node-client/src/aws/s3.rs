//! S3 GetObject over [`super::Aws`]: the object URL and the meaning of an
//! answer. Nothing else of S3.
//!
//! Addressing: with an endpoint from the environment (`AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL`: moto, MinIO, a VPC endpoint) the path style
//! `<endpoint>/<bucket>/<key>`; on AWS's regional endpoint the virtual-hosted
//! style `https://<bucket>.s3.<region>.amazonaws.com/<key>` unless the bucket
//! name has a dot (TLS wildcards cover one label), then the path style.

use super::{Aws, AwsError, Flavour, Request, xml};

/// `s3://BUCKET/KEY`, checked.
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
    /// Parse `s3://BUCKET/KEY`: a valid bucket name (3-63 of `a-z 0-9 . -`),
    /// a key of printable ASCII without `.`/`..` segments or empty segments
    /// (URLs would rewrite them, and the signature with them).
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{s:?} is not s3://BUCKET/KEY"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not s3://BUCKET/KEY"))?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && !bucket.starts_with(['.', '-'])
            && !bucket.ends_with(['.', '-']);
        if !bucket_ok {
            return Err(format!("{s:?}: {bucket:?} is not a valid bucket name"));
        }
        let key_ok = !key.is_empty()
            && key.len() <= 1024
            && key.bytes().all(|b| b.is_ascii_graphic())
            && key.split('/').all(|seg| !matches!(seg, "" | "." | ".."));
        if !key_ok {
            return Err(format!(
                "{s:?}: the key must be printable ASCII without empty, '.' or '..' segments"
            ));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The object's URL under `endpoint` (ending in `/`); `path_style` as
    /// the module docs say.
    pub fn url(&self, endpoint: &str, path_style: bool) -> String {
        let key = super::encode(&self.key, true);
        if path_style {
            return format!("{endpoint}{}/{key}", self.bucket);
        }
        match endpoint.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}.{rest}{key}", self.bucket),
            None => format!("{endpoint}{}/{key}", self.bucket),
        }
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
        let url = location.url(&endpoint, path_style);
        let req = Request {
            method: "GET",
            url: &url,
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
    fn locations_parse_and_refuse_what_a_url_would_rewrite() {
        let l = Location::parse("s3://demo-config/ca/pki-server-ca.pem").unwrap();
        assert_eq!(l.bucket, "demo-config");
        assert_eq!(l.key, "ca/pki-server-ca.pem");
        assert_eq!(l.to_string(), "s3://demo-config/ca/pki-server-ca.pem");
        for bad in [
            "demo-config/ca.pem",
            "s3://demo-config",
            "s3://demo-config/",
            "s3://Demo/ca.pem",
            "s3://ab/ca.pem",
            "s3://-demo/ca.pem",
            "s3://demo/ca/../x.pem",
            "s3://demo/ca/./x.pem",
            "s3://demo/ca//x.pem",
            "s3://demo/ca x.pem",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_path_style_on_custom_endpoints_and_virtual_hosted_on_aws() {
        let l = Location::parse("s3://demo-config/ca/a+b.pem").unwrap();
        assert_eq!(
            l.url("http://127.0.0.1:5000/", true),
            "http://127.0.0.1:5000/demo-config/ca/a%2Bb.pem"
        );
        assert_eq!(
            l.url("https://s3.eu-west-1.amazonaws.com/", false),
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
