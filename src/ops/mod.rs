//! Operations that do I/O, composed from the clients and stores below: what
//! commands call to act on the pool (as cargo's `ops` is to its commands).
//! Each operation returns what happened as values; the commands above turn
//! them into the lines and JSON people see. `Context` is what every
//! operation works with: the checked config, the inventory's store, the
//! API client (built once, on first use), and the signal flag.
//!
//! The way in and out of the pool is one path each: `create` makes and
//! records droplets and `join` brings them into HAProxy; `retire` drains,
//! reloads and destroys; `replace` pairs the two (rollout, heal); `apply`
//! brings HAProxy to the inventory.

pub mod api;
pub mod apply;
pub mod autoscale;
pub mod certificate;
pub mod create;
pub mod delete;
pub mod doctor;
pub mod droplet;
pub mod events;
pub mod failover;
pub mod frontend;
pub mod heal;
#[cfg(test)]
mod https_tests;
pub mod init;
pub mod inventory;
pub mod join;
mod ownership;
pub mod reconcile;
pub mod replace;
pub mod retire;
pub mod rollout;
pub mod watch;

use std::cell::OnceCell;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::digitalocean::{ApiError, Client};
use crate::inventory::{Store, StoreLock};
use crate::lockfile::LockFile;
use crate::metrics::{self, Serving};
use crate::model::Entry;
use crate::notify::Notifier;
use crate::shutdown::Shutdown;

/// Lock wait for operations without a lock timeout of their own that write
/// the inventory (filling in legacy lines, refreshing it).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an operation waits for what it starts, and for the lock.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// For new droplets to become active.
    pub timeout: Duration,
    /// For open sessions to finish on servers leaving HAProxy (with its
    /// admin socket).
    pub drain_timeout: Duration,
    /// For another run that holds the inventory lock.
    pub lock_timeout: Duration,
}

/// Everything an operation works with.
pub struct Context {
    pub config: Config,
    pub store: Store,
    /// Set by SIGTERM or SIGINT: operations stop between steps.
    pub shutdown: Shutdown,
    client: OnceCell<Client>,
    /// Where HAProxy's frontend listens, looked up once per process.
    frontend_bind: tokio::sync::OnceCell<String>,
    /// Stamps and records what happened (`record`).
    recorder: events::Recorder,
    /// The webhooks events are sent to.
    notifier: Notifier,
}

impl Context {
    /// Opens the store `config` names; nothing is read yet.
    pub fn new(config: Config, shutdown: Shutdown) -> Result<Context> {
        let store = Store::open(&config.store)?;
        let recorder = events::Recorder::new(config.pool_tag());
        let notifier = Notifier::new(&config.notify, metrics::notification);
        Ok(Context {
            recorder,
            notifier,
            config,
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
        let client = api::client(&self.config.api, self.config.token()?.clone())?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Where HAProxy's frontend listens (see `frontend`): looked up when
    /// first needed, once per process, so no command asks the metadata
    /// service twice and none that renders no config asks it.
    pub async fn frontend_bind(&self) -> &str {
        self.frontend_bind
            .get_or_init(|| frontend::resolve(&self.config))
            .await
    }

    /// The store's exclusive lock, waiting up to `timeout` for another run;
    /// a signal ends the wait with nothing changed.
    pub async fn lock(&self, timeout: Duration) -> Result<StoreLock> {
        metrics::lock_wait(self.store.lock(timeout, &self.shutdown)).await
    }

    /// Keeps to one `name` (a command) at a time on this proxy: the lock file
    /// `<inventory_file>.<name>.lock`, waiting up to `timeout` for another run.
    pub async fn one_at_a_time(&self, name: &str, timeout: Duration) -> Result<LockFile> {
        let path =
            crate::atomic_file::sibling(&self.config.inventory_file, &format!("{name}.lock"));
        LockFile::acquire(&path, timeout).await
    }

    /// The JSON document `name` kept with the inventory (a command's state
    /// between runs), or its default while none was written.
    pub async fn load_meta<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T> {
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
    pub async fn save_meta(
        &self,
        name: &str,
        value: &impl Serialize,
        lock: &StoreLock,
    ) -> Result<()> {
        let text = serde_json::to_string(value).context("cannot encode the state as JSON")?;
        self.store.write_meta(name, &text, lock).await
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

    /// Serves the metrics on `listen` (from the command line), else on
    /// metrics_listen, until a stop is asked for or the result is dropped;
    /// None when neither is set.
    pub async fn serve_metrics(&self, listen: Option<SocketAddr>) -> Result<Option<Serving>> {
        let settings = metrics::Settings {
            listen: listen.or(self.config.metrics.listen),
            ..self.config.metrics.clone()
        };
        metrics::serve(&settings, &self.shutdown).await
    }

    /// Leaves this run's metrics in metrics_textfile, if set.
    pub async fn leave_metrics(&self) {
        metrics::leave_textfile(&self.config.metrics).await;
    }

    /// Waits until the locks this run dropped are given up, so runs on
    /// other proxies need not wait for their leases to expire, and (at
    /// most notify::FLUSH_WAIT) for the notifications still queued.
    pub async fn finish(&self) {
        self.store.finish().await;
        self.notifier.flush().await;
    }
}

/// The pause before a long-running operation tries a failing step again
/// (reaching etcd, updating HAProxy, assigning the reserved IP): 0.5 s,
/// 1 s, 2 s, ... up to `cap`.
fn backoff(failures: u32, cap: Duration) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(cap)
}
