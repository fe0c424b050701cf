//! pki-server entry point: parse arguments, run the subcommand, own the exit code.

use clap::Parser;
use pki_server::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One crypto provider for every TLS client and server in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::Server(a) => pki_server::commands::server(a).await,
            Command::Init(a) => pki_server::commands::init(a).await,
            Command::Unseal(a) => pki_server::commands::unseal(a).await,
            Command::Seal(a) => pki_server::commands::seal(a).await,
            Command::Status(a) => pki_server::commands::status(a).await,
            Command::ApplyProfile(a) => pki_server::commands::apply_profile(a).await,
            Command::PublishCa(a) => pki_server::commands::publish_ca(a).await,
        }
    });
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
