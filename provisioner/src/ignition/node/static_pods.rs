//! Static pods with a systemd unit each, so that node-client's reload
//! commands (`systemctl try-restart kube-apiserver.service`, ...) restart them.
//!
//! The kubelet runs what `/etc/kubernetes/manifests` holds and recreates a pod
//! when its manifest changes. Each pod's manifest is written from a template
//! (`/etc/kubernetes/static-pods/<name>.json`) by [`SCRIPT`], which fills in
//! `@RESTART@` (a pod annotation: a stamp renewed on `--restart`) and
//! `@ETCD_SERVERS@` (the apiserver's etcd members, from `etcd-endpoints`), and
//! replaces the manifest only when the text changed. `<name>.service` is a
//! oneshot that runs it with `--restart`: starting or restarting the unit
//! (re)starts the pod with the files node-client just wrote; the etcd timer
//! runs it without, so the pod restarts only when the member list changed.

use super::{MANIFESTS, json_text, l, unit_text};
use crate::ignition::{File, Unit};
use serde_json::Value;

/// The templates.
pub const TEMPLATES: &str = "/etc/kubernetes/static-pods";
/// The renderer.
pub const SCRIPT: &str = "/opt/kube-aws-pki/static-pod";
/// Marker of the restart stamp.
pub const RESTART_MARK: &str = "@RESTART@";
/// The annotation that carries it.
pub const RESTART_ANNOTATION: &str = "kube-aws-pki.io/restarted-at";

/// The renderer script (POSIX sh; `KUBE_AWS_PKI_ROOT` prefixes every path,
/// for tests).
pub fn script() -> String {
    format!(
        r#"#!/bin/sh
# static-pod NAME [--restart]: write {MANIFESTS}/NAME.json from
# {TEMPLATES}/NAME.json, filling in the restart stamp and the etcd
# servers; the manifest is replaced only when its text changed (the kubelet
# then recreates the pod). --restart renews the stamp.
set -eu
root="${{KUBE_AWS_PKI_ROOT:-}}"
name="$1"
in="$root{TEMPLATES}/$name.json"
out="$root{MANIFESTS}/$name.json"
stamp="$root/run/kube-aws-pki/$name.restart"
mkdir -p "$root/run/kube-aws-pki" "$root{MANIFESTS}"
if [ "${{2:-}}" = --restart ] || [ ! -s "$stamp" ]; then
  date -u +%Y%m%dT%H%M%S.%N > "$stamp"
fi
ETCD_SERVERS=
if [ -r "$root{servers}" ]; then
  . "$root{servers}"
fi
if [ -z "$ETCD_SERVERS" ] && grep -q @ETCD_SERVERS@ "$in"; then
  echo "static-pod $name: no etcd servers known yet ({servers})" >&2
  exit 1
fi
# A dot file: the kubelet ignores it until the rename.
tmp="$(mktemp "$root{MANIFESTS}/.$name.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
sed -e "s|@ETCD_SERVERS@|$ETCD_SERVERS|" -e "s|{RESTART_MARK}|$(cat "$stamp")|" "$in" > "$tmp"
if cmp -s "$tmp" "$out"; then
  :
else
  chmod 0644 "$tmp"
  mv -f "$tmp" "$out"
  echo "wrote $out"
fi
"#,
        servers = super::control_plane::ETCD_SERVERS_ENV,
    )
}

/// The script file (every role with static pods carries it).
pub fn script_file() -> File {
    File::text(SCRIPT, 0o755, &script())
}

/// A pod's template and its unit. `pod` gets the restart annotation.
pub fn pod(name: &str, mut pod: Value, unit_lines: Vec<String>) -> (File, Unit) {
    pod["metadata"]["annotations"][RESTART_ANNOTATION] = Value::from(RESTART_MARK);
    let mut unit = vec![
        format!("Description={name} (static pod; restarting this unit restarts the pod)"),
        l("Requires=node-client-fetch.service"),
        l("After=node-client-fetch.service"),
    ];
    unit.extend(unit_lines);
    (
        File::text(&format!("{TEMPLATES}/{name}.json"), 0o644, &json_text(&pod)),
        Unit::new(
            &format!("{name}.service"),
            unit_text(&[
                ("Unit", unit),
                (
                    "Service",
                    vec![
                        l("Type=oneshot"),
                        l("RemainAfterExit=true"),
                        format!("ExecStart={SCRIPT} {name} --restart"),
                    ],
                ),
                ("Install", vec![l("WantedBy=multi-user.target")]),
            ]),
        ),
    )
}
