//! The command line: `fetch-cert`, `renew [--watch]`, `status`, `files`,
//! `fetch-ca`, `etcd-join`, `etcd-endpoints`.
//!
//! The token comes from `--auth token` (a token file or VAULT_TOKEN) or from
//! a login (`--auth aws`, `--auth jwt`; see [`crate::login`]); `renew --watch`
//! renews it and logs in again when renewal fails or stops extending it.
//!
//! Exit codes say which step failed: 2 configuration (profile, role, CA file,
//! token, credentials), 3 the server refused (4xx, final; a refused login
//! too), 4 the server stayed unavailable until the deadline, 5 writing the
//! files, 6 a reload command (the files were written). A role that keeps a
//! CRL file (etcd) fails the same way when it has none and cannot get a
//! valid one (3 refused or not verifying, 4 unavailable, 5 writing); with a
//! previous file in place that is a warning ([`crate::crl`]). `etcd-join` uses the
//! same codes: 2 configuration (arguments, credentials, etcdctl missing), 3
//! AWS refused discovery, 4 peers or the cluster stayed unavailable until
//! `--wait` or a membership change failed, 5 writing the environment file or
//! moving stale data aside. `fetch-ca` too: 2 configuration (arguments, no
//! region or credentials), 3 S3 refused (403, another 4xx) or the object is
//! not a CA certificate, 4 the object stayed missing or unavailable until
//! `--wait`, 5 writing the file.

use crate::client::{Client, ClientError};
use crate::crl::{self, CrlError, Installed};
use crate::fetch::{self, FetchError, Options};
use crate::inspect;
use crate::login::Session;
use crate::login::{AwsLogin, Login, LoginError, Method};
use crate::profile::{DEFAULT_PKI_DIR, Node, Profile, Request};
use crate::schedule::{rand_unit, round_retry_s, token_check, token_retry_s};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use zeroize::Zeroizing;

/// Exit code: bad configuration.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: the server refused.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: the server stayed unavailable.
pub const EXIT_UNAVAILABLE: u8 = 4;
/// Exit code: writing the files failed.
pub const EXIT_WRITE: u8 = 5;
/// Exit code: a reload command failed.
pub const EXIT_RELOAD: u8 = 6;

/// The agent on each node: fetches, writes and renews a node role's certificates.
#[derive(Debug, Parser)]
#[command(name = "node-client", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch every certificate the node role needs (idempotent).
    FetchCert(FetchArgs),
    /// Renew the certificates that are due; with --watch, keep doing it.
    Renew(RenewArgs),
    /// List the certificates in the output directory.
    Status(StatusArgs),
    /// Print the files a role writes (for unit templates and checks).
    Files(FilesArgs),
    /// Copy pki-server's CA certificate (the trust root for --ca-cert) from S3
    /// with this machine's AWS identity; only PEM CA certificates are written.
    FetchCa(FetchCaArgs),
    /// Decide this etcd member's cluster membership and write etcd's environment file.
    EtcdJoin(EtcdJoinArgs),
    /// Write the etcd members' client URLs (`ETCD_SERVERS=https://ip:2379,...`)
    /// from the etcd auto scaling group: kube-apiserver's --etcd-servers on
    /// controllers.
    EtcdEndpoints(EtcdEndpointsArgs),
}

#[derive(Debug, Args)]
struct FetchCaArgs {
    /// The object pki-server publishes (`pki-server publish-ca --to`).
    #[arg(long, value_name = "s3://BUCKET/KEY", env = "NODE_CLIENT_CA_FROM")]
    from: String,
    /// The file to write (mode 0644; rewritten only when the CA changes).
    #[arg(long, default_value = crate::units::CA_FILE)]
    out: PathBuf,
    /// Keep retrying a missing (not yet published) or unavailable object this long (seconds).
    #[arg(long, default_value_t = 600)]
    wait: u64,
    /// If the object stays unavailable until --wait, keep a valid CA file
    /// already at --out and exit 0 (a refusal or an invalid object still fails).
    #[arg(long = "keep-existing")]
    keep_existing: bool,
}

#[derive(Debug, Args)]
struct EtcdEndpointsArgs {
    /// The etcd auto scaling group (`<cluster>-etcd`).
    #[arg(long, env = "NODE_CLIENT_ETCD_ASG")]
    asg: Option<String>,
    /// Instead of AWS: every member as name=ip, comma separated.
    #[arg(long, env = "NODE_CLIENT_ETCD_PEERS", conflicts_with = "asg")]
    peers: Option<String>,
    /// The environment file to write.
    #[arg(long, default_value = "/run/kube-aws-pki/etcd-servers.env")]
    out: PathBuf,
    /// Keep retrying AWS (or an empty group) this long (seconds).
    #[arg(long, default_value_t = 600)]
    wait: u64,
}

#[derive(Debug, Args)]
struct Server {
    /// pki-server (or Vault/OpenBao) address.
    #[arg(long, env = "VAULT_ADDR")]
    addr: String,
    /// The server's CA certificate (PEM). TLS verification is never skipped.
    #[arg(long = "ca-cert", env = "VAULT_CACERT")]
    ca_cert: Option<PathBuf>,
    /// How the node gets its token: `token` (--token-file or VAULT_TOKEN),
    /// `aws` (IAM login with the instance's own AWS credentials), `jwt`
    /// (login with the JWT in --jwt-file).
    #[arg(long, value_enum, env = "NODE_CLIENT_AUTH", default_value_t = AuthKind::Token)]
    auth: AuthKind,
    /// Where the login method is mounted (default: `aws` or `jwt`).
    #[arg(long = "auth-mount", env = "NODE_CLIENT_AUTH_MOUNT")]
    auth_mount: Option<String>,
    /// The login role (default: the node role, --role).
    #[arg(long = "auth-role", env = "NODE_CLIENT_AUTH_ROLE")]
    auth_role: Option<String>,
    /// --auth jwt: the file holding the JWT (re-read at every login).
    #[arg(long = "jwt-file", env = "NODE_CLIENT_JWT_FILE")]
    jwt_file: Option<PathBuf>,
    /// --auth aws: the X-Vault-AWS-IAM-Server-ID value the server requires (signed).
    #[arg(long = "aws-server-id", env = "NODE_CLIENT_AWS_SERVER_ID")]
    aws_server_id: Option<String>,
    /// --auth aws: the STS endpoint to sign for (default: AWS_ENDPOINT_URL_STS,
    /// AWS_ENDPOINT_URL, else https://sts.amazonaws.com).
    #[arg(long = "aws-sts-endpoint")]
    aws_sts_endpoint: Option<String>,
    /// --auth aws: the region to sign for (default: us-east-1 for the global
    /// endpoint, else AWS_REGION / the SDK's region).
    #[arg(long = "aws-sts-region")]
    aws_sts_region: Option<String>,
    /// --auth token: a file holding the token (else VAULT_TOKEN).
    #[arg(long = "token-file", env = "NODE_CLIENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Keep retrying an unavailable or sealed server this long (seconds).
    #[arg(long, default_value_t = 600)]
    deadline: u64,
}

/// Where the token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthKind {
    /// A token file or VAULT_TOKEN.
    Token,
    /// auth/aws IAM login.
    Aws,
    /// auth/jwt login.
    Jwt,
}

#[derive(Debug, Args)]
struct Identity {
    /// Node role: etcd, controller, worker (or operator).
    #[arg(long)]
    role: String,
    /// Node name (default: the host name); must be the one the token carries.
    #[arg(long = "node-name")]
    node_name: Option<String>,
    /// Node address for IP SANs (repeat).
    #[arg(long = "ip")]
    ips: Vec<IpAddr>,
    /// Output directory.
    #[arg(long, default_value = DEFAULT_PKI_DIR)]
    out: PathBuf,
    /// Cluster name (mounts are `<cluster>/pki/<mount>`).
    #[arg(long, env = "KUBE_AWS_PKI_CLUSTER", default_value = "kubecluster")]
    cluster: String,
    /// Another profile.toml than the built-in one.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Let the server generate the keys (issue/<role>) instead of sending CSRs.
    #[arg(long)]
    issue: bool,
    /// Requested lifetime (default: the role's).
    #[arg(long)]
    ttl: Option<String>,
    /// Renew at this fraction of the lifetime.
    #[arg(long, default_value_t = 2.0 / 3.0)]
    fraction: f64,
    /// Do not run reload commands.
    #[arg(long = "no-reload")]
    no_reload: bool,
    /// Set a profile variable, `NAME=VALUE` (repeat), e.g.
    /// `api_dns=api.prod.internal`; applied after NODE_CLIENT_VARS
    /// (comma-separated `NAME=VALUE` list), so it overrides one name only.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

#[derive(Debug, Args)]
struct FetchArgs {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    id: Identity,
    /// Request every certificate even if the ones on disk are good.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct RenewArgs {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    id: Identity,
    /// Keep running: renew each certificate when due, renew the token.
    #[arg(long)]
    watch: bool,
    /// Longest sleep between checks in --watch (seconds).
    #[arg(long, default_value_t = 300)]
    interval: u64,
    /// With --watch, refresh the CRL files of the role (etcd's) at least
    /// this often (seconds, at most 900): a revocation reaches etcd within it.
    #[arg(
        long = "crl-interval",
        env = "NODE_CLIENT_CRL_INTERVAL",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=900)
    )]
    crl_interval: u64,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Output directory.
    #[arg(long, default_value = DEFAULT_PKI_DIR)]
    out: PathBuf,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct FilesArgs {
    /// Node role.
    #[arg(long)]
    role: String,
    /// Another profile.toml than the built-in one.
    #[arg(long)]
    profile: Option<PathBuf>,
}

/// How `etcd-join` finds its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DiscoverKind {
    /// The auto scaling group of this instance (--instance-id).
    Aws,
    /// The --peers list.
    Static,
}

#[derive(Debug, Args)]
struct EtcdJoinArgs {
    /// This member's name (the etcd certificate's name; default: the host name).
    #[arg(long, alias = "node-name", env = "NODE_CLIENT_ETCD_NAME")]
    name: Option<String>,
    /// This member's address (peer and client URLs use it).
    #[arg(long, env = "NODE_CLIENT_ETCD_IP")]
    ip: IpAddr,
    /// etcd's data directory (stale member data is moved aside, never deleted).
    #[arg(
        long = "data-dir",
        env = "NODE_CLIENT_ETCD_DATA_DIR",
        default_value = "/var/lib/etcd"
    )]
    data_dir: PathBuf,
    /// The environment file to write (ETCD_* variables etcd reads).
    #[arg(
        long,
        env = "NODE_CLIENT_ETCD_OUT",
        default_value = "/run/kube-aws-pki/etcd.env"
    )]
    out: PathBuf,
    /// ETCD_INITIAL_CLUSTER_TOKEN (the cluster name).
    #[arg(long = "cluster-token", env = "NODE_CLIENT_ETCD_CLUSTER_TOKEN")]
    cluster_token: String,
    /// How to find the peers.
    #[arg(long, value_enum, env = "NODE_CLIENT_ETCD_DISCOVER", default_value_t = DiscoverKind::Aws)]
    discover: DiscoverKind,
    /// --discover static: every member as name=ip, comma separated (this one too).
    #[arg(long, env = "NODE_CLIENT_ETCD_PEERS")]
    peers: Option<String>,
    /// --discover aws: this instance's id.
    #[arg(long = "instance-id", env = "COREOS_EC2_INSTANCE_ID")]
    instance_id: Option<String>,
    /// The etcdctl program (API v3; 3.4 or later).
    #[arg(long, env = "NODE_CLIENT_ETCDCTL", default_value = "etcdctl")]
    etcdctl: PathBuf,
    /// The etcd CA bundle.
    #[arg(
        long,
        env = "NODE_CLIENT_ETCD_CACERT",
        default_value = "/etc/kubernetes/pki/etcd-ca.crt"
    )]
    cacert: PathBuf,
    /// A client certificate etcd accepts (the member's: server and client auth).
    #[arg(
        long,
        env = "NODE_CLIENT_ETCD_CERT",
        default_value = "/etc/kubernetes/pki/etcd-member.crt"
    )]
    cert: PathBuf,
    /// Its key (read by etcdctl only).
    #[arg(
        long,
        env = "NODE_CLIENT_ETCD_KEY",
        default_value = "/etc/kubernetes/pki/etcd-member.key"
    )]
    key: PathBuf,
    /// Keep waiting this long for a bootstrap's peers or for AWS (seconds).
    #[arg(long, env = "NODE_CLIENT_ETCD_WAIT", default_value_t = 600)]
    wait: u64,
    /// etcdctl's dial timeout per peer (milliseconds).
    #[arg(long = "dial-timeout-ms", default_value_t = 2000)]
    dial_timeout_ms: u64,
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}

fn exit_for_login(e: &LoginError) -> u8 {
    match e {
        LoginError::Request {
            source: ClientError::Refused { .. },
            ..
        } => EXIT_REFUSED,
        LoginError::Request {
            source: ClientError::Unavailable { .. },
            ..
        } => EXIT_UNAVAILABLE,
        LoginError::Request { .. } | LoginError::Config(_) => EXIT_CONFIG,
    }
}

fn exit_for(e: &FetchError) -> u8 {
    match e {
        FetchError::Request {
            source: ClientError::Refused { .. },
            ..
        } => EXIT_REFUSED,
        FetchError::Request {
            source: ClientError::Unavailable { .. },
            ..
        } => EXIT_UNAVAILABLE,
        FetchError::Request { .. } => EXIT_CONFIG,
        FetchError::Write(_) => EXIT_WRITE,
        FetchError::Local(_) => EXIT_CONFIG,
    }
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::FetchCert(a) => fetch_cert(a).await,
        Command::Renew(a) => renew(a).await,
        Command::Status(a) => status(&a),
        Command::Files(a) => files(&a),
        Command::FetchCa(a) => fetch_ca(a).await,
        Command::EtcdJoin(a) => etcd_join(a).await,
        Command::EtcdEndpoints(a) => etcd_endpoints(a).await,
    }
}

fn load_profile(path: Option<&Path>) -> Result<Profile, String> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Profile::parse(&text).map_err(|e| e.to_string())
        }
        None => Profile::embedded().map_err(|e| e.to_string()),
    }
}

fn read_token(s: &Server) -> Result<Zeroizing<String>, String> {
    let t = match &s.token_file {
        Some(p) => Zeroizing::new(
            std::fs::read_to_string(p)
                .map_err(|e| format!("token file {}: {e}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => Zeroizing::new(std::env::var("VAULT_TOKEN").unwrap_or_default()),
    };
    if t.is_empty() {
        return Err("no token: give --token-file or VAULT_TOKEN".into());
    }
    Ok(t)
}

/// The login to use, or None for `--auth token`.
fn login_settings(s: &Server, node_role: &str) -> Result<Option<Login>, String> {
    let mount = |default: &str| {
        s.auth_mount
            .clone()
            .unwrap_or_else(|| default.to_string())
            .trim_matches('/')
            .to_string()
    };
    let role = s.auth_role.clone().unwrap_or_else(|| node_role.to_string());
    let login = match s.auth {
        AuthKind::Token => return Ok(None),
        AuthKind::Jwt => Login {
            mount: mount("jwt"),
            role,
            method: Method::Jwt {
                file: s
                    .jwt_file
                    .clone()
                    .ok_or("--auth jwt needs --jwt-file (or NODE_CLIENT_JWT_FILE)")?,
            },
        },
        AuthKind::Aws => Login {
            mount: mount("aws"),
            role,
            method: Method::Aws(AwsLogin {
                server_id: s.aws_server_id.clone().filter(|v| !v.is_empty()),
                sts_endpoint: s.aws_sts_endpoint.clone(),
                sts_region: s.aws_sts_region.clone(),
            }),
        },
    };
    if login.mount.is_empty() || login.role.is_empty() {
        return Err("--auth-mount and --auth-role must not be empty".into());
    }
    Ok(Some(login))
}

/// A client with its token: read (`--auth token`) or from a login.
async fn client(s: &Server, login: Option<&Login>) -> Result<(Client, Option<Session>), ExitCode> {
    let ca = match &s.ca_cert {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| fail(EXIT_CONFIG, format!("CA file {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let token = match login {
        None => read_token(s).map_err(|e| fail(EXIT_CONFIG, e))?,
        Some(_) => Zeroizing::new(String::new()),
    };
    let mut c = Client::new(&s.addr, ca.as_deref(), token).map_err(|e| fail(EXIT_CONFIG, e))?;
    c.deadline = Duration::from_secs(s.deadline);
    let session = match login {
        None => None,
        Some(l) => {
            let session = l.run(&c).await.map_err(|e| fail(exit_for_login(&e), e))?;
            tracing::info!(mount = %l.mount, role = %l.role, ttl = session.ttl, "logged in");
            c.set_token(session.token.clone());
            Some(session)
        }
    };
    Ok((c, session))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

struct Prepared {
    node: Node,
    reqs: Vec<Request>,
    opts: Options,
}

/// The settings file's `NODE_CLIENT_VARS` list first, then each `--var` over
/// it by name (a clap `env` default would drop the whole list as soon as one
/// `--var` is given on the command line).
fn apply_vars(profile: &mut Profile, env_list: &str, flags: &[String]) -> Result<(), String> {
    for v in env_list
        .split(',')
        .chain(flags.iter().map(String::as_str))
        .filter(|v| !v.trim().is_empty())
    {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| format!("--var {v:?}: expected NAME=VALUE"))?;
        profile
            .override_var(k.trim(), val.trim())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn prepare(id: &Identity) -> Result<Prepared, String> {
    let mut profile = load_profile(id.profile.as_deref())?;
    apply_vars(
        &mut profile,
        &std::env::var("NODE_CLIENT_VARS").unwrap_or_default(),
        &id.vars,
    )?;
    let name = id.node_name.clone().unwrap_or_else(host_name);
    if name.is_empty() {
        return Err("no node name: give --node-name".into());
    }
    let out = std::path::absolute(&id.out).map_err(|e| format!("{}: {e}", id.out.display()))?;
    let node = Node {
        cluster: id.cluster.clone(),
        name,
        ips: id.ips.clone(),
        pki_dir: out.display().to_string(),
    };
    let reqs = profile
        .requests(&id.role, &node)
        .map_err(|e| e.to_string())?;
    let mut opts = Options::new(out);
    opts.issue = id.issue;
    opts.ttl = id.ttl.clone();
    opts.fraction = id.fraction;
    opts.run_reload = !id.no_reload;
    Ok(Prepared { node, reqs, opts })
}

fn exit_for_crl(e: &CrlError) -> u8 {
    match e {
        CrlError::Request {
            source: ClientError::Refused { .. },
            ..
        }
        | CrlError::Invalid(_)
        | CrlError::NotSigned(_) => EXIT_REFUSED,
        CrlError::Request {
            source: ClientError::Unavailable { .. },
            ..
        } => EXIT_UNAVAILABLE,
        CrlError::Request { .. } | CrlError::Ca(_) => EXIT_CONFIG,
        CrlError::Write(_) => EXIT_WRITE,
    }
}

/// Print what a run did; the exit code. A CRL that could not be written
/// where none was before fails the run (etcd would refuse every connection);
/// one that replaces nothing is a warning, the previous file stays.
fn report(o: &fetch::Outcome, crls: &[crate::crl::Refreshed], out: &Path) -> ExitCode {
    for r in &o.reasons {
        eprintln!("requested {r}");
    }
    if o.renewed.is_empty() {
        println!(
            "nothing to do: every certificate in {} is valid",
            out.display()
        );
    } else {
        println!(
            "wrote {} certificate(s) to {}",
            o.renewed.len(),
            out.display()
        );
    }
    let mut code = None;
    for c in crls {
        match &c.result {
            Ok(Installed::Written(i)) => println!(
                "wrote {} (CRL of {}, {} revoked)",
                out.join(&c.file).display(),
                c.mount,
                i.revoked
            ),
            Ok(Installed::Unchanged(i)) => println!(
                "{} unchanged (CRL of {}, {} revoked)",
                out.join(&c.file).display(),
                c.mount,
                i.revoked
            ),
            Err(e) if c.had_previous => eprintln!(
                "warning: CRL of {}: {e}; keeping the previous {}",
                c.mount, c.file
            ),
            Err(e) => {
                eprintln!("error: CRL of {}: {e}; no {} written", c.mount, c.file);
                code = code.or(Some(exit_for_crl(e)));
            }
        }
    }
    if let Some(code) = code {
        return ExitCode::from(code);
    }
    if !o.reload_failures.is_empty() {
        for f in &o.reload_failures {
            eprintln!("error: reload {f}");
        }
        return ExitCode::from(EXIT_RELOAD);
    }
    ExitCode::SUCCESS
}

async fn fetch_cert(a: FetchArgs) -> ExitCode {
    let p = match prepare(&a.id) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let login = match login_settings(&a.server, &a.id.role) {
        Ok(l) => l,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let (c, _) = match client(&a.server, login.as_ref()).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut opts = p.opts.clone();
    opts.force = a.force;
    match fetch::run(&c, &p.node, &p.reqs, &opts).await {
        Ok(o) => {
            let crls = crl::refresh(&c, &p.reqs, &opts.out, c.deadline).await;
            report(&o, &crls, &opts.out)
        }
        Err(e) => fail(exit_for(&e), e),
    }
}

async fn renew(a: RenewArgs) -> ExitCode {
    let p = match prepare(&a.id) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let login = match login_settings(&a.server, &a.id.role) {
        Ok(l) => l,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let (mut c, mut session) = match client(&a.server, login.as_ref()).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !a.watch {
        return match fetch::run(&c, &p.node, &p.reqs, &p.opts).await {
            Ok(o) => {
                let crls = crl::refresh(&c, &p.reqs, &p.opts.out, c.deadline).await;
                report(&o, &crls, &p.opts.out)
            }
            Err(e) => fail(exit_for(&e), e),
        };
    }
    // Watch: never exit on a failed round; the next one retries.
    let mut token_due = match &session {
        None => 0i64,
        Some(s) if s.ttl == 0 => i64::MAX,
        Some(s) => token_check(s.ttl).map_or(i64::MAX, |n| fetch::now() + n as i64),
    };
    let mut failures = 0u32;
    let mut certs_due = 0i64;
    // The CRL is refreshed at every wake-up, and the loop wakes at least
    // every --crl-interval when the role keeps one.
    let crl_every = p
        .reqs
        .iter()
        .any(|r| r.crl_file.is_some())
        .then_some(a.crl_interval);
    loop {
        // The token file may have been replaced (a fresh login).
        if login.is_none()
            && a.server.token_file.is_some()
            && let Ok(t) = read_token(&a.server)
        {
            c.set_token(t);
        }
        let now = fetch::now();
        if now >= token_due {
            token_due = match &login {
                None => match renew_token(&c).await {
                    Ok(Some(ttl)) => {
                        token_check(ttl.max(1) as u64).map_or(i64::MAX, |n| now + n as i64)
                    }
                    Ok(None) => i64::MAX,
                    Err(e) => {
                        tracing::warn!(error = %e, "token renewal failed; retrying in 30 to 60 s");
                        now + token_retry_s(rand_unit()) as i64
                    }
                },
                Some(l) => keep_login_token(&mut c, l, &mut session).await,
            };
        }
        if now >= certs_due {
            let wait = match fetch::run(&c, &p.node, &p.reqs, &p.opts).await {
                Ok(o) => {
                    failures = 0;
                    for r in &o.renewed {
                        tracing::info!(cert = %r, "renewed");
                    }
                    for f in &o.reload_failures {
                        tracing::warn!(reload = %f, "reload failed");
                    }
                    let next = o.next_renewal.unwrap_or(now + a.interval as i64);
                    (next - fetch::now()).clamp(1, a.interval as i64)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = round_retry_s(failures, rand_unit());
                    tracing::warn!(error = %e, retry_in_s = wait, "renewal round failed");
                    wait as i64
                }
            };
            certs_due = fetch::now() + wait;
        }
        let mut wake = certs_due.min(token_due);
        if let Some(every) = crl_every {
            // Failures are logged by crl::refresh; the previous file stays
            // and the next wake-up tries again.
            let deadline = c.deadline.min(Duration::from_secs(every));
            crl::refresh(&c, &p.reqs, &p.opts.out, deadline).await;
            wake = wake.min(fetch::now() + every as i64);
        }
        let wait = (wake - fetch::now()).max(1);
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
}

/// Keep a login's token alive: renew it while renewal still extends it,
/// log in again when renewal fails or the token nears its max TTL. When the
/// next check is due (Unix seconds).
async fn keep_login_token(c: &mut Client, l: &Login, session: &mut Option<Session>) -> i64 {
    let now = fetch::now();
    if let Some(s) = session.as_ref() {
        if s.ttl == 0 {
            return i64::MAX;
        }
        if s.renewable {
            match c.renew_self().await {
                Ok(ttl) => {
                    if let Some(next) = crate::schedule::token_renewal(s.ttl, ttl) {
                        return now + next as i64;
                    }
                    tracing::info!(ttl, "the token nears its max TTL; logging in again");
                }
                Err(ClientError::Refused { status, .. }) => {
                    tracing::info!(status, "token renewal refused; logging in again");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "token renewal failed; retrying in 30 to 60 s");
                    return now + token_retry_s(rand_unit()) as i64;
                }
            }
        }
    }
    match l.run(c).await {
        Ok(s) => {
            tracing::info!(mount = %l.mount, role = %l.role, ttl = s.ttl, "logged in");
            c.set_token(s.token.clone());
            let next = token_check(s.ttl).map_or(i64::MAX, |n| now + n as i64);
            *session = Some(s);
            next
        }
        Err(e) => {
            tracing::warn!(error = %e, "login failed; retrying in 30 to 60 s");
            now + token_retry_s(rand_unit()) as i64
        }
    }
}

/// Renew the token if it expires; the new TTL, or None if it never expires.
async fn renew_token(c: &Client) -> Result<Option<i64>, ClientError> {
    let v = c.read("auth/token/lookup-self").await?;
    let ttl = v["data"]["ttl"].as_i64().unwrap_or(0);
    if ttl == 0 {
        return Ok(None);
    }
    if v["data"]["renewable"].as_bool() != Some(true) {
        tracing::warn!(
            ttl,
            "the token is not renewable; it must be replaced before it expires"
        );
        return Ok(Some(ttl));
    }
    let new = c.renew_self().await?;
    Ok(Some(new as i64))
}

fn status(a: &StatusArgs) -> ExitCode {
    let now = fetch::now();
    let mut rows = Vec::new();
    let mut names: Vec<String> = match std::fs::read_dir(&a.out) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".crt") && !n.starts_with('.'))
            .collect(),
        Err(e) => return fail(EXIT_CONFIG, format!("{}: {e}", a.out.display())),
    };
    names.sort();
    for n in names {
        let Some(pem) = crate::store::read(&a.out, &n) else {
            continue;
        };
        if let Some(i) = inspect::cert_info(&pem) {
            rows.push((n, i));
        }
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, i)| {
                let mut v = serde_json::to_value(i).unwrap_or_default();
                v["file"] = serde_json::json!(n);
                v["remaining_seconds"] = serde_json::json!(i.not_after - now);
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| "[]".into())
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<30} {:<34} {:<16} {:<21} {:>10}  SANS",
        "FILE", "SUBJECT", "ISSUER", "EXPIRES (UTC)", "REMAINING"
    );
    for (n, i) in rows {
        let sans: Vec<String> = i
            .dns_names
            .iter()
            .cloned()
            .chain(i.ip_addresses.iter().map(|a| a.to_string()))
            .collect();
        let expires = time::OffsetDateTime::from_unix_timestamp(i.not_after)
            .map(|t| {
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .unwrap_or_default();
        println!(
            "{:<30} {:<34} {:<16} {:<21} {:>10}  {}",
            n,
            i.common_name,
            i.issuer,
            expires,
            human(i.not_after - now),
            sans.join(",")
        );
    }
    ExitCode::SUCCESS
}

fn human(s: i64) -> String {
    if s <= 0 {
        return "EXPIRED".into();
    }
    match s {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}m{}s", s / 60, s % 60),
    }
}

fn files(a: &FilesArgs) -> ExitCode {
    match load_profile(a.profile.as_deref())
        .and_then(|p| p.files(&a.role).map_err(|e| e.to_string()))
    {
        Ok(f) => {
            for n in f {
                println!("{n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_CONFIG, e),
    }
}

async fn fetch_ca(a: FetchCaArgs) -> ExitCode {
    use crate::fetch_ca::{FetchCaError, Options, Outcome};
    let from = match crate::aws::s3::Location::parse(&a.from) {
        Ok(l) => l,
        Err(e) => return fail(EXIT_CONFIG, format!("--from {e}")),
    };
    let aws = match crate::aws::Aws::load().await {
        Ok(aws) => aws,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let o = Options {
        from,
        out: a.out,
        wait: Duration::from_secs(a.wait),
        keep_existing: a.keep_existing,
    };
    match crate::fetch_ca::run(&aws, &o).await {
        Ok(Outcome::Written(n)) => {
            println!(
                "wrote {} ({n} CA certificate(s) from {})",
                o.out.display(),
                o.from
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::Unchanged(n)) => {
            println!(
                "nothing to do: {} holds {} ({n} CA certificate(s))",
                o.out.display(),
                o.from
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::KeptExisting(n, why)) => {
            eprintln!("warning: {why}");
            println!(
                "kept {} ({n} CA certificate(s)): {} stayed unavailable",
                o.out.display(),
                o.from
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = match &e {
                FetchCaError::Config(_) => EXIT_CONFIG,
                FetchCaError::Refused(_) | FetchCaError::NotCa { .. } => EXIT_REFUSED,
                FetchCaError::Unavailable(_) => EXIT_UNAVAILABLE,
                FetchCaError::Write(_) => EXIT_WRITE,
            };
            fail(code, e)
        }
    }
}

fn etcd_join_options(a: EtcdJoinArgs) -> Result<crate::etcd::Options, String> {
    use crate::etcd::{Discovery, Options, check_name, etcdctl::Etcdctl, plan::Peer};
    let name = a.name.unwrap_or_else(host_name);
    check_name("--name", &name)?;
    check_name("--cluster-token", &a.cluster_token)?;
    let discovery = match a.discover {
        DiscoverKind::Static => Discovery::Static(
            a.peers
                .ok_or("--discover static needs --peers name=ip,...")?,
        ),
        DiscoverKind::Aws => Discovery::Aws {
            instance_id: a
                .instance_id
                .filter(|i| !i.is_empty())
                .ok_or("--discover aws needs --instance-id (or COREOS_EC2_INSTANCE_ID)")?,
        },
    };
    // Unreadable TLS files would make every peer look unreachable, and a
    // member that hears no peer may bootstrap: refuse them up front.
    for (flag, p) in [("--cacert", &a.cacert), ("--cert", &a.cert)] {
        let pem = std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()))?;
        if inspect::cert_info(&pem).is_none() {
            return Err(format!("{flag} {}: no PEM certificate", p.display()));
        }
    }
    if !a.key.is_file() {
        return Err(format!("--key {}: no such file", a.key.display()));
    }
    Ok(Options {
        me: Peer { name, ip: a.ip },
        token: a.cluster_token,
        data_dir: a.data_dir,
        out: a.out,
        discovery,
        etcdctl: Etcdctl {
            program: a.etcdctl,
            cacert: a.cacert,
            cert: a.cert,
            key: a.key,
            dial: Duration::from_millis(a.dial_timeout_ms),
            command: Duration::from_secs(5),
        },
        wait: Duration::from_secs(a.wait),
    })
}

async fn etcd_join(a: EtcdJoinArgs) -> ExitCode {
    use crate::etcd::JoinError;
    let o = match etcd_join_options(a) {
        Ok(o) => o,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    match crate::etcd::run(&o).await {
        Ok(s) => {
            println!(
                "wrote {}: {} member(s), initial cluster state {}",
                o.out.display(),
                s.initial_cluster.len(),
                s.state
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = match &e {
                JoinError::Config(_) => EXIT_CONFIG,
                JoinError::Refused(_) => EXIT_REFUSED,
                JoinError::Unavailable(_) => EXIT_UNAVAILABLE,
                JoinError::Write(_) => EXIT_WRITE,
            };
            fail(code, e)
        }
    }
}

async fn etcd_endpoints(a: EtcdEndpointsArgs) -> ExitCode {
    use crate::etcd::discover::{AwsDiscovery, DiscoverError, parse_static};
    let deadline = std::time::Instant::now() + Duration::from_secs(a.wait);
    let mut tries = 0u32;
    let aws = if a.peers.is_none() {
        match AwsDiscovery::load().await {
            Ok(aws) => Some(aws),
            Err(e) => return fail(EXIT_CONFIG, e),
        }
    } else {
        None
    };
    loop {
        let found = match (&a.peers, &a.asg, &aws) {
            (Some(list), _, _) => parse_static(list),
            (None, Some(group), Some(aws)) => aws.group_peers(group).await,
            _ => {
                return fail(
                    EXIT_CONFIG,
                    "give --asg <cluster>-etcd or --peers name=ip,...",
                );
            }
        };
        let why = match found {
            Ok(d) if !d.peers.is_empty() => {
                let urls = d
                    .peers
                    .iter()
                    .map(|p| match p.ip {
                        IpAddr::V4(ip) => format!("https://{ip}:2379"),
                        IpAddr::V6(ip) => format!("https://[{ip}]:2379"),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                if let Err(e) =
                    crate::etcd::write_env_file(&a.out, &format!("ETCD_SERVERS={urls}\n"))
                {
                    return fail(EXIT_WRITE, e);
                }
                println!("wrote {}: {urls}", a.out.display());
                return ExitCode::SUCCESS;
            }
            Ok(_) => "the etcd group has no running instance yet".to_string(),
            Err(DiscoverError::Unavailable(m)) => m,
            Err(e @ DiscoverError::Refused { .. }) => return fail(EXIT_REFUSED, e),
            Err(e) => return fail(EXIT_CONFIG, e),
        };
        if std::time::Instant::now() >= deadline {
            return fail(EXIT_UNAVAILABLE, format!("gave up: {why}"));
        }
        tries = tries.saturating_add(1);
        tracing::info!(waiting_for = %why, "waiting");
        tokio::time::sleep(Duration::from_millis(crate::schedule::backoff_ms(
            tries,
            1_000,
            15_000,
            rand_unit(),
        )))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_server(p: &Profile) -> String {
        let node = Node {
            cluster: "c".into(),
            name: "n1".into(),
            ips: vec![],
            pki_dir: "/pki".into(),
        };
        p.requests("worker", &node)
            .unwrap()
            .iter()
            .find_map(|r| r.kubeconfig.as_ref().map(|k| k.server.clone()))
            .unwrap()
    }

    #[test]
    fn a_flag_overrides_one_name_of_the_settings_list_and_typos_are_refused() {
        let mut p = Profile::embedded().unwrap();
        apply_vars(
            &mut p,
            "api_dns=api.env.example,cluster_domain=env.example",
            &[],
        )
        .unwrap();
        assert_eq!(worker_server(&p), "https://api.env.example:6443");
        // One --var: the rest of the list stays.
        let mut p = Profile::embedded().unwrap();
        apply_vars(
            &mut p,
            "api_dns=api.env.example,kubernetes_service_ip=172.20.0.1",
            &["api_dns=api.flag.example".into()],
        )
        .unwrap();
        assert_eq!(worker_server(&p), "https://api.flag.example:6443");
        let node = Node {
            cluster: "c".into(),
            name: "n1".into(),
            ips: vec![],
            pki_dir: "/pki".into(),
        };
        let api = p
            .requests("controller", &node)
            .unwrap()
            .into_iter()
            .find(|r| r.file == "apiserver")
            .unwrap();
        assert!(api.ip_sans.contains(&"172.20.0.1".parse().unwrap()));
        let mut p = Profile::embedded().unwrap();
        assert!(apply_vars(&mut p, "api_dsn=x", &[]).is_err());
        assert!(apply_vars(&mut p, "", &["no-equals".into()]).is_err());
        assert!(apply_vars(&mut p, "", &[]).is_ok());
    }
}
