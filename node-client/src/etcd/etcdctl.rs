//! etcdctl (API v3) against one endpoint: `member list`, `member remove`,
//! `member add`, each with a short dial and command timeout, the process
//! killed if it outlives them. Works with etcd 3.4's and 3.6's etcdctl.

use super::plan::Member;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Why an etcdctl call failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdctlError {
    /// etcdctl could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// etcdctl failed (unreachable endpoint, refused change, timeout).
    #[error("etcdctl {what} at {endpoint}: {message}")]
    Failed {
        /// The command.
        what: String,
        /// The endpoint.
        endpoint: String,
        /// The last line etcdctl printed on stderr (or why it was killed).
        message: String,
    },
}

/// How to run etcdctl: the program and the client TLS files.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    /// The etcdctl program.
    pub program: PathBuf,
    /// The CA bundle that signs the members' certificates.
    pub cacert: PathBuf,
    /// A client certificate the members accept.
    pub cert: PathBuf,
    /// Its key (etcdctl reads it; we never do).
    pub key: PathBuf,
    /// Dial timeout.
    pub dial: Duration,
    /// Command timeout.
    pub command: Duration,
}

#[derive(Deserialize)]
struct ListJson {
    #[serde(default)]
    members: Vec<MemberJson>,
}

#[derive(Deserialize)]
struct MemberJson {
    // A uint64 printed as a JSON number: serde_json reads it exactly.
    #[serde(rename = "ID")]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
}

/// Parse `etcdctl -w json member list` output.
pub fn parse_member_list(json: &str) -> Result<Vec<Member>, String> {
    let l: ListJson = serde_json::from_str(json).map_err(|e| format!("member list JSON: {e}"))?;
    Ok(l.members
        .into_iter()
        .map(|m| Member {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
        })
        .collect())
}

impl Etcdctl {
    async fn run(&self, endpoint: &str, args: &[&str]) -> Result<String, EtcdctlError> {
        let what = args
            .iter()
            .take_while(|a| !a.starts_with('-'))
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let fail = |message: String| EtcdctlError::Failed {
            what: what.clone(),
            endpoint: endpoint.to_string(),
            message,
        };
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg(format!("--dial-timeout={}ms", self.dial.as_millis()))
            .arg(format!("--command-timeout={}ms", self.command.as_millis()))
            .arg("--cacert")
            .arg(&self.cacert)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| EtcdctlError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let limit = self.dial + self.command + Duration::from_secs(2);
        let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail(format!("no answer in {limit:?}"))),
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            return Err(fail(format!("{} ({})", last, out.status)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The members, as `endpoint` reports them.
    pub async fn member_list(&self, endpoint: &str) -> Result<Vec<Member>, EtcdctlError> {
        let out = self
            .run(endpoint, &["member", "list", "-w", "json"])
            .await?;
        parse_member_list(&out).map_err(|message| EtcdctlError::Failed {
            what: "member list".into(),
            endpoint: endpoint.to_string(),
            message,
        })
    }

    /// Whether `endpoint` runs etcd at all: `endpoint status` is answered by
    /// the member itself, without quorum.
    pub async fn alive(&self, endpoint: &str) -> bool {
        self.run(endpoint, &["endpoint", "status", "-w", "json"])
            .await
            .is_ok()
    }

    /// `member remove <hex id>`.
    pub async fn member_remove(&self, endpoint: &str, id: u64) -> Result<(), EtcdctlError> {
        self.run(endpoint, &["member", "remove", &format!("{id:x}")])
            .await
            .map(drop)
    }

    /// `member add <name> --peer-urls=<url>`.
    pub async fn member_add(
        &self,
        endpoint: &str,
        name: &str,
        peer_url: &str,
    ) -> Result<(), EtcdctlError> {
        self.run(
            endpoint,
            &["member", "add", name, &format!("--peer-urls={peer_url}")],
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_list_keeps_uint64_ids_exact_and_unstarted_members() {
        // etcdctl 3.4 output, one member not started yet (no name, no client URLs).
        let json = r#"{"header":{"cluster_id":17237436991929493444,"member_id":9372538179322589801,"raft_term":2},
            "members":[{"ID":18446744073709551615,"name":"a","peerURLs":["https://127.0.0.21:2380"],"clientURLs":["https://127.0.0.21:2379"]},
            {"ID":10501334649042878790,"peerURLs":["https://127.0.0.24:2380"],"isLearner":false}]}"#;
        let m = parse_member_list(json).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, u64::MAX);
        assert_eq!(format!("{:x}", m[0].id), "ffffffffffffffff");
        assert_eq!(m[1].id, 10_501_334_649_042_878_790);
        assert!(!m[1].started());
        assert_eq!(m[1].peer_urls, ["https://127.0.0.24:2380"]);
        // A member of a forming cluster: named from --initial-cluster, never run.
        let forming = r#"{"members":[{"ID":7972728825332278892,"name":"e2","peerURLs":["http://127.0.0.53:2380"]},
            {"ID":11103587167500585705,"name":"e1","peerURLs":["http://127.0.0.52:2380"],"clientURLs":["http://127.0.0.52:2379"]}]}"#;
        let m = parse_member_list(forming).unwrap();
        assert_eq!(m[0].name, "e2");
        assert!(!m[0].started(), "named but never run");
        assert!(m[1].started());
        assert!(parse_member_list("not json").is_err());
    }
}
