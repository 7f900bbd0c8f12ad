//! The inventory kept in etcd, so that two HAProxy droplets behind one
//! reserved IP share one pool: either proxy can run doproxy, and both see
//! the same droplets.
//!
//! Keys, under a prefix per pool (`/doproxy/<pool tag>/` by default):
//!
//! ```text
//! <prefix>droplets/...                      the droplets, as JSON (see `layout`)
//! <prefix>meta/<name>                       small state, e.g. autoscale's cooldown
//! <prefix>lock/<lease ID>                   etcd's lock service: holder and waiters
//! <prefix>failover/leader                   the proxy holding the reserved IP, on its lease
//! <prefix>failover/history                  the last reserved IP assignments, as JSON
//! <prefix>events/<time>-<random>            the audit trail, one event each (see `event_log`)
//! ```
//!
//! A save takes effect whole or not at all, however many droplets it
//! changes (`layout`). A run holds the lock through a lease it keeps alive,
//! so a run that dies loses the lock when the lease runs out, and every
//! write checks in the same transaction that the lock is still held, so a
//! run whose lease ran out writes nothing.
//! Before each API call that changes droplets, commands ask the lock whether
//! it is still held (`EtcdLock::check`), so a run that lost it changes nothing
//! more at DigitalOcean either.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::layout::{self, Layout, MAX_OPS, SavePlan};
use super::settings::EtcdSettings;
use crate::etcd::{self, Client, Compare, Election, EtcdError, Op, Put, Releasing, WatchUpdate};
use crate::lockfile::LockBusy;
use crate::model::{Entry, Pool};
use crate::shutdown::Shutdown;
use crate::text::Printable;

/// How long the lock outlives a run that stops renewing it (killed, or cut
/// off from etcd): the longest another run waits for a crashed holder. The
/// lease is renewed every third of it, so two renewals can fail (each may
/// take etcd's request timeout, 10 s) before the lock is lost.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// Even a free lock takes a round trip to etcd, so shorter waits count as
/// this long.
const MIN_LOCK_WAIT: Duration = Duration::from_secs(1);

pub struct EtcdInventory {
    client: Client,
    endpoints: String,
    prefix: String,
    pool: Pool,
    /// Where droplets of the pool may still be, from before it had a prefix
    /// of its own (see `EtcdSettings::shared_prefix`).
    shared_prefix: Option<String>,
    /// The releases of locks dropped without `release`, under way:
    /// `released` waits for them before doproxy exits.
    releasing: Releasing,
}

/// Proof that this run holds the pool's etcd lock, for as long as it is in
/// scope; dropping it (the command is done, failed half-way, or was cut
/// short) gives it up in the background at once (see `etcd::Lock`).
#[must_use = "the lock is released as soon as it is dropped"]
pub struct EtcdLock(etcd::Lock);

/// The pool's droplets still sit under the prefix pools shared, and its own
/// prefix is empty: nothing may start a second inventory of the pool.
#[derive(Debug, thiserror::Error)]
#[error(
    "etcd prefix {shared} that pools shared holds {count} droplet(s) of pool {pool}, whose inventory is now kept under its own prefix {prefix}; once every proxy of the pool runs this doproxy, move them with doproxy inventory migrate, or keep the shared prefix with etcd_prefix: {shared} in doproxy.yml"
)]
pub struct NotMoved {
    shared: String,
    count: usize,
    pool: String,
    prefix: String,
}

/// What a watch on the inventory saw next.
#[derive(Debug, PartialEq, Eq)]
pub enum InventoryChange {
    /// One save changed the inventory at `revision`.
    Changed { revision: i64 },
    /// etcd compacted its history past the revision the watch was to start
    /// from, so changes were missed and the watch has ended: reload with
    /// `load_with_revision` and watch again from its revision.
    Compacted { compact_revision: i64 },
}

/// Changes to the droplets, one save at a time.
pub struct InventoryWatch {
    watch: etcd::Watch,
    droplets_prefix: String,
    /// The generation readers read, as of the last change seen.
    generation: Option<u64>,
}

impl EtcdInventory {
    pub fn new(settings: &EtcdSettings) -> Result<EtcdInventory> {
        Ok(EtcdInventory {
            client: Client::new(&settings.client)?,
            endpoints: settings.client.endpoints.join(","),
            prefix: with_slash(&settings.prefix),
            pool: settings.pool.clone(),
            shared_prefix: settings.shared_prefix.as_deref().map(with_slash),
            releasing: Releasing::default(),
        })
    }

    /// The inventory under `prefix` in the same etcd, as this pool sees it.
    fn sibling(&self, prefix: &str) -> EtcdInventory {
        EtcdInventory {
            client: self.client.clone(),
            endpoints: self.endpoints.clone(),
            prefix: with_slash(prefix),
            pool: self.pool.clone(),
            shared_prefix: None,
            releasing: self.releasing.clone(),
        }
    }

    /// The leader election of this pool's proxies (`doproxy failover`).
    pub fn election(&self) -> Election {
        Election::new(
            &self.client,
            format!("{}failover/leader", self.prefix),
            format!("{}failover/history", self.prefix),
        )
    }

    /// Where the inventory is, for messages: `etcd http://10.0.0.2:2379 /doproxy/web/`.
    pub fn describe(&self) -> String {
        format!("etcd {} {}", self.endpoints, self.prefix)
    }

    /// All entries in droplet ID order.
    pub async fn load(&self) -> Result<Vec<Entry>> {
        Ok(self.load_with_revision().await?.0)
    }

    /// All entries, and the etcd revision they were read at: `watch` from
    /// that revision misses nothing.
    pub async fn load_with_revision(&self) -> Result<(Vec<Entry>, i64)> {
        let (layout, revision) = self.layout().await?;
        Ok((decode(&layout)?, revision))
    }

    /// The key readers read droplet `id` from, if there is one.
    pub async fn key_of(&self, id: u64) -> Result<Option<String>> {
        let (layout, _) = self.layout().await?;
        let end = format!("/{id:020}");
        let mut keys = layout.visible().into_iter().map(|(key, _)| key);
        Ok(keys.find(|key| key.ends_with(&end)))
    }

    /// Every droplet key, read at one revision, and that revision. Nothing
    /// here yet while the prefix the pool shared still holds its droplets:
    /// an error, so that no proxy starts a second inventory of the pool.
    async fn layout(&self) -> Result<(Layout, i64)> {
        let (layout, revision) = self.layout_here().await?;
        if let Some(shared) = &self.shared_prefix
            && layout.is_empty()
        {
            let (left, _) = self.sibling(shared).layout_here().await?;
            let unmoved = left
                .visible()
                .into_iter()
                .filter_map(|(_, value)| serde_json::from_slice::<Entry>(value).ok())
                .filter(|entry| self.pool.owns(entry))
                .count();
            if unmoved > 0 {
                return Err(NotMoved {
                    shared: shared.clone(),
                    count: unmoved,
                    pool: self.pool.tag.clone(),
                    prefix: self.prefix.clone(),
                }
                .into());
            }
        }
        Ok((layout, revision))
    }

    /// Every droplet key under this prefix, read at one revision.
    async fn layout_here(&self) -> Result<(Layout, i64)> {
        let prefix = self.droplets_prefix();
        let range = self.client.range_prefix(&prefix).await?;
        Ok((Layout::read(&prefix, range.kvs)?, range.revision))
    }

    /// Takes the pool's lock, waiting up to `timeout` for a run on this or
    /// another proxy to finish, and says so while it waits.
    /// With `shutdown`, a signal ends the wait, leaving the queue at once.
    pub async fn lock(&self, timeout: Duration, shutdown: Option<&Shutdown>) -> Result<EtcdLock> {
        let granted = tokio::time::Instant::now();
        let lease = self.client.grant_lease(LOCK_TTL).await?;
        let keep_alive = self.client.keep_alive(lease, LOCK_TTL, granted);
        let name = self.lock_name();
        if let Some(holder) = self.lock_holder().await? {
            tracing::info!(
                "waiting for another doproxy run ({holder}) to release etcd lock {name}"
            );
        }
        let stopped = async {
            match shutdown {
                Some(shutdown) => shutdown.signalled().await,
                None => std::future::pending().await,
            }
        };
        let waited = tokio::select! {
            stopped = stopped => Err(Some(stopped)),
            locked = tokio::time::timeout(timeout.max(MIN_LOCK_WAIT), self.client.lock(&name, lease)) => {
                locked.map_err(|_| None)
            }
        };
        // Without the lock, leave the queue: our place in it is a key on our
        // lease, and revoking the lease removes it.
        let owner_key = match waited {
            Ok(Ok(key)) => key,
            Ok(Err(err)) => {
                self.client.revoke_quietly(lease).await;
                return Err(err.into());
            }
            Err(Some(stopped)) => {
                self.client.revoke_quietly(lease).await;
                return Err(stopped.leaving(super::LOCK_WAIT_STOPPED).into());
            }
            Err(None) => {
                self.client.revoke_quietly(lease).await;
                let holder = self.lock_holder().await.ok().flatten();
                let holder = holder.map_or_else(|| "holder unknown".to_string(), |h| h.to_string());
                return Err(LockBusy {
                    holder,
                    lock: format!("etcd lock {name}"),
                    waited: timeout,
                }
                .into());
            }
        };
        // Say who holds it, for the message a waiting run prints. Put keeps
        // the key on the lease, so a crash still frees the lock.
        self.client
            .txn(
                &[Compare::KeyExists(owner_key.clone())],
                &[Op::Put(Put {
                    key: owner_key.clone(),
                    value: holder_identity().into_bytes(),
                    lease: Some(lease),
                })],
            )
            .await?;
        Ok(EtcdLock(etcd::Lock::new(
            &self.client,
            name,
            owner_key,
            (lease, LOCK_TTL),
            keep_alive,
            &self.releasing,
        )))
    }

    /// Replaces the droplets with `entries`, whole or not at all, only while
    /// `lock` is held. Only droplets that differ are written when that fits
    /// in one transaction, so a watcher is told exactly what changed; a
    /// bigger change goes through a new generation (see `layout`). The
    /// difference is taken against what etcd holds now, read here under the
    /// lock, so it is right whatever the caller loaded and whenever it did.
    pub async fn save(&self, entries: &[Entry], lock: &EtcdLock) -> Result<()> {
        let plan = self.plan_save(entries, false).await?;
        self.commit(&[(lock, plan)]).await
    }

    /// The writes that make `entries` the droplets (see `Layout::plan`).
    async fn plan_save(&self, entries: &[Entry], fresh: bool) -> Result<SavePlan> {
        let (layout, _) = self.layout().await?;
        Ok(layout.plan(&encode(entries)?, fresh))
    }

    /// Moves this pool's droplets out of the inventory under `from`, a
    /// prefix it shared with other pools, into this one, which must hold
    /// none yet; the state kept beside them (autoscale, rollout, heal) is
    /// copied where this pool has none. Both inventories change in one
    /// transaction, under both locks (the shared one first). Returns how
    /// many droplets moved and how many of other pools stayed.
    pub async fn move_from(
        &self,
        from: &str,
        timeout: Duration,
        shutdown: &Shutdown,
    ) -> Result<(usize, usize)> {
        let source = self.sibling(from);
        if source.prefix == self.prefix {
            bail!(
                "{} is this pool's own inventory already; name the prefix to move from with --from",
                self.describe()
            );
        }
        let source_lock = source.lock(timeout, Some(shutdown)).await?;
        let lock = self.lock(timeout, Some(shutdown)).await?;
        let (source_layout, _) = source.layout_here().await?;
        let (ours, theirs): (Vec<Entry>, Vec<Entry>) = decode(&source_layout)?
            .into_iter()
            .partition(|entry| self.pool.owns(entry));
        if ours.is_empty() {
            bail!(
                "{} holds no droplet of pool {}, so there is nothing to move",
                source.describe(),
                self.pool.tag
            );
        }
        let (layout, _) = self.layout_here().await?;
        let present = layout.visible().len();
        if present > 0 {
            bail!(
                "{} already holds {present} droplet(s), so the pool's droplets under {} were left where they are; export both with doproxy inventory export and import the inventory you want",
                self.describe(),
                source.prefix
            );
        }
        let mut plan = layout.plan(&encode(&ours)?, true);
        let state = self.client.range_prefix(&source.meta_key("")).await?;
        for kv in state.kvs {
            let name = kv
                .key
                .strip_prefix(&source.meta_key(""))
                .unwrap_or_default();
            let key = self.meta_key(name);
            if self.client.get(&key).await?.is_none() {
                plan.commit.push(Op::Put(Put {
                    key,
                    value: kv.value,
                    lease: None,
                }));
            }
        }
        let source_plan = source_layout.plan(&encode(&theirs)?, true);
        self.commit(&[(&source_lock, source_plan), (&lock, plan)])
            .await?;
        // The trail goes along; the droplets have moved whatever happens to it.
        if let Err(err) =
            super::event_log::etcd_copy(&self.client, &source.prefix, &self.prefix, &self.pool.tag)
                .await
        {
            tracing::warn!(
                "{err:#}; the pool's events stay under {} (doproxy history shows those under {})",
                source.prefix,
                self.prefix
            );
        }
        lock.release().await;
        source_lock.release().await;
        Ok((ours.len(), theirs.len()))
    }

    /// Makes `plans`, each under its lock: first the staged writes, which no
    /// reader looks at, slice by slice; then every commit in one
    /// transaction, so that all of them take effect at once or none does.
    async fn commit(&self, plans: &[(&EtcdLock, SavePlan)]) -> Result<()> {
        let nothing_saved = || {
            format!(
                "could not save the inventory to {} (nothing was saved: a save takes effect whole or not at all)",
                self.describe()
            )
        };
        for (lock, plan) in plans {
            for slice in plan.staged.chunks(MAX_OPS) {
                self.write(&[lock], &[], slice)
                    .await
                    .with_context(nothing_saved)?;
            }
        }
        let locks: Vec<&EtcdLock> = plans.iter().map(|(lock, _)| *lock).collect();
        let compares: Vec<Compare> = plans
            .iter()
            .flat_map(|(_, plan)| plan.compares.iter().cloned())
            .collect();
        let commit: Vec<Op> = plans
            .iter()
            .flat_map(|(_, plan)| plan.commit.iter().cloned())
            .collect();
        self.write(&locks, &compares, &commit).await
    }

    /// A value kept beside the droplets, if set.
    pub async fn get_meta(&self, name: &str) -> Result<Option<String>> {
        let key = self.meta_key(name);
        let Some(value) = self.client.get(&key).await? else {
            return Ok(None);
        };
        String::from_utf8(value).map(Some).map_err(|_| {
            anyhow::anyhow!("etcd key {key} does not hold text; delete it, doproxy sets it anew")
        })
    }

    pub async fn put_meta(&self, name: &str, value: &str, lock: &EtcdLock) -> Result<()> {
        let put = Op::Put(Put {
            key: self.meta_key(name),
            value: value.as_bytes().to_vec(),
            lease: None,
        });
        self.write(&[lock], &[], &[put]).await
    }

    /// Changes to the droplets made after `revision` (as returned by
    /// `load_with_revision`), one save at a time.
    pub async fn watch(&self, revision: i64) -> Result<InventoryWatch> {
        let droplets_prefix = self.droplets_prefix();
        let current = format!("{droplets_prefix}current");
        let at_start = self.client.get_key_at(&current, revision).await?;
        let generation = layout::generation_at(at_start.as_ref())?;
        let watch = self.client.watch(&droplets_prefix, revision + 1).await?;
        Ok(InventoryWatch {
            watch,
            droplets_prefix,
            generation,
        })
    }

    /// One transaction: `ops`, if every lock of `locks` is still held and
    /// `compares` hold.
    async fn write(&self, locks: &[&EtcdLock], compares: &[Compare], ops: &[Op]) -> Result<()> {
        let mut all: Vec<Compare> = locks
            .iter()
            .map(|lock| Compare::KeyExists(lock.0.owner_key().to_string()))
            .collect();
        all.extend(compares.iter().cloned());
        match self.client.txn(&all, ops).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let names: Vec<&str> = locks.iter().map(|lock| lock.0.name()).collect();
                bail!(
                    "lost the etcd lock {} (its lease ran out, perhaps while this run was stalled or cut off from etcd), or the inventory changed without it, so nothing was saved; retry",
                    names.join(" or ")
                )
            }
            Err(EtcdError::Server { message, .. }) if message.contains("too many operations") => {
                bail!(
                    "etcd refused {} writes in one transaction (its --max-txn-ops is below doproxy's {MAX_OPS}), so nothing was saved; raise --max-txn-ops on the etcd servers to 128, its default",
                    ops.len()
                )
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Waits until the locks dropped without `release` are given up.
    pub async fn released(&self) {
        self.releasing.wait().await;
    }

    /// Who holds the lock, as its holder described itself (whoever can
    /// write the prefix can write that), if anyone does.
    async fn lock_holder(&self) -> Result<Option<Printable>> {
        let queue = self
            .client
            .range_prefix(&format!("{}/", self.lock_name()))
            .await?;
        // etcd's lock goes to the oldest key in the queue.
        Ok(queue
            .kvs
            .into_iter()
            .min_by_key(|kv| kv.create_revision)
            .map(|kv| match String::from_utf8(kv.value) {
                Ok(holder) if !holder.is_empty() => Printable::from(holder),
                _ => Printable::new(&format!(
                    "lease {}",
                    kv.key.rsplit('/').next().unwrap_or_default()
                )),
            }))
    }

    /// The etcd client, for what is kept beside the droplets (the trail).
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// The prefix of this pool's keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn droplets_prefix(&self) -> String {
        format!("{}droplets/", self.prefix)
    }

    fn meta_key(&self, name: &str) -> String {
        format!("{}meta/{name}", self.prefix)
    }

    fn lock_name(&self) -> String {
        format!("{}lock", self.prefix)
    }
}

impl EtcdLock {
    /// Fails once the lock is lost (etcd said its lease ran out, no renewal
    /// succeeded in time, or its owner key is gone from etcd) or etcd cannot
    /// confirm it is held. Commands call it before each API call that changes
    /// droplets, so a run that lost the lock, while another run may hold it,
    /// changes nothing more.
    pub async fn check(&self) -> Result<()> {
        let lost = match self.0.lost().await {
            Ok(None) => return Ok(()),
            Ok(Some(lost)) => lost,
            Err(err) => bail!(
                "cannot confirm that this run still holds the etcd lock {} ({err}); nothing more was changed; run doproxy reconcile once etcd answers",
                self.0.name()
            ),
        };
        bail!(
            "lost the etcd lock {} ({lost}), so another run may be changing the pool; nothing more was changed; run doproxy reconcile",
            self.0.name()
        )
    }

    /// Gives the lock up at once.
    pub async fn release(self) {
        self.0.release().await;
    }
}

impl InventoryWatch {
    /// Waits for the next save that changed what readers see: one whole
    /// save, however many transactions it took.
    pub async fn next(&mut self) -> Result<InventoryChange> {
        loop {
            match self.watch.next().await? {
                WatchUpdate::Changes(batch) => {
                    let prefix = &self.droplets_prefix;
                    if layout::changes_visible(prefix, &batch.changes, &mut self.generation) {
                        return Ok(InventoryChange::Changed {
                            revision: batch.revision,
                        });
                    }
                }
                WatchUpdate::Compacted { compact_revision } => {
                    return Ok(InventoryChange::Compacted { compact_revision });
                }
            }
        }
    }
}

/// `prefix`, ending in `/`.
fn with_slash(prefix: &str) -> String {
    match prefix.ends_with('/') {
        true => prefix.to_string(),
        false => format!("{prefix}/"),
    }
}

/// The droplets readers see in `layout`.
fn decode(layout: &Layout) -> Result<Vec<Entry>> {
    layout
        .visible()
        .into_iter()
        .map(|(key, value)| {
            serde_json::from_slice(value).map_err(|err| {
                anyhow::anyhow!(
                    "etcd key {key} holds a droplet doproxy cannot read ({err}); fix or delete that key, then run doproxy reconcile"
                )
            })
        })
        .collect()
}

/// Droplet ID to JSON, as a save writes them.
fn encode(entries: &[Entry]) -> Result<BTreeMap<u64, Vec<u8>>> {
    entries
        .iter()
        .map(|entry| Ok((entry.id, serde_json::to_vec(entry)?)))
        .collect()
}

/// "pid 4242 on proxy-a": enough for an operator to find the run.
fn holder_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "an unknown host".to_string());
    format!("pid {} on {host}", std::process::id())
}
