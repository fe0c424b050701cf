//! provisioner against moto's server: apply, idempotence, one-field changes,
//! destroy, a cut-off apply, the state lock. Each test starts its own moto on
//! a free loopback port with fake Flatcar AMIs (MOTO_AMIS_PATH).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod aws; // apply, plan, destroy, interruption, lock
mod harness; // moto_server with fake Flatcar AMIs
