//! Real Vault clients: hvac (Python) drives init, unseal, seal-status, health and
//! seal against pki-server and against OpenBao over TLS, and must see the same
//! statuses, exceptions and field shapes (tests/python/hvac_compat.py).

#[test]
fn hvac_sees_pki_server_as_it_sees_openbao() {
    let Some(report) = crate::harness::run_compat_script("hvac_compat.py") else {
        return;
    };
    assert!(report.is_object(), "{report}");
}
