use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// weir node agent: eBPF interception into one shared L7 proxy per node.
#[derive(Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate a proxy config file, print a summary.
    CheckConfig { file: PathBuf },
    /// Print the JSON Schema of the proxy config format.
    ConfigSchema,
    /// Run the node agent: the proxy, the eBPF data path, and enrollment of the
    /// pods listed in a pods file (annotated `weir.dev/enroll: "true"`).
    Run {
        /// Proxy config (reloaded on SIGHUP and on change).
        #[arg(long)]
        config: PathBuf,
        /// Pods on this node (watched for changes).
        #[arg(long)]
        pods: PathBuf,
        /// bpffs directory where the data path is pinned, to outlive the agent.
        #[arg(long, default_value = weir::datapath::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
        /// Tokio worker threads; 1 runs everything on one thread.
        #[arg(long)]
        workers: Option<usize>,
        /// Splice app-to-proxy data with sockops + sk_msg instead of the
        /// loopback TCP stack.
        #[arg(long, value_enum, default_value_t = Switch::Off)]
        sk_msg: Switch,
    },
    /// Run the L7 proxy with a config file (reloaded on SIGHUP and on change).
    Proxy {
        #[arg(long)]
        config: PathBuf,
        /// Tokio worker threads; 1 runs everything on one thread.
        #[arg(long)]
        workers: Option<usize>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::ConfigSchema => {
            println!("{}", weir::config::json_schema_string());
            Ok(())
        }
        Command::Proxy { config, workers } => Ok(weir::proxy::run(&config, workers)?),
        Command::Run {
            config,
            pods,
            pin_root,
            workers,
            sk_msg,
        } => Ok(weir::run::run(&weir::run::RunOptions {
            config,
            pods,
            pin_root,
            workers,
            sk_msg: sk_msg == Switch::On,
        })?),
    }
}

/// `weir check-config FILE`: exit 0 with a summary, or exit 1 with every error found.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    match weir::config::load_file(file) {
        Ok(config) => {
            // The files `weir proxy` would load (certificates, keys, CAs).
            let metrics = weir::proxy::metrics::Metrics::new()?;
            if let Err(err) = weir::proxy::build::check(&config, &metrics) {
                eprintln!("{}: {err}", file.display());
                std::process::exit(1);
            }
            println!("{}: ok: {}", file.display(), config.summary());
            Ok(())
        }
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
    }
}
