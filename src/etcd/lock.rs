//! etcd's lock service, and a lock held through it: on a lease kept alive,
//! so a holder that dies loses the lock once the lease runs out, and given
//! up at once by whoever holds it, on every path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::client::Client;
use super::error::EtcdError;
use super::lease::KeepAlive;
use super::wire::{LockResponse, encode};

/// A lock held on a lease, for as long as it is in scope: `release` gives it
/// up and says when that is done; dropping it (the work is done, failed
/// half-way, or was cut short) gives it up in the background at once, so
/// another holder never waits for the lease to run out while this one goes
/// on or exits.
#[must_use = "the lock is released as soon as it is dropped"]
pub struct Lock {
    client: Client,
    /// The lock's name, for messages.
    name: String,
    /// Exists exactly as long as the lock is held.
    owner_key: String,
    lease: i64,
    /// How long the lease outlives a holder that stops renewing it.
    ttl: Duration,
    /// None once released.
    keep_alive: Option<KeepAlive>,
    releasing: Releasing,
}

/// The releases of dropped locks under way, each a task of its own:
/// `wait` waits for them before the program exits.
#[derive(Clone, Default)]
pub struct Releasing(Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Releasing {
    /// Waits until the locks dropped without `release` are given up.
    pub async fn wait(&self) {
        let releasing = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for release in releasing {
            // A release that panicked has nothing left to give up.
            let _ = release.await;
        }
    }
}

impl Client {
    /// Waits, without a time limit, until this client holds the lock `name`
    /// on behalf of `lease`; returns the owner key, which exists exactly as
    /// long as the lock is held (etcd's lock service keeps one key per
    /// holder and waiter under `<name>/`, attached to its lease).
    pub async fn lock(&self, name: &str, lease: i64) -> Result<String, EtcdError> {
        let body = json!({"name": encode(name.as_bytes()), "lease": lease.to_string()});
        let response: LockResponse = self.call_within("/v3/lock/lock", &body, None).await?;
        Ok(response.key)
    }

    /// Gives up a lock, by its owner key.
    pub async fn unlock(&self, key: &str) -> Result<(), EtcdError> {
        let body = json!({"key": encode(key.as_bytes())});
        self.call::<Value>("/v3/lock/unlock", &body).await?;
        Ok(())
    }
}

impl Lock {
    /// The lock `name`, held since etcd gave `owner_key` to `lease` (of
    /// `ttl`, kept alive by `keep_alive`); a drop's release joins `releasing`.
    pub fn new(
        client: &Client,
        name: String,
        owner_key: String,
        lease: (i64, Duration),
        keep_alive: KeepAlive,
        releasing: &Releasing,
    ) -> Lock {
        Lock {
            client: client.clone(),
            name,
            owner_key,
            lease: lease.0,
            ttl: lease.1,
            keep_alive: Some(keep_alive),
            releasing: releasing.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key that exists exactly as long as the lock is held: a write
    /// made only while it exists is made only while the lock is held.
    pub fn owner_key(&self) -> &str {
        &self.owner_key
    }

    /// Why the lock is lost, if it is: etcd said its lease ran out, no
    /// renewal succeeded in time, or its owner key is gone from etcd. An
    /// error when etcd cannot say.
    pub async fn lost(&self) -> Result<Option<String>, EtcdError> {
        if let Some(lost) = self.keep_alive.as_ref().and_then(KeepAlive::lost) {
            return Ok(Some(lost.to_string()));
        }
        Ok(match self.client.get(&self.owner_key).await? {
            Some(_) => None,
            None => Some("its lease ran out or was revoked".to_string()),
        })
    }

    /// Gives the lock up at once.
    pub async fn release(mut self) {
        self.keep_alive = None;
        give_up(&self.client, &self.owner_key, self.lease, self.ttl).await;
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.keep_alive.take().is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "cannot release etcd lock {} outside the async runtime; it frees itself within {}",
                self.name,
                humantime::format_duration(self.ttl)
            );
            return;
        };
        let (client, owner_key, lease, ttl) = (
            self.client.clone(),
            self.owner_key.clone(),
            self.lease,
            self.ttl,
        );
        let release = runtime.spawn(async move { give_up(&client, &owner_key, lease, ttl).await });
        let mut releasing = self.releasing.0.lock().unwrap_or_else(|e| e.into_inner());
        releasing.retain(|release| !release.is_finished());
        releasing.push(release);
    }
}

/// Unlocking lets a waiting holder go ahead; revoking the lease then ends it
/// (and would free the lock too, had unlocking failed). If etcd cannot be
/// reached the lease just expires.
async fn give_up(client: &Client, owner_key: &str, lease: i64, ttl: Duration) {
    if let Err(err) = client.unlock(owner_key).await {
        tracing::warn!(
            "cannot release etcd lock {owner_key} ({err}); it frees itself within {}",
            humantime::format_duration(ttl)
        );
    }
    client.revoke_quietly(lease).await;
}
