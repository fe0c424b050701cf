//! provisioner: builds the cluster on AWS, or on one machine with `--local`.
//!
//! Not built yet (issue #7): every subcommand says so and exits 1.

use clap::{Parser, Subcommand};
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
    /// Show what apply would change (not implemented yet: issue #7).
    Plan,
    /// Build or update the cluster (not implemented yet: issue #7).
    Apply,
    /// Remove the cluster (not implemented yet: issue #7).
    Destroy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "error: provisioner {:?} is not implemented yet (issue #7)",
        cli.command
    );
    ExitCode::from(1)
}
