//! Test support shared by the other `tests/support/*.rs` files and test
//! harnesses: the test venv's tools (moto, bao), the CI rule (a missing tool
//! skips locally and panics under CI=true), a free loopback port.
//! Included with `#[path]`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// Whether missing test tools must fail the run (CI) rather than skip.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The test venv (tests/.venv, or PKI_TEST_VENV).
pub fn venv() -> PathBuf {
    std::env::var_os("PKI_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/.venv"))
}

/// A tool from the venv, or None (skip) — panics under CI=true.
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let p = venv().join("bin").join(name);
    if p.exists() {
        return Some(p);
    }
    if required() {
        panic!(
            "{} is missing: run tests/harness.sh setup (CI=true: tests never skip)",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not found; run tests/harness.sh setup",
        p.display()
    );
    None
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
