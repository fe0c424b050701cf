//! The cluster profile in policies/: every file parses; `apply-profile` is
//! idempotent against the real binary; the authorisation matrix holds for
//! tokens of each node role (own-node pinning, fixed CN/O, single EKU family);
//! docs/security.md carries the matrix rendered from the profile; and the same
//! profile applies to OpenBao.

use crate::harness::ServerProcess;
use pki_server::auth::policy::Policy;
use pki_server::profile::{NODE_NAME_TEMPLATE, Profile, Usage};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CLUSTER: &str = "kubecluster";

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn profile() -> Profile {
    Profile::load(&policies_dir()).unwrap()
}

/// Run `pki-server apply-profile` against `addr`; (success, stdout+stderr).
fn apply(addr: &str, ca: Option<&Path>, token: &str, extra: &[&str]) -> (bool, String) {
    let dir = policies_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pki-server"));
    cmd.args([
        "apply-profile",
        "--dir",
        dir.to_str().unwrap(),
        "--cluster",
        CLUSTER,
    ])
    .args(extra)
    .env("VAULT_ADDR", addr)
    .env("VAULT_TOKEN", token)
    .env_remove("VAULT_CACERT")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(ca) = ca {
        cmd.env("VAULT_CACERT", ca);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_file_in_policies_parses() {
    let p = profile();
    let mut seen = Vec::new();
    for e in std::fs::read_dir(policies_dir()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if e.file_type().unwrap().is_dir() && name == "iam" {
            continue; // IAM policies: parsed by provisioner/src/model/tests.rs
        }
        if e.file_type().unwrap().is_dir() && name == "src" {
            continue; // the `policies` crate that embeds these files (its own tests)
        }
        if e.file_type().unwrap().is_dir() {
            assert_eq!(name, "acl", "an unknown directory in policies/: {name}");
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap().path();
                let text = std::fs::read_to_string(&f)
                    .unwrap()
                    .replace("{{cluster}}", CLUSTER);
                Policy::parse(&text).unwrap_or_else(|e| panic!("{}: {}", f.display(), e.0));
                seen.push(f);
            }
        } else {
            assert!(
                matches!(name.as_str(), "README.md" | "profile.toml" | "Cargo.toml"),
                "a file in policies/ that no test parses: {name}"
            );
        }
    }
    assert_eq!(seen.len(), p.acl.len());
    assert_eq!(
        p.node_roles
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["etcd", "controller", "worker", "operator"]
    );
    let steps = p.plan(CLUSTER, &BTreeMap::new()).unwrap();
    assert!(!steps.is_empty());
    // Every PKI role fixes its names and O, and has one EKU family (etcd's both).
    for m in &p.mounts {
        for r in &m.roles {
            assert_eq!(r.fields["use_csr_common_name"].as_bool(), Some(false));
            assert_eq!(r.fields["allow_any_name"].as_bool(), Some(false));
            if r.usage == Usage::ServerClient {
                assert_eq!(m.name, "etcd-member");
            }
        }
    }
}

#[test]
fn docs_security_carries_the_matrix_rendered_from_the_profile() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md"))
            .unwrap();
    let matrix = profile().matrix_markdown();
    assert!(
        docs.contains(&matrix),
        "docs/security.md is out of date; regenerate the matrix with\n  \
         pki-server apply-profile --dir policies --print-matrix\n\n{matrix}"
    );
    // And the CLI prints the same text.
    let out = Command::new(env!("CARGO_BIN_EXE_pki-server"))
        .args(["apply-profile", "--print-matrix", "--dir"])
        .arg(policies_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), matrix);
}

/// Everything apply-profile writes, read back.
async fn snapshot(srv: &ServerProcess, token: &str, p: &Profile) -> Value {
    let t = Some(token);
    let mut out = serde_json::Map::new();
    for m in &p.mounts {
        let base = format!("{CLUSTER}/pki/{}", m.name);
        let (s, ca) = srv.call("GET", &format!("{base}/cert/ca"), t, None).await;
        assert_eq!(s, 200);
        out.insert(format!("{base}/ca"), ca["data"]["certificate"].clone());
        let (_, tune) = srv
            .call("GET", &format!("sys/mounts/{base}/tune"), t, None)
            .await;
        out.insert(format!("{base}/tune"), tune["data"].clone());
        for r in &m.roles {
            let (s, v) = srv
                .call("GET", &format!("{base}/roles/{}", r.name), t, None)
                .await;
            assert_eq!(s, 200);
            out.insert(format!("{base}/roles/{}", r.name), v["data"].clone());
        }
    }
    for n in &p.node_roles {
        let (_, v) = srv
            .call(
                "GET",
                &format!("sys/policies/acl/{CLUSTER}-{}", n.name),
                t,
                None,
            )
            .await;
        out.insert(format!("policy {}", n.name), v["data"]["policy"].clone());
        let (_, v) = srv
            .call(
                "GET",
                &format!("auth/token/roles/{CLUSTER}-{}", n.name),
                t,
                None,
            )
            .await;
        out.insert(format!("token role {}", n.name), v["data"].clone());
    }
    Value::Object(out)
}

/// A request body for certificate `cert` as node `node` would make it.
fn request(p: &Profile, cert: &str, node: &str) -> Value {
    let (_, r) = p.role(cert).unwrap();
    let names: Vec<String> = r
        .allowed_domains()
        .iter()
        .map(|d| d.replace(NODE_NAME_TEMPLATE, node))
        .collect();
    let mut body = json!({"common_name": names[0], "ttl": "1h"});
    match cert {
        "etcd-member/member" => {
            body["alt_names"] = json!("localhost");
            body["ip_sans"] = json!("127.0.0.1,10.0.1.5");
        }
        "kube-apiserver/apiserver" => {
            body["alt_names"] = json!(
                "kubernetes,kubernetes.default,kubernetes.default.svc,kubernetes.default.svc.cluster.local"
            );
            body["ip_sans"] = json!("10.32.0.1");
        }
        "kube-apiserver/kubelet-serving" => body["alt_names"] = json!(node),
        _ => {}
    }
    body
}

struct Issued {
    cn: String,
    org: Vec<String>,
    server: bool,
    client: bool,
    dns: Vec<String>,
}

fn inspect(pem: &str) -> Issued {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let subject = cert.subject();
    let eku = cert.extended_key_usage().unwrap().map(|e| e.value.clone());
    let dns = cert
        .subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Issued {
        cn: subject
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string(),
        org: subject
            .iter_organization()
            .map(|o| o.as_str().unwrap().to_string())
            .collect(),
        server: eku.as_ref().is_some_and(|e| e.server_auth),
        client: eku.as_ref().is_some_and(|e| e.client_auth),
        dns,
    }
}

async fn token(srv: &ServerProcess, caller: &str, path: &str, body: Value) -> String {
    let (s, v) = srv.call("POST", path, Some(caller), Some(body)).await;
    assert_eq!(s, 200, "{path}: {v}");
    v["auth"]["client_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn apply_twice_against_pki_server_then_the_matrix_holds() {
    let p = profile();
    let tmp = tempfile::tempdir().unwrap();
    let srv = ServerProcess::start("memory", &tmp.path().join("tls"), &[], vec![]);
    let (s, init) = srv
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(s, 200);
    srv.call(
        "PUT",
        "sys/unseal",
        None,
        Some(json!({"key": init["keys"][0]})),
    )
    .await;
    let root = init["root_token"].as_str().unwrap().to_string();

    // Dry run: no server contact, one line per action.
    let (ok, out) = apply("http://127.0.0.1:1", None, "x", &["--dry-run"]);
    assert!(ok, "{out}");
    assert!(out.lines().all(|l| l.starts_with("would apply ")), "{out}");

    let (ok, first) = apply(&srv.addr(), Some(&srv.ca()), &root, &[]);
    assert!(ok, "{first}");
    assert_eq!(
        first.matches(": created").count(),
        p.mounts.len(),
        "{first}"
    );
    assert_eq!(
        first.matches(": generated").count(),
        p.mounts.len(),
        "{first}"
    );
    let before = snapshot(&srv, &root, &p).await;
    let (ok, second) = apply(&srv.addr(), Some(&srv.ca()), &root, &[]);
    assert!(ok, "{second}");
    assert!(
        !second.contains("created") && !second.contains("generated"),
        "{second}"
    );
    assert_eq!(second.matches("present, kept").count(), p.mounts.len());
    assert_eq!(second.matches("policy ").count(), p.node_roles.len());
    assert!(
        second
            .lines()
            .filter(|l| l.starts_with("policy "))
            .all(|l| l.ends_with("unchanged")),
        "{second}"
    );
    assert_eq!(
        before,
        snapshot(&srv, &root, &p).await,
        "the second run changed state"
    );
    // Without a token: refused before anything is sent.
    let (ok, out) = apply(&srv.addr(), Some(&srv.ca()), "", &[]);
    assert!(!ok && out.contains("VAULT_TOKEN"), "{out}");

    // Enrolment by token takes the root token (nodes normally log in with
    // their machine identity); an operator gets its own token from root.
    let operator = token(
        &srv,
        &root,
        &format!("auth/token/create/{CLUSTER}-operator"),
        json!({}),
    )
    .await;
    let mut tokens: BTreeMap<&str, (String, &str)> = BTreeMap::new();
    for (role, node) in [
        ("etcd", "etcd-1"),
        ("controller", "ctl-1"),
        ("worker", "worker-1"),
    ] {
        let t = token(
            &srv,
            &root,
            &format!("auth/token/create/{CLUSTER}-{role}"),
            json!({"meta": {"node_name": node}}),
        )
        .await;
        tokens.insert(role, (t, node));
    }
    tokens.insert("operator", (operator.clone(), "nobody"));
    // The operator can never become a node, controller or etcd member: it
    // mints no token of any role, with or without metadata, and none outside
    // the roles.
    for (path, body) in [
        (format!("auth/token/create/{CLUSTER}-operator"), json!({})),
        (format!("auth/token/create/{CLUSTER}-worker"), json!({})),
        (
            format!("auth/token/create/{CLUSTER}-controller"),
            json!({"meta": {"node_name": "ctl-1"}}),
        ),
        (
            format!("auth/token/create/{CLUSTER}-etcd"),
            json!({"meta": {"node_name": "etcd-1"}}),
        ),
        (
            "auth/token/create".to_string(),
            json!({"policies": [format!("{CLUSTER}-controller")]}),
        ),
        (
            "auth/token/create-orphan".to_string(),
            json!({"policies": [format!("{CLUSTER}-controller")]}),
        ),
    ] {
        let (s, _) = srv.call("POST", &path, Some(&operator), Some(body)).await;
        assert_eq!(s, 403, "{path}");
    }
    // A worker cannot enrol anything.
    let (s, _) = srv
        .call(
            "POST",
            &format!("auth/token/create/{CLUSTER}-worker"),
            Some(&tokens["worker"].0),
            Some(json!({"meta": {"node_name": "worker-2"}})),
        )
        .await;
    assert_eq!(s, 403);

    let mut granted = 0;
    for n in &p.node_roles {
        let (tok, node) = &tokens[n.name.as_str()];
        for m in &p.mounts {
            for r in &m.roles {
                let cert = format!("{}/{}", m.name, r.name);
                let path = format!("{CLUSTER}/pki/{}/issue/{}", m.name, r.name);
                let (s, v) = srv
                    .call("POST", &path, Some(tok), Some(request(&p, &cert, node)))
                    .await;
                if !n.certificates.contains(&cert) {
                    assert!(s == 403 || s == 400, "{} got {cert}: {s} {v}", n.name);
                    // sign and sign-verbatim are closed too.
                    for op in ["sign", "sign-verbatim"] {
                        let (s, _) = srv
                            .call(
                                "POST",
                                &format!("{CLUSTER}/pki/{}/{op}/{}", m.name, r.name),
                                Some(tok),
                                Some(json!({"csr": "x", "common_name": "x"})),
                            )
                            .await;
                        assert_eq!(s, 403, "{} {op} {cert}", n.name);
                    }
                    continue;
                }
                granted += 1;
                assert_eq!(s, 200, "{} refused {cert}: {v}", n.name);
                let c = inspect(v["data"]["certificate"].as_str().unwrap());
                let want_cn = r.allowed_domains()[0].replace(NODE_NAME_TEMPLATE, node);
                assert_eq!(c.cn, want_cn, "{cert}");
                assert_eq!(c.org, r.organization(), "{cert}: O comes from the role");
                assert_eq!((c.server, c.client), r.usage.flags(), "{cert}: EKU");
                // Another name than the role's: refused.
                let mut other = request(&p, &cert, node);
                other["common_name"] = json!(if want_cn.contains(node) {
                    want_cn.replace(node, "someone-else")
                } else {
                    format!("x{want_cn}")
                });
                let (s, v) = srv.call("POST", &path, Some(tok), Some(other)).await;
                assert_eq!(s, 400, "{} {cert} with another CN: {v}", n.name);
                // No smuggled SAN either.
                let mut smuggle = request(&p, &cert, node);
                smuggle["alt_names"] = json!("kubernetes.default");
                if cert != "kube-apiserver/apiserver" {
                    let (s, _) = srv.call("POST", &path, Some(tok), Some(smuggle)).await;
                    assert_eq!(s, 400, "{} {cert} with a smuggled SAN", n.name);
                }
            }
        }
    }
    assert_eq!(
        granted,
        p.node_roles
            .iter()
            .map(|n| n.certificates.len())
            .sum::<usize>()
    );

    // The worker, explicitly: no controller, etcd, apiserver or admin
    // certificate, no other node's kubelet certificate, no SA key.
    let w = Some(tokens["worker"].0.as_str());
    for (path, cn) in [
        (
            "kube-apiserver/issue/controller-manager",
            "system:kube-controller-manager",
        ),
        ("kube-apiserver/issue/apiserver", "kube-apiserver"),
        ("kube-apiserver/issue/admin", "kubernetes-admin"),
        ("etcd-member/issue/member", "worker-1"),
        (
            "etcd-member/issue/apiserver-client",
            "kube-apiserver-etcd-client",
        ),
        ("front-proxy/issue/front-proxy-client", "front-proxy-client"),
        ("service-account/issue/signer", "service-account-signer"),
    ] {
        let (s, _) = srv
            .call(
                "POST",
                &format!("{CLUSTER}/pki/{path}"),
                w,
                Some(json!({"common_name": cn})),
            )
            .await;
        assert_eq!(s, 403, "worker got {path}");
    }
    let (s, v) = srv
        .call(
            "POST",
            &format!("{CLUSTER}/pki/kube-apiserver/issue/kubelet-client"),
            w,
            Some(json!({"common_name": "system:node:worker-2"})),
        )
        .await;
    assert_eq!(s, 400, "another node's kubelet certificate: {v}");

    // sign with a CSR asking for O=system:masters and another CN: the role's
    // O and the request's (checked) CN win.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["worker-2".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:worker-2");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let (s, v) = srv
        .call(
            "POST",
            &format!("{CLUSTER}/pki/kube-apiserver/sign/kubelet-client"),
            w,
            Some(json!({"csr": csr, "common_name": "system:node:worker-1"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = inspect(v["data"]["certificate"].as_str().unwrap());
    assert_eq!(c.cn, "system:node:worker-1");
    assert_eq!(c.org, ["system:nodes"]);
    assert!(!c.dns.iter().any(|d| d == "worker-2"), "{:?}", c.dns);
}

#[tokio::test]
async fn apply_against_openbao() {
    let Some(b) = crate::harness::Bao::start().await else {
        return;
    };
    let http = reqwest::Client::new();
    let (ok, first) = apply(&b.addr, None, "root", &[]);
    assert!(ok, "{first}");
    let mounts = profile().mounts.len();
    assert_eq!(first.matches(": generated").count(), mounts, "{first}");
    assert_eq!(first.matches(": created").count(), mounts, "{first}");
    let (ok, second) = apply(&b.addr, None, "root", &[]);
    assert!(ok, "{second}");
    assert!(
        !second.contains("generated") && !second.contains("created"),
        "{second}"
    );

    let call = |method: reqwest::Method, path: String, tok: String, body: Option<Value>| {
        let http = http.clone();
        let addr = b.addr.clone();
        async move {
            let mut r = http
                .request(method, format!("{addr}/v1/{path}"))
                .header("X-Vault-Token", tok);
            if let Some(body) = body {
                r = r.json(&body);
            }
            let r = r.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Fixed-CN roles behave the same on OpenBao: CN, O, EKU from the role.
    let p = profile();
    let (s, v) = call(
        reqwest::Method::POST,
        format!("{CLUSTER}/pki/kube-apiserver/issue/admin"),
        "root".into(),
        Some(json!({"common_name": "kubernetes-admin", "ttl": "1h"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let c = inspect(v["data"]["certificate"].as_str().unwrap());
    assert_eq!(
        (c.cn.as_str(), c.org.clone(), c.server, c.client),
        (
            "kubernetes-admin",
            vec!["kubeadm:cluster-admins".to_string()],
            false,
            true
        )
    );
    let (s, _) = call(
        reqwest::Method::POST,
        format!("{CLUSTER}/pki/kube-apiserver/issue/admin"),
        "root".into(),
        Some(json!({"common_name": "system:kube-scheduler"})),
    )
    .await;
    assert_eq!(s, 400);
    // A worker-policy token: kube-proxy yes, scheduler and admin no.
    let (s, v) = call(
        reqwest::Method::POST,
        format!("auth/token/create/{CLUSTER}-worker"),
        "root".into(),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let w = v["auth"]["client_token"].as_str().unwrap().to_string();
    let (s, v) = call(
        reqwest::Method::POST,
        format!("{CLUSTER}/pki/kube-apiserver/issue/kube-proxy"),
        w.clone(),
        Some(json!({"common_name": "system:kube-proxy"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    for r in ["scheduler", "admin"] {
        let cn = &p
            .role(&format!("kube-apiserver/{r}"))
            .unwrap()
            .1
            .allowed_domains()[0];
        let (s, _) = call(
            reqwest::Method::POST,
            format!("{CLUSTER}/pki/kube-apiserver/issue/{r}"),
            w.clone(),
            Some(json!({"common_name": cn})),
        )
        .await;
        assert_eq!(s, 403, "{r}");
    }
}
