//! pki-server: a certificate authority that speaks Vault's HTTP API.
//!
//! Module map: [`storage`] moves bytes (memory, file, S3); [`seal`] owns the root
//! key, the Shamir/KMS unseal and the encrypting [`seal::Barrier`]; [`auth`] holds
//! tokens; [`api`] is the only HTTP layer; [`server`] listens (TLS via rustls on
//! ring) and shuts down gracefully; [`tls`] makes the listener CA; [`client`] and
//! [`commands`] are the `init`/`unseal`/`seal`/`status` subcommands;
//! [`profile`] is the cluster profile that `apply-profile` writes;
//! [`publish`] is `publish-ca`, the listener CA put in S3 for the nodes.
//!
//! [`pki`] is the CA core, pure logic with no HTTP, JSON or storage: Vault-style
//! roles and their deny-by-default name checks, key generation and Vault's key
//! encodings, root/intermediate issuers, `issue`/`sign`/`sign-verbatim`, CSR
//! verification and CRLs. Time comes from a `pki::Clock` and serial numbers
//! from the caller, so the `api` handlers reserve serials in storage and tests
//! pin time.

pub mod api;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod engine;
pub mod maintenance;
pub mod mounts;
pub mod pki;
pub mod profile;
pub mod publish;
pub mod seal;
pub mod server;
pub mod state;
pub mod storage;
pub mod tls;

#[cfg(test)]
mod proptests;

/// The Vault API version this server reports (semver: Terraform parses it).
pub const VERSION: &str = "1.17.0+kube-aws-pki";
/// Build date reported in seal-status.
pub const BUILD_DATE: &str = "2026-11-24T00:00:00Z";

pub use api::router;
pub use state::{ApiSettings, AppState};
