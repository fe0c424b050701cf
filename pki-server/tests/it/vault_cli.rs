//! The vault CLI (OpenBao's `bao`, a drop-in) drives pki-server unchanged: the
//! README's PKI commands, over TLS with VAULT_CACERT.

use crate::harness::{ServerProcess, venv_tool};
use serde_json::json;
use std::process::Command;

#[tokio::test]
async fn readme_pki_commands_work_with_the_vault_cli() {
    let Some(bao) = venv_tool("bao") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let srv = ServerProcess::start("memory", &tmp.path().join("tls"), &[], vec![]);
    let (_, init) = srv
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    let token = init["root_token"].as_str().unwrap().to_string();
    srv.call(
        "PUT",
        "sys/unseal",
        None,
        Some(json!({"key": init["keys"][0]})),
    )
    .await;

    let run = |args: &[&str]| {
        let out = Command::new(&bao)
            .args(args)
            .env("VAULT_ADDR", srv.addr())
            .env("VAULT_CACERT", srv.ca())
            .env("VAULT_TOKEN", &token)
            .env("HOME", tmp.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "bao {args:?} failed: {text}");
        text
    };
    let m = "kubecluster/pki/etcd-member";
    assert!(
        run(&[
            "secrets",
            "enable",
            &format!("-path={m}"),
            "-max-lease-ttl=87600h",
            "pki"
        ])
        .contains("Success!")
    );
    run(&[
        "write",
        &format!("{m}/root/generate/internal"),
        "common_name=etcd-ca",
        "key_type=ec",
        "ttl=87600h",
    ]);
    run(&[
        "write",
        &format!("{m}/roles/member"),
        "allowed_domains=etcd.cluster.local",
        "allow_subdomains=true",
        "key_type=ec",
        "max_ttl=720h",
    ]);
    let issued: serde_json::Value = serde_json::from_str(&run(&[
        "write",
        "-format=json",
        &format!("{m}/issue/member"),
        "common_name=etcd-0.etcd.cluster.local",
        "ip_sans=127.0.0.1",
    ]))
    .unwrap();
    let serial = issued["data"]["serial_number"].as_str().unwrap();
    // The private key went to the client only: not into the server's (debug-level) log.
    let key = issued["data"]["private_key"].as_str().unwrap();
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let log = std::fs::read_to_string(srv.log()).unwrap();
    assert!(
        !log.contains(&key_body[..40]) && !log.contains(&token),
        "secret in the server log"
    );
    assert!(run(&["list", &format!("{m}/certs")]).contains(serial));
    assert!(run(&["secrets", "list"]).contains(&format!("{m}/")));
    assert!(run(&["read", "-field=key_type", &format!("{m}/roles/member")]).contains("ec"));
    assert!(run(&["status"]).contains("Sealed          false"));
    // A refused name: the CLI exits non-zero and shows Vault's message.
    let out = Command::new(&bao)
        .args([
            "write",
            &format!("{m}/issue/member"),
            "common_name=evil.com",
        ])
        .env("VAULT_ADDR", srv.addr())
        .env("VAULT_CACERT", srv.ca())
        .env("VAULT_TOKEN", &token)
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("common name evil.com not allowed by this role")
    );
}

/// `bao operator init` and `bao operator unseal`, as the README says they
/// work: the CLI always sends `recovery_shares: 0, recovery_threshold: 0`,
/// which a Shamir seal must take as absent (it refused them before).
#[tokio::test]
async fn operator_init_and_unseal_with_the_vault_cli() {
    let Some(bao) = venv_tool("bao") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let srv = ServerProcess::start("memory", &tmp.path().join("tls"), &[], vec![]);
    let run = |args: &[&str]| {
        let out = Command::new(&bao)
            .args(args)
            .env("VAULT_ADDR", srv.addr())
            .env("VAULT_CACERT", srv.ca())
            .env("HOME", tmp.path())
            .env_remove("VAULT_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "operator",
        "init",
        "-key-shares=3",
        "-key-threshold=2",
        "-format=json",
    ]);
    assert_eq!(code, Some(0), "bao operator init: {out}{err}");
    let init: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys = init["unseal_keys_b64"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{init}");
    assert!(init["root_token"].as_str().unwrap().starts_with("hvs."));
    // `status` exits 2 while sealed.
    assert_eq!(run(&["status"]).0, Some(2));
    for k in &keys[..2] {
        let (code, out, err) = run(&["operator", "unseal", k.as_str().unwrap()]);
        assert_eq!(code, Some(0), "bao operator unseal: {out}{err}");
    }
    let (code, out, err) = run(&["status", "-format=json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["sealed"], false, "{st}");
    // A second init is refused while unsealed.
    let (code, _, err) = run(&["operator", "init", "-key-shares=1", "-key-threshold=1"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("already initialized"), "{err}");
}
