//! The subcommands: `server`, the client commands `init`, `unseal`, `seal`,
//! `status` and `apply-profile`, and `publish-ca`.

use crate::cli::{
    ApplyProfileArgs, ClientArgs, Format, InitArgs, PublishCaArgs, ServerArgs, StatusArgs,
    UnsealArgs,
};
use crate::client::Client;
use crate::config::ServerConfig;
use crate::profile::{Profile, Step};
use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::process::ExitCode;
use zeroize::Zeroizing;

/// `pki-server server`.
pub async fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    // Before anything can be asked of the server: a SIGTERM during start-up
    // then ends the start-up cleanly instead of killing the process (or being
    // held until the server serves).
    let shutdown = crate::server::shutdown_signal();
    tokio::pin!(shutdown);
    // --dev without --dev-dir uses a temporary directory removed at exit.
    let mut _tmp = None;
    let dev_dir = if args.dev {
        Some(match &args.dev_dir {
            Some(d) => d.clone(),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("pki-server-dev-")
                    .tempdir()?;
                let p = t.path().to_path_buf();
                _tmp = Some(t);
                p
            }
        })
    } else {
        None
    };
    let cfg = ServerConfig::from_args(&args, dev_dir.as_ref().map(|d| d.join("storage")))?;
    let tls = crate::server::tls_config(&cfg)?;
    let state = tokio::select! {
        r = crate::server::build_state(&cfg) => r?,
        () = &mut shutdown => return Ok(ExitCode::SUCCESS),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(dir) = &dev_dir {
        let key_file = dir.join("unseal-key");
        let creds = tokio::select! {
            r = crate::server::dev_init(&state, &key_file) => r?,
            () = &mut shutdown => return Ok(ExitCode::SUCCESS),
        };
        println!(
            "pki-server dev mode: initialised and unsealed, storage in {}",
            dir.display()
        );
        println!("    export VAULT_ADDR='{scheme}://{addr}'");
        if let Some(c) = creds {
            println!("Unseal Key: {}", c.unseal_key.as_str());
            println!("Root Token: {}", c.root_token.as_str());
        } else {
            println!("(existing dev storage: the root token was printed when it was created)");
        }
        println!("Development mode should NOT be used in production.");
    }
    crate::server::spawn_auto_unseal(state.seal.clone());
    tokio::spawn(crate::maintenance::run(
        state.clone(),
        crate::maintenance::INTERVAL,
    ));
    crate::server::spawn_token_tidy(state.seal.clone());
    tracing::info!(%addr, %scheme, storage = state.seal.storage().kind(), "listening");
    crate::server::serve(
        listener,
        tls,
        crate::router(state),
        cfg.limits.clone(),
        shutdown,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

fn print_status(body: &Value) {
    let keys = [
        "type",
        "initialized",
        "sealed",
        "t",
        "n",
        "progress",
        "nonce",
        "version",
        "storage_type",
        "cluster_name",
        "cluster_id",
        "warnings",
    ];
    for k in keys {
        if let Some(v) = body.get(k) {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<14} {s}");
        }
    }
}

/// `pki-server init`.
pub async fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&args.client)?;
    let mut body = json!({});
    for (k, v) in [
        ("secret_shares", args.key_shares),
        ("secret_threshold", args.key_threshold),
        ("recovery_shares", args.recovery_shares),
        ("recovery_threshold", args.recovery_threshold),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    let out = Zeroizing::new(
        c.call(Method::PUT, "sys/init", Some(body))
            .await?
            .ok()?
            .to_string(),
    );
    let v: Value = serde_json::from_str(&out)?;
    if args.format == Format::Json {
        println!("{}", out.as_str());
        return Ok(ExitCode::SUCCESS);
    }
    for (i, k) in v["keys_base64"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        println!("Unseal Key {}: {}", i + 1, k.as_str().unwrap_or_default());
    }
    for (i, k) in v["recovery_keys_base64"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        println!("Recovery Key {}: {}", i + 1, k.as_str().unwrap_or_default());
    }
    println!(
        "\nInitial Root Token: {}\n",
        v["root_token"].as_str().unwrap_or_default()
    );
    println!("Give each share to a different operator and keep none of them with the storage.");
    println!("The server is sealed until enough shares are given with `pki-server unseal`");
    println!(
        "(a KMS auto-unseal server is already unsealed; its recovery shares unseal it if KMS is lost)."
    );
    Ok(ExitCode::SUCCESS)
}

fn read_share(args: &UnsealArgs) -> anyhow::Result<Zeroizing<String>> {
    let raw = Zeroizing::new(match &args.key_file {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password("Unseal Key (will be hidden): ")?
        }
        None => {
            let mut s = String::new();
            std::io::stdin().read_line(&mut s)?;
            s
        }
    });
    let line = raw.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(!line.is_empty(), "no unseal key given");
    Ok(Zeroizing::new(line))
}

/// `pki-server unseal`.
pub async fn unseal(args: UnsealArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&args.client)?;
    let body = if args.reset {
        json!({"reset": true})
    } else {
        let key = read_share(&args)?;
        json!({"key": key.as_str()})
    };
    let v = c.call(Method::PUT, "sys/unseal", Some(body)).await?.ok()?;
    if args.format == Format::Json {
        println!("{v}");
    } else {
        print_status(&v);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pki-server seal`.
pub async fn seal(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&args)?;
    c.call(Method::PUT, "sys/seal", None).await?.ok()?;
    println!("sealed");
    Ok(ExitCode::SUCCESS)
}

/// `pki-server status`: exit 0 unsealed, 2 sealed.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&args.client)?;
    let v = c.call(Method::GET, "sys/seal-status", None).await?.ok()?;
    if args.format == Format::Json {
        println!("{v}");
    } else {
        print_status(&v);
    }
    Ok(if v["sealed"].as_bool() == Some(false) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `pki-server apply-profile`: one line per action.
pub async fn apply_profile(args: ApplyProfileArgs) -> anyhow::Result<ExitCode> {
    let profile = Profile::load(&args.dir)?;
    if args.print_matrix {
        print!("{}", profile.matrix_markdown());
        return Ok(ExitCode::SUCCESS);
    }
    let cluster = args.cluster.as_deref().context("--cluster is required")?;
    let mut vars = std::collections::BTreeMap::new();
    for v in &args.vars {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("--var {v:?}: expected NAME=VALUE"))?;
        vars.insert(k.to_string(), val.to_string());
    }
    let mut keys = Vec::new();
    for f in &args.jwt_pubkeys {
        let pem = std::fs::read_to_string(f)
            .with_context(|| format!("reading --jwt-pubkey {}", f.display()))?;
        anyhow::ensure!(
            pem.contains("-----BEGIN PUBLIC KEY-----")
                || pem.contains("-----BEGIN CERTIFICATE-----"),
            "--jwt-pubkey {}: not a PEM public key or certificate",
            f.display()
        );
        keys.push(pem.trim().to_string());
    }
    let steps = profile.plan_with_keys(cluster, &vars, &keys)?;
    if args.dry_run {
        for s in &steps {
            println!("would apply {}", s.describe());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let c = Client::new(&args.client)?;
    anyhow::ensure!(
        c.has_token(),
        "apply-profile needs a token allowed to manage mounts, roles and policies in VAULT_TOKEN"
    );
    for line in apply_steps(&c, &steps).await? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `pki-server publish-ca`: the listener CA to S3, checked, written only when changed.
pub async fn publish_ca(args: PublishCaArgs) -> anyhow::Result<ExitCode> {
    use crate::publish::{Location, Published};
    let to = Location::parse(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let (bytes, _) =
        crate::publish::read_ca(&args.cert, std::time::Duration::from_secs(args.wait)).await?;
    let s3 = crate::storage::s3_client(&crate::aws::sdk_config().await);
    match crate::publish::publish(&s3, &to, &bytes).await? {
        Published::Written(n) => println!(
            "published {} to {to} ({n} CA certificate(s))",
            args.cert.display()
        ),
        Published::Unchanged(n) => {
            println!(
                "nothing to do: {to} holds {} ({n} CA certificate(s))",
                args.cert.display()
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `apply_step` says when a server lacks a login method (OpenBao has no
/// built-in aws method): that method's config and roles are skipped.
const METHOD_UNAVAILABLE: &str = "not available on this server, skipped";

/// Apply planned profile steps in order; one line per step (what it did).
pub async fn apply_steps(c: &Client, steps: &[Step]) -> anyhow::Result<Vec<String>> {
    let mounts = c.call(Method::GET, "sys/mounts", None).await?.ok()?;
    let mut unavailable = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for s in steps {
        if let Some(m) = s.auth_mount()
            && unavailable.contains(m)
        {
            out.push(format!(
                "{}: skipped (auth method not available)",
                s.describe()
            ));
            continue;
        }
        let line = apply_step(c, &mounts, s)
            .await
            .with_context(|| s.describe())?;
        if line == METHOD_UNAVAILABLE
            && let Some(m) = s.auth_mount()
        {
            unavailable.insert(m.to_string());
        }
        out.push(format!("{}: {line}", s.describe()));
    }
    Ok(out)
}

async fn apply_step(c: &Client, mounts: &Value, step: &Step) -> anyhow::Result<&'static str> {
    match step {
        Step::Mount {
            path,
            description,
            config,
        } => {
            let key = format!("{path}/");
            let existing = mounts
                .get("data")
                .and_then(|d| d.get(&key))
                .or_else(|| mounts.get(&key));
            match existing {
                Some(m) => {
                    let ty = m["type"].as_str().unwrap_or_default();
                    anyhow::ensure!(ty == "pki", "{path} is mounted with type {ty:?}, not pki");
                    let mut body = config.clone();
                    body["description"] = json!(description);
                    c.call(Method::POST, &format!("sys/mounts/{path}/tune"), Some(body))
                        .await?
                        .ok()?;
                    Ok("exists, tuned")
                }
                None => {
                    let body = json!({"type": "pki", "description": description, "config": config});
                    c.call(Method::POST, &format!("sys/mounts/{path}"), Some(body))
                        .await?
                        .ok()?;
                    Ok("created")
                }
            }
        }
        Step::Ca { mount, body } => {
            let (status, pem) = c.get_raw(&format!("{mount}/ca/pem")).await?;
            let has_ca =
                status == 200 && String::from_utf8_lossy(&pem).contains("BEGIN CERTIFICATE");
            // 204 (no issuer) is Vault's answer; anything else but a certificate is an error.
            anyhow::ensure!(
                has_ca || status == 204 || (status == 200 && pem.is_empty()),
                "reading {mount}/ca/pem: status {status}"
            );
            if has_ca {
                return Ok("present, kept");
            }
            c.call(
                Method::POST,
                &format!("{mount}/root/generate/internal"),
                Some(body.clone()),
            )
            .await?
            .ok()?;
            Ok("generated")
        }
        Step::Role { mount, name, body } => {
            c.call(
                Method::POST,
                &format!("{mount}/roles/{name}"),
                Some(body.clone()),
            )
            .await?
            .ok()?;
            Ok("written")
        }
        Step::Policy { name, text } => {
            let path = format!("sys/policies/acl/{name}");
            let cur = c.call(Method::GET, &path, None).await?;
            if cur.status == 200 && cur.body["data"]["policy"].as_str() == Some(text.as_str()) {
                return Ok("unchanged");
            }
            c.call(Method::PUT, &path, Some(json!({"policy": text})))
                .await?
                .ok()?;
            Ok("written")
        }
        Step::AuthMount {
            path,
            kind,
            description,
        } => {
            let auths = c.call(Method::GET, "sys/auth", None).await?.ok()?;
            let key = format!("{path}/");
            let existing = auths
                .get("data")
                .and_then(|d| d.get(&key))
                .or_else(|| auths.get(&key));
            if let Some(m) = existing {
                let ty = m["type"].as_str().unwrap_or_default();
                anyhow::ensure!(
                    ty == kind.as_str(),
                    "auth/{path} is enabled with type {ty:?}, not {}",
                    kind.as_str()
                );
                return Ok("exists");
            }
            let a = c
                .call(
                    Method::POST,
                    &format!("sys/auth/{path}"),
                    Some(json!({"type": kind.as_str(), "description": description})),
                )
                .await?;
            let missing_plugin = a.status == 400
                && a.body["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(|e| e.contains("plugin not found"));
            if missing_plugin {
                return Ok(METHOD_UNAVAILABLE);
            }
            a.ok()?;
            Ok("enabled")
        }
        Step::AuthConfig { mount, path, body } => {
            c.call(
                Method::POST,
                &format!("auth/{mount}/{path}"),
                Some(body.clone()),
            )
            .await?
            .ok()?;
            Ok("written")
        }
        Step::AuthRole { mount, name, body } => {
            c.call(
                Method::POST,
                &format!("auth/{mount}/role/{name}"),
                Some(body.clone()),
            )
            .await?
            .ok()?;
            Ok("written")
        }
        Step::TokenRole { name, body } => {
            c.call(
                Method::POST,
                &format!("auth/token/roles/{name}"),
                Some(body.clone()),
            )
            .await?
            .ok()?;
            Ok("written")
        }
    }
}
