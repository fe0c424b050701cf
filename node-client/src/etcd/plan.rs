//! The membership decision: pure, no I/O. Given who we are, who the peers
//! are, what a running cluster says about its members (if one answered) and
//! whether the data directory holds member data, [`decide`] returns the
//! steps to take and the settings etcd starts with.
//!
//! The caller applies the steps, asks the cluster again and decides again
//! until no step is left, so the settings written always come from the
//! member list as etcd reports it after the changes.

use std::fmt;
use std::net::IpAddr;

/// The port etcd members talk to each other on.
pub const PEER_PORT: u16 = 2380;
/// The port etcd serves clients on.
pub const CLIENT_PORT: u16 = 2379;

/// An etcd node: its name (the certificate's name) and address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// The member name (`ETCD_NAME`).
    pub name: String,
    /// Its private address.
    pub ip: IpAddr,
}

impl Peer {
    /// `https://<ip>:2380`.
    pub fn peer_url(&self) -> String {
        url(self.ip, PEER_PORT)
    }

    /// `https://<ip>:2379`.
    pub fn client_url(&self) -> String {
        url(self.ip, CLIENT_PORT)
    }
}

/// `https://<ip>:<port>`, brackets around an IPv6 address.
pub fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    }
}

/// The host of a URL as an address (`https://10.0.1.5:2380` → 10.0.1.5).
pub fn url_ip(u: &str) -> Option<IpAddr> {
    let rest = u.split_once("://").map_or(u, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or(h)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.parse().ok()
}

/// A member as `etcdctl member list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member ID (etcdctl prints it as a number, takes it in hex).
    pub id: u64,
    /// Empty for a member added with `member add` until it starts; a member
    /// of the initial cluster is listed with its name before it ever ran.
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
    /// Its client URLs: published only when the member has started.
    pub client_urls: Vec<String>,
}

impl Member {
    /// Whether the member has ever started: it published its client URLs.
    /// (A name alone does not tell: members of a bootstrapping cluster are
    /// named from `--initial-cluster` before they run.)
    pub fn started(&self) -> bool {
        !self.client_urls.is_empty()
    }

    fn has_ip(&self, ip: IpAddr) -> bool {
        self.peer_urls.iter().any(|u| url_ip(u) == Some(ip))
    }
}

/// `ETCD_INITIAL_CLUSTER_STATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster with every member of the list.
    New,
    /// Join (or rejoin) a cluster that exists.
    Existing,
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::New => "new",
            Self::Existing => "existing",
        })
    }
}

/// What we know when deciding.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// This node.
    pub me: &'a Peer,
    /// Every node discovery found (this one included), with addresses.
    pub peers: &'a [Peer],
    /// How many peers a bootstrap needs (the group's desired capacity, or
    /// every `--peers` entry).
    pub expected: usize,
    /// The member list of a cluster that answered, or None.
    pub members: Option<&'a [Member]>,
    /// Whether `<data-dir>/member` holds data from an earlier start.
    pub has_data: bool,
    /// A peer runs etcd (its own status answers) but no member list came
    /// back: a cluster exists and has lost quorum.
    pub live_peer: bool,
}

/// A change to make before deciding again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `etcdctl member remove <hex id>`: a member no peer stands for.
    Remove(Member),
    /// Move `<data-dir>/member` aside (it belongs to an earlier life).
    MoveDataAside,
    /// `etcdctl member add <name> --peer-urls=<our peer URL>`.
    AddSelf,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Make these changes (in order), then ask and decide again.
    Change(Vec<Step>),
    /// Start etcd with these settings.
    Start(Settings),
    /// Nothing answered and discovery is not complete: look again later.
    Wait(String),
}

/// The settings etcd starts with (the environment file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `ETCD_NAME`.
    pub name: String,
    /// `ETCD_INITIAL_CLUSTER` as (name, peer URL) pairs.
    pub initial_cluster: Vec<(String, String)>,
    /// `ETCD_INITIAL_CLUSTER_STATE`.
    pub state: ClusterState,
    /// `ETCD_INITIAL_CLUSTER_TOKEN`.
    pub token: String,
    /// `ETCD_INITIAL_ADVERTISE_PEER_URLS`.
    pub peer_url: String,
    /// `ETCD_ADVERTISE_CLIENT_URLS`.
    pub client_url: String,
}

impl Settings {
    fn new(me: &Peer, token: &str, state: ClusterState, cluster: Vec<(String, String)>) -> Self {
        Self {
            name: me.name.clone(),
            initial_cluster: cluster,
            state,
            token: token.to_string(),
            peer_url: me.peer_url(),
            client_url: me.client_url(),
        }
    }

    /// The environment file etcd reads (`ETCD_*` for each flag).
    pub fn render(&self) -> String {
        let cluster = self
            .initial_cluster
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "ETCD_NAME={}\nETCD_INITIAL_CLUSTER={cluster}\nETCD_INITIAL_CLUSTER_STATE={}\n\
             ETCD_INITIAL_CLUSTER_TOKEN={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\n\
             ETCD_ADVERTISE_CLIENT_URLS={}\n",
            self.name, self.state, self.token, self.peer_url, self.client_url
        )
    }
}

/// Every peer, sorted by name: the list each bootstrapping member computes.
fn peer_list(peers: &[Peer]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = peers
        .iter()
        .map(|p| (p.name.clone(), p.peer_url()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Decide. `token` is the cluster token; it only goes into the settings.
pub fn decide(s: &Situation<'_>, token: &str) -> Decision {
    let me = s.me;
    let Some(members) = s.members else {
        if s.has_data {
            // Restart after a full outage: etcd reads the membership from its data.
            return Decision::Start(Settings::new(
                me,
                token,
                ClusterState::Existing,
                peer_list(s.peers),
            ));
        }
        if s.live_peer {
            // Never bootstrap beside a cluster that exists: with quorum lost,
            // a new cluster of the fresh members would win over the data.
            return Decision::Wait(
                "a peer runs etcd but the cluster has no quorum: not bootstrapping a new one \
                 (restore from a snapshot: docs/cluster.md)"
                    .into(),
            );
        }
        if s.peers.len() < s.expected {
            return Decision::Wait(format!(
                "no etcd member answered and discovery found {} of {} peers",
                s.peers.len(),
                s.expected
            ));
        }
        return Decision::Start(Settings::new(
            me,
            token,
            ClusterState::New,
            peer_list(s.peers),
        ));
    };
    let mine = members.iter().find(|m| m.has_ip(me.ip));
    // Our address under another started name: an earlier life of this address.
    let stale_self = mine.filter(|m| m.started() && m.name != me.name);
    let mut steps: Vec<Step> = members
        .iter()
        .filter(|m| {
            !s.peers.iter().any(|p| m.has_ip(p.ip)) || stale_self.is_some_and(|x| x.id == m.id)
        })
        .cloned()
        .map(Step::Remove)
        .collect();
    let member = mine.filter(|_| stale_self.is_none());
    // Data is ours only if we are a member that has started under our name.
    if s.has_data && !member.is_some_and(Member::started) {
        steps.push(Step::MoveDataAside);
    }
    // A started member of our name and address but no data: a new machine
    // (or a wiped disk) in a dead member's place. It must not take that
    // member's identity without its log: remove it and add us anew.
    let lost_its_data = !s.has_data && member.is_some_and(Member::started);
    if let Some(m) = member.filter(|_| lost_its_data) {
        steps.push(Step::Remove(m.clone()));
    }
    if member.is_none() || lost_its_data {
        steps.push(Step::AddSelf);
    }
    if !steps.is_empty() {
        return Decision::Change(steps);
    }
    let cluster = members
        .iter()
        .flat_map(|m| {
            // A member added but not started has no name yet: take the one
            // discovery gives its address.
            let name = if m.has_ip(me.ip) {
                me.name.clone()
            } else if !m.name.is_empty() {
                m.name.clone()
            } else {
                s.peers
                    .iter()
                    .find(|p| m.has_ip(p.ip))
                    .map(|p| p.name.clone())
                    .unwrap_or_default()
            };
            m.peer_urls.iter().map(move |u| (name.clone(), u.clone()))
        })
        .collect::<Vec<_>>();
    let mut cluster = cluster;
    cluster.sort();
    Decision::Start(Settings::new(me, token, ClusterState::Existing, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, ip: &str) -> Peer {
        Peer {
            name: name.into(),
            ip: ip.parse().unwrap(),
        }
    }

    /// A member; named ones have started (published their client URL).
    fn member(id: u64, name: &str, ip: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://{ip}:2380")],
            client_urls: if name.is_empty() {
                Vec::new()
            } else {
                vec![format!("https://{ip}:2379")]
            },
        }
    }

    /// A member of the initial cluster that has not run yet: named, with no
    /// client URLs (what etcd lists while a cluster is forming).
    fn forming(id: u64, name: &str, ip: &str) -> Member {
        Member {
            client_urls: Vec::new(),
            ..member(id, name, ip)
        }
    }

    /// The slow member of a forming cluster (two members started, the third
    /// not yet) joins as what it is: no member is removed, and it starts as
    /// an existing member under its own entry. Before, its named but never
    /// started entry looked like a member that had lost its data, and it
    /// removed itself from a cluster that then could not add it back.
    #[test]
    fn the_slow_member_of_a_forming_cluster_removes_nothing() {
        let peers = three();
        let me = &peers[0]; // c, 10.0.0.3
        let members = [
            member(1, "a", "10.0.0.1"),
            member(2, "b", "10.0.0.2"),
            forming(3, "c", "10.0.0.3"),
        ];
        check(
            me,
            &peers,
            Some(&members),
            false,
            start(
                me,
                ClusterState::Existing,
                &[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")],
            ),
        );
        // Another member of it, seen from a started one: nothing to change.
        let me_a = &peers[1];
        let s = Situation {
            me: me_a,
            peers: &peers,
            expected: 3,
            members: Some(&members),
            has_data: true,
            live_peer: false,
        };
        assert!(
            matches!(decide(&s, "tok"), Decision::Start(_)),
            "{:?}",
            decide(&s, "tok")
        );
        // A member whose data was lost (it had started) is still replaced.
        check(
            me,
            &peers,
            Some(&[
                member(1, "a", "10.0.0.1"),
                member(2, "b", "10.0.0.2"),
                member(3, "c", "10.0.0.3"),
            ]),
            false,
            Decision::Change(vec![
                Step::Remove(member(3, "c", "10.0.0.3")),
                Step::AddSelf,
            ]),
        );
    }

    fn check(
        me: &Peer,
        peers: &[Peer],
        members: Option<&[Member]>,
        has_data: bool,
        want: Decision,
    ) {
        let s = Situation {
            me,
            peers,
            expected: 3,
            members,
            has_data,
            live_peer: false,
        };
        assert_eq!(decide(&s, "tok"), want);
    }

    fn start(me: &Peer, state: ClusterState, cluster: &[(&str, &str)]) -> Decision {
        Decision::Start(Settings {
            name: me.name.clone(),
            initial_cluster: cluster
                .iter()
                .map(|(n, ip)| (n.to_string(), format!("https://{ip}:2380")))
                .collect(),
            state,
            token: "tok".into(),
            peer_url: me.peer_url(),
            client_url: me.client_url(),
        })
    }

    fn three() -> Vec<Peer> {
        vec![
            peer("c", "10.0.0.3"),
            peer("a", "10.0.0.1"),
            peer("b", "10.0.0.2"),
        ]
    }

    #[test]
    fn bootstrap_waits_for_every_peer_then_lists_them_sorted() {
        let peers = three();
        let me = &peers[0];
        check(
            me,
            &peers[..2],
            None,
            false,
            Decision::Wait("no etcd member answered and discovery found 2 of 3 peers".into()),
        );
        let want = [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")];
        check(me, &peers, None, false, start(me, ClusterState::New, &want));
        // Every member computes the same list.
        check(
            &peers[1],
            &peers,
            None,
            false,
            start(&peers[1], ClusterState::New, &want),
        );
    }

    #[test]
    fn restart_with_data_and_no_answer_is_existing_without_waiting() {
        let peers = three();
        check(
            &peers[0],
            &peers[..1],
            None,
            true,
            start(&peers[0], ClusterState::Existing, &[("c", "10.0.0.3")]),
        );
    }

    #[test]
    fn replacement_removes_the_dead_member_then_adds_itself() {
        // c (10.0.0.3) died; d on 10.0.0.4 replaces it.
        let peers = vec![
            peer("a", "10.0.0.1"),
            peer("b", "10.0.0.2"),
            peer("d", "10.0.0.4"),
        ];
        let me = &peers[2];
        let before = [
            member(1, "a", "10.0.0.1"),
            member(2, "b", "10.0.0.2"),
            member(u64::MAX, "c", "10.0.0.3"),
        ];
        check(
            me,
            &peers,
            Some(&before),
            false,
            Decision::Change(vec![Step::Remove(before[2].clone()), Step::AddSelf]),
        );
        // After the changes etcd lists us unstarted (no name yet).
        let after = [
            member(1, "a", "10.0.0.1"),
            member(2, "b", "10.0.0.2"),
            member(7, "", "10.0.0.4"),
        ];
        check(
            me,
            &peers,
            Some(&after),
            false,
            start(
                me,
                ClusterState::Existing,
                &[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("d", "10.0.0.4")],
            ),
        );
    }

    #[test]
    fn stale_data_is_moved_aside_before_joining() {
        let peers = three();
        let me = &peers[0];
        let members = [member(1, "a", "10.0.0.1"), member(2, "b", "10.0.0.2")];
        check(
            me,
            &peers,
            Some(&members),
            true,
            Decision::Change(vec![Step::MoveDataAside, Step::AddSelf]),
        );
        // Added before but never started, with data: that data is not ours either.
        let members = [
            member(1, "a", "10.0.0.1"),
            member(2, "b", "10.0.0.2"),
            member(3, "", "10.0.0.3"),
        ];
        check(
            me,
            &peers,
            Some(&members),
            true,
            Decision::Change(vec![Step::MoveDataAside]),
        );
    }

    #[test]
    fn an_earlier_life_of_our_address_is_replaced() {
        let peers = three();
        let me = &peers[0];
        let members = [
            member(1, "a", "10.0.0.1"),
            member(2, "b", "10.0.0.2"),
            member(3, "old-c", "10.0.0.3"),
        ];
        check(
            me,
            &peers,
            Some(&members),
            false,
            Decision::Change(vec![Step::Remove(members[2].clone()), Step::AddSelf]),
        );
    }

    #[test]
    fn already_a_member_changes_nothing() {
        let peers = three();
        let me = &peers[0];
        let members = [
            member(1, "a", "10.0.0.1"),
            member(2, "b", "10.0.0.2"),
            member(3, "c", "10.0.0.3"),
        ];
        let want = start(
            me,
            ClusterState::Existing,
            &[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")],
        );
        check(me, &peers, Some(&members), true, want.clone());
        // Added earlier, crashed before the first start: no data, still existing.
        let members = [
            member(1, "a", "10.0.0.1"),
            member(2, "b", "10.0.0.2"),
            member(3, "", "10.0.0.3"),
        ];
        check(me, &peers, Some(&members), false, want);
    }

    #[test]
    fn a_started_member_without_data_is_removed_and_added_anew() {
        let peers = three();
        let members = vec![
            member(1, "a", "10.0.0.1"),
            member(2, "b", "10.0.0.2"),
            member(3, "c", "10.0.0.3"),
        ];
        let me = &peers[1];
        let mine = members
            .iter()
            .find(|m| m.has_ip(me.ip))
            .cloned()
            .expect("member");
        check(
            me,
            &peers,
            Some(&members),
            false,
            Decision::Change(vec![Step::Remove(mine), Step::AddSelf]),
        );
    }

    #[test]
    fn a_live_peer_without_quorum_stops_a_bootstrap_but_not_a_restart() {
        let peers = three();
        let s = |has_data| Situation {
            me: &peers[1],
            peers: &peers,
            expected: 3,
            members: None,
            has_data,
            live_peer: true,
        };
        assert!(matches!(decide(&s(false), "kc"), Decision::Wait(w) if w.contains("no quorum")));
        assert!(matches!(
            decide(&s(true), "kc"),
            Decision::Start(Settings {
                state: ClusterState::Existing,
                ..
            })
        ));
    }

    #[test]
    fn settings_render_as_etcd_environment() {
        let peers = three();
        let Decision::Start(s) = decide(
            &Situation {
                me: &peers[1],
                peers: &peers,
                expected: 3,
                members: None,
                has_data: false,
                live_peer: false,
            },
            "kc",
        ) else {
            panic!("bootstrap")
        };
        assert_eq!(
            s.render(),
            "ETCD_NAME=a\n\
             ETCD_INITIAL_CLUSTER=a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380\n\
             ETCD_INITIAL_CLUSTER_STATE=new\n\
             ETCD_INITIAL_CLUSTER_TOKEN=kc\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.0.0.1:2380\n\
             ETCD_ADVERTISE_CLIENT_URLS=https://10.0.0.1:2379\n"
        );
    }

    #[test]
    fn url_ip_reads_v4_and_v6_hosts() {
        assert_eq!(
            url_ip("https://10.0.0.1:2380"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            url_ip("https://[fd00::1]:2380"),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(
            url(("fd00::1".parse::<IpAddr>()).unwrap(), 2380),
            "https://[fd00::1]:2380"
        );
        assert_eq!(url_ip("https://etcd-a:2380"), None);
    }
}
