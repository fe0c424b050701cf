//! The local etcd members: the etcd role's rendered `etcd-member.service`
//! run here with its paths remapped, membership by `node-client etcd-join`.

use super::*;

/// The three etcd members from the etcd role's rendered unit, membership by
/// `node-client etcd-join`, checked with the controller's etcd client
/// certificate; their client URLs (None: etcd is not installed here).
pub(super) async fn start_etcd(
    dir: &Path,
    spec: &crate::spec::ClusterSpec,
    node_client: &Path,
    all: &[LocalNode],
) -> anyhow::Result<Option<String>> {
    // --- etcd ---
    if !(on_path("etcd") && on_path("etcdctl")) {
        println!(
            "etcd is not installed here (apt-get install etcd-server etcd-client): no etcd cluster started"
        );
        return Ok(None);
    }
    let members: Vec<&LocalNode> = all.iter().filter(|n| n.role == "etcd").collect();
    let ports: Vec<(u16, u16)> = members.iter().map(|_| (2379, 2380)).collect();
    // etcd runs from the etcd nodes' own rendered unit: the same command line,
    // environment and membership step (`node-client etcd-join`, here with the
    // peers listed instead of read from the auto scaling group).
    // The unit exactly as the etcd role's Ignition carries it.
    let unit = crate::ignition::config(spec, crate::spec::Role::Etcd)
        .systemd
        .units
        .into_iter()
        .find(|u| u.name == "etcd-member.service")
        .and_then(|u| u.contents)
        .context("the etcd role's Ignition has no etcd-member.service")?;
    let peers = members
        .iter()
        .map(|n| format!("{}={}", n.name, n.ip))
        .collect::<Vec<_>>()
        .join(",");
    for n in &members {
        let home = dir.join("nodes").join(&n.name);
        let pid_file = home.join("etcd.pid");
        if let Some(pid) = our_pid(&pid_file, "etcd") {
            step(&format!("{}: etcd already running (pid {pid})", n.name));
            continue;
        }
        let pki = home.join("pki");
        let data = home.join("etcd-data");
        let ip = n.ip.to_string();
        let membership = home.join("etcd.env");
        let out = Command::new(node_client)
            .arg("etcd-join")
            .args(["--discover", "static", "--peers", &peers])
            .args(["--name", &n.name, "--ip", &ip])
            .args(["--cluster-token", &format!("{}-local", spec.name)])
            .arg("--data-dir")
            .arg(&data)
            .args(["--etcdctl", "etcdctl", "--wait", "5"])
            .arg("--cacert")
            .arg(pki.join("etcd-ca.crt"))
            .arg("--cert")
            .arg(pki.join("etcd-member.crt"))
            .arg("--key")
            .arg(pki.join("etcd-member.key"))
            .arg("--out")
            .arg(&membership)
            .output()
            .context("running node-client etcd-join")?;
        ensure!(
            out.status.success(),
            "node-client etcd-join for {}: {}",
            n.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let node_env = vec![
            ("NODE_NAME".to_string(), n.name.clone()),
            ("NODE_IP".to_string(), ip.clone()),
        ];
        let mut cmd = etcd_from_unit(&unit, node_env, &membership, &pki, &data, &ip)?;
        let pid = spawn_detached(&mut cmd, &home.join("etcd.log"), &pid_file)?;
        step(&format!(
            "{}: started etcd (pid {pid}) at https://{}:2379 from the rendered etcd-member.service",
            n.name, n.ip
        ));
    }

    // --- smoke test ---
    let ctl = dir.join("nodes/controller-0/pki");
    let endpoints = members
        .iter()
        .zip(&ports)
        .map(|(n, (c, _))| format!("https://{}:{c}", n.ip))
        .collect::<Vec<_>>()
        .join(",");
    let etcdctl = |args: &[&str]| {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", ctl.join("etcd-ca.crt").display()))
            .arg(format!(
                "--cert={}",
                ctl.join("apiserver-etcd-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                ctl.join("apiserver-etcd-client.key").display()
            ))
            .args(["--dial-timeout=2s", "--command-timeout=3s"])
            .args(args);
        c.output()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcdctl(&["endpoint", "health"])?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && said.matches("is healthy").count() == members.len() {
            println!(
                "smoke test: etcdctl endpoint health (controller-0's apiserver-etcd-client certificate)"
            );
            for l in said.lines() {
                println!("  {l}");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "smoke test failed: etcd not healthy after 60s: {said}\nlogs: {}/nodes/etcd-*/etcd.log",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(Some(endpoints))
}

/// The etcd command of the rendered `etcd-member.service`, for one local
/// member: the unit's paths remapped into the member's folder (`/etc/kubernetes/pki`
/// → `pki`, `/var/lib/etcd` → `data`, `/opt/etcd/etcd` → the `etcd` on PATH),
/// the node env and the membership file as the unit reads them. The one
/// value changed: three members share this host's loopback, so each serves
/// metrics on its own loopback address instead of 127.0.0.1.
pub fn etcd_from_unit(
    unit: &str,
    node_env: Vec<(String, String)>,
    membership: &Path,
    pki: &Path,
    data: &Path,
    ip: &str,
) -> anyhow::Result<Command> {
    use crate::ignition::node::{NODE_ENV, etcd};
    let svc = crate::unit_exec::parse(unit)?;
    let mut env: std::collections::BTreeMap<String, String> = Default::default();
    for f in &svc.environment_files {
        let vars = match f.as_str() {
            NODE_ENV => node_env.clone(),
            etcd::MEMBERSHIP_ENV => crate::unit_exec::read_env_file(membership)?,
            other => {
                bail!("etcd-member.service reads {other}, which the local target does not remap")
            }
        };
        env.extend(vars);
    }
    env.extend(svc.environment.iter().cloned());
    let remap = |v: &str| -> String {
        if let Some(rest) = v.strip_prefix(crate::certs::DIR) {
            return format!("{}{rest}", pki.display());
        }
        if let Some(rest) = v.strip_prefix(etcd::DATA_DIR) {
            return format!("{}{rest}", data.display());
        }
        v.to_string()
    };
    for v in env.values_mut() {
        *v = remap(v);
    }
    ensure!(
        env.get("ETCD_LISTEN_METRICS_URLS").map(String::as_str) == Some(etcd::METRICS_URL),
        "etcd-member.service must serve metrics on {} only",
        etcd::METRICS_URL
    );
    env.insert(
        "ETCD_LISTEN_METRICS_URLS".into(),
        format!("http://{ip}:2381"),
    );
    let argv = crate::unit_exec::expand(&svc.exec_start, &env)?;
    let Some((program, args)) = argv.split_first() else {
        bail!("etcd-member.service has an empty ExecStart");
    };
    ensure!(
        program == &format!("{}/etcd", etcd::BIN_DIR),
        "etcd-member.service runs {program}, not etcd"
    );
    let mut cmd = Command::new("etcd");
    scrub_env(&mut cmd, |k| k.starts_with("ETCD"));
    for a in args {
        if let Some((flag, value)) = a.split_once('=') {
            cmd.arg(format!("{flag}={}", remap(value)));
        } else {
            cmd.arg(remap(a));
        }
    }
    cmd.envs(env.iter().filter(|(k, _)| k.starts_with("ETCD_")));
    cmd.args(["--logger", "zap", "--log-outputs", "stderr"]);
    Ok(cmd)
}
