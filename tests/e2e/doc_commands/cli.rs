//! One parse of a shown command by the real command line it is for (weir's
//! or xtask's), and what became of it.

use anyhow::{Result, bail};
use clap::error::ErrorKind;

pub enum Parse {
    Whole(clap::ArgMatches),
    /// `--help` or `--version`: prints and exits 0.
    HelpOrVersion,
    /// Real subcommands and flags, with required arguments left out: fine
    /// for a mention in prose (`weir run`), not for a line to type.
    LeftOut,
}

/// `args` after `name`, parsed by `cli`; `lenient` lets arguments be left out.
pub fn parse(cli: &clap::Command, name: &str, args: &[String], lenient: bool) -> Result<Parse> {
    let argv = std::iter::once(name).chain(args.iter().map(String::as_str));
    match cli.clone().try_get_matches_from(argv) {
        Ok(matches) => Ok(Parse::Whole(matches)),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Ok(Parse::HelpOrVersion)
        }
        Err(e)
            if lenient
                && matches!(
                    e.kind(),
                    ErrorKind::MissingRequiredArgument
                        | ErrorKind::MissingSubcommand
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) =>
        {
            Ok(Parse::LeftOut)
        }
        Err(e) => bail!("{name}'s command line refuses it: {}", message(&e)),
    }
}

/// clap's message without its usage and help hints, on one line.
fn message(e: &clap::Error) -> String {
    e.render()
        .to_string()
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
