//! The node-client binary against OpenBao (`bao server -dev` plus a TLS
//! listener) once the cluster profile from policies/ is applied to it with
//! `pki-server apply-profile`'s steps. OpenBao's templates read
//! `{{identity.entity.metadata.node_name}}` from the token's identity entity,
//! not from token metadata, so each node is enrolled as docs/node-client.md
//! says: an entity with `node_name`, an alias on the token auth mount, the
//! node role's token role allowing the alias, and a token made with
//! `entity_alias`. Then:
//! - each role's fetch-cert writes exactly its files with the names the
//!   pki-server test expects (`support`), `status --json` reads them, and a
//!   second run changes nothing;
//! - `sa.pub` drops a revoked signer (OpenBao's `certs` and `certs/revoked`
//!   lists);
//! - a worker asking for controller or etcd certificates, or another node's,
//!   is refused (exit 3) and nothing is written; so is a token that carries
//!   `meta node_name` (pki-server's form) but no entity.
//!
//! bao comes from the test venv (`tests/harness.sh setup`); missing, the tests
//! skip locally and fail under CI=true.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/bao.rs"]
mod bao;
mod support;
#[path = "../../tests/support/venv.rs"]
mod venv;

use bao::Bao;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const CLUSTER: &str = "kubecluster";

/// OpenBao with the profile applied; calls as root.
struct Setup {
    bao: Bao,
    http: reqwest::Client,
    /// The token auth mount's accessor (entity aliases name it).
    token_accessor: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let bao = Bao::start_tls(&dir.path().join("tls")).await?;
        let http = bao.client();
        let mut me = Self {
            bao,
            http,
            token_accessor: String::new(),
            dir,
        };
        me.apply_profile().await;
        let auth = me.call(reqwest::Method::GET, "sys/auth", None).await;
        me.token_accessor = auth["data"]["token/"]["accessor"]
            .as_str()
            .unwrap_or_else(|| panic!("no token/ accessor in {auth}"))
            .to_string();
        Some(me)
    }

    /// What `pki-server apply-profile --dir policies --cluster kubecluster`
    /// runs, against OpenBao.
    async fn apply_profile(&self) {
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let args = pki_server::cli::ClientArgs {
            address: self.bao.addr.clone(),
            ca_cert: self.bao.ca.clone(),
        };
        let c = pki_server::client::Client::new(&args)
            .unwrap()
            .with_token(zeroize::Zeroizing::new("root".to_string()));
        let steps = pki_server::profile::Profile::load(&policies)
            .unwrap()
            .plan(CLUSTER, &BTreeMap::new())
            .unwrap();
        pki_server::commands::apply_steps(&c, &steps).await.unwrap();
    }

    /// `method /v1/path` as root; the answer (which must be a success).
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method, format!("{}/v1/{path}", self.bao.addr))
            .header("X-Vault-Token", "root");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let s = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(s.is_success(), "bao {path}: {s} {v}");
        v
    }

    /// Enrol `node` as node role `role`: an identity entity carrying
    /// `node_name`, its alias `<cluster>-<role>-<node>` on the token mount,
    /// the token role allowing `<cluster>-<role>-*` aliases, and a token of
    /// that role bound to the alias, in a 0600 file.
    async fn token_file(&self, role: &str, node: &str) -> PathBuf {
        let token_role = format!("{CLUSTER}-{role}");
        let alias = format!("{token_role}-{node}");
        // An update keeps the fields apply-profile wrote (policies, period).
        self.call(
            reqwest::Method::POST,
            &format!("auth/token/roles/{token_role}"),
            Some(json!({"allowed_entity_aliases": [format!("{token_role}-*")]})),
        )
        .await;
        let entity = self
            .call(
                reqwest::Method::POST,
                "identity/entity",
                Some(json!({"name": node, "metadata": {"node_name": node}})),
            )
            .await;
        let id = entity["data"]["id"].as_str().unwrap();
        self.call(
            reqwest::Method::POST,
            "identity/entity-alias",
            Some(json!({
                "name": alias,
                "canonical_id": id,
                "mount_accessor": self.token_accessor,
            })),
        )
        .await;
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("auth/token/create/{token_role}"),
                Some(json!({"entity_alias": alias})),
            )
            .await;
        assert_eq!(v["auth"]["entity_id"], id, "{v}");
        assert_eq!(
            v["auth"]["token_policies"],
            json!(["default", token_role]),
            "{v}"
        );
        let p = self.dir.path().join(format!("token-{role}-{node}"));
        write_token(&p, v["auth"]["client_token"].as_str().unwrap());
        p
    }

    fn cmd(&self, token: &Path, args: &[&str]) -> Command {
        node_client(&self.bao.addr, self.bao.ca.as_ref().unwrap(), token, args)
    }
}

#[tokio::test]
async fn each_role_fetches_from_openbao_with_the_node_name_of_its_entity() {
    let Some(s) = Setup::new().await else {
        return;
    };
    let root = s.dir.path().join("nodes");

    let out = root.join("etcd-0");
    let tok = s.token_file("etcd", "etcd-0").await;
    let o = output(s.cmd(&tok, &args("etcd", "etcd-0", &out, &["--ip", "127.0.0.11"]))).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_etcd(&out, "etcd-0", "127.0.0.11");

    let out = root.join("ctl-1");
    let tok = s.token_file("controller", "ctl-1").await;
    let ctl = |extra: &'static [&'static str]| {
        let mut a = vec!["--ip", "10.240.0.10"];
        a.extend_from_slice(extra);
        s.cmd(&tok, &args("controller", "ctl-1", &out, &a))
    };
    let o = output(ctl(&[])).await;
    assert!(o.status.success(), "{}", show(&o));
    let first = assert_controller(&out, "ctl-1", "10.240.0.10");
    assert_eq!(sa_pub(&out).matches("BEGIN PUBLIC KEY").count(), 1);
    // A second run changes nothing.
    let data = std::fs::read_link(out.join("..data")).unwrap();
    let o = output(ctl(&[])).await;
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("nothing to do"),
        "{}",
        show(&o)
    );
    assert_eq!(std::fs::read_link(out.join("..data")).unwrap(), data);
    // Revoke the first signer, renew twice: sa.pub holds the two live keys,
    // not the revoked one.
    let sa = info(&out, "sa.crt");
    let revoked = node_client::inspect::pem_encode("PUBLIC KEY", &sa.spki);
    s.call(
        reqwest::Method::POST,
        &format!("{CLUSTER}/pki/service-account/revoke"),
        Some(json!({"serial_number": sa.serial})),
    )
    .await;
    for _ in 0..2 {
        let o = output(ctl(&["--force", "--no-reload"])).await;
        assert!(o.status.success(), "{}", show(&o));
    }
    let api = assert_controller(&out, "ctl-1", "10.240.0.10");
    assert_ne!(api.serial, first.serial);
    let bundle = sa_pub(&out);
    assert_eq!(bundle.matches("BEGIN PUBLIC KEY").count(), 2, "{bundle}");
    assert!(
        !bundle.contains(&revoked),
        "the revoked signer's key: {bundle}"
    );

    // apply-profile again (as an operator re-runs it) keeps the enrolment:
    // the token role still binds the controller's alias.
    s.apply_profile().await;
    let v = s
        .call(
            reqwest::Method::POST,
            &format!("auth/token/create/{CLUSTER}-controller"),
            Some(json!({"entity_alias": format!("{CLUSTER}-controller-ctl-1")})),
        )
        .await;
    assert!(
        v["auth"]["entity_id"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    let out = root.join("worker-1");
    let tok = s.token_file("worker", "worker-1").await;
    let o = output(s.cmd(
        &tok,
        &args("worker", "worker-1", &out, &["--ip", "10.240.1.5"]),
    ))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    assert_worker(&out, "worker-1");
    let o = output(s.cmd(&tok, &["status", "--json", "--out", out.to_str().unwrap()])).await;
    assert_worker_status_json(&o);

    // --issue: OpenBao makes the keys; same files.
    let out = root.join("worker-1-issue");
    let o = output(s.cmd(&tok, &args("worker", "worker-1", &out, &["--issue"]))).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_worker(&out, "worker-1");
}

#[tokio::test]
async fn a_worker_is_refused_by_openbao_and_nothing_is_written() {
    let Some(s) = Setup::new().await else {
        return;
    };
    let tok = s.token_file("worker", "worker-1").await;
    for (role, node) in [
        ("controller", "worker-1"),
        ("etcd", "worker-1"),
        ("worker", "worker-2"),
    ] {
        let out = s.dir.path().join(format!("{role}-{node}"));
        let o = output(s.cmd(&tok, &args(role, node, &out, &[]))).await;
        assert_refused(&o, &out, &format!("{role}/{node}"));
    }
    // Token metadata, which pki-server's templates read, means nothing to
    // OpenBao's: a token with meta node_name and no entity gets no
    // node-bound certificate.
    let v = s
        .call(
            reqwest::Method::POST,
            &format!("auth/token/create/{CLUSTER}-worker"),
            Some(json!({"meta": {"node_name": "worker-1"}})),
        )
        .await;
    let meta_only = s.dir.path().join("token-meta-only");
    write_token(&meta_only, v["auth"]["client_token"].as_str().unwrap());
    let out = s.dir.path().join("meta-only");
    let o = output(s.cmd(&meta_only, &args("worker", "worker-1", &out, &[]))).await;
    assert_refused(&o, &out, "a token without an entity");
}
