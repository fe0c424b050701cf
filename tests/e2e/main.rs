//! Cross-crate end-to-end tests over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod harness; // pki-server in-process on a real TLS listener
mod kubernetes; // the real kube-apiserver on the certificates of `provisioner apply --local`
mod node_client; // node-client's Vault client: waits for a late or sealed server, signs, refusals are final
mod readme; // the README walk-through over TLS: init, unseal, status, rotate, seal
mod trust_root; // publish-ca and fetch-ca agree on CA bundles and S3 locations
