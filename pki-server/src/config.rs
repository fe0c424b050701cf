//! Server configuration: an optional TOML file, overridden by flags, validated once.

use crate::cli::ServerArgs;
use crate::state::ApiSettings;
use crate::storage::StorageSpec;
use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The TOML config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    storage: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
    #[serde(default)]
    tls_sans: Vec<String>,
    kms_key_id: Option<String>,
    cluster_name: Option<String>,
    max_request_bytes: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    http2_max_streams: Option<u32>,
}

/// What one client may hold of the server: connection and request bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers, and with no request in flight, the
    /// longest a connection may wait for its first request (or, on HTTP/1.1,
    /// for its next one).
    pub header_read_timeout: std::time::Duration,
    /// After a request, the longest an HTTP/2 connection may go with no
    /// request in flight. Bytes that make no request (PINGs, a trickled
    /// header) do not count.
    pub idle_timeout: std::time::Duration,
    /// Concurrent connections (TLS handshakes included); more wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_streams: u32,
    /// A request body declaring a larger `Content-Length` is refused with 413
    /// before it is read (the API enforces the same limit while reading).
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            max_connections: 4096,
            http2_max_streams: 32,
            max_request_bytes: ApiSettings::default().max_request_bytes,
        }
    }
}

/// Longest accepted timeout (a day): larger ones are mistakes, and would
/// overflow deadline arithmetic.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// Most connections accepted as `max_connections`.
const MAX_CONNECTIONS: usize = 1_000_000;

/// `v` if it is within `1..=max`, else an error naming `key`.
fn within<T: PartialOrd + From<u8> + std::fmt::Display>(
    key: &str,
    v: T,
    max: T,
) -> anyhow::Result<T> {
    if v < T::from(1) || v > max {
        bail!("{key} must be between 1 and {max}, not {v}");
    }
    Ok(v)
}

/// How the listener does TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Given certificate chain and key.
    Files {
        /// Chain.
        cert: PathBuf,
        /// Key.
        key: PathBuf,
    },
    /// A directory where the server keeps its own listener CA.
    Dir(PathBuf, Vec<String>),
    /// Plain HTTP: only for --dev on loopback.
    Disabled,
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Storage backend.
    pub storage: StorageSpec,
    /// TLS.
    pub tls: TlsMode,
    /// KMS key for auto-unseal.
    pub kms_key_id: Option<String>,
    /// API settings.
    pub api: ApiSettings,
    /// Dev mode.
    pub dev: bool,
    /// Connection and request bounds.
    pub limits: Limits,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8200";

impl ServerConfig {
    /// Merge the file (if any) and the flags; flags win. `dev_dir` is the
    /// directory --dev stores in when no storage is given.
    pub fn from_args(args: &ServerArgs, dev_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let file: FileConfig = match &args.config {
            None => FileConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config {}", p.display()))?
            }
        };
        let listen = match args.listen.or(file.listen) {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let storage = match args.storage.clone().or(file.storage) {
            Some(s) => s
                .parse::<StorageSpec>()
                .map_err(anyhow::Error::msg)
                .context("--storage")?,
            None => match dev_dir {
                Some(d) => StorageSpec::File(d),
                None => bail!("--storage is required: file:DIR, s3://BUCKET/PREFIX or memory"),
            },
        };
        let tls_cert = args.tls_cert.clone().or(file.tls_cert);
        let tls_key = args.tls_key.clone().or(file.tls_key);
        let tls_dir = args.tls_dir.clone().or(file.tls_dir);
        let mut sans = file.tls_sans;
        sans.extend(args.tls_sans.iter().cloned());
        let tls = match (tls_cert, tls_key, tls_dir) {
            (Some(cert), Some(key), None) => TlsMode::Files { cert, key },
            (None, None, Some(dir)) => TlsMode::Dir(dir, sans),
            (None, None, None) => TlsMode::Disabled,
            (Some(_), None, _) | (None, Some(_), _) => bail!("tls_cert and tls_key go together"),
            (Some(_), Some(_), Some(_)) => {
                bail!("give either tls_dir or tls_cert/tls_key, not both")
            }
        };
        if tls == TlsMode::Disabled && !(args.dev && crate::tls::is_loopback(listen)) {
            bail!(
                "TLS is required: pass --tls-dir DIR or --tls-cert/--tls-key \
                 (plain HTTP is only for --dev on a loopback address)"
            );
        }
        let mut api = ApiSettings::default();
        if let Some(n) = args.cluster_name.clone().or(file.cluster_name) {
            api.cluster_name = n;
        }
        if let Some(n) = args.max_request_bytes.or(file.max_request_bytes) {
            if n < 1024 {
                bail!("max_request_bytes must be at least 1024");
            }
            api.max_request_bytes = n;
        }
        let mut limits = Limits {
            max_request_bytes: api.max_request_bytes,
            ..Limits::default()
        };
        let secs = |key: &str, v: u64| -> anyhow::Result<std::time::Duration> {
            Ok(std::time::Duration::from_secs(within(
                key,
                v,
                MAX_TIMEOUT_SECS,
            )?))
        };
        if let Some(v) = args
            .header_read_timeout_secs
            .or(file.header_read_timeout_secs)
        {
            limits.header_read_timeout = secs("header_read_timeout_secs", v)?;
        }
        if let Some(v) = args.idle_timeout_secs.or(file.idle_timeout_secs) {
            limits.idle_timeout = secs("idle_timeout_secs", v)?;
        }
        if let Some(v) = args.max_connections.or(file.max_connections) {
            limits.max_connections = within("max_connections", v, MAX_CONNECTIONS)?;
        }
        if let Some(v) = args.http2_max_streams.or(file.http2_max_streams) {
            limits.http2_max_streams = within("http2_max_streams", v, u32::MAX)?;
        }
        Ok(Self {
            listen,
            storage,
            tls,
            kms_key_id: args.kms_key_id.clone().or(file.kms_key_id),
            api,
            dev: args.dev,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_tls_is_required() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9000\"\nstorage = \"memory\"\ntls_dir = \"/x\"\ncluster_name = \"a\"\n").unwrap();
        let args = ServerArgs {
            config: Some(f.clone()),
            cluster_name: Some("b".into()),
            ..Default::default()
        };
        let c = ServerConfig::from_args(&args, None).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.api.cluster_name, "b");
        assert_eq!(c.tls, TlsMode::Dir("/x".into(), vec![]));

        let plain = ServerArgs {
            storage: Some("memory".into()),
            ..Default::default()
        };
        assert!(
            ServerConfig::from_args(&plain, None)
                .unwrap_err()
                .to_string()
                .contains("TLS is required")
        );
        let dev = ServerArgs {
            dev: true,
            listen: Some("0.0.0.0:8200".parse().unwrap()),
            ..Default::default()
        };
        assert!(
            ServerConfig::from_args(&dev, Some("/tmp/x".into())).is_err(),
            "dev off loopback needs TLS"
        );

        std::fs::write(&f, "bogus = 1\n").unwrap();
        let args = ServerArgs {
            config: Some(f),
            ..Default::default()
        };
        assert!(ServerConfig::from_args(&args, None).is_err());
    }

    #[test]
    fn limits_from_file_and_flags_zero_and_huge_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        let start = |toml: &str, args: ServerArgs| {
            std::fs::write(
                &f,
                format!("storage = \"memory\"\ntls_dir = \"/x\"\n{toml}"),
            )
            .unwrap();
            ServerConfig::from_args(
                &ServerArgs {
                    config: Some(f.clone()),
                    ..args
                },
                None,
            )
        };
        let c = start("", ServerArgs::default()).unwrap();
        assert_eq!(c.limits, Limits::default());
        let c = start(
            "header_read_timeout_secs = 3\nidle_timeout_secs = 4\nmax_connections = 5\n\
             http2_max_streams = 6\nmax_request_bytes = 2048\n",
            ServerArgs {
                max_connections: Some(7),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.limits,
            Limits {
                header_read_timeout: std::time::Duration::from_secs(3),
                idle_timeout: std::time::Duration::from_secs(4),
                max_connections: 7,
                http2_max_streams: 6,
                max_request_bytes: 2048,
            }
        );
        for (toml, key) in [
            ("header_read_timeout_secs = 0", "header_read_timeout_secs"),
            ("idle_timeout_secs = 0", "idle_timeout_secs"),
            ("max_connections = 0", "max_connections"),
            ("http2_max_streams = 0", "http2_max_streams"),
            (
                "idle_timeout_secs = 18446744073709551615",
                "idle_timeout_secs",
            ),
            ("max_connections = 100000000", "max_connections"),
        ] {
            let e = start(toml, ServerArgs::default()).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{key} must be between 1 and ")),
                "{toml}: {e}"
            );
        }
        let e = start(
            "",
            ServerArgs {
                header_read_timeout_secs: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "header_read_timeout_secs must be between 1 and 86400, not 0"
        );
    }
}
