//! provisioner: plan, apply and destroy a kube-aws-pki cluster on AWS.
//!
//! The flow: `ClusterSpec::parse` (no AWS) → `model::desired` (pure) →
//! `observe::observe` (read-only calls, by tags and names) → `plan::diff`
//! (pure) → `apply::Executor` (dependency levels, concurrent inside a level).
//! `state` keeps the lock object in the config bucket. The local target
//! (`--local DIR`) lives in `local.rs`.

pub mod apply;
pub mod aws;
pub mod certs;
pub mod ignition;
pub mod kubeconfig;
pub mod local;
pub mod model;
#[cfg(test)]
mod module_graph;
pub mod observe;
pub mod plan;
pub mod smoke;
pub mod spec;
pub mod ssh;
pub mod state;
pub mod unit_exec;

use crate::aws::{Clients, err};
use crate::model::{CONFIG_BUCKET, Env, Group, Kind, Resource};
use crate::observe::World;
use crate::plan::{Action, Plan};
use crate::spec::{ClusterSpec, Role};
use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use std::collections::BTreeMap;

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The binaries nodes install at first boot.
pub const BINARIES: [&str; 2] = ["node-client", "pki-server"];

/// Where the binaries to upload are: the spec's `artifacts_dir`, else the
/// folder of this program (`target/<profile>` when run from a build, also
/// from its test binaries in `target/<profile>/deps`).
pub fn artifacts_dir(spec: &ClusterSpec) -> anyhow::Result<std::path::PathBuf> {
    if let Some(d) = &spec.artifacts_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().context("cannot locate the provisioner binary")?;
    let mut dir = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// What the config bucket must hold: the node-client and pki-server binaries
/// and the security profile pki-server applies (`policies/`, built in).
pub fn artifacts(spec: &ClusterSpec) -> anyhow::Result<Vec<model::Artifact>> {
    let dir = artifacts_dir(spec)?;
    let mut out = Vec::new();
    for name in BINARIES {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (the binary nodes install; build it with `cargo build --release -p {name}` or set artifacts_dir in the spec)",
                path.display()
            )
        })?;
        out.push(model::Artifact {
            key: format!("bin/{name}"),
            sha256: sha256_hex(&bytes),
            body: model::ArtifactBody::File(path),
        });
    }
    let mut text = vec![(
        "policies/profile.toml".to_string(),
        local::PROFILE.to_string(),
    )];
    text.extend(
        local::ACL
            .iter()
            .map(|(role, t)| (format!("policies/acl/{role}.hcl"), t.to_string())),
    );
    // Each role's full Ignition config; its user data points here by SHA-256.
    text.extend(
        spec::Role::ALL
            .iter()
            .map(|r| (ignition::config_key(spec, *r), ignition::render(spec, *r))),
    );
    for (key, t) in text {
        out.push(model::Artifact {
            key,
            sha256: sha256_hex(t.as_bytes()),
            body: model::ArtifactBody::Text(t),
        });
    }
    Ok(out)
}

/// A cluster spec bound to AWS clients.
#[derive(Debug)]
pub struct Provisioner {
    /// The validated spec.
    pub spec: ClusterSpec,
    /// The clients (and their mutating-call recorder).
    pub aws: Clients,
}

/// What `output` reports.
#[derive(Debug, Serialize)]
pub struct Output {
    /// Cluster name.
    pub cluster: String,
    /// pki-server URL (private zone name).
    pub pki_url: String,
    /// API server URL (private zone name).
    pub api_url: String,
    /// DNS names of the load balancers.
    pub load_balancers: BTreeMap<String, String>,
    /// Auto scaling groups.
    pub groups: Vec<GroupState>,
}

/// One auto scaling group's state.
#[derive(Debug, Serialize)]
pub struct GroupState {
    /// Group name.
    pub name: String,
    /// Min size.
    pub min: i32,
    /// Max size.
    pub max: i32,
    /// Desired capacity.
    pub desired: i32,
    /// Instances in service.
    pub in_service: usize,
    /// All instances.
    pub instances: usize,
}

impl Provisioner {
    /// Clients from the SDK's standard settings (AWS_ENDPOINT_URL, profiles,
    /// region; the spec's region wins when set).
    pub async fn from_env(spec: ClusterSpec) -> Provisioner {
        let mut loader = aws::loader();
        if let Some(r) = &spec.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        Provisioner {
            aws: Clients::new(&sdk, aws::Recorder::new()),
            spec,
        }
    }

    /// Clients from a given SDK config (tests).
    pub fn with_sdk(
        spec: ClusterSpec,
        sdk: &aws_config::SdkConfig,
        recorder: std::sync::Arc<aws::Recorder>,
    ) -> Provisioner {
        Provisioner {
            aws: Clients::new(sdk, recorder),
            spec,
        }
    }

    async fn azs(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .aws
            .ec2
            .describe_availability_zones()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("state")
                    .values("available")
                    .build(),
            )
            .send()
            .await
            .map_err(err)
            .context("while listing availability zones")?;
        let mut names: Vec<String> = out
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn flatcar_ami(&self) -> anyhow::Result<String> {
        use aws_sdk_ec2::types::Filter;
        let out = self
            .aws
            .ec2
            .describe_images()
            .owners(&self.spec.ami_owner)
            .filters(
                Filter::builder()
                    .name("name")
                    .values(format!("Flatcar-{}-*", self.spec.flatcar_channel))
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("architecture")
                    .values("x86_64")
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("virtualization-type")
                    .values("hvm")
                    .build(),
            )
            .send()
            .await
            .map_err(err)
            .context("while looking up the Flatcar AMI")?;
        out.images()
            .iter()
            .filter(|i| i.image_id().is_some())
            .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
            .and_then(|i| i.image_id().map(str::to_string))
            .ok_or_else(|| {
                anyhow!(
                    "no Flatcar-{}-* x86_64 image owned by {} in this region; set ami.id in the spec",
                    self.spec.flatcar_channel,
                    self.spec.ami_owner
                )
            })
    }

    /// Desired state and what exists.
    pub async fn model(&self) -> anyhow::Result<(Vec<Resource>, World)> {
        let azs = self.azs().await?;
        let placeholder: BTreeMap<Role, String> = Role::ALL
            .iter()
            .map(|r| (*r, "ami-pending".to_string()))
            .collect();
        let artifacts = artifacts(&self.spec)?;
        let first = model::desired(
            &self.spec,
            &Env {
                azs: azs.clone(),
                images: placeholder,
                artifacts: artifacts.clone(),
            },
        )
        .map_err(|e| anyhow!(e))?;
        let world = observe::observe(&self.aws, &self.spec.name, &first).await?;
        let pinned = observe::pinned_images(&world);
        let mut images = BTreeMap::new();
        let mut looked_up: Option<String> = None;
        for role in Role::ALL {
            let image = if let Some(id) = &self.spec.ami_id {
                id.clone()
            } else if let Some(id) = pinned.get(&format!("lt/{}", role.name())) {
                id.clone()
            } else {
                if looked_up.is_none() {
                    looked_up = Some(self.flatcar_ami().await?);
                }
                looked_up.clone().unwrap_or_default()
            };
            images.insert(role, image);
        }
        let desired = model::desired(
            &self.spec,
            &Env {
                azs,
                images,
                artifacts,
            },
        )
        .map_err(|e| anyhow!(e))?;
        Ok((desired, world))
    }

    /// What apply would change; nothing is written.
    pub async fn plan(&self, only: &[Group]) -> anyhow::Result<Plan> {
        let (desired, world) = self.model().await?;
        Ok(plan::diff(&self.spec, &desired, &world.by_key, &world.known())?.only(only))
    }

    fn config_bucket(&self) -> String {
        ignition::buckets(&self.spec).1
    }

    /// Make AWS match the spec. With an empty plan nothing is written at all.
    pub async fn apply(&self, only: &[Group]) -> anyhow::Result<Plan> {
        let (desired, world) = self.model().await?;
        let plan = plan::diff(&self.spec, &desired, &world.by_key, &world.known())?.only(only);
        if plan.is_empty() {
            return Ok(plan);
        }
        // The lock lives in the config bucket, so that bucket comes first.
        let mut done_first = None;
        if !world.by_key.contains_key(CONFIG_BUCKET) {
            let first = Plan {
                changes: plan
                    .changes
                    .iter()
                    .filter(|c| c.key == CONFIG_BUCKET)
                    .cloned()
                    .collect(),
            };
            let first = if first.is_empty() {
                Plan {
                    changes: vec![plan::Change {
                        key: CONFIG_BUCKET.into(),
                        kind: Kind::Bucket,
                        group: Some(Group::S3),
                        action: Action::Create,
                    }],
                }
            } else {
                first
            };
            apply::Executor::new(&self.aws, &self.spec, &world, &desired)
                .run(&first)
                .await?;
            done_first = Some(first);
        }
        let lock = state::acquire(&self.aws, &self.config_bucket()).await?;
        let result = async {
            let (desired, world) = self.model().await?;
            let plan = plan::diff(&self.spec, &desired, &world.by_key, &world.known())?.only(only);
            apply::Executor::new(&self.aws, &self.spec, &world, &desired)
                .run(&plan)
                .await?;
            // Report the config bucket created before the lock as part of this apply.
            let mut changes = done_first.map(|f| f.changes).unwrap_or_default();
            changes.extend(plan.changes);
            Ok::<Plan, anyhow::Error>(Plan { changes })
        }
        .await;
        let last = result
            .as_ref()
            .ok()
            .map(|p| serde_json::json!({"applied": p.counts()}));
        let released = lock.release(&self.aws, last).await;
        let plan = result?;
        released.context("while releasing the state lock")?;
        Ok(plan)
    }

    /// The plan `destroy` would execute.
    pub async fn destroy_plan(&self) -> anyhow::Result<Plan> {
        let (desired, world) = self.model().await?;
        Ok(plan::destroy(&world.by_key, &[], &desired))
    }

    /// Delete every owned resource, children first; the config bucket (and
    /// with it the state lock) last.
    pub async fn destroy(&self) -> anyhow::Result<Plan> {
        let (desired, world) = self.model().await?;
        let plan = plan::destroy(&world.by_key, &[], &desired);
        if plan.is_empty() {
            return Ok(plan);
        }
        let has_config = world.by_key.get(CONFIG_BUCKET).is_some_and(|o| o.owned);
        let lock = if has_config {
            Some(state::acquire(&self.aws, &self.config_bucket()).await?)
        } else {
            None
        };
        let body = Plan {
            changes: plan
                .changes
                .iter()
                .filter(|c| c.key != CONFIG_BUCKET)
                .cloned()
                .collect(),
        };
        let exec = apply::Executor::new(&self.aws, &self.spec, &world, &desired);
        if let Err(e) = exec.run(&body).await {
            if let Some(lock) = lock {
                let _ = lock.release(&self.aws, None).await;
            }
            return Err(e);
        }
        if has_config {
            exec.empty_and_delete_bucket(&self.config_bucket())
                .await
                .context("while deleting the config bucket")?;
        }
        Ok(plan)
    }

    /// Clear a stale lock.
    pub async fn unlock(&self) -> anyhow::Result<Option<String>> {
        state::force_unlock(&self.aws, &self.config_bucket()).await
    }

    /// Endpoints and group states.
    pub async fn output(&self) -> anyhow::Result<Output> {
        let (desired, world) = self.model().await?;
        let mut load_balancers = BTreeMap::new();
        for (k, o) in &world.by_key {
            if o.kind == Kind::LoadBalancer
                && let Some(d) = o.attrs.get("dns")
            {
                load_balancers.insert(k.clone(), d.clone());
            }
        }
        let names: Vec<String> = desired
            .iter()
            .filter_map(|r| match &r.desired {
                model::Desired::AutoScalingGroup { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        let out = self
            .aws
            .asg
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(Some(names))
            .send()
            .await
            .map_err(err)?;
        let groups = out
            .auto_scaling_groups()
            .iter()
            .map(|g| GroupState {
                name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
                min: g.min_size().unwrap_or_default(),
                max: g.max_size().unwrap_or_default(),
                desired: g.desired_capacity().unwrap_or_default(),
                instances: g.instances().len(),
                in_service: g
                    .instances()
                    .iter()
                    .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
                    .count(),
            })
            .collect();
        Ok(Output {
            cluster: self.spec.name.clone(),
            pki_url: apply::pki_endpoint(&self.spec),
            api_url: format!("https://{}:6443", ignition::api_dns(&self.spec)),
            load_balancers,
            groups,
        })
    }
}

/// Parse `--only vpc,s3,...`.
pub fn parse_groups(list: &str) -> anyhow::Result<Vec<Group>> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Group::from_name(s.trim()).ok_or_else(|| {
                anyhow!("--only: unknown group {s:?} (known: vpc, s3, iam, kms, pki, etcd, controller, worker)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .and_then(|g| if g.is_empty() { bail!("--only: no group given") } else { Ok(g) })
}
