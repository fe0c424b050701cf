//! node-client: the agent on each node. It will fetch exactly the certificates
//! its role needs from pki-server, write them safely and keep them renewed
//! (issue #6). Built so far: the pieces with no network in them.
//!
//! - [`store`]: a set of files (key, certificate, CA bundle) replaced as one,
//!   so a reader never sees a new certificate beside an old key, even if the
//!   writer is killed half-way.
//! - [`client`]: the Vault calls (sign, issue, renew-self) with retries, and
//!   local key + CSR generation.
//! - [`schedule`]: when to renew a certificate, and how long to wait between
//!   retries.

pub mod client;
pub mod schedule;
pub mod store;
