//! moto_server from the test venv, with fake Flatcar AMIs.

use provisioner::Provisioner;
use provisioner::aws::Recorder;
use provisioner::spec::ClusterSpec;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether missing tools must fail the run (CI) rather than skip.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A tool from the test venv (PKI_TEST_VENV or tests/.venv), or None (skip);
/// panics under CI=true.
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("PKI_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let p = venv.join("bin").join(name);
    if p.exists() {
        return Some(p);
    }
    assert!(
        !required(),
        "{} is missing: run tests/harness.sh setup (CI=true: tests never skip)",
        p.display()
    );
    eprintln!(
        "SKIPPED: {} not found; run tests/harness.sh setup",
        p.display()
    );
    None
}

/// The Flatcar image the newest fake AMI stands for.
pub const NEWEST_FLATCAR: &str = "ami-0f1a7ca2000000002";

/// moto's server, killed on drop.
pub struct Moto {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Option<Moto> {
        let bin = venv_tool("moto_server")?;
        let dir = tempfile::tempdir().unwrap();
        let amis = dir.path().join("amis.json");
        let ami = |id: &str, name: &str, date: &str, arch: &str| {
            serde_json::json!({
                "ami_id": id, "name": name, "description": "fake Flatcar for tests",
                "owner_id": "075585003325", "public": true, "state": "available",
                "architecture": arch, "virtualization_type": "hvm", "hypervisor": "xen",
                "root_device_type": "ebs", "root_device_name": "/dev/xvda", "sriov": "simple",
                "image_type": "machine", "image_location": format!("075585003325/{name}"),
                "creation_date": date
            })
        };
        let list = serde_json::json!([
            ami(
                "ami-0f1a7ca2000000001",
                "Flatcar-stable-4230.2.3-hvm",
                "2026-01-10T00:00:00.000Z",
                "x86_64"
            ),
            ami(
                NEWEST_FLATCAR,
                "Flatcar-stable-4459.2.1-hvm",
                "2026-10-01T00:00:00.000Z",
                "x86_64"
            ),
            ami(
                "ami-0f1a7ca2000000003",
                "Flatcar-stable-4459.2.1-hvm-arm64",
                "2026-10-02T00:00:00.000Z",
                "arm64"
            ),
            ami(
                "ami-0f1a7ca2000000004",
                "Flatcar-beta-4500.0.0-hvm",
                "2026-11-01T00:00:00.000Z",
                "x86_64"
            ),
        ]);
        std::fs::write(&amis, serde_json::to_vec(&list).unwrap()).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_AMIS_PATH", &amis)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("moto_server exited early: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Moto {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    pub async fn sdk(&self) -> aws_config::SdkConfig {
        provisioner::aws::loader()
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }

    /// A provisioner for `spec_text` against this moto, with its own recorder.
    pub async fn provisioner(&self, spec_text: &str) -> Provisioner {
        let spec = ClusterSpec::parse(spec_text).expect("valid spec");
        Provisioner::with_sdk(spec, &self.sdk().await, Recorder::new())
    }

    /// Same, sharing a recorder.
    pub async fn provisioner_with(&self, spec_text: &str, recorder: Arc<Recorder>) -> Provisioner {
        let spec = ClusterSpec::parse(spec_text).expect("valid spec");
        Provisioner::with_sdk(spec, &self.sdk().await, recorder)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
