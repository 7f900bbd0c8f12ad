//! The inventory: the storage of the pool's entries (`model::Entry`), with
//! everything `print` and `generate` need, so neither makes an API call. It
//! lives in a store: a flat file by default (`file_store`, in the line
//! `format`), or etcd so that several proxies share one pool (`etcd_store`,
//! its keys laid out by `layout`). It knows entries, not where they come
//! from: the API's droplets are mapped to entries above it.

mod etcd_store;
mod event_log;
mod file_store;
mod format;
mod layout;
mod settings;

use std::time::Duration;

use anyhow::Result;

use crate::lockfile::LockFile;
use crate::model::{Entry, Event};
use crate::shutdown::Shutdown;
use etcd_store::EtcdLock;
pub use etcd_store::{EtcdInventory, InventoryChange, NotMoved};
pub use event_log::Trail;
use file_store::FileInventory;
pub use format::{Comments, parse, render};
pub use settings::{EtcdSettings, StoreSettings};

/// What a signal during a lock wait leaves.
const LOCK_WAIT_STOPPED: &str = "while waiting for the inventory lock; nothing was changed";

/// Where the inventory lives.
pub enum Store {
    File(FileInventory),
    Etcd(EtcdInventory),
}

/// Proof that this run holds the store's exclusive lock (a lock file, or a
/// lease-bound etcd lock shared by every proxy). Every write takes one, so no
/// write happens without the lock. The lock is held while this is in scope
/// and given up when it is dropped, on every path out of a command.
#[must_use = "the lock is released as soon as it is dropped"]
pub enum StoreLock {
    File(LockFile),
    Etcd(EtcdLock),
}

impl Store {
    pub fn open(settings: &StoreSettings) -> Result<Store> {
        Ok(match settings {
            StoreSettings::Etcd(settings) => Store::Etcd(EtcdInventory::new(settings)?),
            StoreSettings::File(path) => Store::File(FileInventory::new(path)),
        })
    }

    /// Where the inventory is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::File(file) => file.path().display().to_string(),
            Store::Etcd(etcd) => etcd.describe(),
        }
    }

    /// Where the inventory lists droplet `id`, for messages that send
    /// people there (`line 3 of inventory file /srv/doproxy/inventory`,
    /// `etcd key /doproxy/doproxy:web/droplets/g2/...`); None if it does not.
    pub async fn locate(&self, id: u64) -> Result<Option<String>> {
        Ok(match self {
            Store::File(file) => file
                .line_of(id)?
                .map(|line| format!("line {line} of inventory file {}", file.path().display())),
            Store::Etcd(etcd) => etcd.key_of(id).await?.map(|key| format!("etcd key {key}")),
        })
    }

    /// All entries, read at one point in time.
    pub async fn load(&self) -> Result<Vec<Entry>> {
        match self {
            Store::File(file) => file.load(),
            Store::Etcd(etcd) => etcd.load().await,
        }
    }

    /// Replaces the inventory with `entries`, whole or not at all (the flip
    /// of an etcd generation, or one file rename).
    pub async fn save(&self, entries: &[Entry], lock: &StoreLock) -> Result<()> {
        match (self, lock) {
            (Store::File(file), StoreLock::File(_)) => file.save(entries),
            (Store::Etcd(etcd), StoreLock::Etcd(lock)) => etcd.save(entries, lock).await,
            _ => unreachable!("a lock always comes from its own store"),
        }
    }

    /// Takes the exclusive lock, waiting up to `timeout` for another run.
    /// A signal that arrives during the wait ends it, with nothing changed;
    /// one that came before does not: a run that stops still takes the lock
    /// to record what it leaves.
    pub async fn lock(&self, timeout: Duration, shutdown: &Shutdown) -> Result<StoreLock> {
        let shutdown = shutdown.check().is_ok().then_some(shutdown);
        Ok(match (self, shutdown) {
            (Store::File(file), Some(shutdown)) => tokio::select! {
                stopped = shutdown.signalled() => return Err(stopped.leaving(LOCK_WAIT_STOPPED).into()),
                lock = file.lock(timeout) => StoreLock::File(lock?),
            },
            (Store::File(file), None) => StoreLock::File(file.lock(timeout).await?),
            (Store::Etcd(etcd), shutdown) => StoreLock::Etcd(etcd.lock(timeout, shutdown).await?),
        })
    }

    /// A small named document kept with the inventory (autoscale's state).
    pub async fn read_meta(&self, name: &str) -> Result<Option<String>> {
        match self {
            Store::File(file) => file.read_meta(name),
            Store::Etcd(etcd) => etcd.get_meta(name).await,
        }
    }

    pub async fn write_meta(&self, name: &str, value: &str, lock: &StoreLock) -> Result<()> {
        match (self, lock) {
            (Store::File(file), StoreLock::File(_)) => file.write_meta(name, value),
            (Store::Etcd(etcd), StoreLock::Etcd(lock)) => etcd.put_meta(name, value, lock).await,
            _ => unreachable!("a lock always comes from its own store"),
        }
    }

    /// `write_meta` for a secret (a private key): beside the inventory file
    /// it is readable by its owner only (0600); in etcd, as safe as etcd is.
    pub async fn write_secret(&self, name: &str, value: &str, lock: &StoreLock) -> Result<()> {
        match (self, lock) {
            (Store::File(file), StoreLock::File(_)) => file.write_secret(name, value),
            (Store::Etcd(etcd), StoreLock::Etcd(lock)) => etcd.put_meta(name, value, lock).await,
            _ => unreachable!("a lock always comes from its own store"),
        }
    }

    /// Appends `events` to the audit trail (see `event_log`); no lock is
    /// needed.
    pub async fn append_events(&self, events: &[Event]) -> Result<()> {
        match self {
            Store::File(file) => event_log::file_append(file.path(), events),
            Store::Etcd(etcd) => event_log::etcd_append(etcd.client(), etcd.prefix(), events).await,
        }
    }

    /// The audit trail, oldest first.
    pub async fn events(&self) -> Result<Trail> {
        match self {
            Store::File(file) => event_log::file_read(file.path()),
            Store::Etcd(etcd) => event_log::etcd_read(etcd.client(), etcd.prefix()).await,
        }
    }

    /// Waits until the locks this run dropped are given up, so runs on
    /// other proxies need not wait for their leases to expire.
    pub async fn finish(&self) {
        if let Store::Etcd(etcd) = self {
            etcd.released().await;
        }
    }
}

impl StoreLock {
    /// Fails with one sentence once the lock is lost (only an etcd lock can
    /// be: its lease may run out); call it before each API call that changes
    /// droplets.
    pub async fn check(&self) -> Result<()> {
        match self {
            StoreLock::File(_) => Ok(()),
            StoreLock::Etcd(lock) => lock.check().await,
        }
    }

    /// Gives the lock up now, and returns once it is given up.
    pub async fn release(self) {
        match self {
            StoreLock::File(lock) => drop(lock),
            StoreLock::Etcd(lock) => lock.release().await,
        }
    }
}
