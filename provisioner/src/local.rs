//! The local target (`apply --local DIR`): the whole flow on one machine.
//!
//! A stub until issue #7's local part lands; another change replaces this file.

use std::path::Path;

/// Bring up the local cluster in `dir`.
pub fn apply(_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("local target: see issue #7 (in progress)")
}

/// Stop and remove the local cluster in `dir`.
pub fn destroy(_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("local target: see issue #7 (in progress)")
}
