//! The state object in the config bucket, written only with conditional puts
//! (`If-None-Match: *` to create, `If-Match: <etag>` to update), so it is also
//! the lock: two concurrent applies read the same ETag and only one put wins.
//!
//! The state holds no resource ids: plan always reads AWS by tags and names.
//! It records who holds the lock, a serial, and the last applied summary.

use crate::aws::{Clients, code, err};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Key of the state object in the config bucket.
pub const KEY: &str = "provisioner/state.json";

/// The stored document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Incremented on every write.
    pub serial: u64,
    /// Who holds the lock, if anyone.
    pub lock: Option<String>,
    /// What the last finished apply did.
    pub last: Option<serde_json::Value>,
}

/// A held lock: the ETag of the state object we wrote.
#[derive(Debug, Clone)]
pub struct Lock {
    bucket: String,
    etag: String,
    state: State,
}

fn holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into());
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "pid {} on {host} since unix time {secs}",
        std::process::id()
    )
}

async fn read(aws: &Clients, bucket: &str) -> anyhow::Result<Option<(State, String)>> {
    match aws.s3.get_object().bucket(bucket).key(KEY).send().await {
        Ok(o) => {
            let etag = o.e_tag().unwrap_or_default().to_string();
            let body = o
                .body
                .collect()
                .await
                .context("while reading the state object")?
                .into_bytes();
            let state: State =
                serde_json::from_slice(&body).context("the state object is not valid JSON")?;
            Ok(Some((state, etag)))
        }
        Err(e) if code(&e).as_deref() == Some("NoSuchKey") => Ok(None),
        Err(e) => Err(err(e)).context("while reading the state object"),
    }
}

async fn write(
    aws: &Clients,
    bucket: &str,
    state: &State,
    etag: Option<&str>,
) -> anyhow::Result<String> {
    let body = serde_json::to_vec_pretty(state)?;
    let req = aws
        .s3
        .put_object()
        .bucket(bucket)
        .key(KEY)
        .body(body.into())
        .content_type("application/json");
    let req = match etag {
        Some(e) => req.if_match(e),
        None => req.if_none_match("*"),
    };
    match req.send().await {
        Ok(o) => Ok(o.e_tag().unwrap_or_default().to_string()),
        Err(e) if code(&e).as_deref() == Some("PreconditionFailed") => {
            bail!(
                "another provisioner changed the state object at the same time (lost the conditional put); retry when it has finished"
            )
        }
        Err(e) => Err(err(e)).context("while writing the state object"),
    }
}

/// Take the lock, or fail naming who holds it.
pub async fn acquire(aws: &Clients, bucket: &str) -> anyhow::Result<Lock> {
    let me = holder();
    let (mut state, etag) = match read(aws, bucket).await? {
        Some((s, e)) => (s, Some(e)),
        None => (State::default(), None),
    };
    if let Some(h) = &state.lock {
        bail!(
            "the cluster is locked by another provisioner ({h}); if none is running, run `provisioner unlock`"
        );
    }
    state.serial += 1;
    state.lock = Some(me);
    let etag = write(aws, bucket, &state, etag.as_deref()).await?;
    Ok(Lock {
        bucket: bucket.to_string(),
        etag,
        state,
    })
}

impl Lock {
    /// Release the lock, recording `last`.
    pub async fn release(
        mut self,
        aws: &Clients,
        last: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        self.state.serial += 1;
        self.state.lock = None;
        if last.is_some() {
            self.state.last = last;
        }
        write(aws, &self.bucket, &self.state, Some(&self.etag)).await?;
        Ok(())
    }
}

/// Clear a lock left by a provisioner that died.
pub async fn force_unlock(aws: &Clients, bucket: &str) -> anyhow::Result<Option<String>> {
    let Some((mut state, etag)) = read(aws, bucket).await? else {
        return Ok(None);
    };
    let was = state.lock.take();
    if was.is_some() {
        state.serial += 1;
        write(aws, bucket, &state, Some(&etag)).await?;
    }
    Ok(was)
}
