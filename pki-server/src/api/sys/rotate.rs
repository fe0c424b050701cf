//! `sys/rotate` (root) and `sys/key-status`: barrier key terms.

use crate::api::error::ApiError;
use crate::api::request::{Operation, Request};
use crate::api::response::Reply;
use crate::seal::{Barrier, KeyStatus};
use serde_json::{Map, Value, json};

fn status_data(ks: &KeyStatus) -> Map<String, Value> {
    let install = time::OffsetDateTime::from_unix_timestamp(ks.install_time)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("term".into(), json!(ks.term));
    m.insert("install_time".into(), json!(install));
    m.insert("encryptions".into(), json!(ks.encryptions));
    m
}

/// `PUT sys/rotate`: add a barrier key term; new writes use it.
pub async fn rotate(barrier: &Barrier, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Update {
        return Err(ApiError::unsupported_operation());
    }
    let ks = barrier
        .rotate(time::OffsetDateTime::now_utc().unix_timestamp())
        .await?;
    tracing::info!(term = ks.term, "barrier key rotated");
    Ok(Reply::NoContent)
}

/// `GET sys/key-status`.
pub async fn key_status(barrier: &Barrier, req: &Request) -> Result<Reply, ApiError> {
    if req.op != Operation::Read {
        return Err(ApiError::unsupported_operation());
    }
    Ok(Reply::sys_data(status_data(&barrier.key_status())))
}
