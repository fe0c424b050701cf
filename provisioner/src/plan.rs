//! diff(desired, observed) → Plan: pure, no AWS.
//!
//! A resource missing from AWS is created; one whose compared fields differ
//! is updated in place when every differing field allows it, and otherwise
//! marked as a replace (which apply refuses: destroy and re-apply). A resource
//! found by our tags whose key is no longer desired is deleted. A resource
//! that exists under our name but is not tagged as owned by this cluster is
//! an error: we never touch what we do not own.

use crate::model::{Group, Kind, Known, Props, Resource};
use crate::spec::ClusterSpec;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// What exists in AWS for one key.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Resource key (from the tag, or the name it was looked up by).
    pub key: String,
    /// Kind.
    pub kind: Kind,
    /// AWS identifier (id, ARN or name).
    pub id: String,
    /// Tagged `kubernetes.io/cluster/<name>=owned`.
    pub owned: bool,
    /// Not tagged at all, but carrying our exact name (and marker): the one a
    /// cut-off apply created before it could tag it. Apply tags it; destroy
    /// never deletes it untagged.
    pub adoptable: bool,
    /// The compared fields, in the same shape as `Resource::props`.
    pub props: Props,
    /// Attributes others refer to (`arn`, `dns`, `zone_id`, ...).
    pub attrs: BTreeMap<String, String>,
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "fields", rename_all = "lowercase")]
pub enum Action {
    /// Create a missing resource.
    Create,
    /// Change these fields in place.
    Update(Vec<String>),
    /// These fields cannot change in place.
    Replace(Vec<String>),
    /// Delete.
    Delete,
}

/// One planned change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Resource key.
    pub key: String,
    /// Kind.
    #[serde(skip)]
    pub kind: Kind,
    /// `--only` group (None for orphans found by tag).
    #[serde(skip)]
    pub group: Option<Group>,
    /// What happens.
    #[serde(flatten)]
    pub action: Action,
}

/// An ordered list of changes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Changes in execution order.
    pub changes: Vec<Change>,
}

/// A plan that cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A resource with our name exists but is not tagged as ours.
    #[error(
        "{key} exists ({id}) but is not tagged kubernetes.io/cluster/<name>=owned; refusing to touch it"
    )]
    NotOwned {
        /// Key.
        key: String,
        /// AWS id.
        id: String,
    },
}

impl Plan {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Keep only changes of these groups (orphans are kept only without a filter).
    pub fn only(mut self, groups: &[Group]) -> Plan {
        if !groups.is_empty() {
            self.changes
                .retain(|c| c.group.is_some_and(|g| groups.contains(&g)));
        }
        self
    }

    /// Counts of (create, update, replace, delete).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut n = (0, 0, 0, 0);
        for c in &self.changes {
            match c.action {
                Action::Create => n.0 += 1,
                Action::Update(_) => n.1 += 1,
                Action::Replace(_) => n.2 += 1,
                Action::Delete => n.3 += 1,
            }
        }
        n
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            match &c.action {
                Action::Create => writeln!(f, "  + create  {}", c.key)?,
                Action::Update(fields) => {
                    writeln!(f, "  ~ update  {} ({})", c.key, fields.join(", "))?
                }
                Action::Replace(fields) => writeln!(
                    f,
                    "  ! replace {} ({}: cannot change in place)",
                    c.key,
                    fields.join(", ")
                )?,
                Action::Delete => writeln!(f, "  - delete  {}", c.key)?,
            }
        }
        let (c, u, r, d) = self.counts();
        if self.is_empty() {
            writeln!(f, "No changes: the cluster matches the spec.")
        } else {
            writeln!(
                f,
                "Plan: {c} to create, {u} to update, {r} to replace, {d} to delete."
            )
        }
    }
}

/// The plan that makes `observed` match `desired`.
pub fn diff(
    spec: &ClusterSpec,
    desired: &[Resource],
    observed: &BTreeMap<String, Observed>,
    known: &Known,
) -> Result<Plan, PlanError> {
    let mut changes = Vec::new();
    for r in desired {
        let action = match observed.get(&r.key) {
            None => Some(Action::Create),
            Some(o) if !o.owned && !o.adoptable => {
                return Err(PlanError::NotOwned {
                    key: r.key.clone(),
                    id: o.id.clone(),
                });
            }
            Some(o) => {
                let want = r.props(spec, known);
                let differing: Vec<String> = want
                    .iter()
                    .filter(|(k, v)| o.props.get(*k) != Some(*v))
                    .map(|(k, _)| k.clone())
                    .collect();
                if differing.is_empty() {
                    None
                } else if differing.iter().all(|f| r.updatable(f)) {
                    Some(Action::Update(differing))
                } else {
                    Some(Action::Replace(differing))
                }
            }
        };
        if let Some(action) = action {
            changes.push(Change {
                key: r.key.clone(),
                kind: r.kind,
                group: Some(r.group),
                action,
            });
        }
    }
    let wanted: std::collections::BTreeSet<&str> = desired.iter().map(|r| r.key.as_str()).collect();
    let mut deletes: Vec<Change> = observed
        .values()
        .filter(|o| o.owned && !wanted.contains(o.key.as_str()))
        .map(|o| Change {
            key: o.key.clone(),
            kind: o.kind,
            group: None,
            action: Action::Delete,
        })
        .collect();
    changes.sort_by(|a, b| (a.kind.level(), &a.key).cmp(&(b.kind.level(), &b.key)));
    deletes.sort_by(|a, b| (b.kind.level(), &a.key).cmp(&(a.kind.level(), &b.key)));
    changes.extend(deletes);
    Ok(Plan { changes })
}

/// The plan that deletes every owned resource, children first.
pub fn destroy(
    observed: &BTreeMap<String, Observed>,
    groups: &[Group],
    desired: &[Resource],
) -> Plan {
    let group_of: BTreeMap<&str, Group> =
        desired.iter().map(|r| (r.key.as_str(), r.group)).collect();
    let mut changes: Vec<Change> = observed
        .values()
        .filter(|o| o.owned)
        .map(|o| Change {
            key: o.key.clone(),
            kind: o.kind,
            group: group_of.get(o.key.as_str()).copied(),
            action: Action::Delete,
        })
        .collect();
    changes.sort_by(|a, b| (b.kind.level(), &a.key).cmp(&(a.kind.level(), &b.key)));
    Plan { changes }.only(groups)
}

#[cfg(test)]
mod tests;
