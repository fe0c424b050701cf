//! Shared server state handed to every handler.

use crate::seal::Seal;
use std::sync::Arc;

/// Settings the API needs at request time.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Cluster name given at init.
    pub cluster_name: String,
    /// Request bodies larger than this get 413.
    pub max_request_bytes: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            cluster_name: "pki-server".into(),
            max_request_bytes: 1024 * 1024,
        }
    }
}

/// State for the axum app.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The seal (and, while unsealed, the barrier).
    pub seal: Arc<Seal>,
    /// API settings.
    pub settings: Arc<ApiSettings>,
}
