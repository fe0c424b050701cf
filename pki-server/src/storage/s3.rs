//! S3 storage: one object per key below `s3://BUCKET/PREFIX`.
//!
//! Transport only. Region, credentials and endpoint come from the SDK's standard
//! settings (AWS_REGION, AWS_ENDPOINT_URL, profiles); path-style addressing is used
//! whenever a custom endpoint is set. Conditional writes use `If-None-Match: *`
//! (create-if-absent) and `If-Match: <etag>` (compare-and-swap).

use super::{
    Condition, Entry, Result, Storage, StorageError, Version, validate_key, validate_prefix,
};
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

/// Storage in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

fn backend<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &str,
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError {
    let detail = match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("unknown"),
                err.message().unwrap_or("")
            )
        }
        other => format!("{other}"),
    };
    StorageError::Backend(format!("s3 {op}: {detail}"))
}

fn status_of<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// An S3 client on `sdk`, path-style whenever a custom endpoint is set
/// (moto, MinIO and VPC endpoints need it).
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
        b = b.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

impl S3Storage {
    /// A backend on `bucket` under `prefix` (empty or ending in `/`).
    pub fn new(sdk: &aws_config::SdkConfig, bucket: &str, prefix: &str) -> Self {
        Self {
            client: client(sdk),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }
    }

    fn object(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        validate_key(key)?;
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await;
        match res {
            Ok(out) => {
                let version = Version(out.e_tag().unwrap_or_default().to_string());
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StorageError::Backend(format!("s3 get body: {e}")))?;
                Ok(Some(Entry {
                    value: body.into_bytes().to_vec(),
                    version,
                }))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(backend("get", &e)),
        }
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .body(ByteStream::from(value.to_vec()))
            .send()
            .await
            .map_err(|e| backend("put", &e))?;
        Ok(())
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Condition) -> Result<bool> {
        validate_key(key)?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .body(ByteStream::from(value.to_vec()));
        let req = match cond {
            Condition::Absent => req.if_none_match("*"),
            Condition::Matches(v) => req.if_match(v.0),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            // 412 Precondition Failed: the condition did not hold. 409
            // ConditionalRequestConflict: a concurrent conditional write won.
            // 404 NoSuchKey: If-Match on an absent key.
            Err(e) if matches!(status_of(&e), Some(412 | 409 | 404)) => Ok(false),
            Err(e) => Err(backend("conditional put", &e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        // Single-key DeleteObject: DeleteObjects would require a checksum header
        // that some S3-compatible servers reject.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
            .map_err(|e| backend("delete", &e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let full = self.object(prefix);
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| backend("list", &e))?;
            for o in page.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&full)) {
                    out.push(k.to_string());
                }
            }
            for cp in page.common_prefixes() {
                if let Some(k) = cp.prefix().and_then(|k| k.strip_prefix(&full)) {
                    out.push(k.to_string());
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}
