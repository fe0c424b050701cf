//! The binary: an invalid spec is refused naming the field, before any AWS call.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::TcpListener;
use std::process::Command;

/// Run the binary with AWS pointed at a listener that records connections.
fn run(spec: &str, args: &[&str]) -> (std::process::Output, bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, spec).unwrap();
    let aws = TcpListener::bind("127.0.0.1:0").unwrap();
    aws.set_nonblocking(true).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("--spec")
        .arg(&path)
        .args(args)
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://{}", aws.local_addr().unwrap()),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let contacted = aws.accept().is_ok();
    (out, contacted)
}

#[test]
fn invalid_specs_are_refused_naming_the_field_before_any_aws_call() {
    for (spec, field) in [
        (
            "name = \"demo\"\n[roles.worker]\ndesired = 9\n",
            "roles.worker.desired",
        ),
        (
            "name = \"demo\"\npod_cidr = \"10.240.0.0/17\"\n",
            "pod_cidr",
        ),
        (
            "name = \"demo\"\nservice_cidr = \"10.240.8.0/24\"\n",
            "service_cidr",
        ),
        (
            "name = \"demo\"\n[roles.gateway]\nmin = 1\n",
            "roles.gateway",
        ),
        ("name = \"Bad_Name\"\n", "name"),
    ] {
        for cmd in [&["plan"][..], &["apply"], &["destroy", "--yes"]] {
            let (out, contacted) = run(spec, cmd);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd:?} {spec:?}: {stderr}");
            assert!(stderr.contains(&format!("`{field}`")), "{cmd:?}: {stderr}");
            assert!(!contacted, "{cmd:?} {spec:?} contacted AWS");
        }
    }
}

#[test]
fn destroy_local_refuses_a_folder_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep"), "not ours").unwrap();
    let (out, contacted) = run(
        "name = \"demo\"\n",
        &["destroy", "--local", dir.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to remove it"));
    assert!(dir.path().join("keep").exists());
    assert!(!contacted);
}

#[test]
fn unknown_only_group_is_refused() {
    let (out, contacted) = run("name = \"demo\"\n", &["apply", "--only", "vpc,dns"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown group \"dns\""));
    assert!(!contacted);
}
