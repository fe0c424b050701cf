//! node-client: the agent on each node. It fetches exactly the certificates
//! its role needs from pki-server (or Vault/OpenBao with the same profile),
//! writes them safely and keeps them renewed.
//!
//! - [`profile`]: what each node role gets (`[[node_certs]]` of
//!   `policies/profile.toml`, embedded), resolved for one node.
//! - [`fetch`]: one run: keep what is valid, request the rest (local key +
//!   CSR), write the whole set, run reload commands.
//! - [`crl`]: a mount's CRL kept in one file (etcd's `--client-crl-file`),
//!   verified against the CA the node holds, replaced only when it changed.
//! - [`store`]: a set of files (key, certificate, CA bundle) replaced as one,
//!   so a reader never sees a new certificate beside an old key, even if the
//!   writer is killed half-way.
//! - [`client`]: the Vault calls with retries, and local key + CSR generation.
//! - [`login`]: the token from a machine identity (`auth/aws` IAM login with
//!   the instance's credentials, `auth/jwt` with a JWT file) instead of a
//!   token on disk.
//! - [`inspect`]: reading certificates and keys back.
//! - [`schedule`]: when to renew, how long to back off.
//! - [`units`]: the systemd units the provisioner places on nodes.
//! - [`fetch_ca`]: `fetch-ca`: pki-server's CA certificate (what node-client
//!   trusts for pki-server) from S3, checked to be PEM CA certificates only.
//! - [`aws`]: AWS without a service SDK: one SigV4 signer for the Query API
//!   calls of etcd discovery, S3 GetObject and the `--auth aws` login.
//! - [`etcd`]: `etcd-join`: an etcd member's cluster membership (peers from
//!   the auto scaling group or a list, the running cluster's member list),
//!   written as the `ETCD_*` environment etcd reads.
//! - [`cli`]: the command line and its exit codes.

pub mod aws;
pub mod cli;
pub mod client;
pub mod crl;
pub mod etcd;
pub mod fetch;
pub mod fetch_ca;
pub mod inspect;
pub mod login;
pub mod profile;
pub mod schedule;
pub mod store;
pub mod units;

#[cfg(test)]
mod proptests;
