//! The rendered user data, checked from outside: every role's Ignition passes
//! Debian's `ignition-validate`, every unit (with its drop-ins) passes
//! `systemd-analyze verify` with stub binaries, and the safety checks of
//! issue #9: no secret in any role's user data, no controller or etcd
//! credential path on a worker, no insecure apiserver port, no anonymous
//! kubelet, every CIDR/IP flag value is the spec's, and the pki-server CA
//! moves between our own binaries (no container image).
//! Tools missing: skip locally, panic under CI=true.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use provisioner::ignition::{self, Config};
use provisioner::spec::{ClusterSpec, Role};

/// Whether missing test tools must fail the run (CI) rather than skip.
fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `name` on PATH (or in /usr/bin), or None (skip) — panics under CI=true.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if required() {
            panic!(
                "{name} is missing: apt-get install {package} or run tests/harness.sh setup (CI=true: tests never skip)"
            );
        }
        eprintln!("SKIPPED: {name} not found; apt-get install {package}");
    }
    found
}

fn spec() -> ClusterSpec {
    ClusterSpec::parse("name = \"demo\"\n").expect("spec")
}

/// A spec whose network values all differ from the defaults.
fn custom_spec() -> ClusterSpec {
    ClusterSpec::parse(
        "name = \"other\"\nservice_cidr = \"172.20.0.0/16\"\npod_cidr = \"172.30.0.0/16\"\ncluster_dns = \"172.20.0.53\"\n",
    )
    .expect("custom spec")
}

/// Undo `data:,` percent-encoding (the only data URLs the provisioner emits).
fn data_text(source: &str) -> Option<String> {
    source
        .starts_with("data:,")
        .then(|| ignition::data_text(source).expect("a valid data: URL"))
}

/// A rendered config with the public SHA-256 pins (`verification.hash`) and
/// their download URLs blanked: they are long runs by nature, and published.
fn without_pins(json: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).expect("json");
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(h) = m.get_mut("verification") {
                    let hash = h["hash"].as_str().unwrap_or_default();
                    assert!(
                        hash.starts_with("sha256-") && hash.len() == 7 + 64,
                        "verification hash {hash}"
                    );
                    *h = serde_json::json!({"hash": "sha256-PIN"});
                    // The pinned download's public URL (release paths are
                    // long runs of letters and slashes).
                    if let Some(src) = m.get_mut("source")
                        && src.as_str().is_some_and(|s| s.starts_with("https://"))
                    {
                        *src = serde_json::json!("https://PUBLIC-DOWNLOAD");
                    }
                }
                // Inline files are scanned decoded (user_data_texts), not
                // percent-encoded.
                if let Some(src) = m.get_mut("source")
                    && src.as_str().is_some_and(|s| s.starts_with("data:,"))
                {
                    *src = serde_json::json!("data:,SCANNED-DECODED");
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v.to_string()
}

/// Everything a node can read of `role`'s user data: the pointer, the full
/// config it points at (both with the public download pins blanked), every
/// inline file decoded and every unit.
fn user_data_texts(spec: &ClusterSpec, role: Role) -> Vec<String> {
    let mut texts = vec![
        without_pins(&ignition::user_data(spec, role)),
        without_pins(&ignition::render(spec, role)),
    ];
    for f in ignition::config(spec, role).storage.files {
        texts.extend(data_text(&f.contents.source));
    }
    for u in ignition::config(spec, role).systemd.units {
        texts.extend(u.contents);
        texts.extend(u.dropins.into_iter().map(|d| d.contents));
    }
    texts
}

// --- 1. ignition-validate ---------------------------------------------------

#[test]
fn every_role_passes_ignition_validate_without_warnings() {
    let Some(validate) = tool("ignition-validate", "ignition") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Every option that adds to the config: SSH keys (passwd), the strategies
    // that mask or keep units, a custom network.
    let mut with_ssh = ClusterSpec::parse(
        "name = \"demo\"\n[access]\nssh = \"per-role\"\n[updates]\netcd = \"disabled\"\nworker = \"reboot\"\n",
    )
    .unwrap();
    for role in [Role::Etcd, Role::Controller, Role::Worker] {
        with_ssh.ssh_keys.insert(
            role,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0ZXN0a2V5Zm9ydGhlaWdpdGlvbnZhbGlkYXRlIQ core@demo"
                .into(),
        );
    }
    let cases = [
        ("default", spec()),
        ("custom", custom_spec()),
        ("ssh+updates", with_ssh),
    ];
    for (case, role) in cases
        .iter()
        .flat_map(|(c, s)| Role::ALL.map(|r| ((*c, s), r)))
    {
        let (case, spec) = case;
        let path = dir.path().join(format!("{case}-{}.ign", role.name()));
        std::fs::write(&path, ignition::render(spec, role)).unwrap();
        let pointer = dir
            .path()
            .join(format!("{case}-{}-pointer.ign", role.name()));
        std::fs::write(&pointer, ignition::user_data(spec, role)).unwrap();
        let out = Command::new(&validate).arg(&pointer).output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{case} {role}: ignition-validate on the user data pointer: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(&validate).arg(&path).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{role}: ignition-validate failed: {text}"
        );
        assert!(
            text.trim().is_empty(),
            "{role}: ignition-validate warned: {text}"
        );
    }
}

// --- 2. systemd-analyze verify ----------------------------------------------

/// Units the rendered ones depend on that Flatcar's image ships.
const IMAGE_UNITS: &[&str] = &["coreos-metadata.service", "containerd.service"];

/// `Exec*=` keys systemd knows.
const EXEC_KEYS: &[&str] = &[
    "ExecCondition",
    "ExecStartPre",
    "ExecStart",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
];

/// `text` with each `Exec*=` command whose executable does not exist here
/// pointed at an executable stub under `stubs` (same path below it).
fn stub_executables(text: &str, stubs: &Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_string();
        if let Some((key, value)) = line.split_once('=')
            && EXEC_KEYS.contains(&key.trim())
        {
            let cmd = value.trim_start_matches(['-', '@', ':', '+', '!', '|']);
            let exe = cmd.split_whitespace().next().unwrap_or_default();
            if exe.starts_with('/') && !Path::new(exe).is_file() {
                let stub = stubs.join(exe.trim_start_matches('/'));
                std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
                std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
                std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
                let at = key.len() + 1 + (value.len() - cmd.len());
                line.replace_range(at..at + exe.len(), stub.to_str().unwrap());
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Write `config`'s units and drop-ins (stubbed) under `dir`; the names of
/// units with their own text.
fn write_units(config: &Config, dir: &Path, stubs: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for unit in &config.systemd.units {
        if let Some(text) = &unit.contents {
            std::fs::write(dir.join(&unit.name), stub_executables(text, stubs)).unwrap();
            names.push(unit.name.clone());
        }
        if !unit.dropins.is_empty() {
            let d = dir.join(format!("{}.d", unit.name));
            std::fs::create_dir_all(&d).unwrap();
            for dropin in &unit.dropins {
                assert!(dropin.name.ends_with(".conf"), "{}", dropin.name);
                std::fs::write(
                    d.join(&dropin.name),
                    stub_executables(&dropin.contents, stubs),
                )
                .unwrap();
            }
        }
    }
    for image in IMAGE_UNITS {
        if !names.iter().any(|n| n == image) {
            std::fs::write(
                dir.join(image),
                "[Unit]\nDescription=stub of a unit Flatcar ships\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
            )
            .unwrap();
        }
    }
    names
}

#[test]
fn stub_executables_rewrites_only_missing_executables() {
    let stubs = tempfile::tempdir().unwrap();
    let text = "[Service]\nExecStartPre=-/usr/bin/mkdir -p /x\nExecStart=/opt/bin/nope --flag /opt/bin/nope\nEnvironment=A=/opt/bin/nope\n";
    let out = stub_executables(text, stubs.path());
    let stub = stubs.path().join("opt/bin/nope");
    assert!(
        out.contains("ExecStartPre=-/usr/bin/mkdir -p /x\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "ExecStart={} --flag /opt/bin/nope\n",
            stub.display()
        )),
        "{out}"
    );
    assert!(out.contains("Environment=A=/opt/bin/nope\n"), "{out}");
    assert!(stub.is_file());
}

/// `systemd-analyze verify` on `config`'s units: Ok(output about host units
/// only), or Err(everything it printed) when it complains about ours.
fn verify(analyze: &Path, config: &Config) -> Result<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let units = tmp.path().join("units");
    let stubs = tmp.path().join("stubs");
    std::fs::create_dir_all(&units).unwrap();
    let names = write_units(config, &units, &stubs);
    assert!(!names.is_empty(), "no units");
    // The unit folder first, then the host's (the trailing ':'), so
    // multi-user.target and network-online.target resolve.
    let out = Command::new(analyze)
        .args(["verify", "--man=no", "--generators=no"])
        .args(names.iter().map(|n| units.join(n)))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let text = format!(
        "status {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Complaints about the host's own units are not ours to fix.
    let ours = text.lines().any(|l| {
        l.contains(tmp.path().to_str().unwrap()) || names.iter().any(|n| l.contains(n.as_str()))
    });
    if out.status.success() && !ours {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn every_rendered_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    for spec in [spec(), custom_spec()] {
        for role in Role::ALL {
            match verify(&analyze, &ignition::config(&spec, role)) {
                Ok(text) if text.lines().count() > 1 => {
                    eprintln!("{role}: systemd-analyze (host units only):\n{text}")
                }
                Ok(_) => {}
                Err(text) => panic!("{role}: systemd-analyze verify:\n{text}"),
            }
        }
    }
}

#[test]
fn systemd_analyze_verify_catches_broken_units() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let unit = |name: &str, text: &str| ignition::Unit::new(name, text.into());
    let config = |units: Vec<ignition::Unit>| Config {
        ignition: ignition::Ignition {
            version: ignition::VERSION.into(),
            config: None,
        },
        passwd: ignition::Passwd::default(),
        storage: ignition::Storage {
            filesystems: vec![],
            files: vec![],
        },
        systemd: ignition::Systemd { units },
    };
    let good = "[Unit]\nDescription=x\n\n[Service]\nExecStart=/opt/bin/x\n\n[Install]\nWantedBy=multi-user.target\n";
    assert!(verify(&analyze, &config(vec![unit("x.service", good)])).is_ok());
    for (why, text, dropin) in [
        (
            "a Requires= on a unit neither rendered nor in the image",
            "[Unit]\nRequires=nowhere.service\n[Service]\nExecStart=/opt/bin/x\n",
            None,
        ),
        (
            "an unknown key",
            "[Service]\nExecStart=/opt/bin/x\nExecStrat=/opt/bin/y\n",
            None,
        ),
        (
            "a relative executable",
            "[Service]\nExecStart=opt/bin/x\n",
            None,
        ),
        (
            "an unknown key in a drop-in",
            good,
            Some("[Service]\nBogus=1\n"),
        ),
    ] {
        let mut u = unit("x.service", text);
        if let Some(d) = dropin {
            u.dropins.push(ignition::Dropin {
                name: "10-x.conf".into(),
                contents: d.into(),
            });
        }
        assert!(
            verify(&analyze, &config(vec![u])).is_err(),
            "systemd-analyze verify missed {why}"
        );
    }
}

// --- 3. safety checks ---------------------------------------------------------

/// Something in `text` that looks like a secret: a private key, a Vault /
/// OpenBao token, an unseal share (base64 or hex, as `operator init` prints
/// them) or the names `operator init` gives those.
fn secret_in(text: &str) -> Option<String> {
    for marker in [
        "PRIVATE KEY",
        "hvs.",
        "hvb.",
        "hvr.",
        "s.ABCDEFGH",
        "unseal_keys",
        "recovery_keys",
        "root_token",
        "VAULT_TOKEN=hv",
    ] {
        if text.contains(marker) {
            return Some(marker.to_string());
        }
    }
    // Unseal shares and tokens are long runs of base64 or hex; nothing the
    // provisioner writes (paths, names, flags) has 40 such characters in a row.
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=' {
            run.push(c);
        } else {
            let long = run.len() >= 40 && run.chars().any(|c| c.is_ascii_digit());
            if long {
                return Some(run);
            }
            run.clear();
        }
    }
    None
}

#[test]
fn secret_detector_finds_keys_tokens_and_unseal_shares() {
    for secret in [
        "-----BEGIN EC PRIVATE KEY-----",
        "VAULT_TOKEN=hvs.CAESIJ2Q0xWm",
        "share Xu0vB1g9yq3ZzqJ1bB3K0n5m2zV6pY8rL4cW7eT1sAo=",
        "c1f5a8e3d4b2a0978f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918070",
    ] {
        assert!(secret_in(secret).is_some(), "missed {secret}");
    }
    assert_eq!(
        secret_in("ExecStart=/opt/bin/node-client fetch-cert --out /etc/kubernetes/pki"),
        None
    );
}

#[test]
fn no_role_user_data_holds_a_private_key_token_or_unseal_share() {
    for spec in [spec(), custom_spec()] {
        for role in Role::ALL {
            for text in user_data_texts(&spec, role) {
                if let Some(found) = secret_in(&text) {
                    panic!("{role}: user data holds a secret-like {found:?}:\n{text}");
                }
            }
        }
    }
}

/// The trust root of every node (pki-server's listener CA) travels between
/// our own binaries only: pki-server publishes it, node-client fetches it,
/// both with the instance's IAM role. No role runs a container or pulls an
/// image to do it (the image's publisher would choose what nodes trust).
#[test]
fn the_pki_server_ca_moves_without_docker_or_a_pulled_image() {
    let spec = spec();
    let object = ignition::ca_object(&spec);
    assert_eq!(object, "s3://kube-aws-pki-demo-config/ca/pki-server-ca.pem");
    for role in Role::ALL {
        for text in user_data_texts(&spec, role) {
            for needle in ["docker run", "docker pull", "aws-cli", "/usr/bin/docker"] {
                assert!(!text.contains(needle), "{role}: {needle:?} in\n{text}");
            }
        }
        let runs = commands(&spec, role);
        let unit = |name: &str| {
            runs.iter()
                .filter(|(u, _)| u == name)
                .map(|(_, w)| w.join(" "))
                .collect::<Vec<_>>()
        };
        if role == Role::PkiServer {
            assert_eq!(
                unit("pki-server-publish-ca.service"),
                [format!(
                    "/opt/bin/pki-server publish-ca --cert /var/lib/pki-server/tls/ca.pem --to {object}"
                )]
            );
        } else {
            assert_eq!(
                unit("node-client-ca.service"),
                [format!(
                    "/opt/bin/node-client fetch-ca --from {object} --out {} --keep-existing",
                    ignition::PKI_CA
                )]
            );
        }
    }
}

/// File names (under node-client's folder) only controllers and etcd members hold.
const CONTROL_PLANE_FILES: &[&str] = &["apiserver", "etcd-", "sa.", "front-proxy"];

fn control_plane_path(text: &str) -> Option<String> {
    let dir = provisioner::certs::DIR;
    CONTROL_PLANE_FILES.iter().find_map(|prefix| {
        let needle = format!("{dir}/{prefix}");
        text.find(&needle).map(|i| {
            text[i..]
                .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .next()
                .unwrap_or_default()
                .to_string()
        })
    })
}

#[test]
fn a_worker_names_no_controller_or_etcd_credential_path() {
    let spec = spec();
    // The check sees them where they belong.
    let controller = user_data_texts(&spec, Role::Controller).concat();
    assert!(control_plane_path(&controller).is_some());
    for text in user_data_texts(&spec, Role::Worker) {
        assert_eq!(
            control_plane_path(&text),
            None,
            "worker user data names a control-plane credential:\n{text}"
        );
        // Nor by bare file name (a relative path or a differently mounted folder).
        for name in [
            "apiserver.key",
            "apiserver-etcd-client",
            "etcd-ca",
            "sa.key",
            "sa.pub",
        ] {
            assert!(!text.contains(name), "worker names {name}:\n{text}");
        }
        assert!(
            !text.contains("front-proxy"),
            "worker names front-proxy:\n{text}"
        );
    }
}

/// Each command `role` runs: every `Exec*=` line of every unit and drop-in
/// (continuations joined, split at whitespace), and every container of every
/// pod manifest in its files (`command` + `args`): the static pods and the
/// kube-apiserver template.
fn commands(spec: &ClusterSpec, role: Role) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let config = ignition::config(spec, role);
    for unit in &config.systemd.units {
        let texts = unit
            .contents
            .iter()
            .cloned()
            .chain(unit.dropins.iter().map(|d| d.contents.clone()));
        for text in texts {
            for line in text.replace("\\\n", " ").lines() {
                if let Some((key, value)) = line.split_once('=')
                    && EXEC_KEYS.contains(&key.trim())
                {
                    let words = value
                        .trim_start_matches(['-', '@', ':', '+', '!', '|'])
                        .split_whitespace()
                        .map(|w| w.trim_matches(['\'', '"']).to_string())
                        .collect();
                    out.push((unit.name.clone(), words));
                }
            }
        }
    }
    for f in &config.storage.files {
        let Some(text) = data_text(&f.contents.source) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["kind"] != "Pod" {
            continue;
        }
        for c in v["spec"]["containers"].as_array().expect("containers") {
            let words: Vec<String> = c["command"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(c["args"].as_array().into_iter().flatten())
                .map(|w| w.as_str().expect("string").to_string())
                .collect();
            out.push((f.path.clone(), words));
        }
    }
    out
}

/// A JSON config file of `role` by path.
fn json_file(config: &Config, path: &str) -> Option<serde_json::Value> {
    let f = config.storage.files.iter().find(|f| f.path == path)?;
    serde_json::from_str(&data_text(&f.contents.source)?).ok()
}

/// `(flag, value)` pairs after the program word `program` in `words`
/// (`--flag=value` or `--flag value`; a flag without a value gets "").
fn flags_after(words: &[String], program: &str) -> Option<Vec<(String, String)>> {
    let first = words.first()?;
    (first == program || first.ends_with(&format!("/{program}"))).then(|| flags(&words[1..]))
}

fn flags(words: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if let Some(flag) = w.strip_prefix("--") {
            if let Some((k, v)) = flag.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            } else if words.get(i + 1).is_some_and(|n| !n.starts_with("--")) {
                out.push((flag.to_string(), words[i + 1].clone()));
                i += 1;
            } else {
                out.push((flag.to_string(), String::new()));
            }
        }
        i += 1;
    }
    out
}

#[test]
fn no_insecure_apiserver_port_and_no_anonymous_kubelet() {
    for spec in [spec(), custom_spec()] {
        let (mut apiservers, mut kubelets) = (0, 0);
        for role in Role::ALL {
            let config = ignition::config(&spec, role);
            for (unit, words) in commands(&spec, role) {
                if let Some(flags) = flags_after(&words, "kube-apiserver") {
                    apiservers += 1;
                    for (k, v) in &flags {
                        assert!(
                            !k.starts_with("insecure-"),
                            "{role}: {unit} runs kube-apiserver with --{k}={v}"
                        );
                        assert!(
                            !(k == "authorization-mode" && v.contains("AlwaysAllow")),
                            "{role}: {unit}: --authorization-mode={v}"
                        );
                    }
                    let authz = flags.iter().find(|(k, _)| k == "authorization-mode");
                    assert!(
                        authz.is_some_and(|(_, v)| v.split(',').any(|m| m == "Node")
                            && v.split(',').any(|m| m == "RBAC")),
                        "{role}: {unit}: kube-apiserver without --authorization-mode=Node,RBAC"
                    );
                }
                if let Some(flags) = flags_after(&words, "kubelet") {
                    kubelets += 1;
                    assert!(
                        kubelet_anonymous_off(&flags, &config),
                        "{role}: {unit} runs a kubelet with anonymous auth enabled (the default): {words:?}"
                    );
                    let authz = flags.iter().find(|(k, _)| k == "authorization-mode");
                    assert!(
                        authz.is_none_or(|(_, v)| v != "AlwaysAllow"),
                        "{role}: {unit}: kubelet --authorization-mode=AlwaysAllow"
                    );
                }
            }
        }
        assert!(
            apiservers > 0,
            "no kube-apiserver found: the check saw nothing"
        );
        assert!(kubelets > 0, "no kubelet found: the check saw nothing");
    }
}

#[test]
fn etcd_checks_clients_and_peers_against_the_crl_node_client_keeps() {
    // The CRL file of node-client's etcd member entry, in node-client's folder.
    let profile = node_client::profile::Profile::embedded().unwrap();
    let crl = profile
        .entries("etcd")
        .iter()
        .find(|c| c.cert == "etcd-member/member")
        .and_then(|c| c.crl_file.clone())
        .expect("the etcd member entry keeps a crl_file");
    let want = format!("{}/{crl}", node_client::units::PKI_DIR);
    for spec in [spec(), custom_spec()] {
        let etcd: Vec<Vec<(String, String)>> = commands(&spec, Role::Etcd)
            .into_iter()
            .filter(|(unit, _)| unit == "etcd-member.service")
            .filter_map(|(_, words)| flags_after(&words, "etcd"))
            .collect();
        assert_eq!(etcd.len(), 1, "one etcd command: {etcd:?}");
        let flag = |k: &str| {
            etcd[0]
                .iter()
                .filter(|(f, _)| f == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        for (k, v) in [
            ("client-cert-auth", ""),
            ("peer-client-cert-auth", ""),
            ("client-crl-file", want.as_str()),
            ("peer-crl-file", want.as_str()),
        ] {
            assert_eq!(flag(k), [v], "etcd-member.service --{k}");
        }
        // No gRPC-only client listener: etcd before 3.5.32/3.6.13 skips the
        // CRL there (GHSA-3wh4-j44w-pg92).
        assert!(flag("listen-client-http-urls").is_empty());
    }
}

/// Anonymous auth is off: `--anonymous-auth=false`, or a `--config` file (inline
/// in the Ignition, JSON KubeletConfiguration) with authentication.anonymous.enabled
/// false. Kubelet's default is on.
fn kubelet_anonymous_off(flags: &[(String, String)], config: &Config) -> bool {
    let mut off = None;
    if let Some(file) = flags.iter().find(|(k, _)| k == "config").map(|(_, v)| v) {
        let f = config
            .storage
            .files
            .iter()
            .find(|f| &f.path == file)
            .unwrap_or_else(|| panic!("kubelet --config {file} is not in the Ignition"));
        let text = data_text(&f.contents.source).expect("kubelet config inline");
        let v: serde_json::Value =
            serde_json::from_str(&text).expect("kubelet config as JSON (checked by this test)");
        off = v["authentication"]["anonymous"]["enabled"]
            .as_bool()
            .map(|b| !b);
    }
    if let Some((_, v)) = flags.iter().find(|(k, _)| k == "anonymous-auth") {
        off = Some(v == "false"); // the flag overrides the file
    }
    off.unwrap_or(false)
}

#[test]
fn kubelet_anonymous_auth_counts_as_on_unless_turned_off() {
    let empty = ignition::config(&spec(), Role::PkiServer);
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    for (cmd, off) in [
        ("/opt/bin/kubelet --kubeconfig k", false),
        ("/opt/bin/kubelet --anonymous-auth=true", false),
        ("/opt/bin/kubelet --anonymous-auth true", false),
        ("/opt/bin/kubelet --anonymous-auth=false", true),
        ("/opt/bin/kubelet --anonymous-auth false --v 2", true),
    ] {
        let flags = flags_after(&words(cmd), "kubelet").expect("kubelet");
        assert_eq!(kubelet_anonymous_off(&flags, &empty), off, "{cmd}");
    }
}

#[test]
fn every_cidr_or_ip_flag_value_is_the_specs() {
    for spec in [spec(), custom_spec()] {
        let expected = |flag: &str| -> Option<Vec<String>> {
            match flag {
                "service-cluster-ip-range" => Some(vec![spec.service_cidr.to_string()]),
                "cluster-cidr" => Some(vec![spec.pod_cidr.to_string()]),
                "cluster-dns" => Some(vec![spec.cluster_dns.to_string()]),
                // Listening addresses, not network values: loopback or any.
                "bind-address" => Some(vec!["127.0.0.1".into(), "0.0.0.0".into()]),
                _ => None,
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for role in Role::ALL {
            for (unit, words) in commands(&spec, role) {
                for (k, v) in flags(&words) {
                    let names_ip = v.split(',').all(|x| {
                        x.parse::<std::net::IpAddr>().is_ok() || x.parse::<ipnet::IpNet>().is_ok()
                    }) && !v.is_empty();
                    match expected(&k) {
                        Some(want) => {
                            assert!(
                                want.contains(&v),
                                "{role}: {unit}: --{k}={v}, want {want:?}"
                            );
                            seen.insert(k);
                        }
                        None => assert!(
                            !names_ip,
                            "{role}: {unit}: --{k}={v} names an IP or CIDR this test does not map to the spec"
                        ),
                    }
                }
            }
            // The config files and manifests carry the rest.
            let config = ignition::config(&spec, role);
            if let Some(k) = json_file(&config, "/etc/kubernetes/kubelet.json") {
                assert_eq!(
                    k["clusterDNS"],
                    serde_json::json!([spec.cluster_dns.to_string()]),
                    "{role}"
                );
                seen.insert("clusterDNS".into());
            }
            if let Some(k) = json_file(&config, "/etc/kubernetes/kube-proxy.json") {
                assert_eq!(k["clusterCIDR"], spec.pod_cidr.to_string(), "{role}");
                seen.insert("clusterCIDR".into());
            }
            for f in &config.storage.files {
                let text = data_text(&f.contents.source).unwrap_or_default();
                for line in text.lines() {
                    let line = line.trim();
                    if let Some(v) = line.strip_prefix("clusterIP:") {
                        assert_eq!(v.trim(), spec.cluster_dns.to_string(), "{role}: {}", f.path);
                        seen.insert("clusterIP".into());
                    }
                    if let Some(v) = line.strip_prefix("\"Network\":") {
                        assert_eq!(
                            v.trim().trim_matches([',', '"']),
                            spec.pod_cidr.to_string(),
                            "{role}: {}",
                            f.path
                        );
                        seen.insert("Network".into());
                    }
                }
            }
        }
        for flag in [
            "service-cluster-ip-range",
            "cluster-cidr",
            "clusterDNS",
            "clusterCIDR",
            "clusterIP",
            "Network",
        ] {
            assert!(
                seen.contains(flag),
                "nothing sets {flag}: the check saw nothing"
            );
        }
    }
}

/// A cluster with its own zone, domain and service network: node-client's
/// settings (`NODE_CLIENT_VARS`) make it request the apiserver certificate
/// with that cluster's names and write kubeconfigs for that API name, and the
/// pki-server profile unit allows the very same values. The expected values
/// are written out, not computed by the provisioner.
#[test]
fn node_client_and_the_profile_get_the_clusters_names_and_service_ip() {
    use node_client::profile::{Node, Profile};
    let spec = ClusterSpec::parse(
        "name = \"other\"\nservice_cidr = \"172.20.0.0/16\"\npod_cidr = \"172.30.0.0/16\"\ncluster_dns = \"172.20.0.53\"\ncluster_domain = \"corp.example\"\nprivate_zone = \"k8s.corp.example\"\n",
    )
    .expect("spec");
    let file = |role: Role, path: &str| -> String {
        let config = ignition::config(&spec, role);
        let f = config
            .storage
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap();
        data_text(&f.contents.source).unwrap()
    };
    for role in [Role::Controller, Role::Worker, Role::Etcd] {
        let env = file(role, node_client::units::ENV_FILE);
        let vars = env
            .lines()
            .find_map(|l| l.strip_prefix("NODE_CLIENT_VARS="))
            .unwrap_or_else(|| panic!("{role}: no NODE_CLIENT_VARS in {env}"));
        // As node-client's --var / NODE_CLIENT_VARS parsing does it.
        let mut profile = Profile::embedded().unwrap();
        for kv in vars.split(',') {
            let (k, v) = kv.split_once('=').unwrap();
            profile.override_var(k, v).unwrap();
        }
        let node = Node {
            cluster: spec.name.clone(),
            name: "ip-10-0-1-5.ec2.internal".into(),
            ips: vec!["10.0.1.5".parse().unwrap()],
            pki_dir: "/etc/kubernetes/pki".into(),
        };
        let reqs = profile.requests(role.name(), &node).unwrap();
        for r in &reqs {
            if let Some(k) = &r.kubeconfig {
                // Controllers' own components use their apiserver on loopback;
                // workers use the cluster's API name, never the default one.
                let want = if role == Role::Controller {
                    "https://127.0.0.1:6443"
                } else {
                    "https://api.k8s.corp.example:6443"
                };
                assert_eq!(k.server, want, "{role}: {}", k.file);
            }
            assert!(
                !r.alt_names
                    .iter()
                    .any(|n| n.contains("cluster.local") || n.contains("cluster.internal")),
                "{role}: {} keeps a default name: {:?}",
                r.file,
                r.alt_names
            );
        }
        if role == Role::Controller {
            let api = reqs.iter().find(|r| r.file == "apiserver").unwrap();
            assert!(
                api.ip_sans.contains(&"172.20.0.1".parse().unwrap()),
                "{:?}",
                api.ip_sans
            );
            assert!(!api.ip_sans.contains(&"10.32.0.1".parse().unwrap()));
            for n in [
                "kubernetes.default.svc.corp.example",
                "api.k8s.corp.example",
            ] {
                assert!(
                    api.alt_names.iter().any(|a| a == n),
                    "{n} not in {:?}",
                    api.alt_names
                );
            }
        }
    }
    // An unknown variable is refused, not ignored.
    let mut profile = Profile::embedded().unwrap();
    assert!(profile.override_var("api_dsn", "x").is_err());
    // pki-server's roles get the same values.
    let config = ignition::config(&spec, Role::PkiServer);
    let unit = config
        .systemd
        .units
        .iter()
        .find(|u| u.name == "pki-server-profile.service")
        .and_then(|u| u.contents.clone())
        .unwrap();
    for want in [
        "--var api_dns=api.k8s.corp.example",
        "--var cluster_domain=corp.example",
        "--var kubernetes_service_ip=172.20.0.1",
    ] {
        assert!(unit.contains(want), "{want} not in {unit}");
    }
}

/// The rendered Ignition of every role, for the default and a customised
/// spec, is byte-identical to what it was when this test was written: a
/// restructure of the code (issue #20) must not change what nodes get. A
/// deliberate change of the output updates these hashes in the same commit.
#[test]
fn rendered_ignition_is_byte_identical_to_the_golden_hashes() {
    const GOLDEN: [(&str, &str); 8] = [
        (
            "default/pki-server",
            "a514c40831ade9b945aa684f468846c4acac150fb1318e247fadc672235e3fbe",
        ),
        (
            "default/etcd",
            "e0611fa953414e9409ec598b3d9d3669cfa43af471933c589ee8bc7b66b4015a",
        ),
        (
            "default/controller",
            "3d2add99ae581bbed2eb3ee4122a4ca7d14aef55e246ede214dc2441e2aeb9e5",
        ),
        (
            "default/worker",
            "fe0001b2504e2a60e0b21b80343629cf30077f6bff71c1edc082e17001168541",
        ),
        (
            "custom/pki-server",
            "488890b212dc49dece79402ad0305e67540cfa669845692b5925d15eb7ab4600",
        ),
        (
            "custom/etcd",
            "4382a20895660cd6f2de5dae19a8e354f35c8ac15c593a01665da09fc34544db",
        ),
        (
            "custom/controller",
            "bda58521520569d4a63fb3bde2d8f8755ff560be68d677861d0007d579cc2d6a",
        ),
        (
            "custom/worker",
            "fb035de20ce69aadc5899ad898b2d0b330022a0fb8d2739ebde4488d904d0365",
        ),
    ];
    let mut got = Vec::new();
    for (name, spec) in [("default", spec()), ("custom", custom_spec())] {
        for role in Role::ALL {
            let text = ignition::render(&spec, role);
            got.push((
                format!("{name}/{}", role.name()),
                provisioner::sha256_hex(text.as_bytes()),
            ));
        }
    }
    for ((name, hash), (want_name, want)) in got.iter().zip(GOLDEN) {
        assert_eq!(name, want_name);
        assert_eq!(
            hash, want,
            "{name}: the rendered Ignition changed; if on purpose, update GOLDEN: {got:#?}"
        );
    }
}
