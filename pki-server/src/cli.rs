//! Command-line definitions only (clap derive). Help text lives here.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A Vault-compatible certificate authority for Kubernetes clusters.
#[derive(Debug, Parser)]
#[command(name = "pki-server", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Server(ServerArgs),
    /// Initialise a server: prints the unseal (or recovery) shares and the root token once.
    Init(InitArgs),
    /// Submit one unseal share (read without echo from the terminal, from stdin, or --key-file).
    Unseal(UnsealArgs),
    /// Seal the server (needs the root token in VAULT_TOKEN).
    Seal(ClientArgs),
    /// Show seal status; exits 2 when sealed, like `vault status`.
    Status(StatusArgs),
    /// Apply the cluster profile (mounts, CAs, roles, ACL policies, token roles); idempotent.
    ApplyProfile(ApplyProfileArgs),
    /// Publish the listener CA certificate to S3 for `node-client fetch-ca`
    /// (only PEM CA certificates; unchanged objects are not rewritten).
    PublishCa(PublishCaArgs),
}

/// `server` flags. Flags win over the `--config` file.
#[derive(Debug, Args, Default)]
pub struct ServerArgs {
    /// TOML config file (keys: listen, storage, tls_cert, tls_key, tls_dir, tls_sans, kms_key_id, cluster_name, max_request_bytes, header_read_timeout_secs, idle_timeout_secs, max_connections, http2_max_streams).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8200].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Storage: file:DIR (default for --dev), s3://BUCKET/PREFIX, or memory.
    #[arg(long)]
    pub storage: Option<String>,
    /// PEM certificate chain for the listener.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the listener.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Directory where the server makes and keeps a listener CA (ca.pem for clients) and certificate.
    #[arg(long, conflicts_with = "tls_cert")]
    pub tls_dir: Option<PathBuf>,
    /// Extra DNS names or IPs for the listener certificate made in --tls-dir (e.g. the load balancer name).
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// AWS KMS key (id, ARN or alias) that wraps the root key for auto-unseal.
    #[arg(long)]
    pub kms_key_id: Option<String>,
    /// Cluster name recorded at init.
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Largest accepted request body in bytes [default: 1048576].
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// Seconds a client has to send a request's headers; also how long a connection may wait for a request [default: 10].
    #[arg(long)]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds an HTTP/2 connection may go without a request in flight after its last one [default: 60].
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
    /// Concurrent connections, TLS handshakes included; more wait in the listen backlog [default: 4096].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Concurrent streams per HTTP/2 connection [default: 32].
    #[arg(long)]
    pub http2_max_streams: Option<u32>,
    /// Development mode: initialised and unsealed at start, plain HTTP on loopback, prints the root token and unseal key.
    #[arg(long)]
    pub dev: bool,
    /// Directory for --dev file storage [default: a new temporary directory].
    #[arg(long, requires = "dev")]
    pub dev_dir: Option<PathBuf>,
}

/// Connection flags shared by the client subcommands (as the vault CLI's environment).
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long, env = "VAULT_ADDR", default_value = "https://127.0.0.1:8200")]
    pub address: String,
    /// CA certificate (PEM) that the server's certificate must chain to; TLS verification is never skipped.
    #[arg(long, env = "VAULT_CACERT")]
    pub ca_cert: Option<PathBuf>,
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Human-readable.
    Table,
    /// JSON as the server sent it.
    Json,
}

/// `init` flags.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Number of unseal shares.
    #[arg(long)]
    pub key_shares: Option<usize>,
    /// Shares needed to unseal.
    #[arg(long)]
    pub key_threshold: Option<usize>,
    /// Number of recovery shares (KMS auto-unseal).
    #[arg(long)]
    pub recovery_shares: Option<usize>,
    /// Recovery shares needed (KMS auto-unseal).
    #[arg(long)]
    pub recovery_threshold: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `unseal` flags. The share is never taken from the command line, where `ps` would show it.
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read the share from this file (first line).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Discard the shares given so far.
    #[arg(long)]
    pub reset: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `apply-profile` flags. Needs a root token (or one allowed to manage mounts,
/// PKI roles, policies and token roles) in VAULT_TOKEN.
#[derive(Debug, Args)]
pub struct ApplyProfileArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The profile directory (profile.toml and acl/*.hcl).
    #[arg(long, default_value = "policies")]
    pub dir: PathBuf,
    /// Cluster name: mounts go under <cluster>/pki/, policies and token roles are <cluster>-<role>.
    #[arg(long, required_unless_present = "print_matrix")]
    pub cluster: Option<String>,
    /// Override a profile variable (NAME=VALUE; repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// PEM public key (or certificate) that may sign auth/jwt login tokens
    /// (repeatable); without one, auth/jwt is enabled with its roles but not
    /// configured.
    #[arg(long = "jwt-pubkey", value_name = "FILE")]
    pub jwt_pubkeys: Vec<PathBuf>,
    /// Validate and print the actions without contacting the server.
    #[arg(long)]
    pub dry_run: bool,
    /// Validate and print the authorisation matrix (markdown) without contacting the server.
    #[arg(long)]
    pub print_matrix: bool,
}

/// `publish-ca` flags. AWS settings (region, credentials, AWS_ENDPOINT_URL)
/// come from the SDK's standard chain, as for S3 storage.
#[derive(Debug, Args)]
pub struct PublishCaArgs {
    /// The CA certificate to publish: `<--tls-dir>/ca.pem`.
    #[arg(long)]
    pub cert: PathBuf,
    /// Where nodes fetch it (`node-client fetch-ca --from`).
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub to: String,
    /// Wait this long for --cert to appear (the server makes it on first start), in seconds.
    #[arg(long, default_value_t = 600)]
    pub wait: u64,
}
