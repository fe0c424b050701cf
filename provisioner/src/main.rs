//! provisioner: builds the cluster on AWS, or on one machine with `--local`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Plan, apply and destroy a kube-aws-pki cluster.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what apply would change (AWS: issue #7, in progress).
    Plan,
    /// Build or update the cluster; `--local DIR` runs it all on this machine.
    Apply {
        /// Run the whole flow on this machine, under DIR (no AWS).
        #[arg(long, value_name = "DIR")]
        local: Option<PathBuf>,
        /// Workers of the local cluster.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Remove the cluster; `--local DIR` stops and removes a local one.
    Destroy {
        /// The local cluster's directory.
        #[arg(long, value_name = "DIR")]
        local: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Apply {
            local: Some(dir),
            workers,
        } => {
            let o = provisioner::local::LocalOptions {
                workers,
                ..Default::default()
            };
            provisioner::local::apply(&dir, &o).await
        }
        Command::Destroy { local: Some(dir) } => provisioner::local::destroy(&dir),
        other => Err(anyhow::anyhow!(
            "provisioner {other:?} on AWS is not built yet (issue #7)"
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
