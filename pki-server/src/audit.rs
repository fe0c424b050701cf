//! Audit devices: one JSON line per request and per response, Vault's shape,
//! with every string value in request and response data, every token and
//! accessor replaced by `hmac-sha256:<hex>` under the device's own salt.
//!
//! Fail closed: with devices enabled, a request is handled only if at least one
//! device wrote its request entry, and answered only if at least one wrote the
//! response entry. The `file` device reopens its file (append, 0600) for every
//! entry, so rotation needs no signal and a file that can no longer be written
//! fails the request. No HTTP here: the API layer hands over plain JSON.

use crate::storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// Storage key of the audit table (behind the barrier).
pub const AUDIT_TABLE: &str = "core/audit";

/// One enabled device.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Device {
    /// Path with a trailing `/`.
    pub path: String,
    /// `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: String,
    /// Options (`file_path`, `mode`, `log_raw`, `hmac_accessor`, `prefix`).
    pub options: BTreeMap<String, String>,
    /// HMAC salt (hex), per device; a re-enabled device gets a new one.
    salt: String,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A caller mistake (400).
    #[error("{0}")]
    Bad(String),
    /// No device could record the entry (500).
    #[error("audit log unavailable: no device could record the entry")]
    Unavailable,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Device {
    /// A new `file` device at `path` with `options` (checked).
    pub fn new(
        path: &str,
        kind: &str,
        description: &str,
        options: BTreeMap<String, String>,
    ) -> Result<Self, AuditError> {
        if kind != "file" {
            return Err(AuditError::Bad(format!(
                "unknown backend type: {kind:?} (this server has the file device)"
            )));
        }
        let fp = options
            .get("file_path")
            .or(options.get("path"))
            .filter(|p| !p.is_empty())
            .cloned()
            .ok_or_else(|| AuditError::Bad("file_path is required".into()))?;
        if !(fp == "stdout" || fp == "discard" || fp.starts_with('/')) {
            return Err(AuditError::Bad(
                "file_path must be absolute, stdout or discard".into(),
            ));
        }
        if let Some(m) = options.get("mode") {
            u32::from_str_radix(m, 8)
                .map_err(|_| AuditError::Bad(format!("invalid mode {m:?}")))?;
        }
        let mut salt = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| AuditError::Bad("random generator failed".into()))?;
        let d = Device {
            path: format!("{}/", path.trim_matches('/')),
            kind: kind.into(),
            description: description.into(),
            options,
            salt: hex::encode(salt),
        };
        // Refuse a device that cannot write now, rather than fail every request later.
        d.write(b"").map_err(|e| {
            AuditError::Bad(format!(
                "sanity check failed; unable to open {fp:?} for writing: {e}"
            ))
        })?;
        Ok(d)
    }

    fn file_path(&self) -> &str {
        self.options
            .get("file_path")
            .or(self.options.get("path"))
            .map(String::as_str)
            .unwrap_or("discard")
    }

    /// `hmac-sha256:<hex>` of `s` under this device's salt.
    pub fn hmac(&self, s: &str) -> String {
        let salt = hex::decode(&self.salt).unwrap_or_default();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt);
        format!(
            "hmac-sha256:{}",
            hex::encode(ring::hmac::sign(&key, s.as_bytes()).as_ref())
        )
    }

    fn raw(&self) -> bool {
        self.options
            .get("log_raw")
            .is_some_and(|v| v == "true" || v == "1")
    }

    /// Replace every string inside `v` by its HMAC (unless `log_raw`).
    fn hash(&self, v: &Value) -> Value {
        if self.raw() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.hmac(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.hash(x)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| (k.clone(), self.hash(x))).collect())
            }
            other => other.clone(),
        }
    }

    fn write(&self, line: &[u8]) -> std::io::Result<()> {
        match self.file_path() {
            "discard" => Ok(()),
            "stdout" => {
                let mut out = std::io::stdout().lock();
                out.write_all(line)?;
                out.flush()
            }
            p => {
                let mode = self
                    .options
                    .get("mode")
                    .and_then(|m| u32::from_str_radix(m, 8).ok())
                    .unwrap_or(0o600);
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(mode)
                    .open(p)?;
                f.write_all(line)?;
                f.flush()
            }
        }
    }
}

/// What the API knows about the caller, for the `auth` section.
#[derive(Clone, Default)]
pub struct Caller {
    /// The token presented (hashed before writing).
    pub token: Option<String>,
    /// Its accessor.
    pub accessor: String,
    /// Its display name.
    pub display_name: String,
    /// Its policies.
    pub policies: Vec<String>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never printed.
        f.debug_struct("Caller")
            .field("display_name", &self.display_name)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

/// One request as the audit log sees it.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Request id shared by the two lines.
    pub id: &'a str,
    /// `read`, `update`, `list`, `delete`.
    pub operation: &'a str,
    /// Path below `/v1/`.
    pub path: &'a str,
    /// Request body.
    pub data: &'a Map<String, Value>,
    /// The caller.
    pub caller: &'a Caller,
}

fn auth_section(d: &Device, c: &Caller) -> Value {
    json!({
        "client_token": c.token.as_deref().map(|t| d.hmac(t)).unwrap_or_default(),
        "accessor": if c.accessor.is_empty() { String::new() } else { d.hmac(&c.accessor) },
        "display_name": c.display_name,
        "policies": c.policies,
        "token_policies": c.policies,
        "metadata": d.hash(&json!(c.metadata)),
        "entity_id": "",
        "token_type": "service",
    })
}

fn request_section(d: &Device, r: &Record<'_>) -> Value {
    json!({
        "id": r.id,
        "operation": r.operation,
        "client_token": r.caller.token.as_deref().map(|t| d.hmac(t)).unwrap_or_default(),
        "client_token_accessor": if r.caller.accessor.is_empty() { String::new() } else { d.hmac(&r.caller.accessor) },
        "namespace": {"id": "root"},
        "path": r.path,
        "data": if r.data.is_empty() { Value::Null } else { d.hash(&Value::Object(r.data.clone())) },
    })
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn log_all(devices: &[Device], line: impl Fn(&Device) -> Value) -> Result<(), AuditError> {
    if devices.is_empty() {
        return Ok(());
    }
    let mut ok = false;
    for d in devices {
        let mut v =
            serde_json::to_vec(&line(d)).map_err(|e| StorageError::Backend(e.to_string()))?;
        v.push(b'\n');
        if let Some(p) = d.options.get("prefix") {
            v.splice(0..0, p.bytes());
        }
        match d.write(&v) {
            Ok(()) => ok = true,
            Err(e) => tracing::error!(device = %d.path, error = %e, "audit device failed to write"),
        }
    }
    if ok {
        Ok(())
    } else {
        Err(AuditError::Unavailable)
    }
}

/// The largest audit entry a request may cause (bytes, estimated before any
/// work): twice the request size limit, at least 256 KiB. Every string leaf
/// becomes an HMAC of ~80 bytes, so a 1 MiB body of short strings would
/// otherwise write tens of megabytes per device.
pub fn max_entry_bytes(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_mul(2).max(256 * 1024)
}

/// An upper estimate of the size of the request entry for `data`.
pub fn estimated_entry_bytes(data: &Map<String, Value>) -> usize {
    fn size(v: &Value) -> usize {
        match v {
            // `"hmac-sha256:<64 hex>",`
            Value::String(_) => 80,
            Value::Array(a) => 2 + a.iter().map(size).sum::<usize>(),
            Value::Object(o) => 2 + o.iter().map(|(k, v)| k.len() + 4 + size(v)).sum::<usize>(),
            other => other.to_string().len() + 1,
        }
    }
    1024 + data
        .iter()
        .map(|(k, v)| k.len() + 4 + size(v))
        .sum::<usize>()
}

/// What [`log_request`]/[`log_response`] need, owned, so the entry can be
/// hashed and written on a blocking thread, off the async workers.
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    /// Request id shared by the two lines.
    pub id: String,
    /// `read`, `update`, `list`, `delete`.
    pub operation: &'static str,
    /// Path below `/v1/`.
    pub path: String,
    /// Request body.
    pub data: Map<String, Value>,
    /// The caller.
    pub caller: Caller,
}

impl OwnedRecord {
    fn record(&self) -> Record<'_> {
        Record {
            id: &self.id,
            operation: self.operation,
            path: &self.path,
            data: &self.data,
            caller: &self.caller,
        }
    }
}

/// [`log_request`] on a blocking thread.
pub async fn log_request_off_thread(
    devices: std::sync::Arc<Vec<Device>>,
    rec: std::sync::Arc<OwnedRecord>,
) -> Result<(), AuditError> {
    tokio::task::spawn_blocking(move || log_request(&devices, &rec.record()))
        .await
        .map_err(|_| AuditError::Unavailable)?
}

/// [`log_response`] on a blocking thread.
pub async fn log_response_off_thread(
    devices: std::sync::Arc<Vec<Device>>,
    rec: std::sync::Arc<OwnedRecord>,
    response: Value,
    error: String,
) -> Result<(), AuditError> {
    tokio::task::spawn_blocking(move || log_response(&devices, &rec.record(), &response, &error))
        .await
        .map_err(|_| AuditError::Unavailable)?
}

/// Write the request entry to every device; fails if none could.
pub fn log_request(devices: &[Device], r: &Record<'_>) -> Result<(), AuditError> {
    log_all(
        devices,
        |d| json!({"time": now(), "type": "request", "auth": auth_section(d, r.caller), "request": request_section(d, r), "error": ""}),
    )
}

/// Write the response entry (`response` holds `data`, `auth`, `warnings` as
/// the client gets them; `error` the error text) to every device.
pub fn log_response(
    devices: &[Device],
    r: &Record<'_>,
    response: &Value,
    error: &str,
) -> Result<(), AuditError> {
    log_all(devices, |d| {
        let mut resp = Map::new();
        if let Some(o) = response.as_object() {
            for (k, v) in o {
                // Warnings are server text; everything else may carry secrets.
                let hashed = if k == "warnings" {
                    v.clone()
                } else {
                    d.hash(v)
                };
                resp.insert(k.clone(), hashed);
            }
        }
        json!({"time": now(), "type": "response", "auth": auth_section(d, r.caller), "request": request_section(d, r), "response": resp, "error": error})
    })
}

/// The enabled devices.
pub async fn load(barrier: &dyn Storage) -> Result<Vec<Device>, StorageError> {
    match barrier.get(AUDIT_TABLE).await? {
        None => Ok(Vec::new()),
        Some(e) => serde_json::from_slice(&e.value)
            .map_err(|e| StorageError::Backend(format!("corrupt audit table: {e}"))),
    }
}

/// Change the device table by compare-and-swap: `change` gets the table as
/// stored (re-read after a lost race), so concurrent enables and disables
/// never drop each other's device.
pub async fn update<E: From<StorageError>>(
    barrier: &dyn Storage,
    mut change: impl FnMut(&mut Vec<Device>) -> Result<(), E>,
) -> Result<(), E> {
    crate::storage::update(barrier, AUDIT_TABLE, |raw| {
        let mut devices: Vec<Device> = match raw {
            None => Vec::new(),
            Some(v) => serde_json::from_slice(v)
                .map_err(|e| StorageError::Backend(format!("corrupt audit table: {e}")))?,
        };
        change(&mut devices)?;
        let v = serde_json::to_vec(&devices).map_err(|e| StorageError::Backend(e.to_string()))?;
        Ok(crate::storage::Update::Write(v, ()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_hmaced_and_lines_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.log");
        let mut opts = BTreeMap::new();
        opts.insert("file_path".to_string(), file.display().to_string());
        let d = Device::new("file", "file", "", opts).unwrap();
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"common_name":"a","ttl":5,"nested":{"k":["secret"]}}"#)
                .unwrap();
        let caller = Caller {
            token: Some("hvs.secret-token".into()),
            accessor: "acc".into(),
            ..Default::default()
        };
        let r = Record {
            id: "1",
            operation: "update",
            path: "pki/issue/x",
            data: &data,
            caller: &caller,
        };
        log_request(std::slice::from_ref(&d), &r).unwrap();
        log_response(
            std::slice::from_ref(&d),
            &r,
            &json!({"data": {"private_key": "-----BEGIN PRIVATE KEY-----xyz"}}),
            "",
        )
        .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(
            !text.contains("hvs.secret-token")
                && !text.contains("BEGIN PRIVATE KEY")
                && !text.contains("\"secret\"")
        );
        assert!(text.contains(&d.hmac("hvs.secret-token")));
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["request"]["data"]["ttl"], 5, "numbers pass through");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A device that cannot write fails closed.
        let mut bad = BTreeMap::new();
        bad.insert("file_path".to_string(), "/dev/full".to_string());
        let full = Device {
            options: bad,
            ..d.clone()
        };
        assert!(matches!(
            log_request(std::slice::from_ref(&full), &r),
            Err(AuditError::Unavailable)
        ));
        assert!(
            log_request(&[full, d], &r).is_ok(),
            "one working device is enough"
        );
    }
}
