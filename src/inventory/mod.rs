//! The inventory: which droplets belong to the pool, with everything `print`
//! and `generate` need, so neither makes an API call. It lives in a store:
//! a flat file by default.

mod drift;
mod entry;
mod file;

use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
pub use drift::drift;
pub use entry::{Entry, Status};
use file::{FileInventory, FileLock};

/// Where the inventory lives.
pub enum Store {
    File(FileInventory),
}

/// Proof that this run holds the store's exclusive lock; released on drop.
/// Every write takes one, so no write happens without the lock.
pub enum StoreLock {
    File(#[expect(dead_code, reason = "held for its Drop, which unlocks")] FileLock),
}

impl Store {
    pub fn open(config: &Config) -> Store {
        Store::File(FileInventory::new(&config.inventory_file))
    }

    /// Where the inventory is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::File(file) => file.path().display().to_string(),
        }
    }

    pub async fn load(&self) -> Result<Vec<Entry>> {
        match self {
            Store::File(file) => file.load(),
        }
    }

    /// Replaces the inventory with `entries`, atomically.
    pub async fn save(&self, entries: &[Entry], lock: &StoreLock) -> Result<()> {
        match (self, lock) {
            (Store::File(file), StoreLock::File(_)) => file.save(entries),
        }
    }

    /// Takes the exclusive lock, waiting up to `timeout` for another run.
    pub async fn lock(&self, timeout: Duration) -> Result<StoreLock> {
        match self {
            Store::File(file) => Ok(StoreLock::File(file.lock(timeout)?)),
        }
    }
}
