//! Controllers and workers: containerd, the CNI plugins, the kubelet with its
//! KubeletConfiguration, and kube-proxy as a static pod.
//!
//! The kubelet registers as `${NODE_NAME}`, the name node-client put in its
//! certificates (the instance's private DNS name), serves with node-client's
//! `kubelet.crt`, and does not rotate certificates itself: node-client renews
//! them and restarts it.

use super::{
    DOWNLOADS, MANIFESTS, NODE_ENV, Parts, exec, json_text, l, static_pods, unit_text, unpack_unit,
};
use crate::certs;
use crate::ignition::{File, Unit};
use crate::spec::{ClusterSpec, Role};
use serde_json::{Value, json};

/// The KubeletConfiguration file.
pub const KUBELET_CONFIG: &str = "/etc/kubernetes/kubelet.json";
/// The KubeProxyConfiguration file.
pub const KUBE_PROXY_CONFIG: &str = "/etc/kubernetes/kube-proxy.json";
/// containerd's configuration.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// The CNI plugin binaries.
pub const CNI_BIN: &str = "/opt/cni/bin";

/// The KubeletConfiguration.
pub fn kubelet_config(spec: &ClusterSpec) -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": certs::path("ca.crt")}
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": certs::path("kubelet.crt"),
        "tlsPrivateKeyFile": certs::path("kubelet.key"),
        "tlsMinVersion": "VersionTLS12",
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        "readOnlyPort": 0,
        "clusterDNS": [spec.cluster_dns.to_string()],
        "clusterDomain": spec.cluster_domain,
        "cgroupDriver": "systemd",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "staticPodPath": MANIFESTS,
        "resolvConf": "/run/systemd/resolve/resolv.conf",
        "healthzBindAddress": "127.0.0.1",
        "eventRecordQPS": 5,
        "protectKernelDefaults": false
    })
}

/// The KubeProxyConfiguration.
pub fn kube_proxy_config(spec: &ClusterSpec) -> Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": certs::path("kube-proxy.conf")},
        "clusterCIDR": spec.pod_cidr.to_string(),
        "mode": "iptables",
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "0.0.0.0:10256"
    })
}

/// The kube-proxy static pod: its config, its kubeconfig (node-client's), and
/// the node name the kubelet gave the pod.
pub fn kube_proxy_pod(spec: &ClusterSpec) -> Value {
    let (pki_volumes, pki_mounts) = certs::pod_mounts(&certs::needed_files(
        kube_proxy_config(spec)["clientConnection"]["kubeconfig"].as_str(),
    ));
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
        "spec": {
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "kube-proxy",
                "image": format!("registry.k8s.io/kube-proxy:v{}", spec.pins.kubernetes),
                "command": ["kube-proxy"],
                "args": [
                    format!("--config={KUBE_PROXY_CONFIG}"),
                    "--hostname-override=$(NODE_NAME)"
                ],
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "securityContext": {"privileged": true},
                "volumeMounts": [
                    {"name": "config", "mountPath": KUBE_PROXY_CONFIG, "readOnly": true},
                    {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                    {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "config", "hostPath": {"path": KUBE_PROXY_CONFIG, "type": "File"}},
                {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}}
            ]
        }
    });
    let c = &mut pod["spec"]["containers"][0];
    if let Some(m) = c["volumeMounts"].as_array_mut() {
        m.extend(pki_mounts);
    }
    if let Some(v) = pod["spec"]["volumes"].as_array_mut() {
        v.extend(pki_volumes);
    }
    pod
}

/// containerd's configuration: systemd cgroups, CNI from `CNI_BIN`.
pub fn containerd_config() -> String {
    format!(
        "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_unprivileged_ports = false\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{CNI_BIN}\"\n  conf_dir = \"/etc/cni/net.d\"\n"
    )
}

/// The kubelet's command line.
pub fn kubelet_args(role: Role) -> Vec<String> {
    let mut a = vec![
        format!("--config={KUBELET_CONFIG}"),
        format!("--kubeconfig={}", certs::path("kubelet.conf")),
        l("--hostname-override=${NODE_NAME}"),
        l("--node-ip=${NODE_IP}"),
        format!("--node-labels=kube-aws-pki.io/role={}", role.name()),
    ];
    if role == Role::Controller {
        a.push(l(
            "--register-with-taints=node-role.kubernetes.io/control-plane=:NoSchedule",
        ));
    }
    a
}

/// The parts of a node that runs a kubelet.
pub fn parts(spec: &ClusterSpec, role: Role) -> Parts {
    let pins = &spec.pins;
    let cni = format!("{DOWNLOADS}/{}", pins.cni_tarball.key);
    let mut files = vec![
        File::download("/opt/bin/kubelet", 0o755, &pins.kubelet),
        File::download(&cni, 0o644, &pins.cni_tarball),
        File::text(CONTAINERD_CONFIG, 0o644, &containerd_config()),
        File::text(KUBELET_CONFIG, 0o644, &json_text(&kubelet_config(spec))),
        File::text(
            KUBE_PROXY_CONFIG,
            0o644,
            &json_text(&kube_proxy_config(spec)),
        ),
        static_pods::script_file(),
        // Bridged traffic through iptables, forwarding on (kube-proxy, CNI).
        File::text(
            "/etc/sysctl.d/80-kubernetes.conf",
            0o644,
            "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n",
        ),
        File::text(
            "/etc/modules-load.d/kubernetes.conf",
            0o644,
            "br_netfilter\n",
        ),
    ];
    if role == Role::Controller {
        files.push(File::download("/opt/bin/kubectl", 0o755, &pins.kubectl));
    }
    let (proxy_template, proxy_unit) = static_pods::pod("kube-proxy", kube_proxy_pod(spec), vec![]);
    files.push(proxy_template);
    Parts {
        files,
        filesystems: vec![],
        units: vec![
            proxy_unit,
            Unit::dropin(
                "containerd.service",
                "10-kube-aws-pki.conf",
                unit_text(&[(
                    "Service",
                    vec![format!("Environment=CONTAINERD_CONFIG={CONTAINERD_CONFIG}")],
                )]),
            ),
            unpack_unit(
                "cni-plugins-install.service",
                &format!(
                    "unpack the CNI plugins v{} (verified by Ignition against their SHA-256)",
                    pins.cni_plugins
                ),
                &pins.cni_plugins,
                &cni,
                CNI_BIN,
                "--no-same-owner",
            ),
            Unit::new(
                "kubelet.service",
                unit_text(&[
                    (
                        "Unit",
                        vec![
                            format!("Description=Kubernetes node agent v{}", pins.kubernetes),
                            l(
                                "Requires=node-client-fetch.service containerd.service cni-plugins-install.service",
                            ),
                            l(
                                "After=node-client-fetch.service containerd.service cni-plugins-install.service",
                            ),
                        ],
                    ),
                    (
                        "Service",
                        vec![
                            format!("EnvironmentFile={NODE_ENV}"),
                            format!(
                                "ExecStartPre=/usr/bin/mkdir -p {MANIFESTS} /var/lib/kubelet /etc/cni/net.d"
                            ),
                            exec("/opt/bin/kubelet", &kubelet_args(role)),
                            l("Restart=always"),
                            l("RestartSec=5"),
                        ],
                    ),
                    ("Install", vec![l("WantedBy=multi-user.target")]),
                ]),
            ),
        ],
    }
}
