use std::path::PathBuf;

use clap::Parser;
use weir::cli::args::{Cli, Command, LogFormatArg, Output, Switch};
use weir::pods::KubernetesOptions;
use weir::run::PodSource;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    weir::logging::init(
        cli.log_level.as_deref(),
        match cli.log_format {
            LogFormatArg::Text => weir::logging::LogFormat::Text,
            LogFormatArg::Json => weir::logging::LogFormat::Json,
        },
    )?;
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::ConvertEnvoy { file, output } => convert_envoy(&file, output.as_deref()),
        Command::ConfigSchema => {
            println!("{}", weir::config::json_schema_string());
            Ok(())
        }
        Command::Uninstall { pin_root, wait } => uninstall(&pin_root, wait),
        Command::Capabilities => {
            for requirement in weir::privilege::REQUIRED {
                println!("{}\t{}", requirement.capability, requirement.why);
            }
            Ok(())
        }
        Command::Status { admin, output } => {
            let status = weir::cli::status::fetch(admin)?;
            match output {
                Output::Table => print!("{}", weir::cli::status::render(&status)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            }
            Ok(())
        }
        Command::Proxy {
            config,
            workers,
            drain_time,
        } => Ok(weir::proxy::run(&config, workers, drain_time)?),
        Command::Run {
            config,
            pods,
            kubernetes,
            node_name,
            kubeconfig,
            pin_root,
            workers,
            sk_msg,
            pod_egress,
            drain_time,
            mesh,
        } => Ok(weir::run::run(&weir::run::RunOptions {
            config,
            pods: pod_source(pods, kubernetes, node_name, kubeconfig)?,
            pin_root,
            workers,
            sk_msg: sk_msg == Switch::On,
            pod_egress: pod_egress == Switch::On,
            drain_time,
            mesh: (*mesh).options(),
        })?),
    }
}

fn pod_source(
    pods: Option<PathBuf>,
    kubernetes: bool,
    node_name: Option<String>,
    kubeconfig: Option<PathBuf>,
) -> anyhow::Result<PodSource> {
    match (pods, kubernetes) {
        (Some(file), false) => Ok(PodSource::File(file)),
        (None, true) => Ok(PodSource::Kubernetes(KubernetesOptions {
            node_name: node_name.filter(|n| !n.is_empty()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--kubernetes needs the node's name: set NODE_NAME (downward API spec.nodeName) or pass --node-name"
                )
            })?,
            kubeconfig,
        })),
        _ => anyhow::bail!("pass exactly one of --pods FILE and --kubernetes"),
    }
}

/// `weir uninstall`: remove every pin, then optionally wait for SIGTERM.
fn uninstall(pin_root: &std::path::Path, wait: bool) -> anyhow::Result<()> {
    let done = weir::datapath::uninstall(pin_root)?;
    println!(
        "weir uninstall: removed {} pinned object(s) of {} pod(s) under {}; the kernel detaches and frees them",
        done.pins,
        done.pods,
        pin_root.display()
    );
    if wait {
        let mut signals = nix::sys::signal::SigSet::empty();
        signals.add(nix::sys::signal::Signal::SIGTERM);
        signals.add(nix::sys::signal::Signal::SIGINT);
        signals.thread_block()?;
        let signal = signals.wait()?;
        println!("weir uninstall: {signal}: done");
    }
    Ok(())
}

/// `weir convert-envoy FILE [-o OUT]`: the config on stdout or in OUT, notes
/// on stderr; or exit 1 with every refusal on stderr and nothing written.
fn convert_envoy(file: &std::path::Path, output: Option<&std::path::Path>) -> anyhow::Result<()> {
    let converted = weir::convert::convert_file(file).and_then(|c| {
        if let Some(out) = output {
            weir::convert::write_output(out, &c.yaml, weir::convert::Readers::of(&c.config))?;
        }
        Ok(c)
    });
    match converted {
        Ok(c) => {
            for note in &c.notes {
                eprintln!("{}: note: {note}", file.display());
            }
            match output {
                Some(out) => eprintln!(
                    "{}: converted to {}: {}",
                    file.display(),
                    out.display(),
                    c.config.summary()
                ),
                None => {
                    use std::io::Write;
                    // One write of the whole text: a closed pipe is an
                    // error to report, not a panic half-way through.
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(c.yaml.as_bytes())?;
                    stdout.flush()?;
                }
            }
            Ok(())
        }
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
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
