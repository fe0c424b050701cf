//! A differential test of the PKI paths: the same raw HTTP sequence (mounts,
//! config, roots, roles, issue, sign, fetches, revoke, CRL, tidy,
//! intermediates, deletions) sent to pki-server and to OpenBao must give the
//! same statuses and JSON field names and types (tests/python/pki_diff.py).

use crate::harness::venv_tool;
use std::path::Path;
use std::process::Command;

#[test]
fn pki_paths_answer_as_openbao_does() {
    let (Some(python), Some(bao)) = (venv_tool("python"), venv_tool("bao")) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/pki_diff.py");
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
    assert!(
        out.status.success(),
        "PKI differential test failed:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert!(stderr.contains(" 0 failed"), "{stderr}");
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["steps"].as_u64().unwrap_or(0) > 50, "{report}");
}
