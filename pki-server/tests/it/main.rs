//! pki-server integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod abuse; // abuse regressions: re-init, CLI init, not_after caps, encoded paths, email names, ACL parameters, period caps
mod acl_diff; // the ACL language against OpenBao: same capabilities-self answers
mod api; // the HTTP API in-process (tower oneshot): seal lifecycle, errors, health, rotation
mod audit; // audit devices: HMAC of secrets, one line per request and response, fail closed
mod auth; // tokens and ACL policies: enforcement, child tokens, revocation, templates
mod bounds; // unauthenticated exhaustion: slowloris, idle slots, oversized bodies, bounded memory
mod etcd; // real etcd: a 3-member TLS cluster on certificates from the etcd-member mount
mod harness; // TestApp (in-process), ServerProcess (the real binary), Moto (moto's server)
mod hvac; // hvac against pki-server and OpenBao: same statuses, exceptions and shapes
mod kms; // KMS auto-unseal against moto: restart unsealed; key disabled stays sealed
mod login; // auth/jwt and auth/aws (moto) logins: claims and instances pin names; every bad login refused
mod pki; // the PKI engine over the API: issue, sign, refusals, revoke + CRL, tidy
mod pki_diff; // the PKI paths against pki-server and OpenBao: same statuses and shapes
mod process; // the real binary: SIGKILL + restart over file storage, TLS, CLI subcommands
mod profile; // policies/: parses, apply-profile idempotent (pki-server, OpenBao), the authorisation matrix, docs/security.md
mod races; // concurrency regressions: revocation vs renewals, exact use counts, no lost token-role updates
mod storage; // S3 conformance and plaintext scan against moto; concurrent conditional puts
mod vault_cli; // the vault CLI (bao) runs the README PKI commands unchanged
