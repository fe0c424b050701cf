//! moto_server from the test venv, with fake Flatcar AMIs.

use provisioner::Provisioner;
use provisioner::aws::Recorder;
use provisioner::spec::ClusterSpec;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../support/venv.rs"]
mod venv;
use venv::{free_port, venv_tool};

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
        // Small stand-ins for the binaries apply uploads to the config bucket.
        let stand_ins = dir.path().join("bin");
        std::fs::create_dir(&stand_ins).unwrap();
        for name in provisioner::BINARIES {
            std::fs::write(
                stand_ins.join(name),
                format!("#!/bin/sh\necho {name} stand-in\n"),
            )
            .unwrap();
        }
        let port = free_port();
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

    /// Where the binary stand-ins are (the spec's `artifacts_dir`).
    pub fn artifacts(&self) -> std::path::PathBuf {
        self._dir.path().join("bin")
    }

    /// A provisioner for `spec_text` against this moto, with its own recorder.
    pub async fn provisioner(&self, spec_text: &str) -> Provisioner {
        let text = format!("artifacts_dir = {:?}\n{spec_text}", self.artifacts());
        let spec = ClusterSpec::parse(&text).expect("valid spec");
        Provisioner::with_sdk(spec, &self.sdk().await, Recorder::new())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
