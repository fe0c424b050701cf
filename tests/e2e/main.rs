//! Cross-crate end-to-end tests over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod readme; // the README walk-through over TLS: init, unseal, status, rotate, seal
