//! The one place that turns errors into HTTP status codes and Vault's error body.
//!
//! Body: `{"errors":[...]}` with `Content-Type: application/json` exactly (hvac
//! compares the header literally). Internal errors send a generic message and log
//! the detail.

use crate::seal::SealError;
use crate::storage::StorageError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Messages for `errors`.
    pub errors: Vec<String>,
}

impl ApiError {
    /// An error with one message.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![msg.into()],
        }
    }
    /// 400 with a message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    /// 403 permission denied.
    pub fn permission_denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission denied")
    }
    /// 403 for a missing, unknown or revoked token.
    pub fn invalid_token() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            errors: vec!["permission denied".into(), "invalid token".into()],
        }
    }
    /// 503 sealed.
    pub fn sealed() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed")
    }
    /// 404 for a path no handler serves.
    pub fn unsupported_path(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("unsupported path: {path}"))
    }
    /// 404 with an empty error list (a missing object or an empty list, as Vault).
    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errors: Vec::new(),
        }
    }
    /// 405 for a method the path does not support.
    pub fn unsupported_operation() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
    }
    /// 500 with the detail logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<SealError> for ApiError {
    fn from(e: SealError) -> Self {
        match &e {
            SealError::Sealed => ApiError::sealed(),
            SealError::Kms(_) => {
                tracing::error!(error = %e, "kms error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            _ if e.is_user_error() => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e),
        }
    }
}

impl From<crate::mounts::MountError> for ApiError {
    fn from(e: crate::mounts::MountError) -> Self {
        if e.is_user_error() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<crate::pki::PkiError> for ApiError {
    fn from(e: crate::pki::PkiError) -> Self {
        if e.is_user_error() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::internal(e)
        }
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError as E;
        match e {
            E::Pki(p) => p.into(),
            E::Storage(s) => s.into(),
            E::NotFound => ApiError {
                status: StatusCode::NOT_FOUND,
                errors: Vec::new(),
            },
            E::Bad(m) => ApiError::bad_request(m),
            e @ E::Corrupt(_) => ApiError::internal(e),
        }
    }
}

impl From<crate::auth::methods::MethodError> for ApiError {
    fn from(e: crate::auth::methods::MethodError) -> Self {
        if e.is_user_error() {
            ApiError::bad_request(e.to_string())
        } else {
            ApiError::internal(e)
        }
    }
}

/// JWT logins: a bad or out-of-date token is 400; a valid token the role does
/// not accept is 403 (`permission denied` plus the reason).
impl From<crate::auth::jwt::JwtError> for ApiError {
    fn from(e: crate::auth::jwt::JwtError) -> Self {
        use crate::auth::jwt::JwtError as E;
        match e {
            E::Invalid(_) => ApiError::bad_request(e.to_string()),
            E::Denied(_) => ApiError {
                status: StatusCode::FORBIDDEN,
                errors: vec!["permission denied".into(), e.to_string()],
            },
        }
    }
}

/// AWS logins: a request we would not forward is 400; an identity the role
/// does not accept (or STS refuses) is 403.
impl From<crate::auth::aws::AwsError> for ApiError {
    fn from(e: crate::auth::aws::AwsError) -> Self {
        use crate::auth::aws::AwsError as E;
        match e {
            E::Bad(m) => ApiError::bad_request(m),
            E::Denied(m) => ApiError {
                status: StatusCode::FORBIDDEN,
                errors: vec!["permission denied".into(), m],
            },
            E::Internal(m) => ApiError::internal(m),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            // Lost every compare-and-swap retry: nothing was written; the
            // caller may simply try again.
            StorageError::Contended(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                errors: vec![e.to_string()],
            },
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errors": self.errors }).to_string();
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}
