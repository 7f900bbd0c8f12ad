//! The commands, one file each, and what they share: the loaded config, the
//! API client (built once, on first use), the inventory, and the result each
//! command hands back for printing as text or JSON.

mod autoscale;
mod completions;
mod create;
mod delete;
mod doctor;
mod failover;
mod generate;
mod heal;
mod init;
mod inventory;
mod print;
mod reconcile;
mod reload;
mod rollout;
mod scale;
mod watch;

use std::cell::OnceCell;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::Command;
use crate::config::Config;
use crate::digitalocean::{ApiError, Client, Droplet};
use crate::inventory::{Store, StoreLock};
use crate::lockfile::LockFile;
use crate::model::Entry;
use crate::ops::droplet;
use crate::shutdown::{Interrupted, Shutdown};
use crate::text::Printable;

/// Lock wait for commands without --lock-timeout that write the inventory
/// (filling in legacy lines, print --refresh).
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything a command works with.
pub struct App {
    pub config: Config,
    /// Results are printed as JSON (-o json).
    pub json_output: bool,
    pub store: Store,
    /// Set by SIGTERM or SIGINT: commands stop between steps.
    pub shutdown: Shutdown,
    client: OnceCell<Client>,
    /// Where HAProxy's frontend listens, looked up once per process.
    frontend_bind: tokio::sync::OnceCell<String>,
}

/// A command's result: the lines printed for people, the JSON printed with
/// `-o json`, and, when only part of the work succeeded, the error to report
/// after them.
pub struct Report {
    pub text: Vec<String>,
    pub json: serde_json::Value,
    pub failure: Option<anyhow::Error>,
    /// The exit code when nothing failed: 0, or what a flag such as
    /// `reconcile --exit-code` asks for to tell an outcome apart.
    pub exit_code: u8,
}

impl Report {
    fn new(text: Vec<String>, json: impl Serialize) -> Result<Report> {
        let json = serde_json::to_value(json).context("cannot encode the result as JSON")?;
        Ok(Report {
            text,
            json,
            failure: None,
            exit_code: 0,
        })
    }

    /// This report, exiting with `code` unless it failed.
    fn exiting_with(mut self, code: u8) -> Report {
        self.exit_code = code;
        self
    }

    /// This report, marked as a partial failure.
    fn failed(mut self, failure: anyhow::Error) -> Report {
        self.failure = Some(failure);
        self
    }

    /// What a long-running command reports when a signal stopped it, as it
    /// should: nothing printed, `{"stopped_by": "SIGTERM"}` in JSON.
    fn stopped(stopped: &Interrupted) -> Result<Report> {
        Report::new(
            Vec::new(),
            serde_json::json!({ "stopped_by": stopped.signal.to_string() }),
        )
    }
}

impl App {
    pub fn new(config: Config, json_output: bool, shutdown: Shutdown) -> Result<App> {
        // Every command says it, even with -q, until the file is fixed:
        // cron mail is where many users will see it.
        if let Ok(Some(exposed)) = config.exposed_secrets() {
            eprintln!("doproxy: warning: {exposed}");
        }
        let store = Store::open(&config.store)?;
        Ok(App {
            config,
            json_output,
            store,
            shutdown,
            client: OnceCell::new(),
            frontend_bind: tokio::sync::OnceCell::new(),
        })
    }

    /// The API client, built on first use: commands that make no API call
    /// never need a token or a TLS setup.
    pub fn api(&self) -> Result<&Client> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = crate::ops::api::client(&self.config.api, self.config.token()?.clone())?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Where HAProxy's frontend listens (see `ops::frontend`): looked up
    /// when first needed, once per process, so no command asks the
    /// metadata service twice and none that renders no config asks it.
    pub async fn frontend_bind(&self) -> &str {
        self.frontend_bind
            .get_or_init(|| crate::ops::frontend::resolve(&self.config))
            .await
    }

    /// The store's exclusive lock, waiting up to `timeout` for another run;
    /// a signal ends the wait with nothing changed.
    pub async fn lock(&self, timeout: Duration) -> Result<StoreLock> {
        crate::metrics::lock_wait(self.store.lock(timeout, &self.shutdown)).await
    }

    /// Keeps to one `name` (a command) at a time on this proxy: the lock file
    /// `<inventory_file>.<name>.lock`, waiting up to `timeout` for another run.
    async fn one_at_a_time(&self, name: &str, timeout: Duration) -> Result<LockFile> {
        let path =
            crate::atomic_file::sibling(&self.config.inventory_file, &format!("{name}.lock"));
        LockFile::acquire(&path, timeout).await
    }

    /// The JSON document `name` kept with the inventory (a command's state
    /// between runs), or its default while none was written.
    async fn load_meta<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T> {
        match self.store.read_meta(name).await? {
            None => Ok(T::default()),
            Some(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "the {name} state in {} is unreadable; delete it to start afresh",
                    self.store.describe()
                )
            }),
        }
    }

    /// Replaces the JSON document `name` kept with the inventory.
    async fn save_meta(&self, name: &str, value: &impl Serialize, lock: &StoreLock) -> Result<()> {
        let text = serde_json::to_string(value).context("cannot encode the state as JSON")?;
        self.store.write_meta(name, &text, lock).await
    }

    /// The droplets of `droplets` (as DigitalOcean shows them now) that are
    /// not the pool's (see `Pool::disowns`), each with one sentence: which
    /// droplet, where the inventory lists it, and why it is not the pool's.
    /// Whoever can write the inventory can list any droplet of the account
    /// in it, so this, not the inventory, decides what may be destroyed or
    /// tagged.
    pub async fn not_the_pools(&self, droplets: &[Droplet]) -> Vec<(u64, String)> {
        let pool = self.config.pool.clone();
        let mut refused = Vec::new();
        for droplet in droplets {
            let Some(why) = pool.disowns(&droplet.name, &droplet.tags) else {
                continue;
            };
            let listed = match self.store.locate(droplet.id).await {
                Ok(Some(place)) => format!("listed at {place}"),
                Ok(None) => "not in the inventory".to_string(),
                Err(err) => format!("listed in {} ({err:#})", self.store.describe()),
            };
            refused.push((
                droplet.id,
                format!(
                    "droplet {} ({}), {listed}, is not pool {}'s: DigitalOcean shows it {why}",
                    droplet.id,
                    Printable::new(&droplet.name),
                    pool.tag
                ),
            ));
        }
        refused
    }

    /// Fails, naming each, when any of `droplets` (as DigitalOcean shows
    /// them now) is not the pool's: such a droplet is never destroyed nor
    /// tagged, whatever the inventory says.
    pub async fn refuse_foreign(&self, droplets: &[Droplet]) -> Result<()> {
        let refused = self.not_the_pools(droplets).await;
        if refused.is_empty() {
            return Ok(());
        }
        let them = if refused.len() == 1 { "it" } else { "them" };
        let sentences: Vec<String> = refused.into_iter().map(|(_, sentence)| sentence).collect();
        anyhow::bail!(
            "{}, so doproxy neither destroys nor tags {them}; remove from the inventory what is not the pool's, or tag what is with {}",
            sentences.join("; "),
            self.config.pool_tag()
        )
    }

    /// The inventory, with Ruby DOProxy ID-only lines filled in from the API
    /// and written back. `held` is the caller's lock, if it holds one;
    /// otherwise the lock is taken only when there is something to fill in.
    pub async fn entries(&self, held: Option<&StoreLock>) -> Result<Vec<Entry>> {
        let entries = self.store.load().await?;
        if !entries.iter().any(Entry::needs_details) {
            return Ok(entries);
        }
        let own = match held {
            Some(_) => None,
            None => Some(self.lock(LOCK_TIMEOUT).await?),
        };
        let lock = held.or(own.as_ref()).expect("one of the two is set");
        let mut entries = self.store.load().await?;
        let api = self.api()?;
        for entry in entries.iter_mut().filter(|e| e.needs_details()) {
            let droplet = api.get_droplet(entry.id).await.map_err(|err| match err {
                ApiError::NotFound => anyhow::anyhow!(
                    "droplet {} in {} no longer exists at DigitalOcean; remove its line and retry",
                    entry.id,
                    self.store.describe()
                ),
                err => anyhow::Error::new(err).context(format!(
                    "cannot look up droplet {} of the inventory",
                    entry.id
                )),
            })?;
            *entry = droplet::entry_of(&droplet)?;
        }
        self.store.save(&entries, lock).await?;
        tracing::info!("filled in the details of the inventory's ID-only lines");
        Ok(entries)
    }
}

pub use doctor::config_failed as doctor_config_failed;

/// Commands that need no config file: they run before one is loaded.
pub fn run_without_config(command: &Command) -> Option<Result<Report>> {
    match command {
        Command::Init(args) => Some(init::run(&args.folder, args.template)),
        Command::Completions(args) => Some(completions::completions(args.shell)),
        Command::Man => Some(completions::man()),
        _ => None,
    }
}

pub async fn run(app: &App, command: &Command) -> Result<Report> {
    let report = run_command(app, command).await;
    if leaves_textfile(command) {
        crate::metrics::leave_textfile(&app.config.metrics).await;
    }
    report
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

async fn run_command(app: &App, command: &Command) -> Result<Report> {
    match command {
        Command::Print(args) => print::run(app, args).await,
        Command::Reconcile(args) => reconcile::run(app, args).await,
        Command::Scale(args) => scale::run(app, args).await,
        Command::Watch(args) => watch::run(app, args).await,
        Command::Failover(args) => failover::run(app, args).await,
        Command::Autoscale(args) => autoscale::run(app, args).await,
        Command::Doctor => doctor::run(app).await,
        Command::Init(_) | Command::Completions(_) | Command::Man => {
            unreachable!("run_without_config handles these")
        }
        Command::Inventory(command) => inventory::run(app, command).await,
        Command::Create(args) => create::run(app, args).await,
        Command::Delete(args) => delete::run(app, args).await,
        Command::Generate => generate::run(app).await,
        Command::Reload(args) => reload::run(app, args).await,
        Command::Rollout(args) => rollout::run(app, args).await,
        Command::Heal(args) => heal::run(app, args).await,
    }
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

/// The pause before a long-running command tries a failing step again
/// (reaching etcd, updating HAProxy, assigning the reserved IP): 0.5 s,
/// 1 s, 2 s, ... up to `cap`.
fn backoff(failures: u32, cap: Duration) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(cap)
}
