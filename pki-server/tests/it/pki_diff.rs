//! A differential test of the PKI paths: the same raw HTTP sequence (mounts,
//! config, roots, roles, issue, sign, fetches, revoke, CRL, tidy,
//! intermediates, deletions) sent to pki-server and to OpenBao must give the
//! same statuses and JSON field names and types (tests/python/pki_diff.py).

#[test]
fn pki_paths_answer_as_openbao_does() {
    let Some(report) = crate::harness::run_compat_script("pki_diff.py") else {
        return;
    };
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["steps"].as_u64().unwrap_or(0) > 50, "{report}");
}
