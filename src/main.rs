//! doproxy: scale a web application tier on DigitalOcean droplets behind
//! HAProxy. This file only parses arguments, sets up logging, runs the
//! command and turns the outcome into an exit code.

mod acme;
mod atomic_file;
mod certificate;
mod cli;
mod commands;
mod config;
mod digitalocean;
mod etcd;
mod haproxy;
mod http;
mod inventory;
mod limits;
mod listing;
mod lockfile;
mod metrics;
mod model;
mod notify;
mod ops;
mod progress;
mod readiness;
mod scaling;
mod shutdown;
mod text;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command, GlobalArgs, OutputFormat};

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let cli = Cli::parse();
    init_logging(&cli.global);
    limits::raise_open_files();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("doproxy: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; the exit code when it did not fail.
fn run(cli: &Cli) -> Result<u8> {
    let report = match commands::run_without_config(&cli.command) {
        Some(report) => report?,
        None => match config::Config::load(cli.global.config.as_deref()) {
            Err(err) if matches!(cli.command, Command::Doctor) => {
                commands::doctor_config_failed(&err)
            }
            config => commands::run(
                config?,
                &cli.command,
                cli.global.output == OutputFormat::Json,
            )?,
        },
    };
    if let Err(err) = print(&report, cli.global.output)
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(err).context("cannot write the result to stdout");
    }
    report.failure.map_or(Ok(report.exit_code), Err)
}

/// Writes the report to stdout. A reader that went away (`| head`) is not
/// an error worth reporting.
fn print(report: &commands::Report, format: OutputFormat) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match format {
        OutputFormat::Text => report
            .text
            .iter()
            .try_for_each(|line| writeln!(stdout, "{line}"))?,
        OutputFormat::Json => writeln!(stdout, "{:#}", report.json)?,
    }
    stdout.flush()
}

/// Progress and logs go to stderr, so stdout holds only results. Lines carry
/// a timestamp when stderr is not a terminal (cron mail, log files). `-v`
/// shows doproxy's own detail; the libraries underneath (HTTP, TLS) speak
/// only when something is wrong.
fn init_logging(global: &GlobalArgs) {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    progress::init(global.quiet);
    let (own, libraries) = if global.quiet {
        (Level::ERROR, Level::ERROR)
    } else if global.verbose {
        (Level::DEBUG, Level::WARN)
    } else {
        (Level::INFO, Level::WARN)
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), own)
        .with_default(libraries);
    let format = tracing_subscriber::fmt::layer()
        .with_writer(|| progress::LogWriter)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    if std::io::stderr().is_terminal() {
        registry.with(format.without_time()).init();
    } else {
        registry.with(format).init();
    }
}
