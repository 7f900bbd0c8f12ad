//! The inventory as a whole: brought up to date from the API (`refresh`),
//! written out and read in the file's line format (`export`, `import`,
//! which keep every field, so the file and etcd stores trade inventories),
//! and a pool's droplets moved out of the etcd prefix pools shared before
//! each had its own (`migrate`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Context, LOCK_TIMEOUT, droplet};
use crate::digitalocean::Droplet;
use crate::inventory::{Comments, Store, parse, render};
use crate::model::Entry;

/// The inventory with status and addresses brought up to date from one list
/// of the pool's droplets, saved.
pub async fn refresh(ctx: &Context) -> Result<Vec<Entry>> {
    let api = ctx.api()?;
    let lock = ctx.lock(LOCK_TIMEOUT).await?;
    let mut entries = ctx.entries(Some(&lock)).await?;
    let listed = api.list_droplets(ctx.config.pool_tag()).await?;
    let listed: HashMap<u64, &Droplet> = listed.iter().map(|d| (d.id, d)).collect();
    let mut missing = 0;
    for entry in entries.iter_mut() {
        match listed.get(&entry.id) {
            Some(listed) => {
                droplet::update(entry, listed)?;
            }
            None => missing += 1,
        }
    }
    ctx.store.save(&entries, &lock).await?;
    if missing > 0 {
        tracing::warn!(
            "{missing} droplet(s) of the inventory are not among the pool's tagged droplets; run doproxy reconcile"
        );
    }
    Ok(entries)
}

/// The inventory, and its text in the inventory file's line format.
pub async fn export(ctx: &Context) -> Result<(Vec<Entry>, String)> {
    let entries = ctx.entries(None).await?;
    let text = render(&entries, &Comments::default());
    Ok((entries, text))
}

/// Replaces the store's inventory with the one `text` holds (read from
/// `source`, named in errors), only while it is empty unless `replace`.
/// Returns how many droplets it holds now.
pub async fn import(
    ctx: &Context,
    text: &str,
    source: &str,
    replace: bool,
    lock_timeout: Duration,
) -> Result<usize> {
    let entries = parse(text).map_err(|err| {
        anyhow::anyhow!("{source} is not an inventory: {err}; fix that line and retry")
    })?;
    let lock = ctx.lock(lock_timeout).await?;
    let present = ctx.store.load().await?;
    if !present.is_empty() && !replace {
        bail!(
            "{} already holds {} droplet(s); add --replace to overwrite it with {source}",
            ctx.store.describe(),
            present.len()
        );
    }
    ctx.store.save(&entries, &lock).await?;
    lock.release().await;
    tracing::info!(
        "imported {} droplet(s) into {}",
        entries.len(),
        ctx.store.describe()
    );
    Ok(entries.len())
}

/// How a migrate went.
#[derive(Debug)]
pub struct Migrated {
    pub moved: usize,
    /// Droplets of other pools, left under the prefix moved from.
    pub left: usize,
    /// The pool's own prefix, moved to.
    pub to: String,
}

/// Moves this pool's droplets from the etcd prefix `from` to its own.
pub async fn migrate(ctx: &Context, from: &str, lock_timeout: Duration) -> Result<Migrated> {
    let Store::Etcd(etcd) = &ctx.store else {
        bail!(
            "migrate moves an etcd inventory between prefixes; {} keeps its inventory in a file",
            ctx.config.path.display()
        );
    };
    let (moved, left) = etcd.move_from(from, lock_timeout, &ctx.shutdown).await?;
    tracing::info!("{left} droplet(s) of other pools stay under {from}");
    Ok(Migrated {
        moved,
        left,
        to: etcd.prefix().to_string(),
    })
}
