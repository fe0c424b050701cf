//! Real Vault clients: hvac (Python) drives init, unseal, seal-status, health and
//! seal against pki-server and against OpenBao over TLS, and must see the same
//! statuses, exceptions and field shapes (tests/python/hvac_compat.py).

use crate::harness::venv_tool;
use std::path::Path;
use std::process::Command;

#[test]
fn hvac_sees_pki_server_as_it_sees_openbao() {
    let (Some(python), Some(bao)) = (venv_tool("python"), venv_tool("bao")) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/hvac_compat.py");
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(python)
        .arg(script)
        .args(["--pki-server", env!("CARGO_BIN_EXE_pki-server")])
        .arg("--bao")
        .arg(bao)
        .arg("--workdir")
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hvac compatibility failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert!(stderr.contains(" 0 failed"), "{stderr}");
    assert!(report.is_object(), "{report}");
}
