//! `s3://BUCKET/KEY`: where pki-server publishes its listener CA and
//! node-client fetches it. One syntax for both (they once differed: one
//! accepted `s3://-b/k` and `a/../b`).

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
}
