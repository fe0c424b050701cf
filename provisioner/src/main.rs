//! provisioner: builds the cluster on AWS, or on one machine with `--local`.
//!
//! Thin: parses arguments, reads and validates the spec before any AWS call,
//! runs one command of the library, owns the exit code (0 ok, 1 user or
//! config error, 2 unexpected; smoke-test: 1 a check failed, 2 it could not
//! start).

use clap::{Parser, Subcommand};
use provisioner::spec::ClusterSpec;
use provisioner::{Provisioner, parse_groups};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Plan, apply and destroy a kube-aws-pki cluster.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version, about)]
struct Cli {
    /// The cluster spec (TOML; see docs/provisioner.md).
    #[arg(long, short = 'f', global = true, default_value = "cluster.toml")]
    spec: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what apply would create, change and delete; writes nothing.
    Plan {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build or update the cluster; idempotent and resumable.
    Apply {
        /// Only these groups: vpc,s3,iam,kms,pki,etcd,controller,worker.
        #[arg(long)]
        only: Option<String>,
        /// Run the whole flow on this machine in DIR instead of AWS.
        #[arg(long, value_name = "DIR")]
        local: Option<PathBuf>,
        /// Workers of the local cluster (with `--local`).
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Delete every resource tagged as owned by the cluster.
    Destroy {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Stop and remove the local cluster in DIR.
        #[arg(long, value_name = "DIR")]
        local: Option<PathBuf>,
    },
    /// Endpoints and auto scaling group states.
    Output {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Clear the state lock left by a provisioner that died.
    Unlock,
    /// Write an admin kubeconfig from a short-lived certificate pki-server
    /// issues to your operator token (VAULT_ADDR, VAULT_CACERT, VAULT_TOKEN).
    Kubeconfig {
        /// pki-server address (default https://<pki DNS>:8200).
        #[arg(long, env = "VAULT_ADDR")]
        address: Option<String>,
        /// pki-server's listener CA certificate.
        #[arg(long = "ca-cert", env = "VAULT_CACERT")]
        ca_cert: Option<PathBuf>,
        /// The name your operator token carries (its node_name).
        #[arg(long, env = "USER", required_unless_present = "local")]
        name: Option<String>,
        /// For the local cluster in DIR: log in as its operator with a fresh
        /// JWT; the server is the local controller (default --out DIR/kubeconfig).
        #[arg(long, value_name = "DIR", conflicts_with_all = ["address", "ca_cert", "api_host", "name"])]
        local: Option<PathBuf>,
        /// Certificate lifetime (default: the role's, short).
        #[arg(long)]
        ttl: Option<String>,
        /// API server host in the kubeconfig (default: the private zone's API record).
        #[arg(long)]
        api_host: Option<String>,
        /// Output folder (default ~/.kube/kube-aws-pki/<cluster>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a built cluster from outside: API health, nodes Ready, a test
    /// pod scheduled and cluster DNS resolving (exit 1: a check failed,
    /// 2: no usable kubeconfig or spec).
    SmokeTest {
        /// Admin kubeconfig, JSON (default ~/.kube/kube-aws-pki/<cluster>/admin.conf).
        #[arg(long, conflicts_with = "local")]
        kubeconfig: Option<PathBuf>,
        /// The local cluster in DIR: a fresh admin kubeconfig from
        /// `kubeconfig --local`, the steps that need a kubelet skipped.
        #[arg(long, value_name = "DIR")]
        local: Option<PathBuf>,
        /// Seconds the test pod may take to finish.
        #[arg(long, value_name = "SECS", default_value_t = provisioner::smoke::DEFAULT_TIMEOUT_SECS)]
        timeout: u64,
        /// Test pod image (needs busybox's nslookup).
        #[arg(long, default_value = provisioner::smoke::DEFAULT_IMAGE)]
        image: String,
    },
}

fn load_spec(path: &PathBuf) -> anyhow::Result<ClusterSpec> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the cluster spec {}: {e}", path.display()))?;
    let mut spec = ClusterSpec::parse(&text)?;
    provisioner::ssh::load_or_create(&mut spec)?;
    Ok(spec)
}

#[derive(Debug)]
enum Failure {
    User(anyhow::Error),
    Unexpected(anyhow::Error),
    /// smoke-test could not start (no kubeconfig, bad spec): exit 2.
    Setup(anyhow::Error),
}

/// `smoke-test`: reads only the spec (no SSH keys made, no AWS client) and
/// the kubeconfig; a failed check is exit 1, a setup problem exit 2.
async fn smoke_test(
    spec: &std::path::Path,
    kubeconfig: Option<PathBuf>,
    timeout: u64,
    image: String,
) -> Result<(), Failure> {
    use provisioner::smoke::{self, SmokeError};
    let spec = std::fs::read_to_string(spec)
        .map_err(|e| anyhow::anyhow!("cannot read the cluster spec {}: {e}", spec.display()))
        .and_then(|t| Ok(ClusterSpec::parse(&t)?))
        .map_err(Failure::Setup)?;
    let kubeconfig = match kubeconfig {
        Some(k) => k,
        None => smoke::default_kubeconfig(&spec.name).map_err(Failure::Setup)?,
    };
    let o = smoke::SmokeOptions {
        kubeconfig,
        timeout: std::time::Duration::from_secs(timeout),
        image,
        no_pods: None,
    };
    match smoke::run(&spec, &o).await {
        Ok(()) => Ok(()),
        Err(SmokeError::Config(e)) => Err(Failure::Setup(e)),
        Err(e @ SmokeError::Check { .. }) => Err(Failure::User(e.into())),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Apply {
            local: Some(dir),
            workers,
            ..
        } => {
            let o = provisioner::local::LocalOptions {
                workers: *workers,
                ..Default::default()
            };
            return provisioner::local::apply(dir, &o)
                .await
                .map_err(Failure::User);
        }
        Command::Destroy {
            local: Some(dir), ..
        } => return provisioner::local::destroy(dir).map_err(Failure::User),
        Command::SmokeTest {
            local: Some(dir),
            timeout,
            image,
            ..
        } => {
            let o = provisioner::local::LocalOptions::default();
            return provisioner::local::smoke_test(
                dir,
                &o,
                std::time::Duration::from_secs(*timeout),
                image.clone(),
            )
            .await
            .map_err(Failure::User);
        }
        Command::SmokeTest {
            kubeconfig,
            timeout,
            image,
            ..
        } => return smoke_test(&cli.spec, kubeconfig.clone(), *timeout, image.clone()).await,
        Command::Kubeconfig {
            local: Some(dir),
            ttl,
            out,
            ..
        } => {
            let o = provisioner::local::LocalOptions::default();
            let conf = provisioner::local::kubeconfig(dir, &o, out.clone(), ttl.clone())
                .await
                .map_err(Failure::User)?;
            println!(
                "wrote {} (use: KUBECONFIG={} kubectl get nodes)",
                conf.display(),
                conf.display()
            );
            return Ok(());
        }
        _ => {}
    }
    let spec = load_spec(&cli.spec).map_err(Failure::User)?;
    if let Command::Kubeconfig {
        address,
        ca_cert,
        name,
        ttl,
        api_host,
        out,
        ..
    } = cli.command
    {
        let name = name.ok_or_else(|| Failure::User(anyhow::anyhow!("--name is required")))?;
        let out = match out {
            Some(o) => o,
            None => provisioner::kubeconfig::default_out(&spec.name).map_err(Failure::User)?,
        };
        let token = zeroize::Zeroizing::new(std::env::var("VAULT_TOKEN").unwrap_or_default());
        let o = provisioner::kubeconfig::KubeconfigOptions {
            addr: address,
            ca_cert,
            token,
            name,
            ttl,
            out,
            api_host,
        };
        let conf = provisioner::kubeconfig::write(&spec, &o)
            .await
            .map_err(Failure::User)?;
        println!(
            "wrote {} (use: KUBECONFIG={} kubectl get nodes)",
            conf.display(),
            conf.display()
        );
        return Ok(());
    }
    let p = Provisioner::from_env(spec).await;
    let unexpected = Failure::Unexpected;
    match cli.command {
        Command::Plan { json } => {
            let plan = p.plan(&[]).await.map_err(unexpected)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&plan)
                        .map_err(|e| Failure::Unexpected(e.into()))?
                );
            } else {
                print!("{plan}");
            }
        }
        Command::Apply { only, .. } => {
            let groups = match only {
                Some(o) => parse_groups(&o).map_err(Failure::User)?,
                None => vec![],
            };
            let plan = p.apply(&groups).await.map_err(unexpected)?;
            print!("{plan}");
            if !plan.is_empty() {
                println!("Apply complete.");
            }
        }
        Command::Destroy { yes, .. } => {
            let plan = p.destroy_plan().await.map_err(unexpected)?;
            print!("{plan}");
            if plan.is_empty() {
                return Ok(());
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(Failure::User(anyhow::anyhow!(
                        "destroy needs --yes when stdin is not a terminal"
                    )));
                }
                print!(
                    "Delete these {} resources of cluster {}? Type the cluster name to confirm: ",
                    plan.changes.len(),
                    p.spec.name
                );
                let _ = std::io::stdout().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                if answer.trim() != p.spec.name {
                    return Err(Failure::User(anyhow::anyhow!(
                        "not confirmed; nothing deleted"
                    )));
                }
            }
            p.destroy().await.map_err(unexpected)?;
            println!("Destroy complete.");
        }
        Command::Output { json } => {
            let out = p.output().await.map_err(unexpected)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out)
                        .map_err(|e| Failure::Unexpected(e.into()))?
                );
            } else {
                println!("cluster  {}", out.cluster);
                println!("pki      {}", out.pki_url);
                println!("api      {}", out.api_url);
                for (k, v) in &out.load_balancers {
                    println!("{k:<8} {v}");
                }
                for g in &out.groups {
                    println!(
                        "{:<24} {}:{}:{} in service {}/{}",
                        g.name, g.min, g.max, g.desired, g.in_service, g.instances
                    );
                }
            }
        }
        // handled before the AWS clients are made
        Command::Kubeconfig { .. } | Command::SmokeTest { .. } => {}
        Command::Unlock => match p.unlock().await.map_err(unexpected)? {
            Some(h) => println!("removed the lock held by {h}"),
            None => println!("the cluster was not locked"),
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::User(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Unexpected(e) | Failure::Setup(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
