//! Per-role SSH key pairs (`[access] ssh = "per-role"`), as the seed kept
//! them: one Ed25519 key pair per node role in a local folder
//! (`~/.ssh/kube-aws-pki/<cluster>-<role>`, private key 0600), made with
//! `ssh-keygen` on first use and reused after. Only the public half goes into
//! the role's Ignition. With the default `ssh = "none"` nothing is made and
//! sshd is masked on every node.

use crate::spec::{ClusterSpec, Role, SshAccess};
use anyhow::{Context, bail};
use std::path::PathBuf;

/// The folder of the key pairs.
pub fn dir(spec: &ClusterSpec) -> anyhow::Result<PathBuf> {
    if let Some(d) = &spec.ssh_dir {
        return Ok(d.clone());
    }
    let home = std::env::var_os("HOME").context("HOME is not set: set access.ssh_dir")?;
    Ok(PathBuf::from(home).join(".ssh").join("kube-aws-pki"))
}

/// Load each node role's public key into the spec, making missing key pairs.
pub fn load_or_create(spec: &mut ClusterSpec) -> anyhow::Result<()> {
    if spec.ssh != SshAccess::PerRole {
        return Ok(());
    }
    let dir = dir(spec)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    for role in [Role::Etcd, Role::Controller, Role::Worker] {
        let key = dir.join(format!("{}-{}", spec.name, role.name()));
        let public = key.with_extension("pub");
        if !key.exists() {
            let out = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("core@{}-{}", spec.name, role.name()))
                .arg("-f")
                .arg(&key)
                .output()
                .context(
                    "running ssh-keygen (install openssh-client, or set access.ssh = \"none\")",
                )?;
            if !out.status.success() {
                bail!(
                    "ssh-keygen failed for {}: {}",
                    key.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let text = std::fs::read_to_string(&public)
            .with_context(|| format!("reading {}", public.display()))?;
        let line = text.trim();
        if !line.starts_with("ssh-ed25519 ") || line.contains('\n') {
            bail!("{} is not one Ed25519 public key", public.display());
        }
        spec.ssh_keys.insert(role, line.to_string());
    }
    Ok(())
}
