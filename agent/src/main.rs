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
    /// Run the L7 proxy with a config file (reloaded on SIGHUP and on change).
    Proxy {
        #[arg(long)]
        config: PathBuf,
        /// Tokio worker threads; 1 runs everything on one thread.
        #[arg(long)]
        workers: Option<usize>,
    },
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
    }
}

/// `weir check-config FILE`: exit 0 with a summary, or exit 1 with every error found.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    match weir::config::load_file(file) {
        Ok(config) => {
            println!("{}: ok: {}", file.display(), config.summary());
            Ok(())
        }
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
    }
}
