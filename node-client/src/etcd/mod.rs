//! `etcd-join`: etcd membership for a node of the etcd group, decided before
//! etcd starts and written as the `ETCD_*` environment etcd reads.
//!
//! One round: discover the peers ([`discover`]), ask each other peer's etcd
//! for its member list ([`etcdctl`]), look at the data directory, and
//! [`plan::decide`]. A decision to change membership (remove members no
//! peer stands for, move stale data aside, add ourselves) is applied and
//! the round runs again, so the file written reflects the member list as
//! etcd reports it afterwards. A decision to wait (bootstrap, discovery not
//! complete) retries with backoff until the deadline.
//!
//! Nothing is ever deleted: data from an earlier life moves to
//! `member.stale-<unix time>`. The file holds no secret (0644).

pub mod discover;
pub mod etcdctl;
pub mod plan;

use discover::{AwsDiscovery, DiscoverError, Discovered};
use etcdctl::{Etcdctl, EtcdctlError};
use plan::{Decision, Member, Peer, Settings, Situation, Step};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why etcd-join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Bad arguments, no credentials, etcdctl missing, this node not a peer.
    #[error("{0}")]
    Config(String),
    /// AWS refused a discovery call.
    #[error("{0}")]
    Refused(String),
    /// Discovery or the cluster stayed unavailable, or a change failed.
    #[error("{0}")]
    Unavailable(String),
    /// Writing the file or moving data aside failed.
    #[error("{0}")]
    Write(String),
}

/// How peers are found.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// A fixed `name=ip,...` list.
    Static(String),
    /// The auto scaling group of this instance.
    Aws {
        /// This instance's id.
        instance_id: String,
    },
}

/// Everything etcd-join needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node.
    pub me: Peer,
    /// `ETCD_INITIAL_CLUSTER_TOKEN`.
    pub token: String,
    /// etcd's data directory.
    pub data_dir: PathBuf,
    /// The environment file to write.
    pub out: PathBuf,
    /// How peers are found.
    pub discovery: Discovery,
    /// etcdctl and its TLS files.
    pub etcdctl: Etcdctl,
    /// How long to wait for a bootstrap's peers (or unavailable AWS).
    pub wait: Duration,
}

/// A name that is safe in the environment file and `ETCD_INITIAL_CLUSTER`.
pub fn check_name(what: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {v:?}: only letters, digits, '.', '-' and '_' are allowed"
        ))
    }
}

/// Whether `<data-dir>/member` holds anything.
pub fn has_member_data(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir.join("member")).is_ok_and(|mut rd| rd.next().is_some())
}

/// Move `<data-dir>/member` to `member.stale-<unix time>` (never delete).
pub fn move_data_aside(data_dir: &Path, now: i64) -> Result<PathBuf, JoinError> {
    let from = data_dir.join("member");
    let mut to = data_dir.join(format!("member.stale-{now}"));
    let mut n = 1;
    while to.exists() {
        to = data_dir.join(format!("member.stale-{now}.{n}"));
        n += 1;
    }
    std::fs::rename(&from, &to).map_err(|e| {
        JoinError::Write(format!(
            "moving {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })?;
    Ok(to)
}

/// Write `text` to `path` atomically with mode 0644 (temp file, fsync,
/// rename, fsync the directory).
pub fn write_env_file(path: &Path, text: &str) -> Result<(), JoinError> {
    crate::store::write_public(path, text.as_bytes()).map_err(|e| JoinError::Write(e.to_string()))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl From<DiscoverError> for JoinError {
    fn from(e: DiscoverError) -> Self {
        match e {
            DiscoverError::Config(m) => Self::Config(m),
            e @ DiscoverError::Refused { .. } => Self::Refused(e.to_string()),
            DiscoverError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

/// What the other peers said.
struct Answer {
    /// The first member list, and the endpoint that gave it.
    list: Option<(String, Vec<Member>)>,
    /// A peer runs etcd but gave no member list (no quorum).
    live_peer: bool,
}

/// Ask each other peer (by name) for the member list; the first answer. A peer
/// that gives none is asked whether it runs etcd at all.
async fn ask(ctl: &Etcdctl, me: &Peer, peers: &[Peer]) -> Result<Answer, JoinError> {
    let mut live_peer = false;
    for p in peers.iter().filter(|p| p.ip != me.ip) {
        let endpoint = p.client_url();
        if !listening(p, ctl.dial).await {
            // Nothing accepts a connection there: etcdctl would only wait out
            // its dial timeout twice (member list, endpoint status).
            tracing::info!(peer = %p.name, %endpoint, "not listening: runs no etcd yet");
            continue;
        }
        match ctl.member_list(&endpoint).await {
            Ok(m) => {
                tracing::info!(peer = %p.name, %endpoint, members = m.len(), "etcd answered");
                return Ok(Answer {
                    list: Some((endpoint, m)),
                    live_peer: true,
                });
            }
            Err(e @ EtcdctlError::Spawn { .. }) => return Err(JoinError::Config(e.to_string())),
            Err(e) => {
                let alive = ctl.alive(&endpoint).await;
                tracing::info!(peer = %p.name, error = %e, runs_etcd = alive, "no member list");
                live_peer |= alive;
            }
        }
    }
    Ok(Answer {
        list: None,
        live_peer,
    })
}

/// Whether the peer's client port accepts a TCP connection within `dial`.
async fn listening(p: &Peer, dial: Duration) -> bool {
    let addr = std::net::SocketAddr::new(p.ip, plan::CLIENT_PORT);
    matches!(
        tokio::time::timeout(dial, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Discovery, once.
async fn discover(o: &Options, aws: Option<&AwsDiscovery>) -> Result<Discovered, JoinError> {
    match (&o.discovery, aws) {
        (Discovery::Static(list), _) => Ok(discover::parse_static(list)?),
        (Discovery::Aws { instance_id }, Some(aws)) => Ok(aws.peers(instance_id).await?),
        (Discovery::Aws { .. }, None) => Err(JoinError::Config("no AWS client".into())),
    }
}

/// Apply membership changes through `endpoint`.
async fn apply(o: &Options, endpoint: &str, steps: &[Step]) -> Result<(), JoinError> {
    for s in steps {
        match s {
            Step::Remove(m) => {
                tracing::info!(id = %format!("{:x}", m.id), name = %m.name, peer_urls = ?m.peer_urls,
                    "removing a member no peer stands for");
                o.etcdctl
                    .member_remove(endpoint, m.id)
                    .await
                    .map_err(|e| JoinError::Unavailable(e.to_string()))?;
            }
            Step::MoveDataAside => {
                let to = move_data_aside(&o.data_dir, unix_now())?;
                tracing::warn!(moved_to = %to.display(), "member data from an earlier life moved aside");
            }
            Step::AddSelf => {
                tracing::info!(name = %o.me.name, peer_url = %o.me.peer_url(), "adding this node");
                o.etcdctl
                    .member_add(endpoint, &o.me.name, &o.me.peer_url())
                    .await
                    .map_err(|e| JoinError::Unavailable(e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// Decide (changing membership as needed, waiting as needed) and write the
/// environment file. The settings written.
pub async fn run(o: &Options) -> Result<Settings, JoinError> {
    let aws = match &o.discovery {
        Discovery::Aws { .. } => Some(AwsDiscovery::load().await?),
        Discovery::Static(_) => None,
    };
    let deadline = Instant::now() + o.wait;
    let mut waits = 0u32;
    let mut changes = 0u32;
    loop {
        let outcome = round(o, aws.as_ref()).await;
        let reason = match outcome {
            Ok(Decision::Start(s)) => {
                write_env_file(&o.out, &s.render())?;
                tracing::info!(out = %o.out.display(), state = %s.state,
                    members = s.initial_cluster.len(), "wrote the etcd environment");
                return Ok(s);
            }
            Ok(Decision::Change(steps)) => {
                changes += 1;
                if changes > 5 {
                    return Err(JoinError::Unavailable(format!(
                        "membership still needs changes after {} rounds: {steps:?}",
                        changes - 1
                    )));
                }
                continue;
            }
            Ok(Decision::Wait(reason)) => reason,
            Err(JoinError::Unavailable(reason)) => reason,
            Err(e) => return Err(e),
        };
        if Instant::now() >= deadline {
            return Err(JoinError::Unavailable(format!(
                "gave up after {:?}: {reason}",
                o.wait
            )));
        }
        waits = waits.saturating_add(1);
        let ms = crate::schedule::backoff_ms(waits, 1_000, 15_000, crate::schedule::rand_unit());
        let ms = ms.max(500).min(
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
        );
        tracing::info!(waiting_for = %reason, retry_in_ms = ms, "waiting");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// One round: discover, ask, decide; changes are applied here.
async fn round(o: &Options, aws: Option<&AwsDiscovery>) -> Result<Decision, JoinError> {
    let d = discover(o, aws).await?;
    match d.peers.iter().find(|p| p.ip == o.me.ip) {
        Some(p) if p.name != o.me.name => {
            return Err(JoinError::Config(format!(
                "discovery names {} {:?}, not {:?}: the member name must be the certificate's",
                p.ip, p.name, o.me.name
            )));
        }
        Some(_) => {}
        None if matches!(o.discovery, Discovery::Static(_)) => {
            return Err(JoinError::Config(format!(
                "--peers does not list this node ({}={})",
                o.me.name, o.me.ip
            )));
        }
        None => {
            return Ok(Decision::Wait(format!(
                "discovery does not list this node ({}) yet",
                o.me.ip
            )));
        }
    }
    let asked = ask(&o.etcdctl, &o.me, &d.peers).await?;
    let answer = asked.list;
    let has_data = has_member_data(&o.data_dir);
    let situation = Situation {
        me: &o.me,
        peers: &d.peers,
        expected: d.expected,
        members: answer.as_ref().map(|(_, m)| m.as_slice()),
        has_data,
        live_peer: asked.live_peer,
    };
    let decision = plan::decide(&situation, &o.token);
    tracing::debug!(
        ?decision,
        has_data,
        peers = d.peers.len(),
        expected = d.expected,
        "decided"
    );
    if let (Decision::Change(steps), Some((endpoint, _))) = (&decision, &answer) {
        apply(o, endpoint, steps).await?;
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_is_replaced_whole_with_mode_0644() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/etcd.env");
        write_env_file(&p, "ETCD_NAME=a\n").unwrap();
        write_env_file(&p, "ETCD_NAME=b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "ETCD_NAME=b\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn data_is_moved_aside_never_deleted() {
        let d = tempfile::tempdir().unwrap();
        assert!(!has_member_data(d.path()));
        std::fs::create_dir_all(d.path().join("member/wal")).unwrap();
        assert!(has_member_data(d.path()));
        let to = move_data_aside(d.path(), 1_700_000_000).unwrap();
        assert_eq!(to, d.path().join("member.stale-1700000000"));
        assert!(to.join("wal").is_dir());
        assert!(!has_member_data(d.path()));
        std::fs::create_dir_all(d.path().join("member/snap")).unwrap();
        let to = move_data_aside(d.path(), 1_700_000_000).unwrap();
        assert_eq!(to, d.path().join("member.stale-1700000000.1"));
    }

    #[test]
    fn names_are_checked_for_the_env_file() {
        assert!(check_name("name", "ip-10-0-1-5.ec2.internal").is_ok());
        for bad in ["", "a=b", "a,b", "a\nb", "a b"] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
    }
}
