//! The commands, one file each, as thin as cargo's: each turns its
//! arguments into what an operation (`ops`) takes, runs it, and turns what
//! happened into a `Report`, printed as text or JSON. Commands do not call
//! each other; what several share is in `ops` (the doing) and `report`
//! (the reading). Asking a person on the terminal happens here, never in
//! `ops`.

mod autoscale;
mod cert;
mod completions;
mod create;
mod delete;
mod doctor;
mod failover;
mod generate;
mod heal;
mod history;
mod init;
mod inventory;
mod print;
mod reconcile;
mod reload;
mod report;
mod rollout;
mod scale;
mod watch;

use anyhow::{Context as _, Result, bail};

use crate::cli::{Command, ScaleWaits};
use crate::config::Config;
use crate::model::{Change, Kind, Severity};
use crate::ops::{Context, Waits};
use crate::shutdown::Shutdown;
pub use report::Report;

/// Commands that need no config file: they run before one is loaded.
pub fn run_without_config(command: &Command) -> Option<Result<Report>> {
    match command {
        Command::Init(args) => Some(init::run(&args.folder, args.template)),
        Command::Completions(args) => Some(completions::completions(args.shell)),
        Command::Man => Some(completions::man()),
        _ => None,
    }
}

/// `doctor`'s report when the config did not load.
pub fn doctor_config_failed(err: &anyhow::Error) -> Report {
    doctor::config_failed(err)
}

/// Runs `command` with `config` in an async runtime of its own (one thread:
/// the work is waiting), stopping between steps on SIGTERM or SIGINT.
/// `json_output`: the results are printed as JSON (-o json).
pub fn run(config: Config, command: &Command, json_output: bool) -> Result<Report> {
    // Every command says it, even with -q, until the file is fixed:
    // cron mail is where many users will see it.
    if let Ok(Some(exposed)) = config.exposed_secrets() {
        eprintln!("doproxy: warning: {exposed}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = Shutdown::listen().context("cannot listen for SIGTERM and SIGINT")?;
        let ctx = Context::new(config, shutdown)?;
        let report = run_command(&ctx, command, json_output).await;
        if changes_the_pool(command) {
            record_failure(&ctx, &report).await;
        }
        // Finished first: the notifications still queued count in the metrics.
        ctx.finish().await;
        if leaves_textfile(command) {
            ctx.leave_metrics().await;
        }
        report
    })
}

/// Whether `command` leaves its metrics in metrics_textfile: the one-shot
/// commands that change something, whether they succeeded or not (`watch`
/// and the `autoscale` service serve theirs instead).
fn leaves_textfile(command: &Command) -> bool {
    match command {
        Command::Create(_)
        | Command::Delete(_)
        | Command::Scale(_)
        | Command::Reconcile(_)
        | Command::Rollout(_)
        | Command::Reload(_) => true,
        Command::Autoscale(args) => args.once || args.dry_run,
        Command::Heal(args) => args.once || args.dry_run,
        _ => false,
    }
}

/// Whether `command` changes the pool, so its failure is an event.
fn changes_the_pool(command: &Command) -> bool {
    match command {
        Command::Create(_) | Command::Delete(_) | Command::Reload(_) => true,
        Command::Scale(args) => !args.dry_run,
        Command::Rollout(args) => !args.dry_run,
        Command::Reconcile(args) => args.apply,
        Command::Autoscale(args) => !args.history && !args.dry_run,
        Command::Heal(args) => !args.history && !args.dry_run,
        _ => false,
    }
}

/// A failed command (whole or in part) as an event: the one place every
/// failure of a change is recorded.
async fn record_failure(ctx: &Context, report: &Result<Report>) {
    let failure = match report {
        Err(err) => err,
        Ok(report) => match &report.failure {
            Some(failure) => failure,
            None => return,
        },
    };
    failed(ctx, failure).await;
}

async fn failed(ctx: &Context, failure: &anyhow::Error) {
    let change = Change::done(Kind::CommandFailed, Vec::new(), format!("{failure:#}"))
        .with_severity(Severity::Error);
    ctx.record([change]).await;
}

/// The failures of a step a long-running command repeats (an autoscale
/// decision, a heal pass): recorded when it starts failing, not at every
/// step while it keeps failing.
#[derive(Default)]
struct Failing(bool);

impl Failing {
    async fn step(&mut self, ctx: &Context, outcome: Result<(), &anyhow::Error>) {
        match outcome {
            Ok(()) => self.0 = false,
            Err(err) if !self.0 => {
                self.0 = true;
                failed(ctx, err).await;
            }
            Err(_) => {}
        }
    }
}

async fn run_command(ctx: &Context, command: &Command, json_output: bool) -> Result<Report> {
    match command {
        Command::Print(args) => print::run(ctx, args, json_output).await,
        Command::Reconcile(args) => reconcile::run(ctx, args).await,
        Command::Scale(args) => scale::run(ctx, args).await,
        Command::Watch(args) => watch::run(ctx, args).await,
        Command::Failover(args) => failover::run(ctx, args).await,
        Command::History(args) => history::run(ctx, args).await,
        Command::Autoscale(args) => autoscale::run(ctx, args).await,
        Command::Doctor => doctor::run(ctx).await,
        Command::Init(_) | Command::Completions(_) | Command::Man => {
            unreachable!("run_without_config handles these")
        }
        Command::Inventory(command) => inventory::run(ctx, command).await,
        Command::Create(args) => create::run(ctx, args).await,
        Command::Delete(args) => delete::run(ctx, args).await,
        Command::Cert(command) => cert::run(ctx, command).await,
        Command::Generate => generate::run(ctx).await,
        Command::Reload(args) => reload::run(ctx, args).await,
        Command::Rollout(args) => rollout::run(ctx, args).await,
        Command::Heal(args) => heal::run(ctx, args).await,
    }
}

/// What the wait flags of `scale`, `autoscale`, `rollout` and `heal` ask of
/// the operations.
fn waits(args: &ScaleWaits) -> Waits {
    Waits {
        timeout: args.timeout,
        drain_timeout: args.drain_timeout,
        lock_timeout: args.lock.lock_timeout,
    }
}

/// The most droplets a run of `command` that asks for `count` may make: up
/// to confirm_creates_above need no agreement; more need --yes (`yes`) or a
/// yes on the terminal, asked here, before any lock is taken.
async fn agreed_count(ctx: &Context, count: usize, yes: bool, command: &str) -> Result<usize> {
    let threshold = ctx.config.confirm_creates_above;
    if yes {
        return Ok(usize::MAX);
    }
    if count <= threshold {
        return Ok(threshold);
    }
    let question =
        format!("{command} creates {count} droplets, each billed from now on. Go ahead?");
    if confirmed(&[], &question).await? {
        return Ok(count);
    }
    bail!(
        "{command} would create {count} droplets, more than confirm_creates_above ({threshold}), and was not confirmed, so nothing was created; add --yes to go ahead"
    )
}

/// Asks `question` (with `[y/N]`) on the terminal after the lines of
/// `listing`; false without a terminal to ask on. Never asked while holding
/// the inventory lock: an answer may take all day.
async fn confirmed(listing: &[String], question: &str) -> Result<bool> {
    use std::io::{IsTerminal, Write};
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(false);
    }
    let question: String = listing
        .iter()
        .map(|line| format!("{line}\n"))
        .chain([format!("{question} [y/N] ")])
        .collect();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr();
        stderr.write_all(question.as_bytes())?;
        stderr.flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok::<_, std::io::Error>(answer)
    })
    .await
    .context("cannot ask on the terminal")?
    .context("cannot ask on the terminal")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
