//! `provisioner kubeconfig`: an admin kubeconfig from a short-lived
//! certificate that pki-server issues to the caller's own token (the profile's
//! `operator` role), with a key made here. Nothing is copied off a node.
//!
//! It is node-client's `fetch-cert --role operator` (same profile entry, same
//! atomic write) pointed at this cluster's API load balancer.

use crate::ignition;
use crate::spec::ClusterSpec;
use anyhow::{Context, anyhow, bail};
use node_client::client::Client;
use node_client::fetch::{self, Options};
use node_client::profile::{Node, Profile};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// What `kubeconfig` needs.
#[derive(Debug)]
pub struct KubeconfigOptions {
    /// pki-server address (VAULT_ADDR); default `https://<pki DNS>:8200`.
    pub addr: Option<String>,
    /// pki-server's listener CA (VAULT_CACERT).
    pub ca_cert: Option<PathBuf>,
    /// The operator's token (VAULT_TOKEN).
    pub token: Zeroizing<String>,
    /// Who the certificate names (`kube-aws-pki:operator:<name>` style CN
    /// comes from the profile; this is the node name the token must carry).
    pub name: String,
    /// Requested lifetime (the role's default, short, when None).
    pub ttl: Option<String>,
    /// Folder for admin.crt, admin.key, ca.crt and admin.conf.
    pub out: PathBuf,
    /// API server host written into the kubeconfig as `https://<host>:6443`
    /// (default: the private zone's API record).
    pub api_host: Option<String>,
}

/// The operator's default output folder: `~/.kube/kube-aws-pki/<cluster>`.
pub fn default_out(cluster: &str) -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --out"))?;
    Ok(Path::new(&home)
        .join(".kube")
        .join("kube-aws-pki")
        .join(cluster))
}

/// Request the admin certificate and write the kubeconfig; returns its path.
pub async fn write(spec: &ClusterSpec, o: &KubeconfigOptions) -> anyhow::Result<PathBuf> {
    if o.token.is_empty() {
        bail!("no token: set VAULT_TOKEN to an operator token (pki-server's operator role)");
    }
    let addr = o
        .addr
        .clone()
        .unwrap_or_else(|| format!("https://{}:8200", ignition::pki_dns(spec)));
    let ca = match &o.ca_cert {
        Some(p) => Some(
            std::fs::read(p)
                .with_context(|| format!("cannot read the CA certificate {}", p.display()))?,
        ),
        None => None,
    };
    let client = Client::new(&addr, ca.as_deref(), o.token.clone()).map_err(|e| anyhow!("{e}"))?;
    let out = std::path::absolute(&o.out)
        .with_context(|| format!("bad output folder {}", o.out.display()))?;
    let node = Node {
        cluster: spec.name.clone(),
        name: o.name.clone(),
        ips: vec![],
        pki_dir: out.display().to_string(),
    };
    let mut profile = Profile::embedded()?;
    profile.set_var(
        "api_dns",
        o.api_host.as_deref().unwrap_or(&ignition::api_dns(spec)),
    );
    let reqs = profile.requests("operator", &node)?;
    let mut opts = Options::new(out.clone());
    opts.ttl = o.ttl.clone();
    opts.force = true; // a new short-lived certificate each time it is asked for
    opts.run_reload = false;
    fetch::run(&client, &node, &reqs, &opts)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    reqs.iter()
        .find_map(|r| r.kubeconfig.as_ref().map(|k| out.join(&k.file)))
        .ok_or_else(|| anyhow!("the profile's operator entry has no kubeconfig"))
}
