//! AWS KMS wrapping of the root key, for unattended restarts (Vault's `awskms` seal).
//!
//! The root key is encrypted by KMS with an encryption context that names its
//! purpose; only the ciphertext blob is stored. Whoever can call `kms:Decrypt` on
//! the key with that context can unseal, so the key policy is the real guard.

use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

const CONTEXT_KEY: &str = "pki-server";
const CONTEXT_VALUE: &str = "root-key";

/// A KMS key used to wrap the root key.
#[derive(Debug, Clone)]
pub struct Kms {
    client: aws_sdk_kms::Client,
    key_id: String,
}

fn describe<E: std::fmt::Display + aws_sdk_kms::error::ProvideErrorMetadata>(
    op: &str,
    key: &str,
    e: &aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
) -> String {
    match e.as_service_error() {
        Some(se) => format!(
            "kms {op} with key {key}: {}: {}",
            se.code().unwrap_or("error"),
            se.message().unwrap_or("")
        ),
        None => format!("kms {op} with key {key}: {e}"),
    }
}

impl Kms {
    /// A wrapper for `key_id` (id, ARN or alias) using the SDK's standard settings.
    pub fn new(sdk: &aws_config::SdkConfig, key_id: &str) -> Self {
        Self {
            client: aws_sdk_kms::Client::new(sdk),
            key_id: key_id.to_string(),
        }
    }

    /// The configured key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypt `plaintext` (the root key).
    pub async fn wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext.to_vec()))
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| describe("encrypt", &self.key_id, &e))?;
        out.ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| "kms encrypt returned no ciphertext".to_string())
    }

    /// Decrypt a blob made by [`Kms::wrap`]. The key's state is checked first
    /// (DescribeKey, as Vault's awskms seal does at start): a disabled or
    /// pending-deletion key is reported by name rather than as a bare failure.
    pub async fn unwrap_key(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        let meta = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| describe("describe-key", &self.key_id, &e))?
            .key_metadata
            .ok_or_else(|| format!("kms describe-key with key {}: no metadata", self.key_id))?;
        let state = meta.key_state().map(|s| s.as_str().to_string());
        if !meta.enabled() || state.as_deref() != Some("Enabled") {
            return Err(format!(
                "kms decrypt with key {}: the key is {} (enable it, or unseal with the recovery shares)",
                self.key_id,
                state.as_deref().unwrap_or("not enabled")
            ));
        }
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| describe("decrypt", &self.key_id, &e))?;
        out.plaintext
            .map(|b| Zeroizing::new(b.into_inner()))
            .ok_or_else(|| "kms decrypt returned no plaintext".to_string())
    }
}
