//! Controllers: kube-apiserver, kube-controller-manager and kube-scheduler as
//! static pods of the controller's own kubelet, each on its own node-client
//! credentials.
//!
//! Each pod has a unit (`static_pods.rs`) so that node-client's reloads
//! restart it. The apiserver's etcd servers change as etcd members are
//! replaced: `etcd-servers.service` (at boot, then every five minutes) asks
//! the etcd group (`node-client etcd-endpoints`) and rewrites the manifest,
//! which restarts the pod only when the list changed.

use super::{Parts, exec, json_text, l, static_pods, unit_text};
use crate::certs;
use crate::ignition::{File, Unit};
use crate::spec::ClusterSpec;
use serde_json::{Value, json};

/// The audit policy.
pub const AUDIT_POLICY: &str = "/etc/kubernetes/audit-policy.json";
/// The audit log folder.
pub const AUDIT_DIR: &str = "/var/log/kubernetes";
/// The etcd client URLs, as `ETCD_SERVERS=https://ip:2379,...`.
pub const ETCD_SERVERS_ENV: &str = "/run/kube-aws-pki/etcd-servers.env";
/// Marker replaced by the etcd client URLs.
pub const ETCD_SERVERS_MARK: &str = "@ETCD_SERVERS@";

/// The service-account issuer: the API's DNS name.
pub fn service_account_issuer(spec: &ClusterSpec) -> String {
    format!("https://{}:6443", crate::ignition::api_dns(spec))
}

/// kube-apiserver's flags (`--etcd-servers` is the boot-time marker).
pub fn apiserver_args(spec: &ClusterSpec) -> Vec<String> {
    let p = certs::path;
    vec![
        l("kube-apiserver"),
        l("--secure-port=6443"),
        l("--bind-address=0.0.0.0"),
        l("--allow-privileged=true"),
        l("--authorization-mode=Node,RBAC"),
        l("--enable-admission-plugins=NodeRestriction"),
        l("--anonymous-auth=true"),
        l("--profiling=false"),
        l("--tls-min-version=VersionTLS12"),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--client-ca-file={}", p("ca.crt")),
        format!("--kubelet-certificate-authority={}", p("ca.crt")),
        format!(
            "--kubelet-client-certificate={}",
            p("apiserver-kubelet-client.crt")
        ),
        format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        l("--kubelet-preferred-address-types=Hostname"),
        format!("--etcd-servers={ETCD_SERVERS_MARK}"),
        format!("--etcd-cafile={}", p("etcd-ca.crt")),
        format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
        format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
        format!("--service-cluster-ip-range={}", spec.service_cidr),
        format!("--service-account-issuer={}", service_account_issuer(spec)),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
        l("--requestheader-allowed-names=front-proxy-client"),
        l("--requestheader-username-headers=X-Remote-User"),
        l("--requestheader-group-headers=X-Remote-Group"),
        l("--requestheader-extra-headers-prefix=X-Remote-Extra-"),
        format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
        format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
        l("--enable-aggregator-routing=true"),
        format!("--audit-policy-file={AUDIT_POLICY}"),
        format!("--audit-log-path={AUDIT_DIR}/audit.log"),
        l("--audit-log-maxage=30"),
        l("--audit-log-maxbackup=10"),
        l("--audit-log-maxsize=100"),
    ]
}

/// kube-controller-manager's flags.
pub fn controller_manager_args(spec: &ClusterSpec) -> Vec<String> {
    let p = certs::path;
    let conf = p("controller-manager.conf");
    vec![
        l("kube-controller-manager"),
        format!("--kubeconfig={conf}"),
        format!("--authentication-kubeconfig={conf}"),
        format!("--authorization-kubeconfig={conf}"),
        format!("--client-ca-file={}", p("ca.crt")),
        format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
        format!("--root-ca-file={}", p("ca.crt")),
        format!("--service-account-private-key-file={}", p("sa.key")),
        l("--use-service-account-credentials=true"),
        l("--leader-elect=true"),
        l("--bind-address=127.0.0.1"),
        l("--profiling=false"),
        // The cluster CA key is in pki-server, not here: no CSR signing.
        l("--controllers=*,-csrsigning"),
        l("--allocate-node-cidrs=true"),
        format!("--cluster-cidr={}", spec.pod_cidr),
        format!("--service-cluster-ip-range={}", spec.service_cidr),
    ]
}

/// kube-scheduler's flags.
pub fn scheduler_args() -> Vec<String> {
    let conf = certs::path("scheduler.conf");
    vec![
        l("kube-scheduler"),
        format!("--kubeconfig={conf}"),
        format!("--authentication-kubeconfig={conf}"),
        format!("--authorization-kubeconfig={conf}"),
        l("--leader-elect=true"),
        l("--bind-address=127.0.0.1"),
        l("--profiling=false"),
    ]
}

fn host_path(name: &str, path: &str, kind: &str) -> Value {
    json!({"name": name, "hostPath": {"path": path, "type": kind}})
}

fn mount(name: &str, path: &str, read_only: bool) -> Value {
    json!({"name": name, "mountPath": path, "readOnly": read_only})
}

/// A control-plane static pod: host network, read-only the credential files
/// its flags name (and those their kubeconfigs name), an HTTPS liveness probe
/// on loopback.
pub fn static_pod(
    name: &str,
    image: String,
    args: Vec<String>,
    probe_port: u16,
    extra_volumes: Vec<(Value, Value)>,
) -> Value {
    let (mut volumes, mut mounts) =
        certs::pod_mounts(&certs::needed_files(certs::flag_paths(&args)));
    for (v, m) in extra_volumes {
        volumes.push(v);
        mounts.push(m);
    }
    let (command, rest) = args
        .split_first()
        .map(|(c, r)| (c.clone(), r.to_vec()))
        .unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": {"component": name, "tier": "control-plane"}
        },
        "spec": {
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": name,
                "image": image,
                "command": [command],
                "args": rest,
                "livenessProbe": {
                    "httpGet": {"host": "127.0.0.1", "path": "/livez", "port": probe_port, "scheme": "HTTPS"},
                    "initialDelaySeconds": 15,
                    "timeoutSeconds": 15,
                    "failureThreshold": 8
                },
                "resources": {"requests": {"cpu": "100m"}},
                "volumeMounts": mounts
            }],
            "volumes": volumes
        }
    })
}

/// The kube-apiserver static pod (with the etcd servers marker).
pub fn apiserver_pod(spec: &ClusterSpec) -> Value {
    let mut pod = static_pod(
        "kube-apiserver",
        format!("registry.k8s.io/kube-apiserver:v{}", spec.pins.kubernetes),
        apiserver_args(spec),
        6443,
        vec![
            (
                host_path("audit-policy", AUDIT_POLICY, "File"),
                mount("audit-policy", AUDIT_POLICY, true),
            ),
            (
                host_path("audit-log", AUDIT_DIR, "DirectoryOrCreate"),
                mount("audit-log", AUDIT_DIR, false),
            ),
        ],
    );
    pod["spec"]["containers"][0]["readinessProbe"] = json!({
        "httpGet": {"host": "127.0.0.1", "path": "/readyz", "port": 6443, "scheme": "HTTPS"},
        "periodSeconds": 1,
        "timeoutSeconds": 15
    });
    pod
}

/// The audit policy: metadata for everything, no request or response bodies
/// (Secrets and tokens never reach the log), nothing for health probes.
pub fn audit_policy() -> Value {
    json!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version"]},
            {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"]},
            {"level": "Metadata"}
        ]
    })
}

/// The controller's control-plane parts.
pub fn parts(spec: &ClusterSpec) -> Parts {
    let k = &spec.pins.kubernetes;
    let cm = static_pod(
        "kube-controller-manager",
        format!("registry.k8s.io/kube-controller-manager:v{k}"),
        controller_manager_args(spec),
        10257,
        vec![],
    );
    let sched = static_pod(
        "kube-scheduler",
        format!("registry.k8s.io/kube-scheduler:v{k}"),
        scheduler_args(),
        10259,
        vec![],
    );
    let mut files = vec![File::text(AUDIT_POLICY, 0o644, &json_text(&audit_policy()))];
    let mut units = Vec::new();
    for (name, pod, extra) in [
        (
            "kube-apiserver",
            apiserver_pod(spec),
            vec![
                // Wants, not Requires: a reload (try-restart) must not
                // depend on AWS; the script refuses to write without servers.
                l("Wants=etcd-servers.service"),
                l("After=etcd-servers.service"),
            ],
        ),
        ("kube-controller-manager", cm, vec![]),
        ("kube-scheduler", sched, vec![]),
    ] {
        let (f, u) = static_pods::pod(name, pod, extra);
        files.push(f);
        units.push(u);
    }
    units.push(Unit::static_unit(
        "etcd-servers.service",
        unit_text(&[
            (
                "Unit",
                vec![
                    l("Description=the etcd members' client URLs, from the etcd auto scaling group"),
                    l("Wants=network-online.target"),
                    l("After=network-online.target"),
                ],
            ),
            (
                "Service",
                vec![
                    l("Type=oneshot"),
                    format!("EnvironmentFile={}", node_client::units::ENV_FILE),
                    exec(
                        node_client::units::BINARY_PATH,
                        &[
                            l("etcd-endpoints"),
                            format!("--asg {}-etcd", spec.name),
                            format!("--out {ETCD_SERVERS_ENV}"),
                        ],
                    ),
                    // A changed member list rewrites the manifest (no new stamp).
                    format!("ExecStartPost={} kube-apiserver", static_pods::SCRIPT),
                    l("Restart=on-failure"),
                    l("RestartSec=30"),
                ],
            ),
        ]),
    ));
    units.push(Unit::new(
        "etcd-servers.timer",
        unit_text(&[
            (
                "Unit",
                vec![l("Description=follow etcd member replacements")],
            ),
            (
                "Timer",
                // Spread the controllers: one member change must not
                // restart every apiserver at once.
                vec![
                    l("OnBootSec=5min"),
                    l("OnUnitActiveSec=5min"),
                    l("RandomizedDelaySec=2min"),
                ],
            ),
            ("Install", vec![l("WantedBy=timers.target")]),
        ]),
    ));
    Parts {
        files,
        filesystems: vec![],
        units,
    }
}
