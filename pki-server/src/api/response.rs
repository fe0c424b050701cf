//! Vault response shapes: the envelope, plain JSON, 204, and raw bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A successful answer.
#[derive(Debug)]
pub enum Reply {
    /// Plain JSON, no envelope (sys/init, seal-status, unseal, health, leader).
    Plain(StatusCode, Value),
    /// The Vault envelope around `data`.
    Data {
        /// The `data` object.
        data: Map<String, Value>,
        /// `warnings`, or null when empty.
        warnings: Vec<String>,
        /// Copy `data` keys to the top level too (Vault does for some sys paths).
        top_level: bool,
    },
    /// The envelope with `data: null` and only warnings (Vault's answer when a
    /// handler returns a response without data, as `tidy` does).
    Warnings(Vec<String>),
    /// 204 with no body.
    NoContent,
    /// A status with no body (HEAD).
    Empty(StatusCode),
    /// Raw bytes with their own content type (PKI `ca`, `crl`, ...).
    Raw {
        /// Content-Type.
        content_type: &'static str,
        /// Body.
        body: Vec<u8>,
    },
    /// The envelope with an `auth` block and `data: null` (token create, renew, login).
    Auth(Value, Vec<String>),
    /// The envelope with a status other than 200 (`tidy` answers 202).
    Status(StatusCode, Box<Reply>),
}

impl Reply {
    /// What the audit log records of this answer: `data`, `auth`, `warnings`
    /// (raw bodies as `http_raw_body`, base64). The audit layer HMACs it.
    pub fn audit_view(&self) -> Value {
        use base64::Engine as _;
        match self {
            Reply::Plain(_, v) => json!({ "data": v }),
            Reply::Data { data, warnings, .. } => json!({ "data": data, "warnings": warnings }),
            Reply::Warnings(w) => json!({ "warnings": w }),
            Reply::Auth(a, w) => json!({ "auth": a, "warnings": w }),
            Reply::Raw { body, .. } => {
                json!({ "data": { "http_raw_body": base64::engine::general_purpose::STANDARD.encode(body) } })
            }
            Reply::Status(_, inner) => inner.audit_view(),
            Reply::NoContent | Reply::Empty(_) => json!({}),
        }
    }

    /// An enveloped reply with warnings.
    pub fn data_with_warnings(data: Map<String, Value>, warnings: Vec<String>) -> Self {
        Reply::Data {
            data,
            warnings,
            top_level: false,
        }
    }
    /// An enveloped reply.
    pub fn data(data: Map<String, Value>) -> Self {
        Reply::Data {
            data,
            warnings: Vec::new(),
            top_level: false,
        }
    }
    /// An enveloped reply with `data` keys also at the top level.
    pub fn sys_data(data: Map<String, Value>) -> Self {
        Reply::Data {
            data,
            warnings: Vec::new(),
            top_level: true,
        }
    }
}

/// Vault labels every answer, even a body-less one, as JSON.
fn with_json_type(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    with_json_type((status, body.to_string()).into_response())
}

/// The envelope without `data`; `warnings` is null when empty.
fn envelope(warnings: &[String]) -> Value {
    json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "wrap_info": null,
        "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
        "auth": null,
    })
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Plain(status, v) => json_response(status, &v),
            Reply::Data {
                data,
                warnings,
                top_level,
            } => {
                let mut body = envelope(&warnings);
                if let Value::Object(m) = &mut body {
                    if top_level {
                        for (k, v) in &data {
                            m.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    m.insert("data".into(), Value::Object(data));
                }
                json_response(StatusCode::OK, &body)
            }
            Reply::Auth(auth, warnings) => {
                let mut body = envelope(&warnings);
                if let Value::Object(m) = &mut body {
                    m.insert("data".into(), Value::Null);
                    m.insert("auth".into(), auth);
                }
                json_response(StatusCode::OK, &body)
            }
            Reply::Warnings(warnings) => {
                let mut body = envelope(&warnings);
                if let Value::Object(m) = &mut body {
                    m.insert("data".into(), Value::Null);
                }
                json_response(StatusCode::OK, &body)
            }
            Reply::NoContent => with_json_type(StatusCode::NO_CONTENT.into_response()),
            Reply::Empty(status) => with_json_type(status.into_response()),
            Reply::Raw { content_type, body } => {
                if body.is_empty() {
                    // Vault answers 204 on raw paths when there is nothing to serve.
                    return StatusCode::NO_CONTENT.into_response();
                }
                let mut r = (StatusCode::OK, body).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            Reply::Status(status, inner) => {
                let mut r = inner.into_response();
                *r.status_mut() = status;
                r
            }
        }
    }
}
