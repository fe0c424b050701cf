//! The real binary: TLS listener, SIGKILL and restart over file storage, the
//! client subcommands, --dev, SIGTERM, and no secret in the logs.

use crate::harness::ServerProcess;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

fn storage_files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(std::fs::read(p).unwrap())
            }
        }
    }
    out
}

#[tokio::test]
async fn sigkill_restart_comes_up_sealed_and_shares_restore_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut srv = ServerProcess::start(
        &format!("file:{}", data.display()),
        &tmp.path().join("tls"),
        &[],
        vec![],
    );
    let (s, init) = srv
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": 5, "secret_threshold": 3})),
        )
        .await;
    assert_eq!(s, 200);
    let keys: Vec<String> = init["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().into())
        .collect();
    let b64: Vec<String> = init["keys_base64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().into())
        .collect();
    let token = init["root_token"].as_str().unwrap().to_string();
    for k in &keys[..3] {
        srv.call("PUT", "sys/unseal", None, Some(json!({"key": k})))
            .await;
    }
    let st = srv.wait_sealed(false, 5).await;
    let cluster_id = st["cluster_id"].as_str().unwrap().to_string();
    assert_eq!(
        srv.call("PUT", "sys/rotate", Some(&token), None).await.0,
        204
    );

    srv.kill_and_restart();
    let st = srv.call("GET", "sys/seal-status", None, None).await.1;
    assert_eq!(
        (
            st["initialized"].as_bool(),
            st["sealed"].as_bool(),
            st["progress"].as_u64()
        ),
        (Some(true), Some(true), Some(0))
    );
    assert_eq!(
        srv.call("GET", "sys/key-status", Some(&token), None)
            .await
            .0,
        503
    );
    // Two shares are not enough; base64 and hex both count.
    srv.call("PUT", "sys/unseal", None, Some(json!({"key": b64[3]})))
        .await;
    let st = srv
        .call("PUT", "sys/unseal", None, Some(json!({"key": keys[1]})))
        .await
        .1;
    assert_eq!(
        (st["sealed"].as_bool(), st["progress"].as_u64()),
        (Some(true), Some(2))
    );
    let st = srv
        .call("PUT", "sys/unseal", None, Some(json!({"key": b64[4]})))
        .await
        .1;
    assert_eq!(st["sealed"], false);
    assert_eq!(
        st["cluster_id"].as_str(),
        Some(cluster_id.as_str()),
        "cluster info restored"
    );
    // The root token and the rotated keyring (term 2) survived the SIGKILL.
    let (s, ks) = srv.call("GET", "sys/key-status", Some(&token), None).await;
    assert_eq!((s, ks["data"]["term"].as_u64()), (200, Some(2)));

    // No share, token or cluster id in clear on disk or in the log.
    let files = storage_files(&data);
    let log = std::fs::read(srv.log()).unwrap();
    for needle in keys.iter().chain(&b64).chain([&token, &cluster_id]) {
        for f in files.iter().chain([&log]) {
            assert!(
                !f.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "secret found in storage or log"
            );
        }
    }
    for k in &init["keys"].as_array().unwrap()[..] {
        let raw = hex::decode(k.as_str().unwrap()).unwrap();
        assert!(
            !files
                .iter()
                .any(|f| f.windows(raw.len()).any(|w| w == &raw[..])),
            "raw share on disk"
        );
    }
}

fn cli(
    srv: &ServerProcess,
    args: &[&str],
    token: Option<&str>,
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pki-server"));
    cmd.args(args)
        .env("VAULT_ADDR", srv.addr())
        .env("VAULT_CACERT", srv.ca())
        .env_remove("VAULT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("VAULT_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn client_subcommands_init_unseal_status_seal() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = ServerProcess::start("memory", &tmp.path().join("tls"), &[], vec![]);
    let (code, out, _) = cli(&srv, &["status"], None, None);
    assert_eq!(code, 2, "uninitialised counts as sealed: {out}");
    let (code, out, err) = cli(&srv, &["init", "--format", "json"], None, None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys = v["keys_base64"].as_array().unwrap();
    let token = v["root_token"].as_str().unwrap();
    // A share from stdin, and one from a file.
    assert_eq!(
        cli(&srv, &["unseal"], None, Some(keys[0].as_str().unwrap())).0,
        0
    );
    let kf = tmp.path().join("share");
    std::fs::write(&kf, format!("{}\n", keys[1].as_str().unwrap())).unwrap();
    assert_eq!(
        cli(
            &srv,
            &["unseal", "--key-file", kf.to_str().unwrap()],
            None,
            None
        )
        .0,
        0
    );
    assert_eq!(cli(&srv, &["status"], None, None).0, 2);
    let (code, out, _) = cli(&srv, &["unseal"], None, Some(keys[2].as_str().unwrap()));
    assert_eq!(code, 0);
    assert!(out.contains("sealed         false"), "{out}");
    assert!(
        !out.contains(keys[2].as_str().unwrap()),
        "the share is not echoed"
    );
    assert_eq!(cli(&srv, &["status"], None, None).0, 0);
    let (code, _, err) = cli(&srv, &["seal"], None, None);
    assert_eq!(code, 1, "seal without a token fails");
    assert!(err.contains("403"), "{err}");
    assert_eq!(cli(&srv, &["seal"], Some(token), None).0, 0);
    assert_eq!(cli(&srv, &["status"], None, None).0, 2);
    // Without the CA the client refuses https rather than skipping verification.
    let out = Command::new(env!("CARGO_BIN_EXE_pki-server"))
        .args(["status"])
        .env("VAULT_ADDR", srv.addr())
        .env_remove("VAULT_CACERT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VAULT_CACERT"));
}

#[tokio::test]
async fn tls_only_1_2_and_1_3_and_wrong_ca_is_refused() {
    // reqwest is built without a default provider: install one here, not by
    // luck of another test running first in this process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let srv = ServerProcess::start("memory", &tmp.path().join("tls"), &[], vec![]);
    // A client that trusts another CA cannot connect.
    let other = ServerProcess::start("memory", &tmp.path().join("tls2"), &[], vec![]);
    let pem = std::fs::read(other.ca()).unwrap();
    let c = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap();
    assert!(
        c.get(format!("{}/v1/sys/health", srv.addr()))
            .send()
            .await
            .is_err()
    );
    // TLS 1.3 and 1.2 both work with the right CA.
    for v in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let pem = std::fs::read(srv.ca()).unwrap();
        let c = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .min_tls_version(v)
            .max_tls_version(v)
            .build()
            .unwrap();
        assert_eq!(
            c.get(format!("{}/v1/sys/health", srv.addr()))
                .send()
                .await
                .unwrap()
                .status(),
            501
        );
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v1/sys/health", srv.port))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test]
async fn dev_mode_prints_credentials_and_sigterm_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let port = crate::harness::free_port();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut guard = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_pki-server"))
            .args([
                "server",
                "--dev",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--dev-dir",
                tmp.path().to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let mut token = None;
    while token.is_none() {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "dev server ended early: {text}"
        );
        token = line
            .strip_prefix("Root Token: ")
            .map(|t| t.trim().to_string());
        text.push_str(&line);
    }
    assert!(text.contains("Unseal Key: "), "{text}");
    let token = token.unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    let r = c
        .get(format!("http://127.0.0.1:{port}/v1/sys/key-status"))
        .header("X-Vault-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The dev key file is private.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(tmp.path().join("unseal-key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // SIGTERM: a clean exit.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
}

#[test]
fn server_refuses_plain_http_off_dev() {
    let out = Command::new(env!("CARGO_BIN_EXE_pki-server"))
        .args(["server", "--storage", "memory"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS is required"));
}
