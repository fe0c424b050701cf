//! The trust root's way to the nodes, end to end against moto's S3: the real
//! `pki-server publish-ca` binary (built beside node-client's by `cargo test
//! --workspace` or `cargo build --workspace --bins`) publishes pki-server's
//! listener CA (made by pki-server's own `--tls-dir` code), the real
//! `node-client fetch-ca` copies it.
//!
//! - publish → fetch: the same bytes, mode 0644, the parent created; a second
//!   publish adds no object version, a second fetch leaves the file alone
//!   (same inode, same mtime);
//! - publish-ca refuses the leaf chain and every key file, and uploads nothing;
//! - fetch-ca refuses an object that is not a CA bundle (exit 3) and leaves
//!   the existing file as it was; a missing object with a short `--wait`
//!   exits 4 and writes nothing (`--keep-existing` keeps a valid file);
//! - with moto checking signatures and IAM policies: fetch-ca's SigV4 is
//!   accepted, a wrong secret (SignatureDoesNotMatch) and a user without
//!   s3:GetObject (AccessDenied) are refused at once (exit 3, nothing written).
//!
//! moto missing: skip locally, panic under CI=true.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/aws.rs"]
mod aws;
mod support;
#[path = "../../tests/support/venv.rs"]
mod venv;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::show;

const BUCKET: &str = "cluster-config";
const KEY: &str = "ca/pki-server-ca.pem";

fn object() -> String {
    format!("s3://{BUCKET}/{KEY}")
}

/// pki-server's binary beside node-client's, knowing `publish-ca`.
fn pki_server_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_node-client"))
        .parent()
        .unwrap()
        .join("pki-server");
    let knows = Command::new(&bin)
        .args(["publish-ca", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        knows,
        "{} is missing or predates publish-ca: cargo build --workspace --bins",
        bin.display()
    );
    bin
}

/// `program args` with only this moto's AWS settings (and `creds`).
fn aws_command(program: &Path, moto: &aws::Moto, creds: &aws::Creds, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("AWS_") || k.starts_with("NODE_CLIENT_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.envs(moto.env())
        .env("AWS_ACCESS_KEY_ID", &creds.access)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .args(args)
        .stdin(Stdio::null());
    match &creds.session {
        Some(t) => c.env("AWS_SESSION_TOKEN", t),
        None => c.env_remove("AWS_SESSION_TOKEN"),
    };
    c
}

async fn run(c: Command) -> Output {
    let mut c = c;
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

fn publish(moto: &aws::Moto, cert: &Path) -> Command {
    aws_command(
        &pki_server_bin(),
        moto,
        &aws::Creds::admin(),
        &[
            "publish-ca",
            "--cert",
            cert.to_str().unwrap(),
            "--to",
            &object(),
            "--wait",
            "0",
        ],
    )
}

/// `fetch-ca --from <object> --out OUT --wait WAIT` and `extra`.
fn fetch(moto: &aws::Moto, creds: &aws::Creds, out: &Path, wait: &str, extra: &[&str]) -> Command {
    let from = object();
    let mut args = vec![
        "fetch-ca",
        "--from",
        &from,
        "--out",
        out.to_str().unwrap(),
        "--wait",
        wait,
    ];
    args.extend(extra);
    aws_command(
        Path::new(env!("CARGO_BIN_EXE_node-client")),
        moto,
        creds,
        &args,
    )
}

impl aws::Moto {
    /// An S3 client as moto's administrator (path-style, as pki-server's).
    async fn s3(&self) -> aws_sdk_s3::Client {
        let sdk = pki_server::aws::loader()
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        pki_server::storage::s3_client(&sdk)
    }
}

/// The object's bytes, or None when it does not exist.
async fn object_bytes(s3: &aws_sdk_s3::Client) -> Option<Vec<u8>> {
    let o = s3.get_object().bucket(BUCKET).key(KEY).send().await.ok()?;
    Some(o.body.collect().await.unwrap().into_bytes().to_vec())
}

async fn versions(s3: &aws_sdk_s3::Client) -> usize {
    s3.list_object_versions()
        .bucket(BUCKET)
        .prefix(KEY)
        .send()
        .await
        .unwrap()
        .versions()
        .len()
}

async fn put_object(s3: &aws_sdk_s3::Client, body: &[u8]) {
    s3.put_object()
        .bucket(BUCKET)
        .key(KEY)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

/// pki-server's listener TLS directory: ca.pem, ca-key.pem, cert.pem (leaf + CA), key.pem.
fn listener_tls(dir: &Path) -> PathBuf {
    let tls = dir.join("tls");
    pki_server::tls::ensure_dir(&tls, "127.0.0.1:8200".parse().unwrap(), &[]).unwrap();
    tls
}

/// (inode, mtime in ns) of a file.
fn stamp(p: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[tokio::test]
async fn publish_then_fetch_and_every_refusal_writes_nothing() {
    let Some(moto) = aws::Moto::start() else {
        return;
    };
    let s3 = moto.s3().await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    s3.put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tls = listener_tls(tmp.path());
    let ca = std::fs::read(tls.join("ca.pem")).unwrap();
    let out = tmp.path().join("etc/kube-aws-pki/pki-ca.pem");

    // publish-ca refuses what is not a CA bundle, and uploads nothing.
    for (file, why) in [
        ("cert.pem", "is not a CA"),
        ("ca-key.pem", "private key"),
        ("key.pem", "private key"),
    ] {
        let o = run(publish(&moto, &tls.join(file))).await;
        assert_eq!(o.status.code(), Some(1), "{file}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(why),
            "{file}: {}",
            show(&o)
        );
        assert_eq!(object_bytes(&s3).await, None, "{file} was uploaded");
    }
    // A file that does not appear in time.
    let o = run(publish(&moto, &tmp.path().join("absent.pem"))).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));

    // Nothing published yet: a short --wait gives up (4) and writes nothing.
    let started = Instant::now();
    let o = run(fetch(&moto, &aws::Creds::admin(), &out, "2", &[])).await;
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(started.elapsed() >= Duration::from_secs(2), "it retried");
    assert!(!out.exists() && !out.parent().unwrap().exists());

    // Publish: the bytes, the content type; a second publish adds no version.
    let o = run(publish(&moto, &tls.join("ca.pem"))).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(object_bytes(&s3).await.as_deref(), Some(&ca[..]));
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/x-pem-file"));
    let o = run(publish(&moto, &tls.join("ca.pem"))).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to do"),
        "{}",
        show(&o)
    );
    assert_eq!(versions(&s3).await, 1);

    // Fetch: the same bytes, 0644; again: the file is not rewritten.
    let o = run(fetch(&moto, &aws::Creds::admin(), &out, "2", &[])).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(std::fs::read(&out).unwrap(), ca);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let before = stamp(&out);
    std::thread::sleep(Duration::from_millis(20));
    let o = run(fetch(&moto, &aws::Creds::admin(), &out, "2", &[])).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to do"),
        "{}",
        show(&o)
    );
    assert_eq!(stamp(&out), before);

    // An object that is not a CA bundle: refused (3), the file untouched.
    let leaf_chain = std::fs::read(tls.join("cert.pem")).unwrap();
    let key = std::fs::read(tls.join("ca-key.pem")).unwrap();
    for (what, body) in [
        ("leaf chain", &leaf_chain[..]),
        ("CA key", &key[..]),
        ("CA and key", &[&ca[..], &key[..]].concat()[..]),
        ("text", &b"hello\n"[..]),
        ("empty", &b""[..]),
    ] {
        put_object(&s3, body).await;
        let o = run(fetch(&moto, &aws::Creds::admin(), &out, "2", &[])).await;
        assert_eq!(o.status.code(), Some(3), "{what}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("not a PEM CA certificate bundle"),
            "{what}: {}",
            show(&o)
        );
        assert_eq!(std::fs::read(&out).unwrap(), ca, "{what}");
        assert_eq!(stamp(&out), before, "{what}");
    }
    // No temp file left beside it.
    let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["pki-ca.pem"]);

    // The object gone: exit 4 unless --keep-existing keeps the valid file.
    s3.delete_object()
        .bucket(BUCKET)
        .key(KEY)
        .send()
        .await
        .unwrap();
    let o = run(fetch(&moto, &aws::Creds::admin(), &out, "0", &[])).await;
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    let o = run(fetch(
        &moto,
        &aws::Creds::admin(),
        &out,
        "0",
        &["--keep-existing"],
    ))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stamp(&out), before);
    // --keep-existing does not make a file from nothing.
    let fresh = tmp.path().join("fresh/pki-ca.pem");
    let o = run(fetch(
        &moto,
        &aws::Creds::admin(),
        &fresh,
        "0",
        &["--keep-existing"],
    ))
    .await;
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(!fresh.exists());

    // A re-published (new) CA replaces the file.
    let tls2 = listener_tls(&tmp.path().join("second"));
    let ca2 = std::fs::read(tls2.join("ca.pem")).unwrap();
    assert_ne!(ca2, ca);
    let o = run(publish(&moto, &tls2.join("ca.pem"))).await;
    assert!(o.status.success(), "{}", show(&o));
    let o = run(fetch(&moto, &aws::Creds::admin(), &out, "2", &[])).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(std::fs::read(&out).unwrap(), ca2);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

/// An IAM user with `policy` (None: no policy) and its access key.
async fn user(endpoint: &str, name: &str, policy: Option<serde_json::Value>) -> aws::Creds {
    let admin = aws::Creds::admin();
    let iam = |p: Vec<(&'static str, String)>| {
        let admin = admin.clone();
        async move {
            let mut all = vec![("Version", "2010-05-08".to_string())];
            all.extend(p);
            let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            aws::query(endpoint, &admin, "iam", &refs).await
        }
    };
    iam(vec![
        ("Action", "CreateUser".into()),
        ("UserName", name.into()),
    ])
    .await;
    if let Some(p) = policy {
        iam(vec![
            ("Action", "PutUserPolicy".into()),
            ("UserName", name.into()),
            ("PolicyName", "ca".into()),
            ("PolicyDocument", p.to_string()),
        ])
        .await;
    }
    let key = iam(vec![
        ("Action", "CreateAccessKey".into()),
        ("UserName", name.into()),
    ])
    .await;
    aws::Creds {
        access: aws::xml(&key, "AccessKeyId").to_string(),
        secret: aws::xml(&key, "SecretAccessKey").to_string(),
        session: None,
    }
}

#[tokio::test]
async fn moto_checks_the_signature_and_a_refusal_is_final() {
    let Some(moto) = aws::Moto::start() else {
        return;
    };
    let s3 = moto.s3().await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tls = listener_tls(tmp.path());
    let ca = std::fs::read(tls.join("ca.pem")).unwrap();
    let o = run(publish(&moto, &tls.join("ca.pem"))).await;
    assert!(o.status.success(), "{}", show(&o));
    // A node's grant, as policies/iam/<node role>.json gives it.
    let node = user(
        &moto.endpoint,
        "node",
        Some(serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [format!("arn:aws:s3:::{BUCKET}/{KEY}")]},
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": format!("arn:aws:s3:::{BUCKET}")}
        ]})),
    )
    .await;
    let nobody = user(&moto.endpoint, "nobody", None).await;
    // From now on moto checks every signature and policy.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reset = reqwest::Client::new()
        .post(format!("{}/moto-api/reset-auth", moto.endpoint))
        .body("0")
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());

    let out = tmp.path().join("pki-ca.pem");
    let o = run(fetch(&moto, &node, &out, "2", &[])).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(std::fs::read(&out).unwrap(), ca);

    let forged = aws::Creds {
        secret: format!("{}x", node.secret),
        ..node.clone()
    };
    for (who, creds, code) in [
        ("wrong secret", &forged, "SignatureDoesNotMatch"),
        ("no grant", &nobody, "AccessDenied"),
    ] {
        let elsewhere = tmp.path().join(format!("{code}/pki-ca.pem"));
        let started = Instant::now();
        let o = run(fetch(&moto, creds, &elsewhere, "60", &[])).await;
        assert_eq!(o.status.code(), Some(3), "{who}: {}", show(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(code), "{who}: {}", show(&o));
        assert!(
            !stderr.contains(&creds.secret),
            "{who}: the secret is printed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{who}: a refusal was retried"
        );
        assert!(!elsewhere.exists() && !elsewhere.parent().unwrap().exists());
    }
}
