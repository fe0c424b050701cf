//! node-client: fetches, writes and renews a node role's certificates.
//!
//! Not built yet (issue #6): every subcommand says so and exits 1, so nothing
//! can mistake this skeleton for a working agent.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The agent on each node.
#[derive(Debug, Parser)]
#[command(name = "node-client", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch every certificate a node role needs (not implemented yet: issue #6).
    FetchCert,
    /// Renew certificates before they expire (not implemented yet: issue #6).
    Renew,
    /// List the certificates on this node (not implemented yet: issue #6).
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "error: node-client {:?} is not implemented yet (issue #6)",
        cli.command
    );
    ExitCode::from(1)
}
