//! doproxy: scale a web application tier on DigitalOcean droplets behind
//! HAProxy. This file only parses arguments, sets up logging, runs the
//! command and turns the outcome into an exit code.

mod atomic_file;
mod cli;
mod commands;
mod config;
mod digitalocean;
mod etcd;
mod haproxy;
mod http;
mod inventory;
mod lockfile;
mod readiness;
mod scaling;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, GlobalArgs, OutputFormat};

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let cli = Cli::parse();
    init_logging(&cli.global);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("doproxy: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let config = config::Config::load(cli.global.config.as_deref())?;
    let app = commands::App::new(config, cli.global.output == OutputFormat::Json)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        let report = commands::run(&app, &cli.command).await;
        app.store.finish().await;
        report
    })?;
    let mut stdout = std::io::stdout().lock();
    match cli.global.output {
        OutputFormat::Text => report
            .text
            .iter()
            .try_for_each(|line| writeln!(stdout, "{line}"))?,
        OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&report.json)?)?,
    }
    stdout.flush()?;
    report.failure.map_or(Ok(()), Err)
}

/// Progress and logs go to stderr, so stdout holds only results. Lines carry
/// a timestamp when stderr is not a terminal (cron mail, log files).
fn init_logging(global: &GlobalArgs) {
    let level = if global.quiet {
        tracing::Level::WARN
    } else if global.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::io::stderr().is_terminal() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
